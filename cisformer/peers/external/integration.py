"""The integration peers MultiVI (PyPI ``scvi-tools``) and scGLUE (PyPI ``scglue``) in one shared environment,
trained on the training cells at their package defaults (or an epoch budget) and saved once at convergence
(:func:`converged_peer`); what is run and what is changed at runtime: ``docs/external_peers.md``. The driver is
``drivers/run_integration.py``.
"""
from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ...utils import paths
from .environment import Environment, cell_positions, paired_names, run_driver

# =============================================================================== integration peers: MultiVI, scGLUE
SCVI_TOOLS_VERSION = "1.4.2"  # the newest release installable here: 1.4.3 and 1.5.x need Python >= 3.12
SCGLUE_VERSION = "0.4.1"
# everything else pinned to the versions verified with these two (pip's resolution on 2026-12-03), except
# pynndescent: 0.7 returns scipy sparse arrays, which have no getnnz, and scanpy 1.11.5's neighbour graph (scGLUE's
# balancing weights; pynndescent is used on larger data: 8,247 SNARE-seq cells failed, 150 cells did not) calls it
INTEGRATION_REQUIREMENTS = [
    f"scvi-tools=={SCVI_TOOLS_VERSION}", f"scglue=={SCGLUE_VERSION}", "lightning==2.6.6", "pytorch-ignite==0.5.5",
    "anndata==0.12.19", "mudata==0.3.10", "scanpy==1.11.5", "numpy==2.4.6", "scipy==1.17.1", "scikit-learn==1.9.1",
    "networkx==3.6.1", "scikit-misc==0.5.3", "pynndescent==0.5.13",
]
SCGLUE_PROMOTER_BP = 2000  # scGLUE's promoter: 2 kb upstream of the TSS


ENVIRONMENT = Environment("integration", "import scvi, scglue", "the integration environment")


def integration_python() -> Path:
    """Path of the Python interpreter of the MultiVI / scGLUE environment (it may not exist yet)."""
    return ENVIRONMENT.python


def ensure_integration_env(*, verbose: bool = False) -> Path:
    """Create the MultiVI / scGLUE environment (``<cache>/env-integration``) if it is missing; return its Python
    interpreter.

    torch (the CPU wheel) goes in first, so that scvi-tools and scglue find it satisfied and pip never pulls a
    CUDA build. Takes about 2 minutes (1.9 GB). Raises ``RuntimeError`` (with pip's last lines) on failure.

    Parameters
    ----------
    verbose
        Print each installation command before it runs.

    Returns
    -------
    Path of the environment's Python interpreter.
    """
    return ENVIRONMENT.ensure([["torch==2.13.0"], ["torch==2.13.0", *INTEGRATION_REQUIREMENTS]], verbose)


def scglue_guidance_edges(rna_var: pd.DataFrame, atac_var: pd.DataFrame, window: int = 150_000) -> pd.DataFrame:
    """Edges of scGLUE's guidance graph between genes and peaks, built without bedtools.

    Gene-peak pairs are the compendium's candidates (:func:`cisformer.tl.attention.candidate_pairs`: peak midpoint
    within ``window`` bp of the TSS). Each pair is weighted as scGLUE weighs its window graphs: the gap ``d``
    between the peak and the gene's promoter (2 kb upstream of the TSS, strand-aware; 0 when they overlap) gives
    ``weight = ((d + 1000) / 1000) ** -0.75`` (``scglue.genomics.dist_power_decay``), sign 1. As in
    ``rna_anchored_guidance_graph`` every gene -> peak edge (``type`` "fwd") also appears reversed ("rev"), and
    every gene and every peak has a self-loop of weight 1, sign 1 ("loop").

    Parameters
    ----------
    rna_var
        Gene table (``rna.var``): ``chrom`` and ``tss`` (or ``start``/``end``), ``strand`` (``+`` when absent).
    atac_var
        Peak table (``atac.var``): ``chrom``, ``start``, ``end``.
    window
        bp around the TSS within which a peak's midpoint makes a gene-peak edge.

    Returns
    -------
    DataFrame with ``source``, ``target`` (feature names), ``weight``, ``sign``, ``type``: the gene -> peak edges
    in the order of ``candidate_pairs``, then their reverses, then the loops (genes, then peaks).
    """
    from ...data.vocab import gene_tss
    from ...tl.attention import candidate_pairs

    pairs = candidate_pairs(rna_var, atac_var, window)
    g, c = pairs["gene_idx"].to_numpy(), pairs["cre_idx"].to_numpy()
    tss = gene_tss(rna_var)[g]
    minus = (rna_var["strand"].astype(str).to_numpy() == "-")[g] if "strand" in rna_var else np.zeros(len(g), bool)
    promoter_start = np.where(minus, tss, tss - SCGLUE_PROMOTER_BP)
    promoter_end = np.where(minus, tss + SCGLUE_PROMOTER_BP, tss)
    peak_start = atac_var["start"].to_numpy(dtype=np.float64)[c]
    peak_end = atac_var["end"].to_numpy(dtype=np.float64)[c]
    gap = np.maximum(0.0, np.maximum(peak_start - promoter_end, promoter_start - peak_end))
    weight = ((gap + 1000) / 1000) ** -0.75
    genes, peaks = pairs["gene"].astype(str).to_numpy(), pairs["cre"].astype(str).to_numpy()
    features = np.concatenate([np.asarray(rna_var.index, dtype=str), np.asarray(atac_var.index, dtype=str)])
    return pd.DataFrame({
        "source": np.concatenate([genes, peaks, features]),
        "target": np.concatenate([peaks, genes, features]),
        "weight": np.concatenate([weight, weight, np.ones(len(features))]),
        "sign": np.ones(2 * len(pairs) + len(features), dtype=np.int64),
        "type": np.repeat(["fwd", "rev", "loop"], [len(pairs), len(pairs), len(features)]),
    })


def _run_integration(method: str, rna: ad.AnnData, atac: ad.AnnData, train_cells, embed_cells, config: dict,
                     edges: pd.DataFrame | None = None, threads: int = 1, timeout_s: float | None = None) -> dict:
    """Write the training and embedding cells' counts as h5ad, run the driver, read the embeddings back."""
    python = integration_python()
    names = paired_names(python, "the integration environment", "ensure_integration_env", rna, atac)
    train_pos = cell_positions(names, train_cells, "train_cells")
    embed_pos = cell_positions(names, embed_cells, "embed_cells")

    def counts(data: ad.AnnData, pos: np.ndarray) -> ad.AnnData:  # raw counts, names only: no labels travel
        return ad.AnnData(sp.csr_matrix(data.X[pos], dtype=np.float32), obs=pd.DataFrame(index=names[pos]),
                          var=pd.DataFrame(index=data.var_names.astype(str)))

    with tempfile.TemporaryDirectory(prefix=f"{method}_") as work:
        for part, pos in (("train", train_pos), ("embed", embed_pos)):
            counts(rna, pos).write_h5ad(f"{work}/rna_{part}.h5ad")
            counts(atac, pos).write_h5ad(f"{work}/atac_{part}.h5ad")
        if edges is not None:
            edges.to_csv(f"{work}/edges.csv", index=False)
        json.dump({"method": method, **config}, open(f"{work}/config.json", "w"))
        wall_s = run_driver(python, "run_integration.py", work, threads, timeout_s, method)
        record = json.load(open(f"{work}/record.json"))
        snapshots = sorted((int(f.stem.split("_")[1]), f) for f in Path(work).glob("snapshot_*.npz"))  # by epoch
        return {"rna": np.load(f"{work}/rna_embedding.npy"), "atac": np.load(f"{work}/atac_embedding.npy"),
                **record, "wall_s": wall_s, "snapshots": [(epoch, dict(np.load(f))) for epoch, f in snapshots]}


CONVERGED_DIR = paths.REPO_ROOT / "figures" / "attune" / "converged_peers"


def linked_features(rna: ad.AnnData, atac: ad.AnnData, cells, *, n_top_genes: int = 2000,
                    window: int = 150_000) -> tuple[pd.Index, pd.Index]:
    """A feature set small enough for every integration method to converge on a CPU: the ``n_top_genes`` highly
    variable genes of ``cells`` that have a TSS, and the peaks whose midpoint lies within ``window`` bp of one of
    their TSSs (:func:`cisformer.tl.attention.candidate_pairs`, the pairs of scGLUE's guidance graph).

    Highly variable genes: scanpy's ``seurat`` flavour (dispersion of log1p CP10k expression) on the raw counts of
    ``cells`` only (training and validation cells, never held-out ones). scGLUE's tutorial uses ``seurat_v3``,
    which needs scikit-misc, not installed in the compendium's environment; the set is the same for every method.

    Parameters
    ----------
    rna, atac
        Paired AnnData of raw counts; ``rna.var`` with gene coordinates and ``atac.var`` with
        ``chrom``/``start``/``end`` (as :func:`scglue_guidance_edges`).
    cells
        obs names of the cells the highly variable genes are chosen on (training and validation cells).
    n_top_genes
        Highly variable genes considered, before those without a peak in their window are dropped.
    window
        bp around the TSS within which a peak's midpoint links it to a gene.

    Returns
    -------
    (genes, peaks): names, in the order of ``rna.var_names`` and ``atac.var_names``.
    """
    import scanpy as sc

    from ...data.preprocess import log_normalized
    from ...tl.attention import candidate_pairs

    fit = ad.AnnData(log_normalized(rna[cells].X), var=pd.DataFrame(index=rna.var_names.astype(str)))
    sc.pp.highly_variable_genes(fit, flavor="seurat")  # normalised dispersion; ties make its own cut inexact
    dispersion = fit.var["dispersions_norm"].fillna(-np.inf).to_numpy()
    top = np.sort(np.argsort(-dispersion, kind="stable")[:n_top_genes])
    hvg = rna.var.iloc[top]
    pairs = candidate_pairs(hvg, atac.var, window)
    genes = hvg.index[np.isin(np.arange(len(hvg)), pairs["gene_idx"].to_numpy())]
    peaks = atac.var_names[np.isin(np.arange(atac.n_vars), pairs["cre_idx"].to_numpy())]
    return genes, peaks


def _converged_fingerprint(method: str, rna: ad.AnnData, atac: ad.AnnData, train_cells, embed_cells,
                           seed: int) -> str:
    """Digest of what a converged peer's result depends on: method, seed, the environment's pinned packages, the
    training and embedded cells, the features and every count they hold."""
    from ...runs import Fingerprint

    fp = Fingerprint(16).json([method, int(seed), INTEGRATION_REQUIREMENTS])
    for names in (train_cells, embed_cells, rna.var_names, atac.var_names):
        fp.names(names, sep="\n")
    for data in (rna, atac):
        for cells in (train_cells, embed_cells):
            fp.matrix(sp.csr_matrix(data[cells].X, dtype=np.float32))
    return fp.hexdigest()


def converged_peer(method: str, rna: ad.AnnData, atac: ad.AnnData, train_cells, embed_cells, dataset: str,
                   seed: int = 0, rerun: bool = False, folder=None, threads: int = 1,
                   snapshot_every: int = 10) -> dict | None:
    """MultiVI or scGLUE at its package defaults, trained until its own early stopping: read from its saved result,
    or run (hours on a CPU) when ``rerun``.

    The result (``FOLDER/DATASET_METHOD_seedSEED.npz``: the embedded cells' two embeddings and names; ``.json``: the
    record of :func:`run_multivi` / :func:`run_scglue`, the package versions and a fingerprint of the data, split,
    features, seed and pinned environment) is committed with the figures, so the notebook reads it instead of
    training for hours. A saved result whose fingerprint does not match the inputs is not used.

    Parameters
    ----------
    method
        ``"MultiVI"`` or ``"scGLUE"``.
    rna, atac, train_cells, embed_cells, seed, threads
        As in :func:`run_multivi`; no ``max_epochs``: the package's own limit and early stopping.
    dataset
        Name in the file names.
    rerun
        Train (and overwrite the saved result) instead of reading it.
    folder
        Where results are saved (default :data:`CONVERGED_DIR`, ``figures/attune/converged_peers``).
    snapshot_every
        When training: the embedded cells' FOSCTTM every ``snapshot_every`` epochs and at the end, saved as the
        record's ``foscttm_by_epoch`` (``[[epoch, foscttm], ...]``; training is unchanged by it).

    Returns
    -------
    dict as :func:`run_multivi`'s (``rna``, ``atac``, ``epochs``, ``stopped``, ``seconds``, ...) plus ``versions``,
    ``fingerprint`` and ``foscttm_by_epoch`` (absent from results saved before it was recorded); ``None`` (with a
    printed line saying why and how to run it) when no usable result is saved and ``rerun`` is False.
    """
    folder = Path(folder or CONVERGED_DIR)
    stem = folder / f"{dataset}_{method}_seed{seed}"
    key = _converged_fingerprint(method, rna, atac, train_cells, embed_cells, seed)
    if not rerun:
        if not stem.with_suffix(".json").exists():
            print(f"{method} (converged): no saved result {stem}.json; run it with rerun=True (hours on a CPU)")
            return None
        record = json.loads(stem.with_suffix(".json").read_text())
        if record["fingerprint"] != key:
            print(f"{method} (converged): {stem}.json was computed from other data, split, features or packages "
                  "(fingerprint differs); not used. Run it again with rerun=True")
            return None
        saved = np.load(stem.with_suffix(".npz"), allow_pickle=False)
        if not np.array_equal(saved["cells"], np.asarray(embed_cells, dtype=str)):
            raise ValueError(f"{stem}.npz: its embedded cells are not embed_cells (same fingerprint): the file is "
                             "damaged; run it again with rerun=True")
        return {"rna": saved["rna"], "atac": saved["atac"], **record}
    from ...metrics import foscttm

    ensure_integration_env()
    result = CONVERGED_RUNNERS[method](rna, atac, train_cells, embed_cells, seed=seed, threads=threads,
                                       snapshot_every=snapshot_every)
    record = {k: v for k, v in result.items() if k not in ("rna", "atac", "snapshots")}
    curve = [(epoch, emb) for epoch, emb in result["snapshots"] if epoch < result["epochs"]]
    record["foscttm_by_epoch"] = [[epoch, foscttm(emb["rna"], emb["atac"])]
                                  for epoch, emb in [*curve, (result["epochs"], result)]]
    record.update(method=method, dataset=dataset, seed=int(seed), versions=integration_versions(),
                  fingerprint=key, n_genes=int(rna.n_vars), n_peaks=int(atac.n_vars), n_train_cells=len(train_cells))
    from ...utils.paths import write_atomic

    write_atomic(stem.with_suffix(".npz"), lambda tmp: np.savez_compressed(
        tmp, rna=result["rna"], atac=result["atac"], cells=np.asarray(embed_cells, dtype=str)))
    write_atomic(stem.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(record, indent=1, default=float)))
    return {"rna": result["rna"], "atac": result["atac"], **record}


def integration_versions() -> dict:
    """Versions of the integration environment's packages that train MultiVI and scGLUE.

    Returns
    -------
    dict: package name -> version, for scvi-tools, scglue, torch, lightning and pytorch-ignite.
    """
    probe = ("import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
             "('scvi-tools', 'scglue', 'torch', 'lightning', 'pytorch-ignite')}))")
    return json.loads(subprocess.run([str(integration_python()), "-c", probe], capture_output=True, text=True,
                                     check=True).stdout)


def _training_config(seed, time_budget_s, max_epochs, snapshot_every) -> dict:
    """The driver's config entries that both peers share, as JSON-ready numbers (None stays None)."""
    def optional(value, kind):
        return None if value is None else kind(value)

    return {"seed": int(seed), "time_budget_s": optional(time_budget_s, float), "max_epochs": optional(max_epochs, int),
            "snapshot_every": optional(snapshot_every, int)}


def run_multivi(rna: ad.AnnData, atac: ad.AnnData, train_cells, embed_cells, *, seed: int = 0,
                time_budget_s: float | None = None, max_epochs: int | None = None, snapshot_every: int | None = None,
                threads: int = 1, timeout_s: float | None = None) -> dict:
    """Train MultiVI (scvi-tools) on ``train_cells`` without labels; embed ``embed_cells`` per modality.

    Parameters
    ----------
    rna, atac
        Paired AnnData of raw counts (identical ``obs_names``); every gene and every peak is used.
    train_cells, embed_cells
        obs names (they may overlap). MultiVI holds out its own 10 % of ``train_cells`` for early stopping.
    seed
        ``scvi.settings.seed`` (Python, numpy, torch) and the driver's seeds.
    time_budget_s
        Wall-clock seconds of training; training stops at the end of the epoch that passes it (``None``: none).
    max_epochs
        Epoch limit (``None``: MultiVI's 500, with its early stopping, patience 50).
    snapshot_every
        Also embed ``embed_cells`` after every ``snapshot_every`` epochs, in eval mode and with every random state
        restored afterwards, so that training is unchanged (``None``: only at the end).
    threads
        torch / OpenMP / MKL threads of the subprocess.
    timeout_s
        Kill the subprocess after this many seconds (``None``: no limit).

    Returns
    -------
    dict with ``rna`` and ``atac`` (float32 [len(embed_cells), n_latent]: the means of MultiVI's expression and
    accessibility encoders, ``get_latent_representation(modality="expression" / "accessibility")``, in the order
    of ``embed_cells``), ``seconds`` (``model.train`` wall-clock), ``epochs``, ``stopped`` (``"time_budget"``,
    ``"early_stopping"`` or ``"max_epochs"``), ``max_epochs``, ``wall_s`` (the whole subprocess) and
    ``snapshots`` (``[(epoch, {"rna": ..., "atac": ...}), ...]``, empty without ``snapshot_every``).
    """
    config = _training_config(seed, time_budget_s, max_epochs, snapshot_every)
    return _run_integration("multivi", rna, atac, train_cells, embed_cells, config, threads=threads,
                            timeout_s=timeout_s)


def run_scglue(rna: ad.AnnData, atac: ad.AnnData, train_cells, embed_cells, *, seed: int = 0,
               time_budget_s: float | None = None, max_epochs: int | None = None, window: int = 150_000,
               n_top_genes: int = 2000, n_components: int = 100, snapshot_every: int | None = None, threads: int = 1,
               timeout_s: float | None = None) -> dict:
    """Train scGLUE on ``train_cells`` as two unpaired datasets without labels; embed ``embed_cells`` per modality.

    Parameters
    ----------
    rna, atac
        Paired AnnData of raw counts (identical ``obs_names``); ``rna.var`` with ``chrom`` and ``tss`` (or
        ``start``/``end``/``strand``), ``atac.var`` with ``chrom``/``start``/``end``. scGLUE never sees the pairing.
    train_cells, embed_cells
        obs names (they may overlap). scGLUE holds out its own 10 % of ``train_cells`` for early stopping.
    seed
        scGLUE's ``random_seed`` (weights, data split, shuffling; the fine-tuning stage uses ``seed + 1`` for its
        data order, as scGLUE does) and the driver's numpy / torch seeds.
    time_budget_s
        Wall-clock seconds of ``fit_SCGLUE``: pretraining stops at the end of the epoch that passes half of it,
        fine-tuning at the end of the epoch that passes all of it (``None``: none).
    max_epochs
        Epoch limit of each stage (``None``: scGLUE's automatic limit, with its early stopping).
    window
        Gene-peak edges of the guidance graph: peak midpoint within ``window`` bp of the TSS
        (:func:`scglue_guidance_edges`).
    n_top_genes
        Highly variable genes (scanpy's ``seurat_v3`` on the training counts; every gene when there are fewer).
    n_components
        Dimensions of the RNA PCA and the ATAC LSI, the encoders' inputs (the scGLUE tutorial's 100).
    snapshot_every, threads, timeout_s
        As in :func:`run_multivi` (snapshot epochs count both stages).

    Returns
    -------
    dict with ``rna`` and ``atac`` (float32 [len(embed_cells), 50]: ``encode_data`` of each modality, in the order
    of ``embed_cells``), ``seconds`` (``fit_SCGLUE`` wall-clock: both stages and the balancing weights), ``epochs``
    (both stages), ``stopped`` (fine-tuning's reason), ``epochs_pretrain`` / ``stopped_pretrain`` /
    ``seconds_pretrain`` / ``max_epochs_pretrain`` and the same for ``finetune``, ``preprocess_s`` (PCA and LSI),
    ``n_guidance_edges``, ``n_features_rna``, ``n_features_atac`` (the features decoded), ``wall_s`` and
    ``snapshots`` (as :func:`run_multivi`'s).
    """
    for column in ("chrom", "start", "end"):
        if column not in atac.var:
            raise ValueError(f"atac.var['{column}'] is missing; scGLUE's guidance graph needs peak coordinates")
    edges = scglue_guidance_edges(rna.var, atac.var, window)
    config = _training_config(seed, time_budget_s, max_epochs, snapshot_every) | {
        "n_top_genes": int(n_top_genes), "n_components": int(n_components)}
    return _run_integration("scglue", rna, atac, train_cells, embed_cells, config, edges=edges, threads=threads,
                            timeout_s=timeout_s)


CONVERGED_RUNNERS = {"MultiVI": run_multivi, "scGLUE": run_scglue}  # the peers of converged_peer
