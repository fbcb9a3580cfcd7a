"""Clustering of predicted or measured profiles scored against cell types (AMI, NMI, ARI, homogeneity), and the
cell-type probe (cross-validated logistic regression on PCA of the matrix).

ATAC is clustered with SnapATAC2's ``select_features -> spectral -> knn -> leiden``, or, where ``snapatac2`` is
not importable, the equivalent pipeline written here (``CLUSTERING_BACKEND`` says which ran); RNA with HVG -> PCA
-> kNN -> leiden.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from sklearn import metrics as skm

from ..data.preprocess import log_normalized
from ..utils.matrix import dense

try:  # SnapATAC2 is the reference pipeline; the fallback below reproduces its steps when it is missing
    import snapatac2 as snap
    CLUSTERING_BACKEND = "snapatac2"
except ImportError:  # pragma: no cover - depends on the environment
    snap = None
    CLUSTERING_BACKEND = "fallback (TF-IDF spectral + kNN + leiden, written here)"

CLUSTER_METRICS = ("AMI", "NMI", "ARI", "homogeneity")


def clustering_scores(labels_pred, labels_true) -> pd.DataFrame:
    """AMI, NMI, ARI and homogeneity of a clustering against reference labels.

    Parameters
    ----------
    labels_pred
        [n] cluster labels (any type; compared as strings).
    labels_true
        [n] reference labels, e.g. cell types, same cells in the same order.

    Returns
    -------
    DataFrame
        Columns ``metric`` (``AMI``, ``NMI``, ``ARI``, ``homogeneity``) and ``value``, four rows.
    """
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
    (predictions often hold identical cells) - changed with the threads (``torch.set_num_threads`` too).

    Parameters
    ----------
    points
        [n, d] points to index (cast to float64).
    n_neighbors
        Default number of neighbours of the returned object's queries (a point queried against itself counts).

    Returns
    -------
    sklearn.neighbors.NearestNeighbors
        Fitted on ``points`` (Euclidean, ``algorithm="kd_tree"``).
    """
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


def embed_atac(adata: AnnData, *, n_features: int = 50000, n_comps: int = 30, seed: int = 0) -> np.ndarray:
    """Spectral embedding of accessibility (SnapATAC2 ``select_features -> tl.spectral``, or the fallback).

    Cells with no signal in the selected features (possible in shallow measured data) cannot be embedded: their rows
    are all zero. Identical cells get exactly the same point.

    Parameters
    ----------
    adata
        Cells x CREs AnnData; ``adata.X`` may be binary, counts or probabilities; it is used as given (sparse float).
    n_features
        Number of CREs selected before embedding (default 50,000; at most all).
    n_comps
        Number of spectral components (default 30; fewer on tiny inputs).
    seed
        Random seed of the eigensolver.

    Returns
    -------
    ndarray
        [cells, components] float32 embedding.
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
    """Group id per row of ``x`` (sparse or dense): rows with exactly equal values share an id (int, 0..).

    Parameters
    ----------
    x
        [n, m] matrix, scipy sparse or array-like.

    Returns
    -------
    ndarray
        [n] integer group ids, numbered 0, 1, ... (consecutive).
    """
    x = sp.csr_matrix(x, copy=True)
    x.eliminate_zeros()
    x.sort_indices()
    keys = np.empty(x.shape[0], dtype=object)
    for i in range(x.shape[0]):
        lo, hi = x.indptr[i], x.indptr[i + 1]
        keys[i] = x.indices[lo:hi].tobytes() + b"|" + x.data[lo:hi].tobytes()
    return np.unique(keys, return_inverse=True)[1].ravel()


def cluster_embedding(embedding: np.ndarray, *, n_neighbors: int = 50, resolution: float = 1.0,
                      seed: int = 0) -> np.ndarray:
    """kNN graph on an embedding then leiden clusters (SnapATAC2 ``pp.knn -> tl.leiden`` when available).

    Cells at the same point of the embedding (a predictor that gives every cell of a type the same profile) are
    one cluster: they take their most common leiden label. SnapATAC2's graph stores the distance between two
    such cells as an explicit 0, and its leiden reads edges from the non-zero entries, so without the smallest
    positive distance put in their place a perfect predictor's cells lose every edge and all land in one
    "too small" cluster (AMI 0).

    Parameters
    ----------
    embedding
        [n, d] cell embedding (e.g. :func:`embed_atac` or :func:`embed_rna`).
    n_neighbors
        Neighbours per cell in the kNN graph (default 50; at most n - 1).
    resolution
        Leiden resolution (default 1.0; higher = more clusters).
    seed
        Random seed of the kNN search and of leiden.

    Returns
    -------
    ndarray
        [n] cluster labels as strings.
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


def atac_clustering(adata: AnnData, *, label_key: str = "cell_type", n_neighbors: int = 50,
                    resolution: float = 1.0, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Cluster accessibility and score the clusters against ``adata.obs[label_key]``.

    Cells that cannot be embedded (no signal in the selected features, possible in shallow measured data) carry
    no information: they are put together in one cluster, ``"empty"``.

    Parameters
    ----------
    adata
        Cells x CREs AnnData (binary, counts or probabilities; see :func:`embed_atac`).
    label_key
        Column of ``adata.obs`` holding the reference labels (default ``"cell_type"``).
    n_neighbors
        Neighbours per cell in the kNN graph (default 50), reduced to a tenth of the embedded cells (at least 5) on
        small inputs.
    resolution
        Leiden resolution (default 1.0).
    seed
        Random seed of the embedding and the clustering.

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


def embed_rna(adata: AnnData, *, n_top_genes: int = 2000, n_comps: int = 30, is_log: bool | None = None,
              seed: int = 0) -> np.ndarray:
    """HVG -> PCA embedding of (predicted or measured) RNA.

    The ``n_top_genes`` genes of highest variance are standardised and reduced by PCA.

    Parameters
    ----------
    adata
        Cells x genes AnnData.
    n_top_genes
        Number of highly variable genes kept (default 2,000).
    n_comps
        Number of principal components (default 30; fewer on tiny inputs).
    is_log
        Whether ``adata.X`` is already log1p-normalised (predictions); by default, values that are all
        integers are taken as counts and normalised to 10,000 per cell and log1p-transformed first.
    seed
        Random seed of the PCA.

    Returns
    -------
    ndarray
        [cells, n_comps] float32 embedding.
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


def rna_clustering(adata: AnnData, *, label_key: str = "cell_type", n_neighbors: int = 15, resolution: float = 1.0,
                   is_log: bool | None = None, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Cluster RNA (HVG -> PCA -> kNN -> leiden) and score against ``adata.obs[label_key]``.

    Parameters
    ----------
    adata
        Cells x genes AnnData (counts or log1p values; see :func:`embed_rna`).
    label_key
        Column of ``adata.obs`` holding the reference labels (default ``"cell_type"``).
    n_neighbors
        Neighbours per cell in the kNN graph (default 15).
    resolution
        Leiden resolution (default 1.0).
    is_log
        Whether ``adata.X`` is already log1p-normalised (default: guessed, see :func:`embed_rna`).
    seed
        Random seed of the PCA and of leiden.

    Returns
    -------
    (scores, clusters, embedding)
        tidy AMI/NMI/ARI/homogeneity (:func:`clustering_scores`), the leiden labels and the PCA embedding.
    """
    embedding = embed_rna(adata, is_log=is_log, seed=seed)
    clusters = _leiden(_knn_graph(embedding, n_neighbors), resolution, seed).astype(str)
    return clustering_scores(clusters, adata.obs[label_key]), clusters, embedding


def celltype_probe(X, labels, *, n_comps: int = 50, folds: int = 5, seed: int = 0) -> float:
    """How well cell types can be read from a (predicted or measured) cells x features matrix: each feature
    standardised (so a method's calibration per feature does not matter), PCA to ``n_comps``, then a
    multinomial logistic regression scored by ``folds``-fold stratified cross-validated accuracy. Cell types
    with fewer than ``folds`` cells are left out. Compare with the majority-class share (chance) and with the
    probe on the measured input modality.

    Parameters
    ----------
    X
        [cells, features] matrix (dense or scipy sparse).
    labels
        [cells] cell-type labels.
    n_comps
        Number of principal components (default 50; at most the matrix's smaller side minus 1).
    folds
        Number of cross-validation folds (default 5).
    seed
        Random seed of the PCA and of the fold split.

    Returns
    -------
    float
        Mean cross-validated accuracy in [0, 1]; NaN when, after leaving out the rare types, fewer than ``2 * folds``
        cells or fewer than two cell types remain.
    """
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
