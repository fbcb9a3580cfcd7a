"""Joint RNA / ATAC embeddings of paired cells (Attune's benchmark): :func:`foscttm` and, on the joint set of both
modalities, :func:`integration_scores` (scGLUE / scIB definitions, exact kNN, deterministic; checked against
naive re-computations of scGLUE's formulas on SNARE-seq, equal to 1e-15) and :func:`integration_overall`
(Attune's 0.6 bio-conservation + 0.4 omics-mixing score, min-max scaled across the methods of a data set).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn import metrics as skm

from .clustering import exact_neighbors

# ----------------------------------------------------------------------------------------------- integration
# Joint-embedding metrics of paired RNA / ATAC (Attune's benchmark, ../shared/ATTUNE.md "Analyses"). Definitions:
# scGLUE (Cao & Gao, Nat Biotechnol 2022, ``scglue.metrics``) for FOSCTTM, mean average precision, neighbour
# conservation and the Seurat alignment score; scIB (Luecken et al., Nat Methods 2022) for the cell-type and
# batch (here: omics layer) silhouettes and graph connectivity. Every metric is computed on the *joint set*: the
# RNA embedding of the cells stacked on the ATAC embedding of the same cells, modality as the batch label.
INTEGRATION_BIO = ("map", "celltype_silhouette", "neighbor_conservation")
INTEGRATION_MIXING = ("seurat_alignment_score", "omics_silhouette", "graph_connectivity")
INTEGRATION_METRICS = ("foscttm",) + INTEGRATION_BIO + INTEGRATION_MIXING


def foscttm(x_rna: np.ndarray, x_atac: np.ndarray, *, chunk_size: int = 512) -> float:
    """Fraction of samples closer than the true match (FOSCTTM; scGLUE, Cao & Gao 2022), lower is better.

    For RNA cell i, the fraction of the n ATAC cells strictly closer (Euclidean) to it than its own ATAC profile;
    likewise for each ATAC cell among the RNA cells. 0 = every cell's partner is its nearest cross-modal
    neighbour, about 0.5 = random embeddings.

    Exact and independent of the thread count: squared distances come from the fast BLAS expansion
    |x|^2 - 2xy + |y|^2 (float64), and every pair whose difference from the partner's distance is within that
    expansion's rounding bound (1e-9 x (|x|^2 + |y|^2), the partner itself included) is recomputed exactly as
    sum((x - y)^2), the formula of the partner's own distance. Blocks of ``chunk_size`` rows: memory
    O(chunk_size x n), a few 40 MB blocks for 10,000 x 10,000 cells (about 8 s for 128-d on one core). Equal to
    scGLUE's ``scglue.metrics.foscttm`` (full distance matrix) to 1e-15 on SNARE-seq test cells.

    Parameters
    ----------
    x_rna, x_atac
        [n, d] embeddings of the two modalities of the same n cells, in the same order (else ``ValueError``).
    chunk_size
        Rows per block of the distance computation (default 512); changes memory and speed, not the result.

    Returns
    -------
    float
        The mean over the 2n fractions (the mean of the two directions), in [0, 1].
    """
    x = np.asarray(x_rna, dtype=np.float64)
    y = np.asarray(x_atac, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"x_rna {x.shape} and x_atac {y.shape} must be the same cells in the same order")
    n = x.shape[0]
    true_d = ((x - y) ** 2).sum(axis=1)                                   # [n] squared distance to the partner
    sq_x, sq_y = (x * x).sum(axis=1), (y * y).sum(axis=1)
    closer_rna = np.zeros(n)                                               # per RNA cell: ATAC cells closer
    closer_atac = np.zeros(n)                                              # per ATAC cell: RNA cells closer
    for start in range(0, n, chunk_size):
        rows = np.arange(start, min(start + chunk_size, n))
        approx = sq_x[rows, None] - 2.0 * (x[rows] @ y.T) + sq_y[None, :]   # [chunk, n]
        tol = 1e-9 * (sq_x[rows, None] + sq_y[None, :])
        for reference, counts in ((true_d[rows, None], "rna"), (true_d[None, :], "atac")):
            diff = approx - reference
            closer = diff < -tol
            unsure_r, unsure_c = np.nonzero(np.abs(diff) <= tol)
            exact = ((x[rows[unsure_r]] - y[unsure_c]) ** 2).sum(axis=1)
            ref = true_d[rows[unsure_r]] if counts == "rna" else true_d[unsure_c]
            closer[unsure_r, unsure_c] = exact < ref
            if counts == "rna":
                closer_rna[rows] = closer.sum(axis=1)
            else:
                closer_atac += closer.sum(axis=0)
    return float((closer_rna.mean() + closer_atac.mean()) / (2 * n))


def _neighbors_excluding_self(x: np.ndarray, k: int) -> np.ndarray:
    """[n, k] indices of each row's k nearest other rows (exact k-d tree, :func:`exact_neighbors`), nearest first.

    The row itself is removed by index, not by assuming it comes first: paired embeddings can hold exact
    duplicates (a cell's two modalities at distance 0), and then which of the tied rows is listed first is
    arbitrary."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    k = min(k, n - 1)
    idx = exact_neighbors(x, k + 1).kneighbors(x, return_distance=False)   # [n, k+1]
    is_self = idx == np.arange(n)[:, None]
    no_self = ~is_self.any(axis=1)
    is_self[no_self, -1] = True                                            # self tied beyond the list: drop the last
    return idx[~is_self].reshape(n, k)


def _neighbor_count(n_cells: int, neighbor_frac: float) -> int:
    return max(int(round(n_cells * neighbor_frac)), 1)


def mean_average_precision(neighbors: np.ndarray, labels: np.ndarray) -> float:
    """Mean average precision of cell-type neighbours (scGLUE's MAP, Cao & Gao 2022).

    For one cell, with ``match_j`` = whether the j-th neighbour has the cell's label, AP = mean over the matching
    positions j of the precision among the first j neighbours (0 when no neighbour matches); MAP is the mean AP over
    cells.

    Parameters
    ----------
    neighbors
        [n, k] integer indices of each cell's k nearest other cells, nearest first.
    labels
        [n] cell-type labels.

    Returns
    -------
    float
        MAP in [0, 1], higher = neighbours more often of the cell's type.
    """
    labels = np.asarray(labels)
    match = labels[neighbors] == labels[:, None]                           # [n, k]
    precision_at = np.cumsum(match, axis=1) / np.arange(1, match.shape[1] + 1)
    hits = match.sum(axis=1)
    ap = np.divide((precision_at * match).sum(axis=1), hits, out=np.zeros(len(hits)), where=hits > 0)
    return float(ap.mean())


def seurat_alignment_score(neighbors: np.ndarray, batch: np.ndarray) -> float:
    """Seurat alignment score (Butler et al. 2018, as defined in scGLUE, Cao & Gao 2022), higher = better mixed.

    scGLUE subsamples the batches to the smallest one's size first; the two modalities of paired cells are equal
    already, so every cell is kept and nothing is random. With ``s`` the mean number of a cell's neighbours from its
    own batch and B batches, score = (k - s) B / (k (B - 1)), capped at 1: 1 when neighbours come from the batches
    as by chance, 0 when only from the cell's own batch.

    Parameters
    ----------
    neighbors
        [n, k] integer indices of each cell's k nearest other cells.
    batch
        [n] batch labels: two or more batches with the same number of cells each (else ``ValueError``).

    Returns
    -------
    float
        Score in [0, 1].
    """
    batch = np.asarray(batch)
    sizes = np.unique(batch, return_counts=True)[1]
    if len(sizes) < 2 or np.any(sizes != sizes[0]):
        raise ValueError("the Seurat alignment score needs two or more batches of equal size (subsample first)")
    k = neighbors.shape[1]
    same = (batch[neighbors] == batch[:, None]).sum(axis=1).mean()
    return float(min((k - same) * len(sizes) / (k * (len(sizes) - 1)), 1.0))


def celltype_silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """Cell-type average silhouette width rescaled to [0, 1], (ASW + 1) / 2 (scIB, Luecken et al. 2022; scGLUE),
    Euclidean; higher = cell types better separated.

    Parameters
    ----------
    x
        [n, d] embedding.
    labels
        [n] cell-type labels (at least two types).

    Returns
    -------
    float
        Rescaled ASW in [0, 1].
    """
    return float((skm.silhouette_score(np.asarray(x, dtype=np.float64), np.asarray(labels)) + 1) / 2)


def batch_silhouette(x: np.ndarray, batch: np.ndarray, labels: np.ndarray) -> float:
    """Batch average silhouette width within cell types (scIB's batch ASW, Luecken et al. 2022), higher = better
    mixed: for each cell type, the silhouette of every cell with the batch as its cluster label, s -> 1 - |s|,
    averaged over the type's cells; then the mean over cell types. Types present in a single batch, or whose every
    cell is its own batch, are left out (as scib-metrics does).

    Parameters
    ----------
    x
        [n, d] embedding.
    batch
        [n] batch labels (e.g. the modality).
    labels
        [n] cell-type labels.

    Returns
    -------
    float
        Score in [0, 1]; NaN when every cell type is left out.
    """
    x, batch, labels = np.asarray(x, dtype=np.float64), np.asarray(batch), np.asarray(labels)
    per_type = []
    for label in np.unique(labels):
        mask = labels == label
        n_batches = len(np.unique(batch[mask]))
        if n_batches == 1 or n_batches == mask.sum():
            continue
        per_type.append(np.mean(1.0 - np.abs(skm.silhouette_samples(x[mask], batch[mask]))))
    return float(np.mean(per_type)) if per_type else float("nan")


def graph_connectivity(neighbors: np.ndarray, labels: np.ndarray) -> float:
    """Graph connectivity (scIB, Luecken et al. 2022): for each cell type, the fraction of its cells in the largest
    connected component of the kNN graph restricted to that type; mean over types. 1 = every type is one
    connected piece. The graph is made undirected (an edge when either cell lists the other, as in scanpy's
    connectivities, which scIB and scGLUE use).

    Parameters
    ----------
    neighbors
        [n, k] integer indices of each cell's k nearest other cells.
    labels
        [n] cell-type labels.

    Returns
    -------
    float
        Mean fraction over cell types, in (0, 1].
    """
    from scipy.sparse.csgraph import connected_components

    labels = np.asarray(labels)
    n, k = neighbors.shape
    graph = sp.csr_matrix((np.ones(n * k), (np.repeat(np.arange(n), k), neighbors.ravel())), shape=(n, n))
    graph = ((graph + graph.T) > 0).tocsr()
    fractions = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        _, component = connected_components(graph[members][:, members], directed=False)
        fractions.append(np.bincount(component).max() / len(members))
    return float(np.mean(fractions))


def neighbor_conservation(x_integrated: np.ndarray, x_own: np.ndarray, k: int) -> float:
    """Neighbour conservation (scGLUE, Cao & Gao 2022) of one modality: for each cell, the Jaccard index of its k
    nearest other cells in the integrated embedding and in the modality's own pre-integration representation
    (e.g. RNA PCA, ATAC LSI), both computed among the cells of that modality; mean over cells.

    Parameters
    ----------
    x_integrated
        [n, d] integrated embedding of the modality's n cells.
    x_own
        [n, d'] the modality's own representation of the same cells, in the same order.
    k
        Number of neighbours compared (at most n - 1).

    Returns
    -------
    float
        Mean Jaccard index in [0, 1], higher = neighbourhoods better kept.
    """
    a = _neighbors_excluding_self(x_integrated, k)
    b = _neighbors_excluding_self(x_own, k)
    shared = np.array([np.intersect1d(row_a, row_b, assume_unique=True).size for row_a, row_b in zip(a, b)])
    return float(np.mean(shared / (2 * a.shape[1] - shared)))


def integration_scores(x_rna: np.ndarray, x_atac: np.ndarray, labels, *, n_neighbors: int = 15,
                       x_rna_own: np.ndarray | None = None, x_atac_own: np.ndarray | None = None,
                       neighbor_frac: float = 0.01) -> dict:
    """Integration metrics of one method on one data set (paired cells), as in Attune's benchmark.

    Parameters
    ----------
    x_rna, x_atac
        [n, d] embeddings of the same n cells in the same order, one per modality (one shared space).
    labels
        [n] cell-type labels.
    n_neighbors
        Size of the kNN graph of :func:`graph_connectivity`, counting the cell itself as scanpy does (its
        default 15: 14 other cells), the graph scIB and scGLUE take from ``scanpy.pp.neighbors``.
    x_rna_own, x_atac_own
        Each modality's own representation before integration (e.g. RNA PCA, ATAC LSI of the same cells), for
        ``neighbor_conservation``; NaN without them.
    neighbor_frac
        k of MAP, SAS and neighbour conservation, as a fraction of the joint set's 2n cells (scGLUE's default 1 %,
        at least 1).

    Returns
    -------
    dict
        ``foscttm`` (:func:`foscttm`, lower is better) and, on the joint set of 2n cells (RNA rows then ATAC rows,
        modality as batch), all higher is better: ``map`` (:func:`mean_average_precision`),
        ``celltype_silhouette``, ``neighbor_conservation`` (mean of the two modalities),
        ``seurat_alignment_score``, ``omics_silhouette`` (:func:`batch_silhouette` with modality as batch),
        ``graph_connectivity``; ``n_cells`` (n) and ``k`` (the neighbour count of MAP / SAS / conservation).
        In the joint set a cell's other modality is one of its candidate neighbours and always of its type, so a
        close alignment also raises MAP (as in scGLUE's evaluation of paired data).
    """
    x_rna, x_atac = np.asarray(x_rna, dtype=np.float64), np.asarray(x_atac, dtype=np.float64)
    labels = np.asarray(labels).astype(str)
    n = x_rna.shape[0]
    if x_atac.shape != x_rna.shape or len(labels) != n:
        raise ValueError("x_rna, x_atac and labels must describe the same cells in the same order")
    joint = np.vstack([x_rna, x_atac])                                     # [2n, d]
    joint_labels = np.concatenate([labels, labels])
    modality = np.repeat(np.array(["RNA", "ATAC"]), n)
    k = _neighbor_count(2 * n, neighbor_frac)
    neighbors = _neighbors_excluding_self(joint, max(k, n_neighbors - 1))  # one search, nearest first
    if x_rna_own is not None and x_atac_own is not None:
        conservation = float(np.mean([neighbor_conservation(x_rna, x_rna_own, k),
                                      neighbor_conservation(x_atac, x_atac_own, k)]))
    else:
        conservation = float("nan")
    return {
        "foscttm": foscttm(x_rna, x_atac),
        "map": mean_average_precision(neighbors[:, :k], joint_labels),
        "celltype_silhouette": celltype_silhouette(joint, joint_labels),
        "neighbor_conservation": conservation,
        "seurat_alignment_score": seurat_alignment_score(neighbors[:, :k], modality),
        "omics_silhouette": batch_silhouette(joint, modality, joint_labels),
        "graph_connectivity": graph_connectivity(neighbors[:, :n_neighbors - 1], joint_labels),
        "n_cells": n,
        "k": k,
    }


def integration_overall(table: pd.DataFrame, *, dataset_col: str = "dataset") -> pd.DataFrame:
    """Add Attune's summary scores to a table of :func:`integration_scores` rows (one row per method, seed, ...).

    Within each data set (``dataset_col``), every metric of :data:`INTEGRATION_BIO` and
    :data:`INTEGRATION_MIXING` is min-max scaled across the table's rows of that data set (so 1 = best row,
    0 = worst; a metric equal in every row, or missing, is left out of the means). Then, as in the Attune reference
    (and scIB's overall score): ``bio_conservation`` = mean of scaled MAP, cell-type silhouette and neighbour
    conservation; ``omics_mixing`` = mean of scaled Seurat alignment score, omics silhouette and graph
    connectivity; ``overall`` = 0.6 bio + 0.4 mixing. The same means of the unscaled metrics are added as
    ``bio_conservation_raw``, ``omics_mixing_raw`` and ``overall_raw`` (comparable across data sets and tables,
    which the scaled ones are not). FOSCTTM enters neither.

    Parameters
    ----------
    table
        One row per method (seed, ...) with the metric columns of :func:`integration_scores` and ``dataset_col``.
    dataset_col
        Column naming the data set (default ``"dataset"``); scaling is done within each data set.

    Returns
    -------
    DataFrame
        A copy of ``table`` with the six columns added (NaN where no metric could be averaged).
    """
    out = table.copy()
    scaled = pd.DataFrame(index=out.index, columns=list(INTEGRATION_BIO + INTEGRATION_MIXING), dtype=float)
    for _, rows in out.groupby(dataset_col, sort=False):
        for metric in scaled.columns.intersection(rows.columns):
            values = rows[metric].astype(float)
            span = values.max() - values.min()
            if np.isfinite(span) and span > 0:
                scaled.loc[rows.index, metric] = (values - values.min()) / span
    raw = out.reindex(columns=scaled.columns).astype(float)                 # a metric not in the table: NaN
    for suffix, source in (("", scaled), ("_raw", raw)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)                 # all-NaN rows give NaN
            bio = np.nanmean(source[list(INTEGRATION_BIO)].to_numpy(dtype=float), axis=1)
            mixing = np.nanmean(source[list(INTEGRATION_MIXING)].to_numpy(dtype=float), axis=1)
        out[f"bio_conservation{suffix}"] = bio
        out[f"omics_mixing{suffix}"] = mixing
        out[f"overall{suffix}"] = 0.6 * bio + 0.4 * mixing
    return out
