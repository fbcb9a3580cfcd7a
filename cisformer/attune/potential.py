"""Chromatin potential: where accessibility says a cell's expression is heading (Attune; SHARE-seq).

Accessibility of a gene's CREs often changes before its expression (Ma et al., Cell 2020, SHARE-seq), so expression
predicted from a cell's ATAC (an ATAC -> RNA model) can run ahead of the expression measured in the same cell.
Three read-outs of that lag, all from a prediction and the measurement of the same (held-out) cells:

Gene level (Attune, GigaScience 2025)
    :func:`gene_potential`: per gene, the min-max-scaled predicted minus the min-max-scaled measured expression
    (the reference's "residual"); :func:`pseudotime` (diffusion pseudotime, scanpy) orders the cells,
    :func:`smooth_along` draws a loess curve of each gene's residual along it (the reference smooths with R's
    ``geom_smooth(span = 0.3)``) and :func:`rank_by_variability` ranks genes by the standard deviation of that
    curve (as the reference does).
Cell level (SHARE-seq's chromatin potential, not in Attune's code)
    :func:`cell_potential`: for each cell, the k nearest *measured* expression profiles to its *predicted*
    profile; the arrow from the cell's position on a 2-D embedding (UMAP) to the mean position of those
    neighbours says which cells its chromatin resembles.
Transmitted states (Attune)
    :func:`transmitted_states`: per cell, 0.5 + 0.5 cos(RNA embedding, ATAC embedding) of an integration model,
    and :func:`similarity_matrix`, the same similarity between every ATAC and every RNA cell.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from ..metrics import aligned_matrices, exact_neighbors
from ..utils.matrix import dense


def _paired(pred: AnnData, measured: AnnData) -> tuple[np.ndarray, np.ndarray]:
    """Dense float64 matrices of ``pred`` and ``measured`` on the same cells (checked) and ``pred``'s genes."""
    pred_x, measured_x = (x.astype(np.float64) for x in aligned_matrices(pred, measured))
    if measured_x.size and np.all(measured_x == np.round(measured_x)) and measured_x.max() >= 30:
        raise ValueError("measured looks like raw counts; pass log1p CP10k (cisformer.data.log_expression)")
    return pred_x, measured_x


def _min_max(x: np.ndarray) -> np.ndarray:
    """Each column scaled to [0, 1] over the rows; a constant column becomes 0."""
    low, span = x.min(axis=0), np.ptp(x, axis=0)
    return np.divide(x - low, span, out=np.zeros_like(x), where=span > 0)


# ----------------------------------------------------------------------------------------------- gene level
def gene_potential(pred: AnnData, measured: AnnData, *, cells=None) -> AnnData:
    """Gene-level chromatin potential: predicted minus measured expression, each min-max scaled per gene.

    Parameters
    ----------
    pred
        Expression predicted from accessibility, cells x genes, on the log1p CP10k scale (an ATAC -> RNA model's
        output).
    measured
        Measured expression of the same cells (same ``obs_names``, same order) on the log1p CP10k scale
        (``cisformer.data.log_expression``); its genes are matched to ``pred``'s by name.
    cells
        Obs names (or a boolean mask) of the cells to use, e.g. the held-out cells; all cells when None. The
        min-max scaling runs over these cells only.

    Returns
    -------
    AnnData
        cells x genes, ``X`` = residual in [-1, 1] (float32): positive where the chromatin predicts more
        expression than is measured (the gene is about to go up, or is primed), negative the other way; a gene
        constant in the cells scales to 0. ``layers["predicted_scaled"]`` and ``layers["measured_scaled"]`` hold
        the two scaled matrices; ``obs`` is ``measured``'s, ``var`` is ``pred``'s. This is the residual of the
        Attune reference (its SHARE-seq analysis).
    """
    if cells is not None:
        pred, measured = pred[cells], measured[cells]
    y_pred, y_true = _paired(pred, measured)
    scaled_pred, scaled_true = _min_max(y_pred), _min_max(y_true)
    out = AnnData((scaled_pred - scaled_true).astype(np.float32), obs=measured.obs.copy(), var=pred.var.copy())
    out.layers["predicted_scaled"] = scaled_pred.astype(np.float32)
    out.layers["measured_scaled"] = scaled_true.astype(np.float32)
    return out


def pseudotime(data, root, *, use_rep: str | None = None, n_neighbors: int = 15, n_dcs: int = 10,
               seed: int = 0) -> np.ndarray:
    """Diffusion pseudotime (Haghverdi et al., Nat Methods 2016; ``scanpy.tl.dpt``) on a given representation.

    Parameters
    ----------
    data
        An embedding [n, d] (e.g. an integration model's RNA or joint embedding, or PCA), or an AnnData whose
        ``obsm[use_rep]`` holds one.
    root
        The root cell: its position (int) or obs name (str); or a boolean mask [n] of candidate cells (e.g. the
        cells of the progenitor type), of which the one farthest, in diffusion space, from the mean of the other
        cells is taken (an extreme cell of the candidate group, the usual choice of a start).
    use_rep
        ``obsm`` key when ``data`` is an AnnData.
    n_neighbors, n_dcs
        kNN graph size and number of diffusion components of the distance. The graph is an exact k-d tree kNN
        search (independent of the thread count) weighted by the Gaussian kernel with per-cell widths of
        Haghverdi et al. (scanpy's ``method="gauss"``), the kernel DPT was defined with; scanpy's default UMAP
        weights would also cost ~11 s of numba compilation per process.
    seed
        Seed of scanpy's eigen-solver start vector.

    Returns
    -------
    ndarray [n]
        Pseudotime in [0, 1] (NaN for cells not connected to the root).
    """
    import scanpy as sc
    from sklearn.neighbors import KNeighborsTransformer

    if isinstance(data, AnnData):
        if use_rep is None:
            raise ValueError("give use_rep, the obsm key of the representation to order the cells on")
        names, x = data.obs_names, np.asarray(data.obsm[use_rep], dtype=np.float64)
    else:
        x = np.asarray(data, dtype=np.float64)
        names = pd.Index([str(i) for i in range(x.shape[0])])
    work = AnnData(np.zeros((x.shape[0], 1), dtype=np.float32), obs=pd.DataFrame(index=names.astype(str)))
    work.obsm["X_rep"] = x
    transformer = KNeighborsTransformer(n_neighbors=min(n_neighbors, x.shape[0] - 1), mode="distance",
                                       algorithm="kd_tree")
    sc.pp.neighbors(work, use_rep="X_rep", transformer=transformer, method="gauss", random_state=seed)
    sc.tl.diffmap(work, n_comps=max(n_dcs, 2) + 1, random_state=seed)
    if isinstance(root, str):
        root_index = int(work.obs_names.get_loc(root))
    elif np.ndim(root) == 0:
        root_index = int(root)
    else:
        candidates = np.asarray(root, dtype=bool)
        if not candidates.any() or candidates.all():
            raise ValueError("the root mask must select some cells but not all")
        dcs = work.obsm["X_diffmap"][:, 1:n_dcs + 1]                          # the first component is trivial
        distance = np.linalg.norm(dcs - dcs[~candidates].mean(axis=0), axis=1)
        root_index = int(np.flatnonzero(candidates)[np.argmax(distance[candidates])])
    work.uns["iroot"] = root_index
    sc.tl.dpt(work, n_dcs=n_dcs)
    time = work.obs["dpt_pseudotime"].to_numpy(dtype=np.float64)
    return np.where(np.isfinite(time), time, np.nan)


def smooth_along(pseudotime, values, *, frac: float = 0.3, n_points: int = 50) -> pd.DataFrame:
    """Loess curve of every column of ``values`` along ``pseudotime`` (Cleveland 1979; R's ``loess`` as used by
    ``geom_smooth`` in the Attune reference: local quadratic fit, tricube weights over the ``frac`` x n nearest
    cells, no robustness iterations), evaluated on ``n_points`` evenly spaced pseudotimes. All genes are fitted
    at once (the weights depend only on the pseudotime).

    Parameters
    ----------
    pseudotime
        [n] cell pseudotimes; cells with NaN are dropped.
    values
        [n, g] ndarray, DataFrame (columns = genes) or AnnData (``X``, genes = ``var_names``), e.g. the output of
        :func:`gene_potential`.
    frac
        Share of the cells in each local fit (R's ``span``; default 0.3, at least 3 cells).
    n_points
        Number of evenly spaced pseudotimes, from the smallest to the largest (default 50).

    Returns
    -------
    DataFrame
        ``n_points`` x genes, index = the pseudotime grid (name ``pseudotime``).
    """
    if isinstance(values, AnnData):
        genes, y = values.var_names, dense(values.X, np.float64)
    elif isinstance(values, pd.DataFrame):
        genes, y = values.columns, values.to_numpy(dtype=np.float64)
    else:
        y = np.asarray(values, dtype=np.float64)
        genes = pd.RangeIndex(y.shape[1])
    t = np.asarray(pseudotime, dtype=np.float64)
    keep = np.isfinite(t)
    t, y = t[keep], y[keep]
    n = len(t)
    q = min(max(int(np.floor(frac * n)), 3), n)                                # neighbourhood size
    grid = np.linspace(t.min(), t.max(), n_points)
    curves = np.empty((n_points, y.shape[1]))
    for i, point in enumerate(grid):
        offset = t - point
        distance = np.abs(offset)
        h = max(np.partition(distance, q - 1)[q - 1], 1e-12)
        w = np.clip(1 - (distance / h) ** 3, 0, None) ** 3                      # tricube
        u = offset / h
        design = np.stack([np.ones(n), u, u * u], axis=1)                      # [n, 3] local quadratic
        a = design.T @ (design * w[:, None])
        b = design.T @ (y * w[:, None])                                        # [3, g]
        curves[i] = np.linalg.lstsq(a, b, rcond=None)[0][0]
    return pd.DataFrame(curves, index=pd.Index(grid, name="pseudotime"), columns=genes)


def rank_by_variability(curves: pd.DataFrame) -> pd.Series:
    """Genes ranked by the standard deviation of their smoothed curve (:func:`smooth_along`), largest first, as
    the Attune reference ranks residual curves; the Series is named ``curve_sd``.

    Parameters
    ----------
    curves
        Pseudotime grid x genes, the output of :func:`smooth_along`.

    Returns
    -------
    Series
        index = genes, values = the sample standard deviation (ddof 1) of each curve, sorted descending.
    """
    return curves.std(axis=0, ddof=1).sort_values(ascending=False, kind="stable").rename("curve_sd")


# ----------------------------------------------------------------------------------------------- cell level
def cell_potential(pred: AnnData, measured: AnnData, embedding, *, n_neighbors: int = 10,
                   n_comps: int = 30) -> pd.DataFrame:
    """Cell-level chromatin potential (SHARE-seq, Ma et al. 2020): arrows from each cell towards the cells whose
    measured expression its chromatin predicts.

    The measured matrix is standardised per gene (its mean and sd). The predicted matrix is standardised with its
    *own* sd, as SHARE-seq z-scores each modality separately, but keeps the offset of its mean from the measured
    mean (in measured sd units), so a prediction that runs ahead along a trajectory stays ahead: a regression's
    predictions are shrunk towards each gene's mean (SNARE-seq: predicted sd a fraction of the measured), and
    with one shared transform every shrunk profile's nearest measured profiles were average cells, so every arrow
    pointed to the middle of the embedding. Both are projected on the measured profiles' first ``n_comps``
    principal components, and each cell's predicted profile looks up its ``n_neighbors`` nearest measured profiles
    (exact search, the cell itself included). The arrow goes from the cell's embedding position to the mean
    position of those neighbours. SHARE-seq first smooths both matrices over each cell's kNN; that is left to the
    caller.

    Parameters
    ----------
    pred, measured
        Predicted (from ATAC) and measured expression of the same cells, log1p CP10k (as :func:`gene_potential`).
    embedding
        [n, 2] positions of the cells (e.g. a UMAP), same order.
    n_neighbors
        Measured profiles each predicted profile looks up (default 10; at most the number of cells).
    n_comps
        Principal components of the measured profiles (default 30; fewer on small matrices).

    Returns
    -------
    DataFrame
        index = cells; ``x``, ``y`` (start), ``dx``, ``dy`` (arrow), ``length``.
    """
    from sklearn.decomposition import PCA

    y_pred, y_true = _paired(pred, measured)
    position = np.asarray(embedding, dtype=np.float64)
    if position.shape != (pred.n_obs, 2):
        raise ValueError(f"embedding must be [n_cells, 2], got {position.shape}")
    mean, sd = y_true.mean(axis=0), y_true.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    pred_mean, pred_sd = y_pred.mean(axis=0), y_pred.std(axis=0)
    pred_sd = np.where(pred_sd > 0, pred_sd, 1.0)
    z_true = (y_true - mean) / sd
    z_pred = (y_pred - pred_mean) / pred_sd + (pred_mean - mean) / sd
    pca = PCA(n_components=max(1, min(n_comps, min(z_true.shape) - 1)), svd_solver="full").fit(z_true)
    idx = exact_neighbors(pca.transform(z_true), min(n_neighbors, pred.n_obs)).kneighbors(
        pca.transform(z_pred), return_distance=False)                          # [n, k]
    arrow = position[idx].mean(axis=1) - position
    return pd.DataFrame({"x": position[:, 0], "y": position[:, 1], "dx": arrow[:, 0], "dy": arrow[:, 1],
                         "length": np.linalg.norm(arrow, axis=1)}, index=pred.obs_names.copy())


# ----------------------------------------------------------------------------------------------- transmitted states
def _unit_rows(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def transmitted_states(x_rna, x_atac) -> np.ndarray:
    """Per cell, 0.5 + 0.5 cos(RNA embedding, ATAC embedding) (Attune's "transmitted state"): 1 where the two
    modalities of a cell sit at the same point of the shared space, 0.5 orthogonal, 0 opposite.

    Parameters
    ----------
    x_rna, x_atac
        [n, d] RNA and ATAC embeddings of the same cells, same order (e.g. :func:`cisformer.attune.alignment.embed`).

    Returns
    -------
    ndarray [n]
        Float64 values in [0, 1].
    """
    return 0.5 + 0.5 * np.sum(_unit_rows(x_rna) * _unit_rows(x_atac), axis=1)


def similarity_matrix(x_atac, x_rna, order=None) -> np.ndarray:
    """[n, n] similarity 0.5 + 0.5 cos between every ATAC cell (rows) and every RNA cell (columns), both in the
    order ``order`` (positions; the given order when None), e.g. ``np.lexsort((latent_time, cell_type))`` to sort
    by cell type, then by latent time within a type, as Attune's figure. A good alignment has a bright
    diagonal (band).

    Parameters
    ----------
    x_atac, x_rna
        [n, d] ATAC and RNA embeddings of the same cells, same order.
    order
        Positions (e.g. a permutation of ``range(n)``) applied to both; None keeps the given order.

    Returns
    -------
    ndarray [n, n]
        Float64, rows = ATAC cells, columns = RNA cells, values in [0, 1].
    """
    a, r = _unit_rows(x_atac), _unit_rows(x_rna)
    if order is not None:
        order = np.asarray(order)
        a, r = a[order], r[order]
    return 0.5 + 0.5 * a @ r.T
