"""CRE-gene link scores and their checks: tidy tables from attention, within-cell-type regression (the default),
in-silico deletion, peak-to-gene correlation, recovery of known links, held-out and reproducibility checks, and
how much prediction the attention path carries (ablation)."""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .extract import (WINDOW, PairAccumulator, Prepared, candidate_pairs, extract, mean_scores, model_vocabulary,
                      pair_anndata, sample_cells, torch_device)

# --------------------------------------------------------------------------------------------- summaries


def _entries(X, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``X[rows[i], cols[i]]`` as a 1-D float array (scipy returns a sparse matrix, not an array, when empty)."""
    if len(rows) == 0:
        return np.zeros(0)
    return np.asarray(X[rows, cols], dtype=np.float64).ravel()


def links_table(per_type: dict[str, ad.AnnData], *, min_cells: int = 1) -> pd.DataFrame:
    """Tidy CRE-gene pairs: one row per (cell type, gene, CRE) co-sampled in at least ``min_cells`` cells.

    Parameters
    ----------
    per_type, min_cells
        Cell type -> genes x CREs AnnData (:func:`extract`, :func:`regression`, :func:`deletion`), and the smallest
        ``layers["n_cells"]`` of a pair kept.

    Returns
    -------
    DataFrame with columns ``cell_type``, ``gene``, ``cre``, ``score`` (mean normalised attention), ``n_cells``,
    ``rank`` (1 = strongest pair of that cell type).
    """
    frames = []
    for cell_type, adata in per_type.items():
        n = adata.layers["n_cells"].tocoo()
        keep = n.data >= min_cells
        rows, cols = n.row[keep], n.col[keep]
        score = _entries(adata.X, rows, cols)
        frame = pd.DataFrame({"cell_type": cell_type, "gene": adata.obs_names[rows], "cre": adata.var_names[cols],
                              "score": score, "n_cells": n.data[keep].astype(np.int64)})
        frame["rank"] = frame["score"].rank(ascending=False, method="first").astype(np.int64)
        frames.append(frame)
    cols = ["cell_type", "gene", "cre", "score", "n_cells", "rank"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


SCORERS = {"regression": "within-cell-type regression", "deletion": "in-silico deletion",
           "attention": "attention (paper's normalisation)", "attention-raw": "attention (raw weights)"}
DEFAULT_SCORER = "regression"  # the best or tied-best scorer of planted links in most settings (notebook 04)


def links(model, rna: ad.AnnData, atac: ad.AnnData, scorer: str = DEFAULT_SCORER, *, min_cells: int = 1,
          **kwargs) -> pd.DataFrame:
    """CRE-gene links per cell type as a tidy DataFrame (:func:`links_table`, plus a ``scorer`` column).

    Parameters
    ----------
    model, rna, atac
        A trained :class:`cisformer.model.Cisformer` (or ``None``, see ``scorer``) and the paired AnnData.
    scorer
        ``"regression"`` (within-cell-type regression, :func:`regression`; the default, reads the data only, so
        ``model`` may be None), ``"deletion"`` (in-silico deletion of a trained atac2rna model, :func:`deletion`),
        ``"attention"`` (the paper's reading: rank- or log-normalised attention, :func:`extract`) or
        ``"attention-raw"`` (attention weights without normalisation).
    min_cells
        Smallest number of cells behind a pair kept (:func:`links_table`).
    **kwargs
        Go to the reader (cell types, cells per type, window, seed, device; ``device`` is dropped for regression).

    Returns
    -------
    The columns of :func:`links_table` and ``scorer`` (the scorer's description).
    """
    if scorer not in SCORERS:
        raise ValueError(f"scorer must be one of {list(SCORERS)}, got {scorer!r}")
    if scorer == "regression":
        kwargs.pop("device", None)
        per_type = regression(rna, atac, model, **kwargs)
    elif model is None:
        raise ValueError(f"scorer {scorer!r} reads a trained model: pass one (only 'regression' needs none)")
    elif scorer == "deletion":
        per_type = deletion(model, rna, atac, **kwargs)
    else:
        per_type = extract(model, rna, atac, normalize=scorer == "attention", **kwargs)
    return links_table(per_type, min_cells=min_cells).assign(scorer=SCORERS[scorer])


def explain_empty_links(model, rna: ad.AnnData, atac: ad.AnnData, window: int | None = WINDOW,
                        cell_type_key: str = "cell_type", n_cells_per_type: int | None = 100) -> str:
    """Why :func:`links` found no CRE-gene pair, and what to change, in one paragraph (``model=None``: the data's
    own genes and CREs, as the regression scorer reads them).

    Checks in order: genes of the model with coordinates in ``rna.var`` (``chrom``, ``tss``), CREs within
    ``window`` of a TSS (reports the nearest gene-CRE distance and the chromosomes of each), and otherwise pairs
    that exist but were never co-sampled (gene and CRE both among a read cell's tokens).

    Parameters
    ----------
    model, rna, atac, window, cell_type_key, n_cells_per_type
        As given to :func:`links` (``window=None``: any distance); the cells read are only quoted in the message.

    Returns
    -------
    str, the explanation and the fix.
    """
    genes, cres = model_vocabulary(model, rna, atac)
    chrom = genes["chrom"].astype(str) if "chrom" in genes else pd.Series("", index=genes.index)
    tss = pd.to_numeric(genes["tss"] if "tss" in genes else genes.get("start", pd.Series(np.nan, index=genes.index)),
                        errors="coerce")
    located = (chrom.str.len() > 0) & (chrom != "nan") & tss.notna()
    if not located.any():
        whose = "the model's" if model is not None else "the"
        return (f"none of {whose} {len(genes)} genes in the data has coordinates (rna.var 'chrom' and 'tss' are "
                "empty). Fix: annotate the genes (cisformer preprocess --genome hg38|mm10, or "
                "cisformer.data.read_paired(..., genome=...)), or add rna.var chrom/tss yourself.")
    window_text = "any distance" if window is None else f"{window:,} bp"
    pairs = candidate_pairs(genes, cres, window if window is not None else 10**10)
    if len(pairs) == 0:
        g_chroms, c_chroms = set(chrom[located]), set(cres["chrom"].astype(str))
        shared = sorted(g_chroms & c_chroms)
        mid = (cres["start"].to_numpy(float) + cres["end"].to_numpy(float)) / 2
        nearest = min((np.abs(mid[cres["chrom"].astype(str).to_numpy() == c][:, None]
                              - tss[located & (chrom == c)].to_numpy()[None, :]).min() for c in shared), default=None)
        where = (f"the nearest CRE is {nearest:,.0f} bp from a TSS" if nearest is not None else
                 f"genes and CREs share no chromosome (genes on {sorted(g_chroms)[:5]}, CREs on {sorted(c_chroms)[:5]})")
        fix = ("use genes and CREs of the same regions (keep more of them at preprocess, e.g. a lower --min-cells, "
               "or use the whole data set)" + ("" if not shared else ", or a larger --window"))
        return (f"no CRE lies within {window_text} of the TSS of any of the {int(located.sum())} located genes: "
                f"{where}. Fix: {fix}.")
    n_types = rna.obs[cell_type_key].nunique() if cell_type_key in rna.obs else 0
    return (f"{len(pairs)} gene-CRE pairs lie within {window_text}, but none was co-sampled (gene expressed and "
            f"CRE open in the same cell, both among its tokens) in the cells read ({n_types} cell type(s), up to "
            f"{n_cells_per_type} cells each). Fix: read more cells (--cells-per-type), check that the window's genes "
            "are expressed and its CREs open in these cells, or train with larger token budgets.")


def pair_scores(per_type: dict[str, ad.AnnData], pairs: pd.DataFrame, *, how: str = "mean") -> pd.Series:
    """Score of given (``gene``, ``cre``) pairs, combined over cell types (``mean`` or ``max``; pairs never
    co-sampled count as 0). Used to rank the same candidate pairs as the baselines.

    Parameters
    ----------
    per_type, pairs
        Cell type -> genes x CREs AnnData (:func:`extract`), and a DataFrame of pairs (``gene``, ``cre``).
    how
        ``"mean"`` or ``"max"`` over cell types (anything but ``"max"`` means the mean).

    Returns
    -------
    Series named ``"attention"``, indexed like ``pairs``.
    """
    stack = []
    for adata in per_type.values():
        gi = adata.obs_names.get_indexer(pairs["gene"])
        ci = adata.var_names.get_indexer(pairs["cre"])
        ok = (gi >= 0) & (ci >= 0)
        vals = np.zeros(len(pairs))
        vals[ok] = _entries(adata.X, gi[ok], ci[ok])
        stack.append(vals)
    stack = np.vstack(stack)
    combined = stack.max(0) if how == "max" else stack.mean(0)
    return pd.Series(combined, index=pairs.index, name="attention")


def gene_scores(per_type: dict[str, ad.AnnData], *, how: str = "sum") -> pd.DataFrame:
    """Gene-wise attention per cell type: ``sum`` or ``mean`` over a gene's co-sampled window CREs.

    Parameters
    ----------
    per_type, how
        Cell type -> genes x CREs AnnData (:func:`extract`; the same genes in every type), and ``"sum"`` or ``"mean"``.

    Returns
    -------
    DataFrame genes x cell types (NaN for ``mean`` where a gene had no co-sampled CRE).
    """
    out = {}
    for cell_type, adata in per_type.items():
        total = np.asarray(adata.X.sum(1)).ravel()
        if how == "sum":
            out[cell_type] = total
        elif how == "mean":
            n_seen = np.asarray((adata.layers["n_cells"] > 0).sum(1)).ravel()
            with np.errstate(invalid="ignore", divide="ignore"):
                out[cell_type] = np.where(n_seen > 0, total / np.maximum(n_seen, 1), np.nan)
        else:
            raise ValueError(f"how must be 'sum' or 'mean', got {how!r}")
    first = next(iter(per_type.values()))
    return pd.DataFrame(out, index=first.obs_names)


def linked_cre_counts(per_type: dict[str, ad.AnnData], *, quantile: float = 0.9) -> pd.DataFrame:
    """Number of linked CREs per gene and cell type: pairs whose score exceeds the cell type's ``quantile``
    (90th percentile by default) of co-sampled pair scores.

    Parameters
    ----------
    per_type, quantile
        Cell type -> genes x CREs AnnData (:func:`extract`), and the quantile (in [0, 1]) of each type's stored
        pair scores used as its cutoff.

    Returns
    -------
    DataFrame genes x cell types (int).
    """
    out = {}
    for cell_type, adata in per_type.items():
        X = adata.X.tocsr()
        cutoff = np.quantile(X.data, quantile) if X.nnz else np.inf
        out[cell_type] = np.asarray((X > cutoff).sum(1)).ravel().astype(np.int64)
    first = next(iter(per_type.values()))
    return pd.DataFrame(out, index=first.obs_names)


# --------------------------------------------------------------------------------------------- known truth

def peak_to_gene_correlation(rna: ad.AnnData, atac: ad.AnnData, pairs: pd.DataFrame, *, n_metacells: int = 500,
                             metacell_size: int = 50, n_comps: int = 30, seed: int = 0) -> np.ndarray:
    """ArchR-style peak-to-gene correlation for every given pair: kNN metacells in ATAC LSI space (TF-IDF ->
    truncated SVD, first component dropped), mean binarised accessibility vs mean log-normalised expression,
    Pearson across metacells.

    Private to this module because :class:`cisformer.peers.baselines.PeakToGene` keeps only the links above its
    cutoff and not their correlations; link recovery needs a score for every candidate pair.

    Parameters
    ----------
    rna, atac, pairs
        Paired AnnData (same cells, same order; raw counts) and the pairs (``gene``, ``cre``: their var names).
    n_metacells, metacell_size, n_comps, seed
        Metacells (at most ``max(10, n_obs // 5)``) of ``metacell_size`` cells (a random cell and its nearest
        neighbours), LSI components (the first is dropped), and the seed of the SVD and the metacells.

    Returns
    -------
    float array, one Pearson r per row of ``pairs`` (0 where a profile is constant).
    """
    from sklearn.decomposition import TruncatedSVD

    from ...metrics import exact_neighbors
    from ..enrichment import pearson_pairs

    binary = sp.csr_matrix(atac.X, dtype=np.float32)
    binary.data[:] = 1.0
    idf = np.log1p(binary.shape[0] / (1.0 + np.asarray(binary.sum(0)).ravel()))
    tf = sp.diags(1.0 / np.maximum(np.asarray(binary.sum(1)).ravel(), 1.0)) @ binary
    tfidf = sp.csr_matrix(tf @ sp.diags(idf))
    n_comps = max(2, min(n_comps, min(tfidf.shape) - 1))
    lsi = TruncatedSVD(n_comps, random_state=seed).fit_transform(tfidf)[:, 1:]
    lsi /= np.maximum(np.linalg.norm(lsi, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(seed)
    n_meta = min(n_metacells, max(10, atac.n_obs // 5))
    k = min(metacell_size, atac.n_obs)
    seeds = rng.choice(atac.n_obs, n_meta, replace=False)
    members = exact_neighbors(lsi, k).kneighbors(np.asarray(lsi[seeds], dtype=np.float64), return_distance=False)
    agg = sp.csr_matrix((np.full(members.size, 1.0 / k), (np.repeat(np.arange(n_meta), k), members.ravel())),
                        shape=(n_meta, atac.n_obs))
    counts = sp.csr_matrix(rna.X, dtype=np.float64)
    depth = np.maximum(np.asarray(counts.sum(1)).ravel(), 1.0)
    log_expr = sp.csr_matrix(sp.diags(1e4 / depth) @ counts)
    log_expr.data = np.log1p(log_expr.data)
    meta_acc = np.asarray((agg @ binary).todense())
    meta_expr = np.asarray((agg @ log_expr).todense())
    gi = rna.var_names.get_indexer(pairs["gene"])
    ci = atac.var_names.get_indexer(pairs["cre"])
    return pearson_pairs(meta_expr, meta_acc, gi, ci)


def scarlink_coefficients(rna: ad.AnnData, atac: ad.AnnData, pairs: pd.DataFrame, *, seed: int = 0,
                          **kwargs) -> np.ndarray:
    """SCARlink-style score of every given pair: the non-negative Poisson-regression coefficient of
    :class:`cisformer.peers.baselines.ScarlinkStyle` (0 for pairs outside its window).

    Parameters
    ----------
    rna, atac, pairs
        Paired AnnData the regression is fitted on (raw counts) and the pairs scored (``gene``, ``cre``).
    seed, **kwargs
        Seed of the fit; arguments of :class:`~cisformer.peers.baselines.ScarlinkStyle` (``window``, ``l2``, ...).

    Returns
    -------
    float array, one coefficient per row of ``pairs``.
    """
    from ...peers.baselines import ScarlinkStyle

    coef = ScarlinkStyle(**kwargs).fit(rna, atac, seed=seed).coefficients
    lookup = pd.Series(coef["weight"].to_numpy(), index=pd.MultiIndex.from_arrays([coef["gene"], coef["cre"]]))
    lookup = lookup[~lookup.index.duplicated()]
    return lookup.reindex(pd.MultiIndex.from_arrays([pairs["gene"], pairs["cre"]])).fillna(0.0).to_numpy()


def regression_coefficients(rna: ad.AnnData, atac: ad.AnnData, pairs: pd.DataFrame, alpha: float = 1.0,
                            *, groups=None) -> np.ndarray:
    """Regression score of every given pair: per gene, ridge regression (penalty ``alpha``, intercept not
    penalised) of its log-normalised expression (log1p counts per 10,000, :func:`cisformer.data.true_expression`)
    on the binary accessibility of all of that gene's CREs in ``pairs``; the score is the CRE's coefficient
    (signed: a CRE whose opening lowers expression ranks last).

    Parameters
    ----------
    rna, atac, pairs
        Paired AnnData with identical ``obs_names`` (raw counts) and the pairs (``gene``, ``cre``: their var names).
    alpha
        Ridge penalty (>= 0), on the scale of the summed squares of the centred 0/1 accessibility (about the
        number of cells in which a CRE is open), so 1 is close to least squares on thousands of cells.
    groups
        One label per cell (e.g. ``rna.obs["cell_type"]``). Expression and accessibility are then centred
        within each group (a fixed effect per group), so only covariation *within* groups counts: what all CREs of a
        cell type's program share with the type's genes (cell identity, trans regulation) is not taken for a link.
        This is the pooled form of :func:`regression`, the default link scorer.

    Returns
    -------
    float array, one coefficient per row of ``pairs`` (log1p expression per open CRE).
    """
    from ...data.preprocess import true_expression

    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    gi = rna.var_names.get_indexer(pairs["gene"])
    ci = atac.var_names.get_indexer(pairs["cre"])
    if (gi < 0).any() or (ci < 0).any():
        raise ValueError("pairs name genes / CREs absent from rna.var_names / atac.var_names; build them with "
                         "candidate_pairs(rna.var, atac.var)")
    if not np.array_equal(rna.obs_names, atac.obs_names):
        raise ValueError("rna and atac must hold the same cells in the same order (identical obs_names)")
    codes = np.zeros(rna.n_obs, dtype=np.int64) if groups is None else pd.factorize(np.asarray(groups))[0]
    if len(codes) != rna.n_obs or (codes < 0).any():
        raise ValueError(f"groups must give one label per cell ({rna.n_obs}), without missing values")
    member = sp.csr_matrix((np.ones(len(codes)), (np.arange(len(codes)), codes)))  # cells x groups
    size = np.asarray(member.sum(0)).ravel()

    def centred(m: np.ndarray) -> np.ndarray:
        return m - member @ ((member.T @ m) / size[:, None])

    binary = sp.csc_matrix(atac.X, dtype=np.float64)
    binary.data = (binary.data > 0).astype(np.float64)
    expression = true_expression(rna)  # normalised over all genes of the cell, then log1p
    scores = np.zeros(len(pairs))
    for gene in np.unique(gi):
        rows = np.flatnonzero(gi == gene)
        y = centred(expression[:, [gene]].astype(np.float64))[:, 0]
        x = centred(binary[:, ci[rows]].toarray())
        gram = x.T @ x + alpha * np.eye(len(rows))
        scores[rows] = np.linalg.lstsq(gram, x.T @ y, rcond=None)[0]
    return scores


def regression(rna: ad.AnnData, atac: ad.AnnData, model=None, *, cell_type_key: str = "cell_type",
               n_cells_per_type: int | None = None, window: int = WINDOW, alpha: float = 1.0, seed: int = 0,
               cells: dict[str, np.ndarray] | None = None, progress: bool = False) -> dict[str, ad.AnnData]:
    """Per-cell-type CRE-gene links by within-cell-type regression: the default link score.

    On the cells of each type, per gene, ridge regression of its log-normalised expression on the binary
    accessibility of every CRE within ``window`` of its TSS (:func:`regression_coefficients`); a pair's score is the
    CRE's coefficient, in expression units (log1p counts per 10,000 per open CRE), signed. Reading within one cell
    type leaves out what every CRE of the type's program shares with the type's genes (cell identity, trans
    regulation), which pooled regression and correlation take for links. On planted links (notebook 04,
    ``figures/links_gwas/link_recovery_simulated_mean.csv``) its pooled form is the best or tied-best scorer in
    most settings; the model-based readers (:func:`deletion`, :func:`extract`) are not.

    Parameters
    ----------
    rna, atac, model
        Paired AnnData (raw counts). It reads the data, not a model: ``model``, when given, only restricts genes
        and CREs to its vocabulary, so that the pairs are those its readers score.
    cell_type_key, n_cells_per_type, seed, cells
        Cells: ``n_cells_per_type`` random cells of each type (``None``, the default: all), or ``cells`` (row
        positions per type).
    window, alpha, progress
        Window (bp) of the pairs, ridge penalty (:func:`regression_coefficients`), a progress bar over cell types.

    Returns
    -------
    As :func:`extract` (``uns["normalization"] = "regression"``). ``layers["n_cells"]`` counts the cells of the
    type in which the CRE is open (a pair whose CRE is never open there gets no score).
    """
    from ...utils.progress import progress as progress_bar

    gene_var, cre_var = model_vocabulary(model, rna, atac)
    pairs = candidate_pairs(gene_var, cre_var, window)
    cre_cols = atac.var_names.get_indexer(pairs["cre"])
    cells = cells if cells is not None else sample_cells(rna.obs, cell_type_key, n_cells_per_type, seed)
    result = {}
    for cell_type, rows in progress_bar(cells.items(), desc="within-cell-type regression", disable=not progress):
        sub_rna, sub_atac = rna[rows], atac[rows]
        score = regression_coefficients(sub_rna, sub_atac, pairs, alpha)
        n_open = np.asarray((sp.csc_matrix(sub_atac.X)[:, cre_cols] > 0).sum(0)).ravel()
        out = pair_anndata(score, n_open, pairs, gene_var, cre_var)
        out.uns.update(cell_type=cell_type, n_cells=int(len(rows)), window=int(window), normalization="regression")
        result[cell_type] = out
    return result


def link_recovery(pairs: pd.DataFrame, scores: dict[str, np.ndarray], truth: pd.DataFrame) -> pd.DataFrame:
    """AUROC and AUPRC (average precision) of each method's scores for the same candidate pairs against planted
    links.

    Parameters
    ----------
    pairs, truth, scores
        Candidate pairs and planted links (``gene``, ``cre``); method -> one score per pair (NaN counts as 0).

    Returns
    -------
    One row per method: ``method``, ``auroc``, ``auprc``, ``n_pairs``, ``n_true``, ``base_rate`` (AUPRC of random).
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    key = pd.MultiIndex.from_arrays([pairs["gene"], pairs["cre"]])
    label = key.isin(pd.MultiIndex.from_arrays([truth["gene"], truth["cre"]])).astype(int)
    if label.sum() == 0 or label.sum() == len(label):
        raise ValueError("the candidate pairs must contain both planted and non-planted links")
    rows = []
    for method, score in scores.items():
        score = np.nan_to_num(np.asarray(score, dtype=float))
        rows.append({"method": method, "auroc": roc_auc_score(label, score),
                     "auprc": average_precision_score(label, score), "n_pairs": len(label),
                     "n_true": int(label.sum()), "base_rate": float(label.mean())})
    return pd.DataFrame(rows)


def held_out_check(rna: ad.AnnData, atac: ad.AnnData, pairs: pd.DataFrame, scores: dict[str, np.ndarray],
                   fit_cells, test_cells, *, k: int = 3, n_random: int = 20, seed: int = 0) -> pd.DataFrame:
    """A link check that needs no external truth: do a scorer's top CREs of a gene predict its expression in cells
    the scorer never read (held-out libraries) better than other CREs of the same window?

    Per gene with more than ``k`` candidate CREs and each scorer: the ``k`` best-scored CREs (ties broken towards
    the TSS), a least-squares line of the gene's log-normalised expression (:func:`cisformer.metrics.
    true_expression`) on their binary accessibility fitted on ``fit_cells``, scored on ``test_cells`` by the
    out-of-sample R^2 against the fitted cells' mean (``1 - SSE / sum((y - mean_fit)^2)``, which can be negative).
    The same for the ``k`` CREs nearest the TSS and for ``n_random`` random ``k``-sets of the window (their mean).

    Parameters
    ----------
    rna, atac
        Paired AnnData, the same cells in the same order (raw counts).
    pairs, scores
        Candidate pairs (:func:`candidate_pairs`, with ``distance``); scorer -> one score per pair, computed on
        cells of ``fit_cells`` only.
    fit_cells, test_cells, k, n_random, seed
        Disjoint obs names of the fitting and held-out cells; CREs per set; random sets per gene and their seed.

    Returns
    -------
    One row per (gene, scorer): ``gene``, ``scorer``, ``n_window``, ``r2`` (held-out R^2 of the scorer's CREs),
    ``r2_nearest``, ``r2_random``, ``delta_random`` (= r2 - r2_random), ``delta_nearest``.
    """
    from ...data.preprocess import true_expression

    rng = np.random.default_rng(seed)
    fit_idx, test_idx = (rna.obs_names.get_indexer(pd.Index(c).astype(str)) for c in (fit_cells, test_cells))
    if (fit_idx < 0).any() or (test_idx < 0).any():
        raise ValueError("fit_cells / test_cells must be obs names of rna")
    if np.intersect1d(fit_idx, test_idx).size:
        raise ValueError("fit_cells and test_cells overlap: the check needs cells the scorers never read")
    binary = sp.csc_matrix(atac.X, dtype=np.float64)
    binary.data = (binary.data > 0).astype(np.float64)
    expression = true_expression(rna)
    gi = rna.var_names.get_indexer(pairs["gene"])
    ci = atac.var_names.get_indexer(pairs["cre"])
    distance = np.abs(pairs["distance"].to_numpy())

    def r2(gene, cres):
        x = binary[:, cres].toarray()
        design = lambda rows: np.column_stack([np.ones(len(rows)), x[rows]])  # noqa: E731
        y = expression[:, gene].astype(np.float64)
        coef = np.linalg.lstsq(design(fit_idx), y[fit_idx], rcond=None)[0]
        sst = ((y[test_idx] - y[fit_idx].mean()) ** 2).sum()
        return 1.0 - ((y[test_idx] - design(test_idx) @ coef) ** 2).sum() / sst if sst > 0 else np.nan

    rows = []
    for gene in np.unique(gi):
        window = np.flatnonzero(gi == gene)
        if len(window) <= k:
            continue
        by_distance = window[np.argsort(distance[window], kind="stable")]
        nearest = r2(gene, ci[by_distance[:k]])
        random = np.nanmean([r2(gene, ci[rng.choice(window, k, replace=False)]) for _ in range(n_random)])
        for scorer, score in scores.items():
            ranked = by_distance[np.argsort(-np.nan_to_num(np.asarray(score, dtype=float)[by_distance]), kind="stable")]
            value = r2(gene, ci[ranked[:k]])
            rows.append({"gene": rna.var_names[gene], "scorer": scorer, "n_window": len(window), "r2": value,
                         "r2_nearest": nearest, "r2_random": random, "delta_random": value - random,
                         "delta_nearest": value - nearest})
    return pd.DataFrame(rows)


def score_reproducibility(pairs: pd.DataFrame, scores_a: dict[str, np.ndarray],
                          scores_b: dict[str, np.ndarray]) -> pd.DataFrame:
    """Whether each scorer ranks a gene's window CREs the same way on two disjoint sets of cells (e.g. two halves of
    the libraries): per gene with at least 3 candidate CREs, the Spearman correlation of the pair scores from ``a``
    and from ``b`` (genes whose scores are constant in either are skipped).

    Parameters
    ----------
    pairs, scores_a, scores_b
        Candidate pairs (``gene``) and, from each set of cells, scorer -> one score per row of ``pairs``.

    Returns
    -------
    One row per scorer: ``scorer``, ``n_genes``, ``spearman_mean``, ``spearman_median``.
    """
    from scipy.stats import spearmanr

    genes = pairs["gene"].to_numpy()
    rows = []
    for scorer in scores_a:
        a, b = np.asarray(scores_a[scorer], dtype=float), np.asarray(scores_b[scorer], dtype=float)
        rhos = []
        for gene in pd.unique(genes):
            window = np.flatnonzero(genes == gene)
            if len(window) >= 3 and np.ptp(a[window]) > 0 and np.ptp(b[window]) > 0:
                rhos.append(spearmanr(a[window], b[window])[0])
        rows.append({"scorer": scorer, "n_genes": len(rhos), "spearman_mean": float(np.mean(rhos)) if rhos else np.nan,
                     "spearman_median": float(np.median(rhos)) if rhos else np.nan})
    return pd.DataFrame(rows)


def _add_deletions(acc: PairAccumulator, model, keys_ds, rows, query: np.ndarray, device: str,
                   batch_size: int) -> None:
    """For each cell of ``rows``: the drop in every ``query`` gene's predicted expression (expected log1p over the
    bins) when one of its open CREs is removed, added to ``acc`` for the CREs that pair with a queried gene."""
    centres = model.bin_centres().to(device)
    q = torch.as_tensor(query, device=device)
    for r in rows:
        cres = keys_ds[int(r)]["cre_idx"]
        if len(cres) == 0:
            acc.add_cell(query, cres, np.zeros((len(query), 0)))
            continue
        relevant = np.flatnonzero(np.asarray(acc.pair_id[query][:, cres].sum(0)).ravel() > 0)  # CREs with a pair
        k = torch.as_tensor(cres, device=device)
        effects = np.zeros((len(query), len(cres)))
        drops = np.concatenate([[-1], relevant])
        base = None
        for start in range(0, len(drops), batch_size):
            chunk = drops[start:start + batch_size]
            pad = torch.zeros(len(chunk), len(cres), dtype=torch.bool, device=device)
            for i, d in enumerate(chunk):
                if d >= 0:
                    pad[i, d] = True
            batch = {"gene_idx": q.expand(len(chunk), -1), "gene_pad": torch.zeros(len(chunk), len(q), dtype=torch.bool,
                                                                                  device=device),
                     "cre_idx": k.expand(len(chunk), -1), "cre_pad": pad}
            expected = (model(batch).softmax(-1) @ centres).cpu().numpy()  # (chunk, genes)
            if base is None:
                base, expected, chunk = expected[0], expected[1:], chunk[1:]
            effects[:, chunk] = (base[None, :] - expected).T
        acc.add_cell(query, cres, effects)


def _check_deletion_model(model) -> None:
    if model.config.direction != "atac2rna":
        raise ValueError("in-silico deletion needs an atac2rna model (genes are predicted from open CREs); read an "
                         "rna2atac model's links with scorer='attention'")


@torch.no_grad()
def deletion_effects(model, rna: ad.AnnData, atac: ad.AnnData, pairs: pd.DataFrame, *, n_cells: int = 100,
                     seed: int = 0, device: str = "cpu", batch_size: int = 64) -> np.ndarray:
    """In-silico CRE deletion (atac2rna models): for each candidate pair, the mean drop in the gene's predicted
    expression (expected log1p over the bins) when that one CRE is removed from the cell's open CREs, averaged
    over the sampled cells in which the CRE was open. A readout of what the model *uses*, to contrast with its
    attention weights (which can pool cell state without pointing at the causal CRE). Per cell type and as a
    links table: :func:`deletion`.

    Parameters
    ----------
    model, rna, atac, pairs
        A trained atac2rna model, the paired AnnData and the pairs (``gene``, ``cre``; in the vocabulary and data).
    n_cells, seed, device, batch_size
        Random cells read (all when fewer) and their seed, torch device or ``"auto"``, deletions per forward pass.

    Returns
    -------
    float64 array, one mean drop per row of ``pairs`` (0 where the CRE was open in no read cell).
    """
    from ... import sampler

    _check_deletion_model(model)
    prep = Prepared(model, rna, atac)
    device = torch_device(device)
    gene_vocab = prep.genes_kept[prep.gene_var.index.get_indexer(pairs["gene"])]
    cre_vocab = prep.cres_kept[prep.cre_var.index.get_indexer(pairs["cre"])]
    pair_id = sp.csr_matrix((np.arange(1, len(pairs) + 1), (gene_vocab, cre_vocab)),
                            shape=(len(model.gene_names), len(model.cre_names)))
    rows = np.random.default_rng(seed).choice(rna.n_obs, min(n_cells, rna.n_obs), replace=False)
    acc = PairAccumulator(pair_id)
    model = model.to(device).eval()
    _add_deletions(acc, model, sampler.CellKeys(prep.atac_X, model.config, seed=seed), rows, np.unique(gene_vocab),
                   device, batch_size)
    return mean_scores(acc)


@torch.no_grad()
def deletion(model, rna: ad.AnnData, atac: ad.AnnData, *, cell_type_key: str = "cell_type",
             n_cells_per_type: int | None = 100, window: int = WINDOW, batch_size: int = 64, seed: int = 0,
             device: str = "cpu", cells: dict[str, np.ndarray] | None = None,
             progress: bool = False) -> dict[str, ad.AnnData]:
    """Per-cell-type CRE-gene links by in-silico deletion (atac2rna models): the default link score.

    For every sampled cell and every open CRE within ``window`` of a gene's TSS, the drop in the gene's
    predicted expression (expected log1p(counts per 10,000)) when that CRE alone is removed from the cell's open
    CREs; per cell type, the mean over the cells in which the CRE was open. It reads what the trained model
    *uses*; the attention weights (:func:`extract`) can pool cell state without pointing at the CRE that drives a
    gene (on planted links, deletion recovers them where attention does not: notebook 04). A score is in
    expression units, so strength and cell-type specificity show; ``layers["n_cells"]`` says how many cells each
    value rests on.

    Parameters
    ----------
    model, rna, atac, cell_type_key, n_cells_per_type, window, seed, device, cells, batch_size, progress
        As :func:`extract` (with an atac2rna model); ``batch_size``: deletions evaluated per forward pass;
        ``progress`` shows a bar over cell types.

    Returns
    -------
    As :func:`extract` (``uns["normalization"] = "deletion"``).
    """
    from ... import sampler
    from ...utils.progress import progress as progress_bar

    _check_deletion_model(model)
    prep = Prepared(model, rna, atac)
    pairs = candidate_pairs(prep.gene_var, prep.cre_var, window)
    pair_id = sp.csr_matrix((np.arange(1, len(pairs) + 1, dtype=np.int64),
                             (prep.genes_kept[pairs["gene_idx"]], prep.cres_kept[pairs["cre_idx"]])),
                            shape=(len(model.gene_names), len(model.cre_names)))
    query = np.unique(prep.genes_kept[pairs["gene_idx"]])
    device = torch_device(device)
    model = model.to(device).eval()
    keys_ds = sampler.CellKeys(prep.atac_X, model.config, seed=seed)
    cells = cells if cells is not None else sample_cells(rna.obs, cell_type_key, n_cells_per_type, seed)
    result = {}
    for cell_type, rows in progress_bar(cells.items(), desc="in-silico deletion", disable=not progress):
        acc = PairAccumulator(pair_id)
        if len(query):
            _add_deletions(acc, model, keys_ds, rows, query, device, batch_size)
        out = pair_anndata(mean_scores(acc), acc.count, pairs, prep.gene_var, prep.cre_var)
        out.uns.update(cell_type=cell_type, n_cells=int(len(rows)), direction=model.config.direction,
                       window=int(window), normalization="deletion")
        result[cell_type] = out
    return result


def path_ablation(model, rna: ad.AnnData, atac: ad.AnnData) -> dict:
    """How much of the prediction the model's attention path carries, on the given cells (held-out ones): the
    direction's learning criterion with the path and without it (``model.ablate_attention``). rna2atac: mean
    per-cell AUROC gain over the base rate (the floor); atac2rna: mean gene-wise Pearson r of the predicted and
    measured log1p(counts per 10,000).

    Parameters
    ----------
    model, rna, atac
        A trained ``arch="cisformer"`` model (ValueError otherwise) and paired AnnData of the cells evaluated.

    Returns
    -------
    dict ``{"criterion", "with", "without", "carried"}``: name, value with / without the path, difference.
    """
    from ... import metrics, predict

    if model.config.arch != "cisformer":
        raise ValueError("path_ablation needs an arch='cisformer' model (the paper's has no separable path)")
    values = []
    for ablate in (False, True):
        model.ablate_attention = ablate
        try:
            if model.config.direction == "rna2atac":
                pred = predict.rna_to_atac(model, rna)
                truth = np.asarray((atac[:, pred.var_names].X > 0).toarray() if sp.issparse(atac.X)
                                   else atac[:, pred.var_names].X > 0)
                floor = np.broadcast_to(model.query_prior.cpu().numpy(), truth.shape)
                values.append(np.nanmean(metrics.per_cell_auroc(pred.X, truth))
                              - np.nanmean(metrics.per_cell_auroc(floor, truth)))
            else:
                corr = metrics.genewise_correlation(predict.atac_to_rna(model, atac), rna)
                values.append(corr.loc[corr["metric"] == "pearson", "value"].mean())
        finally:
            model.ablate_attention = False
    criterion = "AUROC gain over the floor" if model.config.direction == "rna2atac" else "gene-wise Pearson"
    return {"criterion": criterion, "with": float(values[0]), "without": float(values[1]),
            "carried": float(values[0] - values[1])}
