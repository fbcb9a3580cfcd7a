"""scButterfly (PyPI ``scButterfly`` 0.0.9) for RNA -> ATAC, in its own environment, with its preprocessing fitted on
the training cells only, a base-rate output bias, an epoch budget and its CPU path; what is run and what is changed
at runtime: ``docs/external_peers.md``. The driver is ``drivers/run_scbutterfly.py``.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .environment import Environment, cell_positions, paired_names, run_driver

SCBUTTERFLY_VERSION = "0.0.9"
# episcanpy 0.3.2 imports numpy.NaN (gone in numpy 2) and anndata.read (gone in anndata 0.11)
SCBUTTERFLY_REQUIREMENTS = [
    "numpy<2", "scanpy>=1.9,<1.11", "anndata>=0.8,<0.11", "episcanpy==0.3.2", "adjustText", "seaborn", "scikit-learn",
    "leidenalg", "pot", "torchmetrics",
]


ENVIRONMENT = Environment("scbutterfly", "import scButterfly.butterfly", "scButterfly's environment")


def scbutterfly_python() -> Path:
    """Path of the Python interpreter of scButterfly's environment (it may not exist yet)."""
    return ENVIRONMENT.python


def ensure_scbutterfly_env(*, verbose: bool = False) -> Path:
    """Create scButterfly's environment (``<cache>/env-scbutterfly``) if it is missing; return its Python
    interpreter: the torch CPU wheel first, scButterfly without its pinned dependencies, then what its RNA <-> ATAC
    path imports (:data:`SCBUTTERFLY_REQUIREMENTS`). Raises ``RuntimeError`` (with pip's last lines) on failure.

    Parameters
    ----------
    verbose
        Print each installation command before it runs.

    Returns
    -------
    Path of the environment's Python interpreter.
    """
    return ENVIRONMENT.ensure([["torch==2.13.0"], ["--no-deps", f"scButterfly=={SCBUTTERFLY_VERSION}"],
                               ["torch==2.13.0", *SCBUTTERFLY_REQUIREMENTS]], verbose)


@dataclass
class ButterflyPreprocessing:
    """scButterfly's preprocessing (``Butterfly.data_preprocessing``) with every cross-cell statistic taken from the
    training cells only; ``fit`` on the training cells, then ``transform_rna`` / ``transform_atac`` any cells.
    Built by :meth:`fit`; the constructor takes the attributes below, in this order.

    Attributes
    ----------
    target_sum
        Library size every cell's RNA is normalised to (median total count of the training cells).
    genes
        Positions (in the fitted ``rna.var``) of the highly variable genes kept, in their original order.
    cres
        Positions (in the fitted ``atac.var``) of the CREs open in at least one training cell, in original order.
    idf
        ``log(1 + N / df)`` of each kept CRE (``N`` training cells, ``df`` training cells in which it is open).
    scale
        Largest TF-IDF value over the training cells (the training targets lie in [0, 1]).
    mean_open
        Mean number of open kept CREs per training cell.
    """

    target_sum: float
    genes: np.ndarray
    cres: np.ndarray
    idf: np.ndarray
    scale: float
    mean_open: float

    @staticmethod
    def _log_normalized(rna: ad.AnnData, target_sum: float) -> sp.csr_matrix:
        x = sp.csr_matrix(rna.X, dtype=np.float32)
        totals = np.asarray(x.sum(axis=1)).ravel()
        factor = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
        return sp.csr_matrix(sp.diags(factor) @ x, dtype=np.float32).log1p()

    @classmethod
    def fit(cls, rna: ad.AnnData, atac: ad.AnnData, train_cells, n_top_genes: int = 3000) -> "ButterflyPreprocessing":
        """Fit on ``train_cells`` (obs names) of paired counts ``rna``/``atac``; no other cell is read.

        Parameters
        ----------
        rna, atac
            Paired AnnData of raw counts (the same cells in the same order).
        train_cells
            obs names of the training cells.
        n_top_genes
            Highly variable genes kept (scanpy's default flavour on log1p RNA normalised to ``target_sum``); all
            genes when there are not more.

        Returns
        -------
        ButterflyPreprocessing
        """
        import scanpy as sc

        from ...utils.matrix import binary_csr

        train = cell_positions(pd.Index(rna.obs_names.astype(str)), train_cells, "train_cells")
        rna, atac = rna[train], atac[train]
        totals = np.asarray(sp.csr_matrix(rna.X).sum(axis=1)).ravel()
        target_sum = float(np.median(totals))
        if n_top_genes < rna.n_vars:
            logged = ad.AnnData(cls._log_normalized(rna, target_sum), var=pd.DataFrame(index=rna.var_names.astype(str)))
            hvg = sc.pp.highly_variable_genes(logged, n_top_genes=n_top_genes, inplace=False)
            genes = np.flatnonzero(hvg["highly_variable"].to_numpy())
        else:
            genes = np.arange(rna.n_vars)
        binary = binary_csr(atac)
        df = np.asarray(binary.sum(axis=0)).ravel()
        cres = np.flatnonzero(df > 0)
        idf = np.log1p(atac.n_obs / df[cres]).astype(np.float64)
        unscaled = cls._tfidf(binary[:, cres], idf)
        scale = float(unscaled.max()) if unscaled.nnz else 1.0
        mean_open = float(binary[:, cres].sum(axis=1).mean())
        return cls(target_sum, genes, cres, idf, scale, mean_open)

    @staticmethod
    def _tfidf(binary: sp.csr_matrix, idf: np.ndarray) -> sp.csr_matrix:
        n_open = np.asarray(binary.sum(axis=1)).ravel()
        inverse = np.divide(1.0, n_open, out=np.zeros_like(n_open, dtype=np.float64), where=n_open > 0)
        return sp.csr_matrix(sp.diags(inverse) @ binary @ sp.diags(idf))

    def transform_rna(self, rna: ad.AnnData) -> sp.csr_matrix:
        """log1p of RNA normalised to ``target_sum``, highly variable genes only (cells x genes, float32).

        Parameters
        ----------
        rna
            Raw counts with the genes of the fitted ``rna`` in the same order (library size over all genes).

        Returns
        -------
        CSR matrix, cells x kept genes.
        """
        return self._log_normalized(rna, self.target_sum)[:, self.genes].tocsr()  # library size over all genes

    def transform_atac(self, atac: ad.AnnData) -> sp.csr_matrix:
        """scButterfly's training targets: max-scaled TF-IDF of the kept CREs, clipped to [0, 1] (cells x CREs).

        ``n_i`` (a cell's open CREs) counts the kept CREs only, as scButterfly counts the features it is given.

        Parameters
        ----------
        atac
            Cells' ATAC (``X > 0`` is open) with the CREs of the fitted ``atac`` in the same order.

        Returns
        -------
        float32 CSR matrix, cells x kept CREs.
        """
        from ...utils.matrix import binary_csr

        scaled = self._tfidf(binary_csr(atac)[:, self.cres], self.idf) / self.scale
        return sp.csr_matrix(scaled.minimum(1.0), dtype=np.float32)

    def to_accessibility(self, targets: np.ndarray) -> np.ndarray:
        """Invert the per-CRE weighting of predicted targets (cells x kept CREs) to accessibility scores in [0, 1].

        A target is ``b[i, j] / n_i * idf_j / scale``; ``q = targets / idf`` estimates ``b / n_i`` up to the constant
        ``scale``, and ``b / n_i`` sums to 1 over each cell's CREs. So each cell's ``q`` is divided by its sum (which
        removes ``scale`` and the test cell's unknown ``n_i``) and multiplied by the training cells' mean number of
        open CREs: ``p = clip(mean_open * q / q.sum(axis=1), 0, 1)``, on average the open-probability scale. Within
        a cell ``p`` ranks CREs like ``targets / idf``, whatever the overall calibration of the outputs.

        Parameters
        ----------
        targets
            Predicted targets, cells x kept CREs (the order of ``cres``).

        Returns
        -------
        float32 array, cells x kept CREs: the scores ``p``.
        """
        q = np.asarray(targets, dtype=np.float64) / self.idf
        total = q.sum(axis=1, keepdims=True)
        scores = np.divide(q * self.mean_open, total, out=np.zeros_like(q), where=total > 0)
        return np.clip(scores, 0.0, 1.0).astype(np.float32)


def base_rate_bias(targets: sp.csr_matrix, *, eps: float = 1e-6) -> np.ndarray:
    """Logit of each column's mean target, the mean clipped to [eps, 1 - eps].

    Parameters
    ----------
    targets
        Training targets, cells x CREs (:meth:`ButterflyPreprocessing.transform_atac`).
    eps
        Clip of the mean, so that the logit stays finite.

    Returns
    -------
    float32 array (CREs,).
    """
    mean = np.clip(np.asarray(targets.mean(axis=0), dtype=np.float64).ravel(), eps, 1 - eps)
    return np.log(mean / (1 - mean)).astype(np.float32)


def _sorted_by_chromosome(atac: ad.AnnData) -> tuple[np.ndarray, list[int]]:
    """Order of ATAC features grouped by chromosome (scButterfly's per-chromosome encoders) and group sizes."""
    chrom = atac.var["chrom"].astype(str).to_numpy()
    start = atac.var["start"].to_numpy()
    order = np.lexsort((start, chrom))
    _, counts = np.unique(chrom[order], return_counts=True)
    return order, counts.tolist()


def run_scbutterfly_rna2atac(rna: ad.AnnData, atac: ad.AnnData, train_cells, test_cells, *, seed: int = 0,
                             pretrain_epochs: int = 100, translator_epochs: int = 200, patience: int = 50,
                             n_top_genes: int = 3000, threads: int = 1, time_budget_s: float | None = None,
                             base_rate: bool = True, timeout_s: float | None = None):
    """Train scButterfly on ``train_cells`` and predict ATAC of ``test_cells`` from their RNA (preprocessing, base-rate
    bias, budget and output scale: docs/external_peers.md).

    Parameters
    ----------
    rna, atac
        Paired AnnData (raw counts, identical ``obs_names``); ``atac.var`` holds ``chrom``/``start``.
    train_cells, test_cells
        obs names. A seeded 20 % of the training cells are scButterfly's validation cells (early stopping).
        Disjoint (``ValueError`` otherwise); the test cells' ATAC is never sent to scButterfly.
    seed
        Draws the validation cells; scButterfly's ``setup_seed`` and ``train_model`` seed.
    pretrain_epochs, translator_epochs, patience
        Epoch limits of the RNA and ATAC pretraining (each) and of the translator, and the early-stopping patience;
        the defaults are scButterfly's (100, 200, 50). Each phase's KL warm-up is scButterfly's 50 epochs, or half
        its epoch limit when that is below 100. A phase that runs to its limit keeps its last weights (as in
        scButterfly); one stopped by patience or by the budget goes back to its best validation checkpoint.
    n_top_genes, threads
        Highly variable genes of the training cells fed to scButterfly (its default 3000; all genes if fewer);
        torch threads of the subprocess.
    time_budget_s
        Wall-clock seconds for training (``None``: the epoch limits only). Training stops at the end of the epoch
        during which the budget runs out, split over the phases in proportion to their epoch limits.
    base_rate
        Initialise the ATAC decoder's output shift to the logit of each CRE's mean training target (default), as
        the other learned methods start from the base rate; ``False`` keeps scButterfly's own initialisation (0).
    timeout_s
        Kill the subprocess after this many seconds (``None``: no limit).

    Returns
    -------
    (AnnData, dict)
        Predicted accessibility scores in [0, 1] (test cells x ``atac.var_names``, same order as ``atac``; CREs
        never open in a training cell are 0) with ``layers["binary"]`` like the baselines, and a dict:
        ``train_s`` (preprocessing + model construction + training), ``predict_s``, ``wall_s`` (the subprocess),
        ``train_loop_s`` (scButterfly's training loops, the part the budget limits), ``time_budget_s``,
        ``epochs_<phase>`` and ``stop_<phase>`` (``"time_budget"``, ``"early_stopping"`` or ``"max_epochs"``) for
        the phases ``rna_pretrain``, ``atac_pretrain``, ``translator``.
    """
    from ..baselines import atac_prediction

    python = scbutterfly_python()
    names = paired_names(python, "scButterfly's environment", "ensure_scbutterfly_env", rna, atac)
    for column in ("chrom", "start"):
        if column not in atac.var:
            raise ValueError(f"atac.var['{column}'] is missing; scButterfly groups CREs by chromosome")
    train_pos = cell_positions(names, train_cells, "train_cells")
    test_pos = cell_positions(names, test_cells, "test_cells")
    if np.intersect1d(train_pos, test_pos).size:
        raise ValueError("train_cells and test_cells overlap; pass disjoint cell sets")
    shuffled = np.random.default_rng(seed).permutation(train_pos)
    n_val = max(1, len(shuffled) // 5)
    val_pos, fit_pos = shuffled[:n_val], shuffled[n_val:]

    t0 = time.time()
    prep = ButterflyPreprocessing.fit(rna, atac, names[train_pos], n_top_genes=int(n_top_genes))
    order, chrom_counts = _sorted_by_chromosome(atac[:, prep.cres])
    targets = prep.transform_atac(atac)[:, order]
    is_test = np.zeros(atac.n_obs, dtype=np.float32)
    is_test[test_pos] = 1.0
    targets = sp.csr_matrix(sp.diags(1.0 - is_test) @ targets, dtype=np.float32)  # test cells' ATAC never sent
    bias = base_rate_bias(targets[fit_pos]) if base_rate else np.zeros(targets.shape[1], dtype=np.float32)
    obs = pd.DataFrame(index=names)  # no labels: scButterfly reads them only for plots and augmentation
    rna_out = ad.AnnData(prep.transform_rna(rna), obs=obs,
                         var=pd.DataFrame(index=rna.var_names[prep.genes].astype(str)))
    atac_out = ad.AnnData(targets, obs=obs.copy(), var=pd.DataFrame(index=atac.var_names[prep.cres[order]].astype(str)))
    preprocess_s = time.time() - t0
    with tempfile.TemporaryDirectory(prefix="scbutterfly_") as work:
        rna_out.write_h5ad(f"{work}/rna.h5ad")
        atac_out.write_h5ad(f"{work}/atac.h5ad")
        np.save(f"{work}/bias.npy", bias)
        json.dump({
            "train_id": [int(i) for i in fit_pos], "validation_id": [int(i) for i in val_pos],
            "test_id": [int(i) for i in test_pos], "chrom_counts": chrom_counts, "seed": int(seed),
            "pretrain_epochs": int(pretrain_epochs), "translator_epochs": int(translator_epochs),
            "patience": int(patience), "time_budget_s": None if time_budget_s is None else float(time_budget_s),
        }, open(f"{work}/config.json", "w"))
        wall_s = run_driver(python, "run_scbutterfly.py", work, threads, timeout_s, "scButterfly")
        r2a_sorted = np.load(f"{work}/r2a.npy")
        timing = json.load(open(f"{work}/timing.json"))
    r2a = np.empty_like(r2a_sorted)
    r2a[:, order] = r2a_sorted
    probs = np.zeros((len(test_pos), atac.n_vars), dtype=np.float32)
    probs[:, prep.cres] = prep.to_accessibility(r2a)
    pred = atac_prediction(probs, atac.obs.iloc[test_pos], atac.var, "scButterfly")
    timing.update(train_s=preprocess_s + timing["train_s"], wall_s=wall_s, time_budget_s=time_budget_s)
    return pred, timing
