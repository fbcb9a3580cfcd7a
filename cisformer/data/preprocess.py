"""QC, subsampling, downsampling, cell-type tokens and cell splits (training / validation / test).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import input_error

if TYPE_CHECKING:
    from anndata import AnnData


# ------------------------------------------------------------------------------------------------ QC and splits
def qc_metrics(rna, atac) -> pd.DataFrame:
    """Per-cell QC: n_genes, n_counts_rna, n_peaks, n_counts_atac (also written into both obs).

    Parameters
    ----------
    rna, atac
        Paired AnnData (same cells, same order).

    Returns
    -------
    DataFrame indexed by ``rna.obs_names`` with those four columns (features with a value > 0; summed values).
    """
    table = pd.DataFrame({
        "n_genes": np.asarray((rna.X > 0).sum(axis=1)).ravel(),
        "n_counts_rna": np.asarray(rna.X.sum(axis=1)).ravel(),
        "n_peaks": np.asarray((atac.X > 0).sum(axis=1)).ravel(),
        "n_counts_atac": np.asarray(atac.X.sum(axis=1)).ravel(),
    }, index=rna.obs_names)
    for adata in (rna, atac):
        for col in table:
            adata.obs[col] = table[col].to_numpy()
    return table


def qc(rna, atac, *, min_cells: int = 10, min_genes: int = 200, max_genes: int = 20_000, min_peaks: int = 500,
       max_peaks: int = 50_000):
    """The paper's QC: features detected in < ``min_cells`` cells out; cells with ``min_genes``-``max_genes`` genes
    and ``min_peaks``-``max_peaks`` open peaks kept (bounds inclusive; features filtered first).

    Parameters
    ----------
    rna, atac
        Paired AnnData (same cells, same order), counts.
    min_cells
        Genes and peaks detected in fewer cells are removed.
    min_genes, max_genes
        Bounds on the genes detected per cell.
    min_peaks, max_peaks
        Bounds on the open peaks (or CREs) per cell.

    Returns
    -------
    ``(rna_filtered, atac_filtered, table)``: filtered copies and a per-cell table (all input cells) with the
    metrics of :func:`qc_metrics` (computed after feature filtering) and a bool ``pass_qc`` column. The metrics are
    also written into ``obs`` of the inputs.
    """
    gene_cells = np.asarray((rna.X > 0).sum(axis=0)).ravel()
    peak_cells = np.asarray((atac.X > 0).sum(axis=0)).ravel()
    rna_f, atac_f = rna[:, gene_cells >= min_cells].copy(), atac[:, peak_cells >= min_cells].copy()
    table = qc_metrics(rna_f, atac_f)
    table["pass_qc"] = table.n_genes.between(min_genes, max_genes) & table.n_peaks.between(min_peaks, max_peaks)
    for adata in (rna, atac):
        for col in table:
            adata.obs[col] = table[col].to_numpy()
    keep = table["pass_qc"].to_numpy()
    return rna_f[keep].copy(), atac_f[keep].copy(), table


QC_RULES = (  # (rule, what it removes, qc() argument, CLI option)
    ("min_cells (genes)", "genes", "min_cells", "--min-cells"),
    ("min_cells (peaks)", "peaks", "min_cells", "--min-cells"),
    ("min_genes", "cells", "min_genes", "--min-genes"),
    ("max_genes", "cells", "max_genes", "--max-genes"),
    ("min_peaks", "cells", "min_peaks", "--min-cres"),
    ("max_peaks", "cells", "max_peaks", "--max-cres"),
)


def qc_report(rna, atac, *, min_cells: int = 10, min_genes: int = 200, max_genes: int = 20_000, min_peaks: int = 500,
              max_peaks: int = 50_000, source="data", check: bool = True) -> pd.DataFrame:
    """What each rule of :func:`qc` removes, in the order :func:`qc` applies them, and each rule alone.

    Parameters
    ----------
    rna, atac
        Paired AnnData (same cells, same order); the thresholds are those of :func:`qc`.
    min_cells, min_genes, max_genes, min_peaks, max_peaks
        As in :func:`qc`.
    source
        Name used in messages.
    check
        Warn (``UserWarning``) when more than half of the cells are removed, naming the rule that removes the most
        and the option that relaxes it; raise :class:`InputError` (with the table) when no cell is left.

    Returns
    -------
    DataFrame, one row per rule: ``rule``, ``removes`` (cells / genes / peaks), ``threshold``, ``option`` (CLI
    option / :func:`qc` argument), ``removed`` (by this rule after the rules above it), ``removed_alone`` (by
    this rule applied alone, features filtered first as in :func:`qc`), ``left`` (after this rule). ``attrs``
    hold ``n_cells``, ``n_cells_left``.
    """
    import warnings

    keep_gene = cells_per_feature(rna).to_numpy() >= min_cells
    keep_peak = cells_per_feature(atac).to_numpy() >= min_cells
    n_genes = np.asarray((rna.X[:, keep_gene] > 0).sum(axis=1)).ravel()
    n_peaks = np.asarray((atac.X[:, keep_peak] > 0).sum(axis=1)).ravel()
    thresholds = {"min_cells": min_cells, "min_genes": min_genes, "max_genes": max_genes, "min_peaks": min_peaks,
                  "max_peaks": max_peaks}
    cell_pass = {"min_genes": n_genes >= min_genes, "max_genes": n_genes <= max_genes,
                 "min_peaks": n_peaks >= min_peaks, "max_peaks": n_peaks <= max_peaks}
    rows, alive = [], np.ones(rna.n_obs, bool)
    for rule, removes, arg, option in QC_RULES:
        if removes == "cells":
            ok = cell_pass[arg]
            removed, alone = int((alive & ~ok).sum()), int((~ok).sum())
            alive &= ok
            left = int(alive.sum())
        else:
            ok = keep_gene if removes == "genes" else keep_peak
            removed = alone = int((~ok).sum())
            left = int(ok.sum())
        rows.append({"rule": rule, "removes": removes, "threshold": thresholds[arg], "option": f"{option} / {arg}",
                     "removed": removed, "removed_alone": alone, "left": left})
    table = pd.DataFrame(rows)
    table.attrs.update(n_cells=int(rna.n_obs), n_cells_left=int(alive.sum()))
    if check:
        cells = table[table.removes == "cells"]
        worst = cells.loc[cells["removed"].idxmax()] if len(cells) else None
        if alive.sum() == 0:
            raise input_error(source, "QC thresholds", f"no cell of {rna.n_obs} passes QC:\n{table.to_string(index=False)}\n",
                         f"relax the rule that removes the most cells ({worst['rule']}: {worst['option']}), "
                         "e.g. for small or sparse data --min-genes 1 --min-cres 1 --min-cells 1")
        if rna.n_obs and alive.sum() < rna.n_obs / 2:
            warnings.warn(f"{source}: QC keeps {int(alive.sum())} of {rna.n_obs} cells; {worst['rule']} "
                          f"(threshold {worst['threshold']}) removes {worst['removed']} "
                          f"({worst['removed_alone']} alone): relax it with {worst['option']}", UserWarning, stacklevel=2)
    return table


def cells_per_feature(adata) -> pd.Series:
    """Number of cells in which each feature is detected (the paper drops features seen in < 10 cells).

    Parameters
    ----------
    adata
        AnnData cells x features.

    Returns
    -------
    Series ``n_cells`` indexed by ``var_names`` (cells with a value > 0).
    """
    return pd.Series(np.asarray((adata.X > 0).sum(axis=0)).ravel(), index=adata.var_names, name="n_cells")


def tfidf_lsi(atac, *, n_components: int = 30, seed: int = 0, drop_first: bool = True) -> np.ndarray:
    """TF-IDF + truncated SVD (LSI) embedding of an ATAC matrix, stored in ``atac.obsm["X_lsi"]`` and returned.

    TF-IDF as in Signac: ``log1p(x / cell_total * n_cells / feature_total * 1e4)``; the first component, which
    tracks sequencing depth, is dropped by default.

    Parameters
    ----------
    atac
        Cells x peaks AnnData (modified: ``obsm["X_lsi"]``).
    n_components
        Components kept (fewer when the matrix is smaller).
    seed
        Seed of the randomised SVD.
    drop_first
        Drop the first (depth) component.

    Returns
    -------
    float32 array cells x ``n_components``, the embedding.
    """
    from sklearn.utils.extmath import randomized_svd

    X = sp.csr_matrix(atac.X, dtype=np.float32)
    cell_total = np.asarray(X.sum(axis=1)).ravel()
    feature_total = np.asarray(X.sum(axis=0)).ravel()
    keep = feature_total > 0
    X = X[:, keep]
    tf = sp.diags(1.0 / np.maximum(cell_total, 1)) @ X
    idf = X.shape[0] / feature_total[keep]
    tfidf = (tf @ sp.diags(idf)).tocsr()
    tfidf.data = np.log1p(tfidf.data * 1e4)
    k = min(n_components + int(drop_first), min(tfidf.shape) - 1)
    u, s, _ = randomized_svd(tfidf, n_components=k, random_state=seed)
    emb = u * s
    if drop_first:
        emb = emb[:, 1:]
    atac.obsm["X_lsi"] = emb.astype(np.float32)
    return atac.obsm["X_lsi"]


def _pick_groups(sizes: pd.Series, n_total: int, low: float, high: float, rng) -> list:
    """Whole groups whose total lies in [low, high] x n_total (closest to the middle when impossible)."""
    target = (low + high) / 2 * n_total
    best, best_gap = [], np.inf
    groups = sizes[sizes > 0]
    for _ in range(200):
        order = rng.permutation(len(groups))
        chosen, total = [], 0
        for i in order:
            size = groups.iloc[i]
            if total + size <= high * n_total:
                chosen.append(groups.index[i])
                total += size
            if total >= low * n_total:
                break
        gap = abs(total - target) if total >= low * n_total else abs(total - target) + n_total
        if gap < best_gap and chosen:
            best, best_gap = chosen, gap
        if low * n_total <= total <= high * n_total:
            return chosen
    if not best:  # every group exceeds the upper bound: hold out the smallest one
        best = [groups.idxmin()]
    return best


def subsample(rna, atac, n_cells: int | None = None, n_cres: int | None = None, n_genes: int | None = None,
              seed: int = 0, genes_with_coords: bool = False, select_on=None):
    """A seeded, smaller copy of a paired dataset, as the benchmark notebooks' profiles size it.

    Parameters
    ----------
    rna, atac
        Paired AnnData (same cells in the same order), counts.
    n_cells
        Cells drawn at random without replacement (``None``: all).
    n_cres
        The most frequently open CREs kept, in their original order (``None``: all).
    n_genes
        The genes of highest variance of log-normalised expression kept, in their original order (``None``: all).
    seed
        Seeds the cell draw: the same seed and ``n_cells`` give the same cells whatever ``n_cres`` and ``n_genes``.
    genes_with_coords
        Keep only genes with genomic coordinates (``var["chrom"]`` non-empty) before choosing ``n_genes``; needed
        by methods that read the CREs around a gene.
    select_on
        obs names of the cells whose data choose the CREs and genes (pass the training and validation cells of a
        benchmark, so that nothing about the test cells decides which features are scored); ``None``: all cells.

    Returns
    -------
    (rna, atac)
        New AnnData objects.
    """
    if n_cells and rna.n_obs > n_cells:
        keep = np.sort(np.random.default_rng(seed).choice(rna.n_obs, n_cells, replace=False))
        rna, atac = rna[keep], atac[keep]
    rows = slice(None) if select_on is None else rna.obs_names.get_indexer(pd.Index(select_on).astype(str))
    if select_on is not None and (rows < 0).any():
        raise input_error("select_on", "obs_names", f"{int((rows < 0).sum())} names are not cells of the data",
                     "pass obs names of cells kept by n_cells (e.g. the training cells of a split of these cells)")
    if n_cres and atac.n_vars > n_cres:
        freq = np.asarray((atac.X[rows] > 0).mean(axis=0)).ravel()
        atac = atac[:, np.sort(np.argsort(-freq, kind="stable")[:n_cres])]
    if genes_with_coords and "chrom" in rna.var:
        rna = rna[:, rna.var["chrom"].astype(str).str.len().to_numpy() > 0]
    if n_genes and rna.n_vars > n_genes:
        variance = true_expression(rna[rows]).var(axis=0)
        rna = rna[:, np.sort(np.argsort(-variance, kind="stable")[:n_genes])]
    return rna.copy(), atac.copy()


def downsample_atac(atac, keep: float, seed: int = 0):
    """A copy of ``atac`` with each count (fragment) kept with probability ``keep`` (binomial thinning), as if
    the cells had been sequenced less deeply; entries thinned to zero are removed. ``keep=1`` returns a copy.

    Parameters
    ----------
    atac
        Cells x peaks AnnData of integer counts.
    keep
        Probability of keeping each count, in (0, 1].
    seed
        Seed of the thinning.

    Returns
    -------
    AnnData: a copy of ``atac`` with ``X`` CSR float32 thinned counts.
    """
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    X = sp.csr_matrix(atac.X, dtype=np.float32, copy=True)
    if keep < 1:
        if X.nnz and not np.allclose(X.data, np.round(X.data)):
            raise input_error("atac", "X", "non-integer values", "downsampling thins counts: pass raw counts")
        X.data = np.random.default_rng(seed).binomial(X.data.astype(np.int64), keep).astype(np.float32)
        X.eliminate_zeros()
    out = atac.copy()
    out.X = X
    return out


def label_tokens(obs: pd.DataFrame, key: str = "cell_type"):
    """An RNA-like AnnData whose only expressed "gene" in each cell is its label ``obs[key]`` (count 1): the
    oracle input that hands a model the answer (the cell type) and nothing else. A model trained on it that
    does not reach the cell-type mean's accuracy cannot learn CRE x cell-type structure at all.

    Parameters
    ----------
    obs
        Cell table holding the labels (e.g. ``rna.obs``).
    key
        Label column.

    Returns
    -------
    AnnData cells x labels, ``X`` CSR float32 one-hot, ``obs`` a copy of ``obs``, var names ``label:<label>``
    (sorted).
    """
    import anndata as ad

    if key not in obs:
        raise input_error("obs", key, "column missing", f"add obs['{key}'] with the labels")
    labels = obs[key].astype(str).to_numpy()
    names = np.unique(labels)
    X = sp.csr_matrix((np.ones(len(labels), dtype=np.float32), (np.arange(len(labels)), np.searchsorted(names, labels))),
                      shape=(len(labels), len(names)))
    return ad.AnnData(X, obs=obs.copy(), var=pd.DataFrame(index=[f"label:{n}" for n in names]))


def split_cells(obs: pd.DataFrame, *, by: str = "random", test_fraction: float = 0.2, seed: int = 0, held_out=None,
                val_fraction: float = 0.1, column: str | None = None):
    """Split cells into (train, val, test) name arrays with no overlap.

    Parameters
    ----------
    obs
        Cell table (e.g. ``rna.obs``), indexed by cell name.
    by
        ``"random"``: cells at random (``test_fraction`` in test). ``"cell_type"``: whole cell types held out
        (``held_out`` types, or seeded types totalling ~15-20% of cells). ``"batch"``: whole batches held out
        (``held_out`` batches, or seeded batches totalling about ``test_fraction``). ``"predefined"``:
        ``obs["split"]`` ("test" -> test, the rest -> train / val).
    test_fraction
        Fraction of the cells in test (``"random"``; target of the seeded ``"batch"`` hold-out).
    seed
        Seed of the draws.
    held_out
        Cell types or batches to place in the test set.
    val_fraction
        Fraction of the non-test cells drawn at random for validation.
    column
        obs column for ``cell_type`` / ``batch`` splits (default: the mode's name).

    Returns
    -------
    (train, val, test): arrays of cell names (str), disjoint, together all cells.
    """
    rng = np.random.default_rng(seed)
    names = np.asarray(obs.index.astype(str))
    n = len(names)
    if by == "random":
        perm = rng.permutation(n)
        is_test = np.zeros(n, bool)
        is_test[perm[: int(round(test_fraction * n))]] = True
    elif by in ("cell_type", "batch"):
        col = column or by
        if col not in obs:
            raise input_error("obs", col, "column missing", f"add obs['{col}'] or choose another split")
        labels = obs[col].astype(str).to_numpy()
        if held_out is None:
            sizes = pd.Series(labels).value_counts().sort_index()
            low, high = (0.15, 0.20) if by == "cell_type" else (test_fraction * 0.75, test_fraction * 1.25)
            held_out = _pick_groups(sizes, n, low, high, rng)
        held_out = [str(h) for h in np.atleast_1d(held_out)]
        unknown = set(held_out) - set(labels)
        if unknown:
            raise input_error("obs", col, f"held_out values {sorted(unknown)} not found", f"choose from {sorted(set(labels))}")
        is_test = np.isin(labels, held_out)
    elif by == "predefined":
        if "split" not in obs:
            raise input_error("obs", "split", "column missing", "add obs['split'] with 'train'/'test' or use by='random'")
        is_test = obs["split"].astype(str).to_numpy() == "test"
    else:
        raise ValueError(f"by={by!r}: use 'random', 'cell_type', 'batch' or 'predefined'")
    rest = np.flatnonzero(~is_test)
    rest = rest[rng.permutation(len(rest))]
    n_val = int(round(val_fraction * len(rest)))
    val = np.sort(rest[:n_val])
    train = np.sort(rest[n_val:])
    return names[train], names[val], names[np.flatnonzero(is_test)]


# ------------------------------------------------------------------------------------------------- expression scale
def log_normalized(counts, *, target_sum: float = 1e4) -> sp.csr_matrix:
    """Counts -> log1p(counts per ``target_sum`` in the cell), sparse float32 (zeros stay zeros).

    Parameters
    ----------
    counts
        Cells x genes matrix, dense or sparse.
    target_sum
        Total each cell is scaled to before log1p.

    Returns
    -------
    CSR float32 matrix of the same shape.
    """
    x = sp.csr_matrix(counts, dtype=np.float32, copy=True)
    totals = np.asarray(x.sum(axis=1)).ravel()
    x = sp.csr_matrix(sp.diags((target_sum / np.maximum(totals, 1e-12)).astype(np.float32)) @ x)
    x.data = np.log1p(x.data)
    return x


def log_expression(adata: AnnData) -> sp.csr_matrix:
    """Expression on the log1p scale, sparse: counts are normalised to 10,000 per cell (over the genes of
    ``adata``) and log1p-transformed; already-normalised data (``uns["counts"] is False``) are log1p-transformed
    only if not already logged. The one scale every ATAC -> RNA method predicts and every metric compares on
    (Cisformer's expression bins are defined on it).

    Parameters
    ----------
    adata
        Cells x genes AnnData; ``uns["counts"]`` (default True) says whether ``X`` holds counts.

    Returns
    -------
    CSR float32 matrix cells x genes.
    """
    if adata.uns.get("counts", True):
        return log_normalized(adata.X)
    x = sp.csr_matrix(adata.X, dtype=np.float32, copy=True)
    if x.nnz and x.data.max() >= 30:
        x.data = np.log1p(x.data)
    return x


def true_expression(true: AnnData) -> np.ndarray:
    """Measured expression on the log1p scale (:func:`log_expression`), dense.

    Parameters
    ----------
    true
        Cells x genes AnnData, as in :func:`log_expression`.

    Returns
    -------
    Dense array cells x genes (float32).
    """
    return log_expression(true).toarray()
