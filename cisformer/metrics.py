"""Benchmark metrics, one code path for every method (Fig 2, S2).

Every function takes AnnData (``pred``: predicted, ``true``: measured, same cells in the same order and, for
per-feature metrics, the same features) and returns a tidy ``pandas.DataFrame`` with columns ``metric`` and
``value`` (plus ``cell``, ``gene`` or ``cell_type`` where the metric is per item).

RNA -> ATAC
    * clustering of generated accessibility with SnapATAC2's ``pp.select_features -> tl.spectral -> pp.knn ->
      tl.leiden``, scored against cell-type labels by AMI, NMI, ARI and homogeneity (scikit-learn). Every method's
      prediction is first binarised by the same top-k rule (the ``k`` CREs most probable *in each cell*), the
      paper's "binarise, then cluster like measured scATAC" applied identically: the input depends only on how
      each cell ranks its CREs, so neither a method's calibration nor a per-cell constant shift (depth) can
      change its score. The measured row clusters the measured binary state. When ``snapatac2`` is not
      importable an equivalent pipeline written here is used and ``CLUSTERING_BACKEND`` says which one ran;
    * per-cell precision / recall / F1 at that binarisation, AUROC and AUPRC (average precision) of the
      probabilities against the measured binary state;
    * learning diagnostics, which a shortcut cannot pass (see DESIGN.md): the per-cell AUROC *gain over the floor*
      (each CRE's training open frequency), the spread of the predicted logit minus the floor's *within* cells vs
      *across* cells (a model that learned only each cell's depth has all of it across cells), and a cell-type
      *probe* (cross-validated logistic regression on PCA of the predicted matrix, :func:`celltype_probe`);
    * pseudobulk Pearson per cell type (mean predicted vs mean measured accessibility over the cells of a type),
      cell types with at least ``min_cells`` test cells, summarised as the cell-weighted mean.

ATAC -> RNA
    * gene-wise Pearson and Spearman across test cells (NaN -> 0), unmasked (main number) and masked (the paper's
      convention: predictions forced to zero wherever the measured value is zero, in every method);
    * skill over the floor (each gene's training mean): 1 - MSE / MSE of the floor, per gene, and RMSE;
    * clustering of predicted RNA (HVG -> PCA -> kNN -> leiden), scored like ATAC; the same cell-type probe.

Integration (joint RNA / ATAC embeddings of paired cells, Attune's benchmark)
    * :func:`foscttm` and, on the joint set of both modalities, :func:`integration_scores`: mean average
      precision of cell-type neighbours, cell-type silhouette, neighbour conservation, Seurat alignment score,
      omics-layer silhouette, graph connectivity (scGLUE / scIB definitions, exact kNN, deterministic; checked
      against naive re-computations of scGLUE's formulas on SNARE-seq, equal to 1e-15);
    * :func:`integration_overall`: Attune's 0.6 bio-conservation + 0.4 omics-mixing score, min-max scaled across
      the methods of each data set, plus the unscaled means. These return dicts / wide tables (one row per
      method run), not the tidy ``metric`` / ``value`` tables above.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scipy import stats
from sklearn import metrics as skm

from .matrix import columnwise_pearson, dense

try:  # SnapATAC2 is the reference pipeline; the fallback below reproduces its steps when it is missing
    import snapatac2 as snap
    CLUSTERING_BACKEND = "snapatac2"
except ImportError:  # pragma: no cover - depends on the environment
    snap = None
    CLUSTERING_BACKEND = "fallback (TF-IDF spectral + kNN + leiden, written here)"

CLUSTER_METRICS = ("AMI", "NMI", "ARI", "homogeneity")
TIE = 0.005  # differences of means smaller than this are reported as ties


# ----------------------------------------------------------------------------------------------- helpers
def aligned_matrices(pred: AnnData, true: AnnData) -> tuple[np.ndarray, np.ndarray]:
    """Dense matrices of ``pred`` and ``true`` on the same cells and features (checked by name)."""
    if not (pred.n_obs == true.n_obs and np.array_equal(pred.obs_names, true.obs_names)):
        raise ValueError("pred and true must hold the same cells in the same order (obs_names differ)")
    if not np.array_equal(pred.var_names, true.var_names):
        true = true[:, pred.var_names]
    return dense(pred.X), dense(true.X)


def binarize(probs: np.ndarray, rule: str = "expected_count", threshold: float = 0.5,
             open_fraction: float | None = None) -> np.ndarray:
    """Binarise predicted accessibility probabilities with one rule for every method.

    ``rule="expected_count"`` (default): in each cell the ``k = round(sum of the cell's probabilities)`` CREs
    with the highest probabilities are called open. It needs no threshold, reads nothing from the measured data,
    and is fair to methods whose probabilities are calibrated differently (a method that predicts 3 % of CREs
    open on average calls 3 % open). ``rule="topk"``: in every cell the ``round(open_fraction * n_CREs)`` most
    probable CREs are called open, with ``open_fraction`` the mean open fraction of the *training* cells -
    identical for every method and blind to how each method's probabilities are calibrated (Cisformer trains on
    50/50 open/closed samples, so its raw probabilities overstate openness); the benchmark notebooks use it.
    ``rule="threshold"``: ``probs >= threshold``.
    """
    probs = dense(probs)
    if rule == "threshold":
        return probs >= threshold
    if rule == "topk":
        if open_fraction is None:
            raise ValueError("rule='topk' needs open_fraction (mean open fraction of the training cells)")
        k = np.full(probs.shape[0], int(round(open_fraction * probs.shape[1])))
    elif rule == "expected_count":
        k = np.clip(np.rint(probs.sum(axis=1)).astype(int), 0, probs.shape[1])
    else:
        raise ValueError(f"unknown binarisation rule {rule!r}; use 'expected_count', 'topk' or 'threshold'")
    called = np.zeros(probs.shape, dtype=bool)
    for i, k_i in enumerate(k):
        if k_i > 0:
            called[i, np.argsort(-probs[i], kind="stable")[:k_i]] = True
    return called


def clustering_scores(labels_pred, labels_true) -> pd.DataFrame:
    """AMI, NMI, ARI and homogeneity of a clustering against reference labels."""
    labels_pred, labels_true = np.asarray(labels_pred).astype(str), np.asarray(labels_true).astype(str)
    values = {
        "AMI": skm.adjusted_mutual_info_score(labels_true, labels_pred),
        "NMI": skm.normalized_mutual_info_score(labels_true, labels_pred),
        "ARI": skm.adjusted_rand_score(labels_true, labels_pred),
        "homogeneity": skm.homogeneity_score(labels_true, labels_pred),
    }
    return pd.DataFrame({"metric": list(values), "value": [float(v) for v in values.values()]})


# ----------------------------------------------------------------------------------------------- clustering
def _leiden(connectivities: sp.spmatrix, resolution: float, seed: int) -> np.ndarray:
    import igraph as ig
    import leidenalg

    graph = sp.triu(sp.csr_matrix(connectivities), k=1).tocoo()
    g = ig.Graph(n=connectivities.shape[0], edges=list(zip(graph.row.tolist(), graph.col.tolist())),
                 edge_attrs={"weight": graph.data.tolist()})
    part = leidenalg.find_partition(g, leidenalg.RBConfigurationVertexPartition, weights="weight",
                                    resolution_parameter=resolution, seed=seed)
    return np.asarray(part.membership)


def exact_neighbors(points: np.ndarray, n_neighbors: int):
    """A fitted scikit-learn ``NearestNeighbors`` with exact k-d tree distances in float64, used wherever the
    package looks for neighbours. The default brute search computes |x|^2 - 2xy + |y|^2 in chunks whose size
    follows the OpenMP thread count, so its rounding - and which of several equidistant cells becomes a neighbour
    (predictions often hold identical cells) - changed with the threads (``torch.set_num_threads`` too)."""
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(n_neighbors=n_neighbors, algorithm="kd_tree").fit(np.asarray(points, dtype=np.float64))


def _knn_graph(embedding: np.ndarray, n_neighbors: int) -> sp.csr_matrix:
    n_neighbors = min(n_neighbors, embedding.shape[0] - 1)
    embedding = np.asarray(embedding, dtype=np.float64)
    graph = exact_neighbors(embedding, n_neighbors + 1).kneighbors_graph(embedding, mode="connectivity")
    graph.setdiag(0)
    graph.eliminate_zeros()
    return ((graph + graph.T) > 0).astype(np.float32).tocsr()


def _spectral_fallback(x: sp.csr_matrix, n_comps: int, seed: int) -> np.ndarray:
    """SnapATAC2-like spectral embedding: IDF-weighted, L2-normalised cells, cosine similarity graph Laplacian.

    The top eigenvectors of D^-1/2 S D^-1/2 with S = X X^T (cosine) are the left singular vectors of
    D^-1/2 X, computed without forming S; the first (trivial) one is dropped, the rest scaled by eigenvalue.
    """
    from sklearn.utils.extmath import randomized_svd

    idf = np.log1p(x.shape[0] / (1.0 + np.asarray((x > 0).sum(axis=0)).ravel()))
    xw = sp.csr_matrix(x.multiply(idf[None, :]))
    norms = np.sqrt(np.asarray(xw.multiply(xw).sum(axis=1)).ravel()) + 1e-12
    xw = sp.diags(1.0 / norms) @ xw
    degree = np.asarray(xw @ np.asarray(xw.sum(axis=0)).ravel()).ravel() + 1e-12
    xl = sp.diags(1.0 / np.sqrt(degree)) @ xw
    n_comps = max(2, min(n_comps + 1, min(xl.shape) - 1))
    u, s, _ = randomized_svd(xl, n_components=n_comps, random_state=seed)
    return (u[:, 1:] * (s[1:] ** 2)[None, :]).astype(np.float32)


def embed_atac(adata: AnnData, n_features: int = 50000, n_comps: int = 30, seed: int = 0) -> np.ndarray:
    """Spectral embedding of accessibility (SnapATAC2 ``select_features -> tl.spectral``, or the fallback).

    ``adata.X`` may be binary, counts or probabilities; it is used as given (sparse float). Cells with no signal
    in the selected features (possible in shallow measured data) cannot be embedded: their rows are all zero.
    """
    x = sp.csr_matrix(dense(adata.X) if not sp.issparse(adata.X) else adata.X, dtype=np.float32)
    part = None
    if snap is not None:
        work = AnnData(x, obs=pd.DataFrame(index=adata.obs_names.astype(str)),
                       var=pd.DataFrame(index=adata.var_names.astype(str)))
        snap.pp.select_features(work, n_features=min(n_features, work.n_vars), verbose=False)
        selected = work.var["selected"].to_numpy(dtype=bool)
        has = np.diff(sp.csr_matrix(x[:, selected] > 0).indptr) > 0
        work = work[has].copy()
        try:
            snap.tl.spectral(work, n_comps=min(n_comps, max(2, work.n_obs - 2)), random_state=seed)
            part = np.asarray(work.obsm["X_spectral"], dtype=np.float32)
        except Exception as err:  # ARPACK fails on graphs with isolated cells (very shallow, tiny inputs)
            warnings.warn(f"SnapATAC2's spectral embedding failed ({type(err).__name__}); the fallback pipeline "
                          "written here embeds this input instead", RuntimeWarning)
    if part is None:
        keep = np.sort(np.argsort(-np.asarray((x > 0).sum(axis=0)).ravel())[:n_features])
        has = np.diff(sp.csr_matrix(x[:, keep] > 0).indptr) > 0
        part = _spectral_fallback(x[has][:, keep], n_comps, seed)
    embedding = np.zeros((x.shape[0], part.shape[1]), dtype=np.float32)
    embedding[has] = part
    # identical cells get exactly one point (the eigensolver's rounding would otherwise part them by ~1e-7)
    groups = identical_rows(x)
    sums = np.zeros((groups.max() + 1, embedding.shape[1]), dtype=np.float64)
    np.add.at(sums, groups, embedding)
    return (sums / np.bincount(groups)[:, None])[groups].astype(np.float32)


def identical_rows(x) -> np.ndarray:
    """Group id per row of ``x`` (sparse or dense): rows with exactly equal values share an id (int, 0..)."""
    x = sp.csr_matrix(x, copy=True)
    x.eliminate_zeros()
    x.sort_indices()
    keys = np.empty(x.shape[0], dtype=object)
    for i in range(x.shape[0]):
        lo, hi = x.indptr[i], x.indptr[i + 1]
        keys[i] = x.indices[lo:hi].tobytes() + b"|" + x.data[lo:hi].tobytes()
    return np.unique(keys, return_inverse=True)[1].ravel()


def cluster_embedding(embedding: np.ndarray, n_neighbors: int = 50, resolution: float = 1.0,
                      seed: int = 0) -> np.ndarray:
    """kNN graph on an embedding then leiden clusters (SnapATAC2 ``pp.knn -> tl.leiden`` when available).

    Cells at the same point of the embedding (a predictor that gives every cell of a type the same profile) are
    one cluster: they take their most common leiden label. SnapATAC2's graph stores the distance between two
    such cells as an explicit 0, and its leiden reads edges from the non-zero entries, so without the smallest
    positive distance put in their place a perfect predictor's cells lose every edge and all land in one
    "too small" cluster (AMI 0).
    """
    embedding = np.asarray(embedding, dtype=np.float64)
    if snap is not None:
        work = AnnData(np.zeros((embedding.shape[0], 1), dtype=np.float32))
        work.obsm["X_embed"] = embedding
        snap.pp.knn(work, n_neighbors=min(n_neighbors, work.n_obs - 1), use_rep="X_embed", random_state=seed)
        graph = sp.coo_matrix(work.obsp["distances"])
        off_diagonal = graph.row != graph.col
        data = np.where(graph.data > 0, graph.data, np.finfo(np.float64).tiny)[off_diagonal]
        work.obsp["distances"] = sp.csr_matrix((data, (graph.row[off_diagonal], graph.col[off_diagonal])),
                                               shape=graph.shape)
        snap.tl.leiden(work, resolution=resolution, random_state=seed)
        labels = work.obs["leiden"].astype(str).to_numpy()
    else:
        labels = _leiden(_knn_graph(embedding, n_neighbors), resolution, seed).astype(str)
    groups = identical_rows(embedding)
    for g in np.flatnonzero(np.bincount(groups) > 1):
        members = groups == g
        values, counts = np.unique(labels[members], return_counts=True)
        labels[members] = values[np.argmax(counts)]
    return labels


def atac_clustering(adata: AnnData, label_key: str = "cell_type", n_neighbors: int = 50,
                    resolution: float = 1.0, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Cluster accessibility and score the clusters against ``adata.obs[label_key]``.

    Cells that cannot be embedded (no signal in the selected features, possible in shallow measured data) carry
    no information: they are put together in one cluster, ``"empty"``.

    Returns
    -------
    (scores, clusters, embedding)
        tidy AMI/NMI/ARI/homogeneity, the leiden labels and the spectral embedding (for UMAPs).
    """
    embedding = embed_atac(adata, seed=seed)
    has_data = np.abs(embedding).sum(axis=1) > 0
    n_neighbors = min(n_neighbors, max(5, int(has_data.sum()) // 10))      # small test sets: keep the graph local
    clusters = np.full(adata.n_obs, "empty", dtype=object)
    clusters[has_data] = cluster_embedding(embedding[has_data], n_neighbors=n_neighbors, resolution=resolution,
                                           seed=seed)
    clusters = clusters.astype(str)
    return clustering_scores(clusters, adata.obs[label_key]), clusters, embedding


def embed_rna(adata: AnnData, n_top_genes: int = 2000, n_comps: int = 30, is_log: bool | None = None,
              seed: int = 0) -> np.ndarray:
    """HVG -> PCA embedding of (predicted or measured) RNA.

    ``is_log``: whether ``adata.X`` is already log1p-normalised (predictions); by default, values that are all
    integers are taken as counts and normalised to 10,000 per cell and log1p-transformed first.
    """
    from sklearn.decomposition import PCA

    x = dense(adata.X)
    if is_log is None:
        is_log = not np.allclose(x, np.round(x))
    if not is_log:
        x = log_normalized(x).toarray()
    var = x.var(axis=0)
    keep = np.sort(np.argsort(-var)[: min(n_top_genes, x.shape[1])])
    x = x[:, keep]
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)
    n_comps = min(n_comps, min(x.shape) - 1)
    return PCA(n_components=n_comps, random_state=seed).fit_transform(x).astype(np.float32)


def rna_clustering(adata: AnnData, label_key: str = "cell_type", n_neighbors: int = 15, resolution: float = 1.0,
                   is_log: bool | None = None, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Cluster RNA (HVG -> PCA -> kNN -> leiden) and score against ``adata.obs[label_key]``."""
    embedding = embed_rna(adata, is_log=is_log, seed=seed)
    clusters = _leiden(_knn_graph(embedding, n_neighbors), resolution, seed).astype(str)
    return clustering_scores(clusters, adata.obs[label_key]), clusters, embedding


# ----------------------------------------------------------------------------------------------- diagnostics
def per_cell_auroc(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """AUROC of each row of ``scores`` against the binary row of ``truth`` (ties count one half, as
    scikit-learn's ``roc_auc_score``), computed for all rows at once from ranks. NaN for rows without a positive
    or without a negative."""
    truth = np.asarray(truth, dtype=bool)
    ranks = stats.rankdata(np.asarray(scores, dtype=np.float64), axis=1)
    n_pos = truth.sum(axis=1).astype(np.float64)
    n_neg = truth.shape[1] - n_pos
    u = (ranks * truth).sum(axis=1) - n_pos * (n_pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def auroc_gain(scores: np.ndarray, truth: np.ndarray, prior: np.ndarray) -> float:
    """Mean per-cell AUROC of ``scores`` (cells x CREs) minus the mean per-cell AUROC of ``prior`` (each CRE's base
    rate, the same for every cell) on the same cells: what a model adds to the base rate. A model that learned each
    cell's depth and nothing else scores 0 (a per-cell shift leaves the ranking within the cell unchanged)."""
    truth = np.asarray(truth, dtype=bool)
    floor = np.nanmean(per_cell_auroc(np.broadcast_to(prior, truth.shape), truth))
    return float(np.nanmean(per_cell_auroc(scores, truth)) - floor)


def per_cell_auprc(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Average precision of each row of ``scores`` against the binary row of ``truth``, computed as scikit-learn's
    ``average_precision_score`` (precision at each distinct threshold, weighted by the recall it adds; tied
    scores form one threshold), without its per-call overhead. NaN for rows without a positive or a negative."""
    truth = np.asarray(truth, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    out = np.full(len(scores), np.nan)
    for i, (s, y) in enumerate(zip(scores, truth)):
        n_pos = y.sum()
        if n_pos == 0 or n_pos == len(y):
            continue
        order = np.argsort(-s, kind="stable")
        s, y = s[order], y[order]
        ends = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # last index of each distinct threshold
        tp = np.cumsum(y)[ends]
        precision, recall = tp / (ends + 1), tp / n_pos
        out[i] = np.sum(np.diff(recall, prepend=0.0) * precision)
    return out


def _logit(p: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return np.log(p / (1 - p))


def deviation_spread(deviation: np.ndarray) -> tuple[float, float]:
    """(within, across): the mean over cells of the sd of ``deviation`` across a cell's features, and the sd
    over cells of a cell's mean deviation. With ``deviation`` = predicted logit minus the floor's, a model that
    learned each cell's depth and nothing else has ``within`` ~ 0; one that learned cell-type-specific
    accessibility has ``within`` well above 0."""
    d = np.asarray(deviation, dtype=np.float64)
    return float(d.std(axis=1).mean()), float(d.mean(axis=1).std())


def celltype_probe(X, labels, n_comps: int = 50, folds: int = 5, seed: int = 0) -> float:
    """How well cell types can be read from a (predicted or measured) cells x features matrix: each feature
    standardised (so a method's calibration per feature does not matter), PCA to ``n_comps``, then a
    multinomial logistic regression scored by ``folds``-fold stratified cross-validated accuracy. Cell types
    with fewer than ``folds`` cells are left out. Compare with the majority-class share (chance) and with the
    probe on the measured input modality."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    X = dense(X).astype(np.float64)
    labels = np.asarray(labels).astype(str)
    counts = pd.Series(labels).value_counts()
    keep = np.isin(labels, counts[counts >= folds].index)
    if keep.sum() < 2 * folds or len(np.unique(labels[keep])) < 2:
        return float("nan")
    X, labels = X[keep], labels[keep]
    X = (X - X.mean(axis=0)) / (X.std(axis=0) + 1e-8)
    n_comps = max(1, min(n_comps, min(X.shape) - 1))
    Z = PCA(n_comps, random_state=seed).fit_transform(X)
    Z = (Z - Z.mean(axis=0)) / (Z.std(axis=0) + 1e-8)
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(LogisticRegression(max_iter=2000), Z, labels, cv=cv).mean())


# ----------------------------------------------------------------------------------------------- RNA -> ATAC
def per_cell_classification(pred: AnnData, true: AnnData, rule: str = "expected_count",
                            threshold: float = 0.5, open_fraction: float | None = None) -> pd.DataFrame:
    """Per-cell precision, recall, F1 (after ``binarize``) and AUROC, AUPRC (from the probabilities).

    Cells whose measured profile has no open or no closed CRE get NaN AUROC/AUPRC.
    """
    probs, truth = aligned_matrices(pred, true)
    truth = truth > 0
    called = binarize(probs, rule=rule, threshold=threshold, open_fraction=open_fraction)
    tp = (called & truth).sum(axis=1).astype(float)
    precision = np.divide(tp, called.sum(axis=1), out=np.zeros_like(tp), where=called.sum(axis=1) > 0)
    recall = np.divide(tp, truth.sum(axis=1), out=np.zeros_like(tp), where=truth.sum(axis=1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp),
                   where=(precision + recall) > 0)
    auroc = per_cell_auroc(probs, truth)
    auprc = per_cell_auprc(probs, truth)
    cells = np.asarray(pred.obs_names)
    parts = [pd.DataFrame({"cell": cells, "metric": name, "value": values}) for name, values in
             (("precision", precision), ("recall", recall), ("F1", f1), ("AUROC", auroc), ("AUPRC", auprc))]
    return pd.concat(parts, ignore_index=True)


def pseudobulk_pearson(pred: AnnData, true: AnnData, label_key: str = "cell_type", min_cells: int = 5) -> pd.DataFrame:
    """Pearson r between mean predicted and mean measured (binarised) accessibility per cell type, for cell
    types with at least ``min_cells`` cells (fewer cells make the measured pseudobulk mostly noise)."""
    probs, truth = aligned_matrices(pred, true)
    truth = (truth > 0).astype(np.float32)
    labels = true.obs[label_key].astype(str).to_numpy()
    rows = []
    for cell_type in np.unique(labels):
        mask = labels == cell_type
        if mask.sum() < min_cells:
            continue
        a, b = probs[mask].mean(axis=0), truth[mask].mean(axis=0)
        r = stats.pearsonr(a, b)[0] if a.std() > 0 and b.std() > 0 else 0.0
        rows.append({"cell_type": cell_type, "metric": "pseudobulk_pearson", "value": float(r),
                     "n_cells": int(mask.sum())})
    return pd.DataFrame(rows, columns=["cell_type", "metric", "value", "n_cells"])


def rna2atac_summary(pred: AnnData, true: AnnData, label_key: str = "cell_type", rule: str = "topk",
                     open_fraction: float | None = None, floor: np.ndarray | None = None, cluster: bool = True,
                     seed: int = 0, max_cluster_cells: int | None = None, measured: bool = False,
                     min_cells: int = 5) -> pd.DataFrame:
    """All RNA->ATAC metrics of one prediction as one tidy table (means over cells / cell types).

    Parameters
    ----------
    pred, true
        Predicted probabilities and measured accessibility (same cells and CREs).
    rule, open_fraction
        The binarisation shared by precision/recall/F1 and the clustering input (:func:`binarize`).
    floor
        Each CRE's training open frequency: adds ``AUROC_gain`` (mean AUROC minus the floor's on the same cells)
        and ``within_sd`` / ``across_sd`` (:func:`deviation_spread` of the logit minus the floor's logit).
    cluster
        Add clustering scores (AMI, NMI, ARI, homogeneity) and the cell-type ``probe`` on up to
        ``max_cluster_cells`` cells drawn with ``seed``.
    measured
        ``pred`` is the measured binary state itself: clustered as it is, not re-binarised.
    min_cells
        Minimum test cells of a cell type for its pseudobulk (see :func:`pseudobulk_pearson`).
    """
    parts = []
    if cluster:
        keep = np.arange(pred.n_obs)
        if max_cluster_cells and pred.n_obs > max_cluster_cells:
            keep = np.sort(np.random.default_rng(seed).choice(pred.n_obs, max_cluster_cells, replace=False))
        x = dense(pred.X[keep])
        called = (x > 0) if measured else binarize(x, rule=rule, open_fraction=open_fraction)
        labels = true.obs[label_key].to_numpy()[keep]
        scored = AnnData(sp.csr_matrix(called.astype(np.float32)),
                         obs=pd.DataFrame({label_key: labels}, index=pred.obs_names[keep].astype(str)),
                         var=pd.DataFrame(index=pred.var_names.astype(str)))
        parts.append(atac_clustering(scored, label_key=label_key, seed=seed)[0])
        parts.append(pd.DataFrame({"metric": ["probe"], "value": [celltype_probe(x, labels, seed=seed)]}))
    per_cell = per_cell_classification(pred, true, rule=rule, open_fraction=open_fraction)
    means = per_cell.groupby("metric", sort=False)["value"].mean()
    parts.append(means.reset_index())
    if floor is not None:
        probs, truth = aligned_matrices(pred, true)
        floor = np.asarray(floor, dtype=np.float64)
        floor_auroc = np.nanmean(per_cell_auroc(np.broadcast_to(floor, probs.shape), truth > 0))
        within, across = deviation_spread(_logit(probs) - _logit(floor)[None, :])
        parts.append(pd.DataFrame({"metric": ["AUROC_gain", "within_sd", "across_sd"],
                                   "value": [means["AUROC"] - floor_auroc, within, across]}))
    pb = pseudobulk_pearson(pred, true, label_key=label_key, min_cells=min_cells)
    weighted = np.average(pb["value"], weights=pb["n_cells"]) if len(pb) else np.nan
    parts.append(pd.DataFrame({"metric": ["pseudobulk_pearson"], "value": [weighted]}))
    return pd.concat(parts, ignore_index=True)[["metric", "value"]]


# ----------------------------------------------------------------------------------------------- ATAC -> RNA
def log_normalized(counts, target_sum: float = 1e4) -> sp.csr_matrix:
    """Counts -> log1p(counts per ``target_sum`` in the cell), sparse float32 (zeros stay zeros)."""
    x = sp.csr_matrix(counts, dtype=np.float32, copy=True)
    totals = np.asarray(x.sum(axis=1)).ravel()
    x = sp.csr_matrix(sp.diags((target_sum / np.maximum(totals, 1e-12)).astype(np.float32)) @ x)
    x.data = np.log1p(x.data)
    return x


def log_expression(adata: AnnData) -> sp.csr_matrix:
    """Expression on the log1p scale, sparse: counts are normalised to 10,000 per cell (over the genes of
    ``adata``) and log1p-transformed; already-normalised data (``uns["counts"] is False``) are log1p-transformed
    only if not already logged. The one scale every ATAC -> RNA method predicts and every metric compares on
    (Cisformer's expression bins are defined on it)."""
    if adata.uns.get("counts", True):
        return log_normalized(adata.X)
    x = sp.csr_matrix(adata.X, dtype=np.float32, copy=True)
    if x.nnz and x.data.max() >= 30:
        x.data = np.log1p(x.data)
    return x


def true_expression(true: AnnData) -> np.ndarray:
    """Measured expression on the log1p scale (:func:`log_expression`), dense."""
    return log_expression(true).toarray()


def genewise_correlation(pred: AnnData, true: AnnData, masked: bool = False) -> pd.DataFrame:
    """Gene-wise Pearson and Spearman r across cells between predicted and measured expression (NaN -> 0).

    ``pred.X`` is taken on the log1p scale (as ``cisformer.predict.atac_to_rna`` returns); ``true`` is
    normalised by ``true_expression``. ``masked=True`` is the paper's convention: predictions are set to zero
    where the measured value is zero (it uses the measured non-zero pattern, so it is not a prediction of it).
    """
    if not np.array_equal(pred.obs_names, true.obs_names):
        raise ValueError("pred and true must hold the same cells in the same order (obs_names differ)")
    true = true[:, pred.var_names]
    y_pred = dense(pred.X)
    y_true = true_expression(true)
    if masked:
        y_pred = np.where(y_true > 0, y_pred, 0.0).astype(np.float32)
    pearson = columnwise_pearson(y_pred, y_true)
    spearman = columnwise_pearson(stats.rankdata(y_pred, axis=0), stats.rankdata(y_true, axis=0))
    genes = np.asarray(pred.var_names)
    suffix = "_masked" if masked else ""
    return pd.concat([pd.DataFrame({"gene": genes, "metric": f"pearson{suffix}", "value": pearson}),
                      pd.DataFrame({"gene": genes, "metric": f"spearman{suffix}", "value": spearman})],
                     ignore_index=True)


def mean_pearson(pred: AnnData, true: AnnData) -> float:
    """Mean gene-wise Pearson r (:func:`genewise_correlation`, unmasked): the ATAC -> RNA selection criterion on
    validation cells of every method that selects an epoch or a parameter."""
    table = genewise_correlation(pred, true)
    return float(table.loc[table["metric"] == "pearson", "value"].mean())


def skill_over_floor(pred: AnnData, true: AnnData, floor: np.ndarray) -> pd.DataFrame:
    """RMSE of the predicted log1p(counts per 10,000) and its skill over the floor (each gene's training mean):
    ``skill = 1 - sum of squared errors / the floor's`` pooled over genes and cells (1 = perfect, 0 = no better
    than the per-gene mean, < 0 = worse). Gene-wise correlation cannot rank the floor (a constant has r = 0),
    this can."""
    true = true[:, pred.var_names]
    y_pred, y_true = dense(pred.X).astype(np.float64), true_expression(true).astype(np.float64)
    sse = ((y_pred - y_true) ** 2).sum()
    sse_floor = ((np.asarray(floor, dtype=np.float64)[None, :] - y_true) ** 2).sum()
    return pd.DataFrame({"metric": ["rmse", "skill"],
                         "value": [float(np.sqrt(sse / y_true.size)), float(1 - sse / max(sse_floor, 1e-12))]})


def atac2rna_summary(pred: AnnData, true: AnnData, label_key: str = "cell_type", floor: np.ndarray | None = None,
                     cluster: bool = True, seed: int = 0) -> pd.DataFrame:
    """All ATAC->RNA metrics of one prediction: mean gene-wise correlations (unmasked and masked), RMSE and the
    skill over ``floor`` (each gene's training mean, :func:`skill_over_floor`) when given, and the clustering
    scores and cell-type probe of the predicted RNA (when ``cluster`` and labels are present)."""
    parts = [genewise_correlation(pred, true, masked=m).groupby("metric", sort=False)["value"].mean()
             .reset_index() for m in (False, True)]
    if floor is not None:
        parts.append(skill_over_floor(pred, true, floor))
    if cluster and pred.n_vars >= 3:
        x = dense(pred.X)
        labels = true.obs[label_key].to_numpy()
        scored = AnnData(x, obs=pd.DataFrame({label_key: labels}, index=pred.obs_names))
        parts.append(rna_clustering(scored, label_key=label_key, is_log=True, seed=seed)[0])
        parts.append(pd.DataFrame({"metric": ["probe"], "value": [celltype_probe(x, labels, seed=seed)]}))
    return pd.concat(parts, ignore_index=True)[["metric", "value"]]


# ----------------------------------------------------------------------------------------------- reporting
def summarize(table: pd.DataFrame, group: str = "scenario") -> pd.DataFrame:
    """Mean, sd and number of seeds of every (group, method, metric) in a long metrics table."""
    return (table.groupby([group, "method", "metric"], sort=False)["value"]
            .agg(mean="mean", sd="std", n="count").reset_index().fillna({"sd": 0.0}))


def paired_differences(table: pd.DataFrame, metric: str, group: str = "scenario", ours: str = "cisformer",
                       peers=None, level: float = 0.95) -> pd.DataFrame:
    """``ours`` minus each peer on ``metric``, paired by seed, with a t confidence interval of the mean difference.

    Every method is scored on one fixed evaluation (the same held-out cells, clustering seeds and probe folds), so
    the seeds that differ are the models'. A peer run with the same seeds as ``ours`` is paired seed by seed; a
    peer with one run (deterministic methods) is compared with each of ``ours``' seeds. ``win`` is True only where
    the whole interval lies above 0 and ``loss`` only where it lies below; with one paired seed there is no
    interval (NaN) and neither is called.

    Returns one row per (group, peer): ``n`` (pairs), ``ours``, ``peer_mean``, ``difference``, ``ci_low``,
    ``ci_high``, ``win``, ``loss``.
    """
    part = table[table["metric"] == metric]
    rows = []
    for name, sub in part.groupby(group, sort=False):
        values = sub.groupby(["method", "seed"])["value"].mean()
        if ours not in values.index.get_level_values(0):
            continue
        mine = values[ours]
        for peer in peers if peers is not None else dict.fromkeys(sub["method"]):
            if peer == ours or peer not in values.index.get_level_values(0):
                continue
            theirs = values[peer]
            if len(theirs) == 1:
                diff = mine.to_numpy() - theirs.iloc[0]
            else:
                common = mine.index.intersection(theirs.index)
                diff = mine[common].to_numpy() - theirs[common].to_numpy()
            n = len(diff)
            mean = float(diff.mean()) if n else np.nan
            half = (stats.t.ppf(0.5 + level / 2, n - 1) * diff.std(ddof=1) / np.sqrt(n)) if n > 1 else np.nan
            rows.append({group: name, "peer": peer, "n": n, "ours": float(mine.mean()),
                         "peer_mean": float(theirs.mean()), "difference": mean, "ci_low": mean - half,
                         "ci_high": mean + half, "win": bool(n > 1 and mean - half > 0),
                         "loss": bool(n > 1 and mean + half < 0)})
    return pd.DataFrame(rows)


def describe_paired(diffs: pd.DataFrame, metric: str, group: str = "scenario", ours: str = "cisformer") -> str:
    """One sentence per group from :func:`paired_differences`: the peers ``ours`` beats (95 % CI of the paired
    difference above 0), those it loses to (below 0) and those it cannot be told apart from."""
    lines = []
    for name, part in diffs.groupby(group, sort=False):
        def listed(rows):
            return ", ".join(f"{r.peer} ({r.difference:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}])"
                             for r in rows.itertuples()) or "none"
        undecided = part[~part["win"] & ~part["loss"]]
        lines.append(f"- {name}: {ours} {metric} = {part['ours'].iloc[0]:.3f}; beats {listed(part[part['win']])}; "
                     f"loses to {listed(part[part['loss']])}; not distinguishable from {listed(undecided)} "
                     f"(paired difference, 95 % CI over {part['n'].max()} seeds).")
    return "\n".join(lines)


def describe_comparison(table: pd.DataFrame, metric: str, group: str = "scenario", ours: str = "cisformer",
                        floor: str | None = "floor", tie: float = TIE) -> str:
    """One sentence per group, computed from the numbers: how ``ours`` compares with the best other method -
    the floor included, since it reads no test information and any method must beat it - and with the floor
    alone on ``metric`` (means over seeds); differences smaller than ``tie`` are called ties. Used for the
    notebooks' honest prose."""
    summary = summarize(table[table["metric"] == metric], group)
    lines = []
    for name, part in summary.groupby(group, sort=False):
        means = part.set_index("method")["mean"].dropna()
        if ours not in means:
            lines.append(f"- {name}: {ours} was not run, so no comparison on {metric}.")
            continue
        others = means.drop([ours])
        sentence = f"- {name}: {ours} {metric} = {means[ours]:.3f}"
        if len(others):
            best = others.idxmax()
            diff = means[ours] - others.max()
            verdict = "ties" if abs(diff) < tie else ("wins" if diff > 0 else "loses")
            sentence += f"; best other method (floor included) {best} = {others.max():.3f}, so {ours} {verdict}"
            sentence += f" (difference {diff:+.3f})"
        if floor in means:
            diff = means[ours] - means[floor]
            relation = "ties" if abs(diff) < tie else ("is above" if diff > 0 else "is below")
            sentence += f"; it {relation} the floor ({floor} = {means[floor]:.3f})"
        lines.append(sentence + ".")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- integration
# Joint-embedding metrics of paired RNA / ATAC (Attune's benchmark, ../shared/ATTUNE.md "Analyses"). Definitions:
# scGLUE (Cao & Gao, Nat Biotechnol 2022, ``scglue.metrics``) for FOSCTTM, mean average precision, neighbour
# conservation and the Seurat alignment score; scIB (Luecken et al., Nat Methods 2022) for the cell-type and
# batch (here: omics layer) silhouettes and graph connectivity. Every metric is computed on the *joint set*: the
# RNA embedding of the cells stacked on the ATAC embedding of the same cells, modality as the batch label.
INTEGRATION_BIO = ("map", "celltype_silhouette", "neighbor_conservation")
INTEGRATION_MIXING = ("seurat_alignment_score", "omics_silhouette", "graph_connectivity")
INTEGRATION_METRICS = ("foscttm",) + INTEGRATION_BIO + INTEGRATION_MIXING


def foscttm(x_rna: np.ndarray, x_atac: np.ndarray, chunk_size: int = 512) -> float:
    """Fraction of samples closer than the true match (FOSCTTM; scGLUE, Cao & Gao 2022), lower is better.

    Rows of ``x_rna`` [n, d] and ``x_atac`` [n, d] are the two modalities of the same n cells. For RNA cell i,
    the fraction of the n ATAC cells strictly closer (Euclidean) to it than its own ATAC profile; likewise for
    each ATAC cell among the RNA cells. Returns the mean over the 2n fractions (the mean of the two directions).
    0 = every cell's partner is its nearest cross-modal neighbour, about 0.5 = random embeddings.

    Exact and independent of the thread count: squared distances come from the fast BLAS expansion
    |x|^2 - 2xy + |y|^2 (float64), and every pair whose difference from the partner's distance is within that
    expansion's rounding bound (1e-9 x (|x|^2 + |y|^2), the partner itself included) is recomputed exactly as
    sum((x - y)^2), the formula of the partner's own distance. Blocks of ``chunk_size`` rows: memory
    O(chunk_size x n), a few 40 MB blocks for 10,000 x 10,000 cells (about 8 s for 128-d on one core). Equal to
    scGLUE's ``scglue.metrics.foscttm`` (full distance matrix) to 1e-15 on SNARE-seq test cells.
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

    ``neighbors`` [n, k]: each cell's k nearest other cells, nearest first; ``labels`` [n]. For one cell, with
    ``match_j`` = whether the j-th neighbour has the cell's label, AP = mean over the matching positions j of the
    precision among the first j neighbours (0 when no neighbour matches); MAP is the mean AP over cells."""
    labels = np.asarray(labels)
    match = labels[neighbors] == labels[:, None]                           # [n, k]
    precision_at = np.cumsum(match, axis=1) / np.arange(1, match.shape[1] + 1)
    hits = match.sum(axis=1)
    ap = np.divide((precision_at * match).sum(axis=1), hits, out=np.zeros(len(hits)), where=hits > 0)
    return float(ap.mean())


def seurat_alignment_score(neighbors: np.ndarray, batch: np.ndarray) -> float:
    """Seurat alignment score (Butler et al. 2018, as defined in scGLUE, Cao & Gao 2022), higher = better mixed.

    ``neighbors`` [n, k]: each cell's k nearest other cells; ``batch`` [n], every batch with the same number of
    cells (scGLUE subsamples the batches to the smallest one's size first; the two modalities of paired cells are
    equal already, so every cell is kept and nothing is random). With ``s`` the mean number of a cell's neighbours
    from its own batch and B batches, score = (k - s) B / (k (B - 1)), capped at 1: 1 when neighbours come from
    the batches as by chance, 0 when only from the cell's own batch.
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
    Euclidean; higher = cell types better separated."""
    return float((skm.silhouette_score(np.asarray(x, dtype=np.float64), np.asarray(labels)) + 1) / 2)


def batch_silhouette(x: np.ndarray, batch: np.ndarray, labels: np.ndarray) -> float:
    """Batch average silhouette width within cell types (scIB's batch ASW, Luecken et al. 2022), higher = better
    mixed: for each cell type, the silhouette of every cell with the batch as its cluster label, s -> 1 - |s|,
    averaged over the type's cells; then the mean over cell types. Types present in a single batch, or whose every
    cell is its own batch, are left out (as scib-metrics does)."""
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
    connected piece. ``neighbors`` [n, k] are each cell's k nearest other cells; the graph is made undirected
    (an edge when either cell lists the other, as in scanpy's connectivities, which scIB and scGLUE use)."""
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
    (e.g. RNA PCA, ATAC LSI), both computed among the cells of that modality; mean over cells."""
    a = _neighbors_excluding_self(x_integrated, k)
    b = _neighbors_excluding_self(x_own, k)
    shared = np.array([np.intersect1d(row_a, row_b, assume_unique=True).size for row_a, row_b in zip(a, b)])
    return float(np.mean(shared / (2 * a.shape[1] - shared)))


def integration_scores(x_rna: np.ndarray, x_atac: np.ndarray, labels, n_neighbors: int = 15,
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


def integration_overall(table: pd.DataFrame, dataset_col: str = "dataset") -> pd.DataFrame:
    """Add Attune's summary scores to a table of :func:`integration_scores` rows (one row per method, seed, ...).

    Within each data set (``dataset_col``), every metric of :data:`INTEGRATION_BIO` and
    :data:`INTEGRATION_MIXING` is min-max scaled across the table's rows of that data set (so 1 = best row,
    0 = worst; a metric equal in every row, or missing, is left out of the means). Then, as in the Attune reference
    (and scIB's overall score): ``bio_conservation`` = mean of scaled MAP, cell-type silhouette and neighbour
    conservation; ``omics_mixing`` = mean of scaled Seurat alignment score, omics silhouette and graph
    connectivity; ``overall`` = 0.6 bio + 0.4 mixing. The same means of the unscaled metrics are added as
    ``bio_conservation_raw``, ``omics_mixing_raw`` and ``overall_raw`` (comparable across data sets and tables,
    which the scaled ones are not). FOSCTTM enters neither. Returns a copy with the six columns added.
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
