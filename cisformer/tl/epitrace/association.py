"""Peaks associated with age (EpiTrace's ``AssociationOfPeaksToAge``: per-peak correlation, p, BH q) and k-means
trajectory clusters of their accessibility along age.
"""

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from ...utils.matrix import dense
from .clock import age_correlations
from ..enrichment import bh_qvalues

# --------------------------------------------------------------------------------------------- age-associated CREs


def age_associated_cres(atac, age_key: str = "epitrace_age", *, method: str = "spearman",
                        layer: str | None = None) -> pd.DataFrame:
    """Per-peak association of accessibility with age (EpiTrace's ``AssociationOfPeaksToAge``, with tests).

    Parameters
    ----------
    atac
        AnnData with ``obs[age_key]`` (cells with NaN age are left out).
    age_key
        ``obs`` column of the age (EpiTrace age from :func:`age`, or a known age).
    method
        ``"spearman"`` (default) or ``"pearson"`` correlation of each peak's accessibility with age.
    layer
        Counts from ``atac.layers[layer]`` instead of ``X``.

    Returns
    -------
    DataFrame indexed by var_names, sorted by p: ``correlation``, ``z`` (correlation standardised over peaks, as
    EpiTrace's scaled correlation), ``p`` (two-sided), ``q`` (Benjamini-Hochberg over the tested peaks),
    ``direction`` (``"up"``: opens with age, ``"down"``).
    """
    X = atac.layers[layer] if layer is not None else atac.X
    ages = pd.to_numeric(atac.obs[age_key], errors="coerce").to_numpy(dtype=float)
    ok = np.flatnonzero(np.isfinite(ages))
    if len(ok) < 4:
        raise ValueError(f"age_associated_cres: fewer than 4 cells with a finite obs['{age_key}']")
    if sp.issparse(X):
        X = X.tocsr()[ok].tocsc()
    else:
        X = np.asarray(X)[ok]
    r, p = age_correlations(X, ages[ok], method)
    z = (r - np.nanmean(r)) / np.nanstd(r, ddof=1)
    out = pd.DataFrame({"correlation": r, "z": z, "p": p, "q": bh_qvalues(p),
                        "direction": np.where(r > 0, "up", "down")}, index=atac.var_names)
    return out.sort_values("p", kind="stable")


def trajectory_clusters(atac, cres, age_key: str = "epitrace_age", *, n_bins: int = 10, k: int = 4, seed: int = 0,
                        layer: str | None = None) -> pd.DataFrame:
    """k-means clusters of the accessibility trajectories of ``cres`` along age.

    Cells are cut into ``n_bins`` age quantile bins; per CRE the mean accessibility (counts divided by the cell's
    total over all peaks, times the median total) per bin is z-scored across bins (flat trajectories become 0);
    :class:`sklearn.cluster.KMeans` (``k``, ``random_state=seed``, 10 starts) clusters the scaled trajectories.
    Clusters are numbered by their mean trajectory's trend: 0 falls most with age, ``k - 1`` rises most.

    Parameters
    ----------
    atac
        AnnData, cells x peaks, counts in ``X`` (or ``layer``), ages in ``obs[age_key]`` (cells with NaN age are
        left out).
    cres
        Peak names (var_names), a boolean mask, or a frame indexed by peak names (e.g. rows of
        :func:`age_associated_cres`).
    age_key
        ``obs`` column of the age.
    n_bins
        Age quantile bins (fewer where quantile edges tie).
    k, seed
        Number of clusters (at most the number of CREs) and the k-means random state.
    layer
        Counts from ``atac.layers[layer]`` instead of ``X``.

    Returns
    -------
    DataFrame indexed by CRE: ``bin_0`` ... ``bin_{n-1}`` (scaled trajectory, youngest first), ``cluster``,
    ``trend`` (Spearman of the CRE's trajectory with the bin index).
    """
    from sklearn.cluster import KMeans

    if isinstance(cres, pd.DataFrame):
        cres = cres.index
    cres = np.asarray(cres)
    names = atac.var_names[cres] if cres.dtype == bool else pd.Index(cres.astype(str))
    missing = names.difference(atac.var_names)
    if len(missing):
        raise KeyError(f"trajectory_clusters: {len(missing)} CRE(s) not in atac.var_names, e.g. {list(missing[:3])}")
    if len(names) < k:
        raise ValueError(f"trajectory_clusters: {len(names)} CREs for k={k} clusters")
    X = atac.layers[layer] if layer is not None else atac.X
    ages = pd.to_numeric(atac.obs[age_key], errors="coerce").to_numpy(dtype=float)
    ok = np.flatnonzero(np.isfinite(ages))
    totals = np.asarray(X.sum(axis=1)).ravel()[ok]
    scale = np.divide(np.median(totals), totals, out=np.zeros_like(totals, dtype=float), where=totals > 0)
    cols = atac.var_names.get_indexer(names)
    sub = dense(X[ok][:, cols], np.float64) * scale[:, None]
    bins = pd.qcut(stats.rankdata(ages[ok]), n_bins, labels=False, duplicates="drop")
    n_b = int(bins.max()) + 1
    traj = np.vstack([sub[bins == b].mean(axis=0) for b in range(n_b)]).T            # CREs x bins
    sd = traj.std(axis=1, keepdims=True)
    scaled = np.divide(traj - traj.mean(axis=1, keepdims=True), sd, out=np.zeros_like(traj), where=sd > 0)
    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(scaled)
    idx = np.arange(n_b)
    trend = np.array([stats.spearmanr(idx, row)[0] if row.std() > 0 else 0.0 for row in scaled])
    centre_trend = np.array([scaled[labels == c].mean(axis=0) @ (idx - idx.mean()) for c in range(k)])
    relabel = np.empty(k, dtype=int)
    relabel[np.argsort(centre_trend, kind="stable")] = np.arange(k)
    out = pd.DataFrame(scaled, index=names, columns=[f"bin_{b}" for b in range(n_b)])
    out["cluster"] = relabel[labels]
    out["trend"] = trend
    return out
