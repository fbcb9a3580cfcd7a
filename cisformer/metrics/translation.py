"""Translation metrics, one code path for every method (Fig 2, S2). Functions take AnnData (``pred``: predicted,
``true``: measured, same cells in the same order) and return a tidy table with columns ``metric`` and ``value``.

RNA -> ATAC: per-cell precision / recall / F1 after one top-k binarisation for every method (the ``k`` CREs most
probable in each cell, so neither calibration nor depth changes a score), AUROC and AUPRC, the AUROC *gain over
the floor* (each CRE's training open frequency) and the within- vs across-cell spread of the logit, which a
shortcut cannot pass (DESIGN.md), and cell-weighted pseudobulk Pearson per cell type.
ATAC -> RNA: gene-wise Pearson and Spearman across test cells, unmasked (main number) and masked (the paper's
convention), and skill over the floor (each gene's training mean).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scipy import stats

from ..data.preprocess import true_expression
from ..utils.matrix import columnwise_pearson, dense
from .clustering import atac_clustering, celltype_probe, rna_clustering


# ----------------------------------------------------------------------------------------------- helpers
def aligned_matrices(pred: AnnData, true: AnnData) -> tuple[np.ndarray, np.ndarray]:
    """Dense matrices of ``pred`` and ``true`` on the same cells and features (checked by name).

    Parameters
    ----------
    pred, true
        AnnData of the same cells in the same order (equal ``obs_names``, else ``ValueError``); ``true`` is subset to
        ``pred.var_names`` when its features differ.

    Returns
    -------
    tuple of ndarray
        ``(pred.X, true.X)`` as dense float32 arrays, cells x features.
    """
    if not (pred.n_obs == true.n_obs and np.array_equal(pred.obs_names, true.obs_names)):
        raise ValueError("pred and true must hold the same cells in the same order (obs_names differ)")
    if not np.array_equal(pred.var_names, true.var_names):
        true = true[:, pred.var_names]
    return dense(pred.X), dense(true.X)


def binarize(probs: np.ndarray, rule: str = "expected_count", threshold: float = 0.5,
             *, open_fraction: float | None = None) -> np.ndarray:
    """Binarise predicted accessibility probabilities with one rule for every method.

    ``rule="expected_count"`` (default): in each cell the ``k = round(sum of the cell's probabilities)`` CREs
    with the highest probabilities are called open. It needs no threshold, reads nothing from the measured data,
    and is fair to methods whose probabilities are calibrated differently (a method that predicts 3 % of CREs
    open on average calls 3 % open). ``rule="topk"``: in every cell the ``round(open_fraction * n_CREs)`` most
    probable CREs are called open, with ``open_fraction`` the mean open fraction of the *training* cells -
    identical for every method and blind to how each method's probabilities are calibrated (Cisformer trains on
    50/50 open/closed samples, so its raw probabilities overstate openness); the benchmark notebooks use it.
    ``rule="threshold"``: ``probs >= threshold``.

    Parameters
    ----------
    probs
        Cells x CREs predicted probabilities (array-like or scipy sparse).
    rule
        ``"expected_count"`` (default), ``"topk"`` or ``"threshold"`` (see above); anything else is a ``ValueError``.
    threshold
        Probability cut-off of ``rule="threshold"`` (default 0.5); ignored by the other rules.
    open_fraction
        Mean open fraction of the training cells, in [0, 1]; required by ``rule="topk"``, ignored otherwise.

    Returns
    -------
    ndarray
        Boolean cells x CREs array, True = called open (ties in a cell broken by column order).
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


# ----------------------------------------------------------------------------------------------- diagnostics
def per_cell_auroc(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """AUROC of each row of ``scores`` against the binary row of ``truth`` (ties count one half, as
    scikit-learn's ``roc_auc_score``), computed for all rows at once from ranks. NaN for rows without a positive
    or without a negative.

    Parameters
    ----------
    scores
        [n, m] scores, higher = more likely positive (e.g. cells x CREs probabilities).
    truth
        [n, m] labels; non-zero entries are positives.

    Returns
    -------
    ndarray
        [n] float64 AUROC per row (NaN as above).
    """
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
    cell's depth and nothing else scores 0 (a per-cell shift leaves the ranking within the cell unchanged).

    Parameters
    ----------
    scores
        [cells, CREs] predicted scores or probabilities.
    truth
        [cells, CREs] measured accessibility; non-zero entries are open.
    prior
        [CREs] each CRE's base rate (e.g. training open frequency), the same for every cell.

    Returns
    -------
    float
        Mean AUROC of ``scores`` minus that of ``prior`` (cells with NaN AUROC are ignored in each mean).
    """
    truth = np.asarray(truth, dtype=bool)
    floor = np.nanmean(per_cell_auroc(np.broadcast_to(prior, truth.shape), truth))
    return float(np.nanmean(per_cell_auroc(scores, truth)) - floor)


def per_cell_auprc(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Average precision of each row of ``scores`` against the binary row of ``truth``, computed as scikit-learn's
    ``average_precision_score`` (precision at each distinct threshold, weighted by the recall it adds; tied
    scores form one threshold), without its per-call overhead. NaN for rows without a positive or a negative.

    Parameters
    ----------
    scores
        [n, m] scores, higher = more likely positive.
    truth
        [n, m] labels; non-zero entries are positives.

    Returns
    -------
    ndarray
        [n] float64 average precision per row (NaN as above).
    """
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
    accessibility has ``within`` well above 0.

    Parameters
    ----------
    deviation
        [cells, features] array, e.g. predicted logit minus the floor's logit.

    Returns
    -------
    tuple of float
        ``(within, across)``, as above.
    """
    d = np.asarray(deviation, dtype=np.float64)
    return float(d.std(axis=1).mean()), float(d.mean(axis=1).std())


# ----------------------------------------------------------------------------------------------- RNA -> ATAC
def per_cell_classification(pred: AnnData, true: AnnData, *, rule: str = "expected_count",
                            threshold: float = 0.5, open_fraction: float | None = None) -> pd.DataFrame:
    """Per-cell precision, recall, F1 (after ``binarize``) and AUROC, AUPRC (from the probabilities).

    Cells whose measured profile has no open or no closed CRE get NaN AUROC/AUPRC.

    Parameters
    ----------
    pred, true
        Predicted probabilities and measured accessibility (AnnData, same cells; non-zero ``true.X`` = open).
    rule, threshold, open_fraction
        Binarisation of ``pred`` (:func:`binarize`).

    Returns
    -------
    DataFrame
        Long table with columns ``cell``, ``metric`` (``precision``, ``recall``, ``F1``, ``AUROC``, ``AUPRC``) and
        ``value``: one row per cell and metric. Precision (recall) is 0 for a cell with no called (no open) CRE.
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


def pseudobulk_pearson(pred: AnnData, true: AnnData, *, label_key: str = "cell_type",
                       min_cells: int = 5) -> pd.DataFrame:
    """Pearson r between mean predicted and mean measured (binarised) accessibility per cell type, for cell
    types with at least ``min_cells`` cells (fewer cells make the measured pseudobulk mostly noise).

    Parameters
    ----------
    pred, true
        Predicted probabilities and measured accessibility (AnnData, same cells; non-zero ``true.X`` = open).
    label_key
        Column of ``true.obs`` holding the cell types (default ``"cell_type"``).
    min_cells
        Minimum number of cells of a cell type (default 5).

    Returns
    -------
    DataFrame
        One row per scored cell type: ``cell_type``, ``metric`` (``"pseudobulk_pearson"``), ``value`` (r; 0 when
        either pseudobulk is constant) and ``n_cells``.
    """
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


def rna2atac_summary(pred: AnnData, true: AnnData, *, label_key: str = "cell_type", rule: str = "topk",
                     open_fraction: float | None = None, floor: np.ndarray | None = None, cluster: bool = True,
                     seed: int = 0, max_cluster_cells: int | None = None, measured: bool = False,
                     min_cells: int = 5) -> pd.DataFrame:
    """All RNA->ATAC metrics of one prediction as one tidy table (means over cells / cell types).

    Parameters
    ----------
    pred, true
        Predicted probabilities and measured accessibility (same cells and CREs).
    label_key
        Column of ``true.obs`` holding the cell types (clustering scores, probe, pseudobulk).
    rule, open_fraction
        The binarisation shared by precision/recall/F1 and the clustering input (:func:`binarize`).
    floor
        Each CRE's training open frequency: adds ``AUROC_gain`` (mean AUROC minus the floor's on the same cells)
        and ``within_sd`` / ``across_sd`` (:func:`deviation_spread` of the logit minus the floor's logit).
    cluster
        Add clustering scores (AMI, NMI, ARI, homogeneity) and the cell-type ``probe`` on up to
        ``max_cluster_cells`` cells drawn with ``seed``.
    seed
        Seed of that draw, of the clustering and of the probe's folds.
    max_cluster_cells
        Maximum number of cells clustered and probed (default ``None``: all).
    measured
        ``pred`` is the measured binary state itself: clustered as it is, not re-binarised.
    min_cells
        Minimum test cells of a cell type for its pseudobulk (see :func:`pseudobulk_pearson`).

    Returns
    -------
    DataFrame
        Columns ``metric`` and ``value``: ``AMI``, ``NMI``, ``ARI``, ``homogeneity``, ``probe`` (with ``cluster``);
        ``precision``, ``recall``, ``F1``, ``AUROC``, ``AUPRC`` (means over cells); ``AUROC_gain``, ``within_sd``,
        ``across_sd`` (with ``floor``); ``pseudobulk_pearson`` (mean over cell types weighted by their cells).
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


def genewise_correlation(pred: AnnData, true: AnnData, *, masked: bool = False) -> pd.DataFrame:
    """Gene-wise Pearson and Spearman r across cells between predicted and measured expression (NaN -> 0).

    Parameters
    ----------
    pred
        Predicted expression (AnnData), ``X`` on the log1p scale (as ``cisformer.predict.atac_to_rna`` returns).
    true
        Measured expression of the same cells in the same order (else ``ValueError``), normalised by
        ``true_expression`` over ``pred``'s genes.
    masked
        ``True`` is the paper's convention: predictions are set to zero where the measured value is zero (it uses
        the measured non-zero pattern, so it is not a prediction of it). Default ``False``.

    Returns
    -------
    DataFrame
        Columns ``gene``, ``metric`` (``pearson`` and ``spearman``, with suffix ``_masked`` when ``masked``) and
        ``value``: two rows per gene; constant genes get r = 0.
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
    validation cells of every method that selects an epoch or a parameter.

    Parameters
    ----------
    pred, true
        Predicted (log1p) and measured expression of the same cells, as for :func:`genewise_correlation`.

    Returns
    -------
    float
        Mean over genes of the Pearson r.
    """
    table = genewise_correlation(pred, true)
    return float(table.loc[table["metric"] == "pearson", "value"].mean())


def skill_over_floor(pred: AnnData, true: AnnData, floor: np.ndarray) -> pd.DataFrame:
    """RMSE of the predicted log1p(counts per 10,000) and its skill over the floor (each gene's training mean):
    ``skill = 1 - sum of squared errors / the floor's`` pooled over genes and cells (1 = perfect, 0 = no better
    than the per-gene mean, < 0 = worse). Gene-wise correlation cannot rank the floor (a constant has r = 0),
    this can.

    Parameters
    ----------
    pred, true
        Predicted expression (log1p scale) and measured expression (normalised by ``true_expression``), same cells.
    floor
        [genes] each gene's training mean on the log1p scale, in the order of ``pred.var_names``.

    Returns
    -------
    DataFrame
        Columns ``metric`` (``"rmse"``, ``"skill"``) and ``value``, two rows.
    """
    true = true[:, pred.var_names]
    y_pred, y_true = dense(pred.X).astype(np.float64), true_expression(true).astype(np.float64)
    sse = ((y_pred - y_true) ** 2).sum()
    sse_floor = ((np.asarray(floor, dtype=np.float64)[None, :] - y_true) ** 2).sum()
    return pd.DataFrame({"metric": ["rmse", "skill"],
                         "value": [float(np.sqrt(sse / y_true.size)), float(1 - sse / max(sse_floor, 1e-12))]})


def atac2rna_summary(pred: AnnData, true: AnnData, *, label_key: str = "cell_type", floor: np.ndarray | None = None,
                     cluster: bool = True, seed: int = 0) -> pd.DataFrame:
    """All ATAC->RNA metrics of one prediction: mean gene-wise correlations (unmasked and masked), RMSE and the
    skill over ``floor`` (each gene's training mean, :func:`skill_over_floor`) when given, and the clustering
    scores and cell-type probe of the predicted RNA (when ``cluster`` and labels are present).

    Parameters
    ----------
    pred, true
        Predicted (log1p) and measured expression of the same cells, as for :func:`genewise_correlation`.
    label_key
        Column of ``true.obs`` holding the cell types (clustering and probe).
    floor
        [genes] each gene's training mean (log1p): adds ``rmse`` and ``skill`` (:func:`skill_over_floor`).
    cluster
        Add clustering scores (:func:`rna_clustering` of ``pred``) and the ``probe``; skipped below 3 genes.
    seed
        Seed of the clustering and of the probe's folds.

    Returns
    -------
    DataFrame
        Columns ``metric`` and ``value``: ``pearson``, ``spearman``, ``pearson_masked``, ``spearman_masked``
        (means over genes), then ``rmse``, ``skill`` and ``AMI``, ``NMI``, ``ARI``, ``homogeneity``, ``probe`` when
        computed.
    """
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
