"""The compendium's three run sizes, in one place: ``quick`` (a smoke test, minutes), ``cpu`` (the committed
figures, on 2 CPU cores) and ``paper`` (the paper's sizes, for a GPU). The model's configuration
(:meth:`cisformer.model.CisformerConfig.from_profile`), Attune's and every notebook's sizes are looked up by profile
here (:func:`notebook_sizes`)."""
from __future__ import annotations

import copy

PROFILES = ("quick", "cpu", "paper")


def check_profile(profile: str) -> str:
    """``profile`` if it is one of :data:`PROFILES`, else a ``ValueError`` that lists them.

    Parameters
    ----------
    profile
        Run size: ``"quick"``, ``"cpu"`` or ``"paper"``.

    Returns
    -------
    str
        ``profile``, unchanged.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    return profile


# what each notebook runs at each profile (data set sizes, seeds, epoch limits, cells read); each notebook's prose
# says what its entries mean
NOTEBOOK_SIZES = {
    # SNARE-seq / BMMC cells, CREs, genes, seeds, test cells scored, clustering cells, epoch limits
    "benchmark_rna2atac": {
        "quick": dict(n_cells=400, n_bmmc=150, n_cres=600, n_genes=300, n_seeds=1, paper_seeds=1, paper_epochs=1,
                      cis_epochs=3, babel_epochs=3, butterfly_seeds=0, butterfly_epochs=(2, 2), test_cells=150,
                      cluster_cells=150, depth=dict(n_cells=300, n_genes=60, n_cres=400), depth_keep=[0.3, 0.02],
                      depth_seeds=1),
        "cpu": dict(n_cells=None, n_bmmc=None, n_cres=10000, n_genes=1500, n_seeds=5, paper_seeds=1, paper_epochs=2,
                    cis_epochs=None, babel_epochs=20, butterfly_seeds=1, butterfly_epochs=(5, 10), test_cells=1000,
                    cluster_cells=800, depth=dict(n_cells=2000, n_genes=300, n_cres=3000, n_cell_types=6),
                    depth_keep=[0.3, 0.1, 0.03, 0.01, 0.005], depth_seeds=3),
        "paper": dict(n_cells=None, n_bmmc=None, n_cres=None, n_genes=None, n_seeds=5, paper_seeds=3, paper_epochs=None,
                      cis_epochs=None, babel_epochs=20, butterfly_seeds=3, butterfly_epochs=None, test_cells=None,
                      cluster_cells=None, depth=dict(n_cells=5000, n_genes=500, n_cres=10000, n_cell_types=8),
                      depth_keep=[0.3, 0.1, 0.03, 0.01, 0.005], depth_seeds=3),
    },
    "benchmark_atac2rna": {
        "quick": dict(n_cells=250, n_cres=800, n_genes=100, n_seeds=2, paper_seeds=1, cis_epochs=3, paper_epochs=1,
                      pbmc_cells=300, n_bmmc=150),
        "cpu": dict(n_cells=None, n_cres=5000, n_genes=500, n_seeds=5, paper_seeds=1, cis_epochs=None, paper_epochs=4,
                    pbmc_cells=3000, n_bmmc=None),
        "paper": dict(n_cells=None, n_cres=None, n_genes=3000, n_seeds=5, paper_seeds=3, cis_epochs=None,
                      paper_epochs=None, pbmc_cells=None, n_bmmc=None),
    },
    "attention_genes": {"quick": dict(cells=10, max_cells=150), "cpu": dict(cells=100, max_cells=None),
                        "paper": dict(cells=100, max_cells=None)},
    # simulated data (one data set per link setting) and training per profile (overrides stated, not hidden)
    "links_gwas": {
        "quick": dict(sim=dict(n_cells=400, n_genes=40, n_cres=320, n_cell_types=3), sim_seeds=1, cells=20,
                      deletion_cells=20, train=dict(), heldout=dict(max_cells=800, n_cres=600, n_genes=80, cells=60)),
        "cpu": dict(sim=dict(n_cells=3000, n_genes=100, n_cres=1000, n_cell_types=4), sim_seeds=5, cells=100,
                    deletion_cells=100, train=dict(),
                    heldout=dict(max_cells=None, n_cres=5000, n_genes=500, cells=400)),
        "paper": dict(sim=dict(n_cells=5000, n_genes=300, n_cres=3000, n_cell_types=6), sim_seeds=5, cells=100,
                      deletion_cells=300, train=dict(),
                      heldout=dict(max_cells=None, n_cres=None, n_genes=3000, cells=1000)),
    },
    "celltype_regulators": {
        "quick": dict(sim=dict(n_cells=400, n_genes=60, n_cres=400, n_cell_types=3), cells=15, max_cells=300),
        "cpu": dict(sim=dict(n_cells=1500, n_genes=120, n_cres=1200, n_cell_types=4), cells=60, max_cells=None),
        "paper": dict(sim=dict(n_cells=3000, n_genes=300, n_cres=3000, n_cell_types=6), cells=100, max_cells=None),
    },
    # simulated cells, depth fractions, cells of `dataset`, held-out cells scored, CRE list size, aging cells,
    # random half splits of the noise ceiling
    "aging_epitrace": {
        "quick": dict(sim_cells=300, keeps=[1.0, 0.3], max_cells=150, test_cells=150, age_cres=100, aging_cells=150,
                      ceiling_repeats=3),
        "cpu": dict(sim_cells=2000, keeps=[1.0, 0.5, 0.3, 0.2, 0.15, 0.1], max_cells=None, test_cells=1000,
                    age_cres=500, aging_cells=2000, ceiling_repeats=10),
        "paper": dict(sim_cells=5000, keeps=[1.0, 0.5, 0.3, 0.2, 0.15, 0.1], max_cells=None, test_cells=None,
                      age_cres=1000, aging_cells=None, ceiling_repeats=20),
    },
    # cells per data set (None: all), seeds, peers, ATAC->RNA features, simulated link data
    "attune": {
        "quick": dict(max_cells=400, seeds=1, peer_seeds=0, peer_epochs={}, a2r=dict(n_cres=800, n_genes=100),
                      sim=dict(n_cells=400, n_genes=40, n_cres=320, n_cell_types=3), attention_cells=20),
        "cpu": dict(max_cells=None, seeds=3, peer_seeds=1,
                    peer_epochs={"snareseq": {"MultiVI": 10, "scGLUE": 3}, "bmmc": {"scGLUE": 500}},
                    a2r=dict(n_cres=5000, n_genes=500),
                    sim=dict(n_cells=3000, n_genes=100, n_cres=1000, n_cell_types=4), attention_cells=100),
        "paper": dict(max_cells=None, seeds=3, peer_seeds=3, peer_epochs={}, a2r=dict(n_cres=None, n_genes=3000),
                      sim=dict(n_cells=5000, n_genes=300, n_cres=3000, n_cell_types=6), attention_cells=100),
    },
}


def notebook_sizes(notebook: str, profile: str) -> dict:
    """The sizes notebook ``notebook`` (its name without the number, e.g. ``"benchmark_rna2atac"``) runs at
    ``profile``: a copy, so a notebook can change it without changing the registry.

    Parameters
    ----------
    notebook
        Key of :data:`NOTEBOOK_SIZES` (else ``ValueError``).
    profile
        ``"quick"``, ``"cpu"`` or ``"paper"`` (checked by :func:`check_profile`).

    Returns
    -------
    dict
        A deep copy of the notebook's sizes at that profile (keys as in :data:`NOTEBOOK_SIZES`).
    """
    if notebook not in NOTEBOOK_SIZES:
        raise ValueError(f"no sizes for notebook {notebook!r}; notebooks: {sorted(NOTEBOOK_SIZES)}")
    return copy.deepcopy(NOTEBOOK_SIZES[notebook][check_profile(profile)])
