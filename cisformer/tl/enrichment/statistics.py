"""Interval overlaps, one-sided tests, pseudobulk correlation of CRE-gene pairs (top-k vs random, Fig 3d-e),
Benjamini-Hochberg q-values and expression by number of linked CREs (Fig 3h-i).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

# --------------------------------------------------------------------------------------------- intervals


def overlap_index(query: pd.DataFrame, ref: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(query row, ref row) position pairs of >= 1 bp overlaps (:func:`cisformer.data.vocab.overlap_index`).

    Parameters
    ----------
    query, ref
        Interval tables with ``chrom``, ``start``, ``end`` (0-based half-open); their index is ignored.

    Returns
    -------
    tuple of two int64 arrays of equal length: the row positions in ``query`` and in ``ref`` of each overlap.
    """
    from ...data.vocab import overlap_index as shared

    qi, ri = shared(query.reset_index(drop=True), ref.reset_index(drop=True))
    return np.asarray(qi, dtype=np.int64), np.asarray(ri, dtype=np.int64)


# --------------------------------------------------------------------------------------------- tests

def one_sided_ttest(a, b) -> tuple[float, float]:
    """Welch t-test of mean(a) > mean(b): (t, p). NaN when either side has fewer than 2 values.

    Parameters
    ----------
    a, b
        The two samples (array-like); non-finite values are dropped.

    Returns
    -------
    tuple ``(t, p)`` of floats.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        return float("nan"), float("nan")
    res = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    return float(res.statistic), float(res.pvalue)


def empirical_p(observed: float, null: np.ndarray) -> float:
    """One-sided empirical p-value ``(1 + #null >= observed) / (1 + n)``.

    Parameters
    ----------
    observed
        The observed statistic.
    null
        The statistic of each null draw; non-finite values are dropped.

    Returns
    -------
    float; NaN when ``observed`` is not finite or no null value is.
    """
    null = np.asarray(null, dtype=float)
    null = null[np.isfinite(null)]
    if not np.isfinite(observed) or not len(null):
        return float("nan")
    return float((1 + (null >= observed).sum()) / (1 + len(null)))


# --------------------------------------------------------------------------------------------- correlation

def metacell_groups(obs: pd.DataFrame, cell_type_key: str = "cell_type", *, cells_per_group: int = 20,
                    seed: int = 0) -> np.ndarray:
    """Pseudobulk labels: the cells of each type split at random into groups of about ``cells_per_group``.

    Parameters
    ----------
    obs
        Cell table (``adata.obs``).
    cell_type_key
        Column of ``obs`` holding the cell types.
    cells_per_group
        Target cells per group (a type with fewer cells forms one group).
    seed
        Seed of the random split.

    Returns
    -------
    str array, one label ``"<cell type>|<k>"`` per cell.
    """
    rng = np.random.default_rng(seed)
    labels = obs[cell_type_key].astype(str).to_numpy()
    groups = np.empty(len(labels), dtype=object)
    for cell_type in pd.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == cell_type))
        n_groups = max(1, len(rows) // cells_per_group)
        for g, chunk in enumerate(np.array_split(rows, n_groups)):
            groups[chunk] = f"{cell_type}|{g}"
    return groups.astype(str)


def pseudobulk(X, groups: np.ndarray, *, target_sum: float = 1e4) -> tuple[np.ndarray, np.ndarray]:
    """Sum cells per group, scale each group to ``target_sum`` and log1p.

    Parameters
    ----------
    X
        Cells x features counts (dense or sparse).
    groups
        One group label per cell.
    target_sum
        Total each group is scaled to (groups with a zero total stay zero).

    Returns
    -------
    tuple ``(names, values)``: the sorted group names and a float64 array groups x features.
    """
    names, inverse = np.unique(np.asarray(groups), return_inverse=True)
    member = sp.csr_matrix((np.ones(len(inverse)), (inverse, np.arange(len(inverse)))),
                           shape=(len(names), len(inverse)))
    summed = np.asarray((member @ sp.csr_matrix(X)).todense(), dtype=np.float64)
    totals = summed.sum(1, keepdims=True)
    totals[totals == 0] = 1.0
    return names, np.log1p(summed / totals * target_sum)


def pearson_pairs(expr: np.ndarray, acc: np.ndarray, gene_idx, cre_idx, *, chunk: int = 200_000) -> np.ndarray:
    """Pearson correlation over rows (pseudobulks / metacells) of ``expr[:, gene_idx[i]]`` and
    ``acc[:, cre_idx[i]]`` for every pair i; constant columns give 0. Chunked: bounded memory.

    Parameters
    ----------
    expr, acc
        Dense arrays with the same rows (pseudobulks / metacells): rows x genes and rows x CREs.
    gene_idx, cre_idx
        Column positions in ``expr`` / ``acc`` of each pair (same length).
    chunk
        Pairs computed at once.

    Returns
    -------
    float64 array, one correlation per pair.
    """
    gene_idx, cre_idx = np.asarray(gene_idx), np.asarray(cre_idx)
    e = expr - expr.mean(0)
    a = acc - acc.mean(0)
    e_norm, a_norm = np.sqrt((e ** 2).sum(0)), np.sqrt((a ** 2).sum(0))
    out = np.zeros(len(gene_idx))
    for start in range(0, len(gene_idx), chunk):
        sl = slice(start, start + chunk)
        num = (e[:, gene_idx[sl]] * a[:, cre_idx[sl]]).sum(0)
        den = e_norm[gene_idx[sl]] * a_norm[cre_idx[sl]]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[sl] = np.where(den > 0, num / den, 0.0)
    return out


def pair_correlation(rna, atac, pairs: pd.DataFrame, groups: np.ndarray) -> np.ndarray:
    """Pearson correlation, across pseudobulks ``groups``, of each pair's gene expression and CRE accessibility.

    Parameters
    ----------
    rna, atac
        Paired AnnData (same cells, same order), raw counts; summed per group by :func:`pseudobulk`.
    pairs
        DataFrame with ``gene`` and ``cre`` columns (var names of ``rna`` and ``atac``).
    groups
        Pseudobulk label per cell (e.g. :func:`metacell_groups`).

    Returns
    -------
    float64 array, one correlation per row of ``pairs``. Constant rows give 0.
    """
    _, expr = pseudobulk(rna.X, groups)
    _, acc = pseudobulk(atac.X, groups)
    gi = rna.var_names.get_indexer(pairs["gene"])
    ci = atac.var_names.get_indexer(pairs["cre"])
    if (gi < 0).any() or (ci < 0).any():
        raise ValueError("pairs name genes / CREs absent from rna.var_names / atac.var_names")
    return pearson_pairs(expr, acc, gi, ci)


def topk_vs_random(scores, values, *, ks=(100, 200, 500, 1000), n_random: int = 1, seed: int = 0) -> pd.DataFrame:
    """Compare ``values`` (e.g. pseudobulk correlation) of the top-k pairs by ``scores`` with ``n_random``
    random sets of k pairs drawn from the same candidates (excluding nothing: an honest null).

    Parameters
    ----------
    scores, values
        One ranking score and one compared value per candidate pair, same order.
    ks
        Sizes of the top sets.
    n_random, seed
        Random sets per k (pooled into one null sample) and their seed.

    Returns
    -------
    One row per k: ``k``, ``mean_top``, ``mean_random``, ``p_mannwhitney`` (one-sided Mann-Whitney U p-value,
    top > random), ``t`` and ``p_ttest`` (one-sided Welch t-test). Ks larger than the number of candidates are
    skipped.
    """
    scores, values = np.asarray(scores, dtype=float), np.asarray(values, dtype=float)
    order = np.argsort(-scores, kind="stable")
    rng = np.random.default_rng(seed)
    rows = []
    for k in ks:
        if k > len(scores):
            continue
        top = values[order[:k]]
        random = np.concatenate([values[rng.choice(len(values), k, replace=False)] for _ in range(n_random)])
        mw = stats.mannwhitneyu(top, random, alternative="greater")
        t, p_t = one_sided_ttest(top, random)
        rows.append({"k": int(k), "mean_top": float(np.mean(top)), "mean_random": float(np.mean(random)),
                     "p_mannwhitney": float(mw.pvalue), "t": t, "p_ttest": p_t})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- multiple testing

def bh_qvalues(pvalues) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q) of a family of tests; NaN p-values stay NaN and do not count
    as tests.

    Parameters
    ----------
    pvalues
        Array-like of p-values in [0, 1] (ValueError otherwise), any shape; NaN allowed.

    Returns
    -------
    float array of the same shape: the q-values.
    """
    p = np.asarray(pvalues, dtype=float)
    q = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    if not len(finite):
        return q
    if ((p[finite] < 0) | (p[finite] > 1)).any():
        raise ValueError("bh_qvalues: p-values must lie in [0, 1]")
    order = finite[np.argsort(p[finite], kind="stable")]
    m = len(order)
    scaled = p[order] * m / np.arange(1, m + 1)
    q[order] = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    return q

# --------------------------------------------------------------------------------------------- link counts


def link_count_group(counts, max_count: int = 10) -> pd.Categorical:
    """0, 1, ..., max_count, then ``f"{max_count}+"`` for more (ordered categories).

    Parameters
    ----------
    counts
        Integer counts (e.g. linked CREs per gene).
    max_count
        Largest count with a category of its own.

    Returns
    -------
    Ordered pandas Categorical, one label per count.
    """
    counts = np.asarray(counts, dtype=np.int64)
    labels = [str(i) for i in range(max_count + 1)] + [f"{max_count}+"]
    names = np.where(counts > max_count, f"{max_count}+", counts.astype(str))
    return pd.Categorical(names, categories=labels, ordered=True)


def expression_by_link_count(link_counts: pd.DataFrame, expression: pd.DataFrame,
                             *, max_count: int = 10) -> pd.DataFrame:
    """Tidy table of gene expression per cell type with the gene's linked-CRE group.

    Parameters
    ----------
    link_counts, expression
        Genes x cell types (e.g. :func:`cisformer.tl.attention.linked_cre_counts` and a pseudobulk mean); genes are
        matched by index, cell types by column name.
    max_count
        Counts above it share one group (:func:`link_count_group`).

    Returns
    -------
    DataFrame with ``cell_type``, ``gene``, ``n_links``, ``group``, ``expression``. Also returns per-type Spearman
    correlation in ``attrs["spearman"]`` (count vs expression; NaN for constant counts or <= 2 genes).
    """
    genes = link_counts.index.intersection(expression.index)
    frames, rho = [], {}
    for cell_type in link_counts.columns:
        if cell_type not in expression.columns:
            continue
        n = link_counts.loc[genes, cell_type].to_numpy()
        e = expression.loc[genes, cell_type].to_numpy(dtype=float)
        frames.append(pd.DataFrame({"cell_type": cell_type, "gene": genes, "n_links": n,
                                    "group": link_count_group(n, max_count), "expression": e}))
        rho[cell_type] = float(stats.spearmanr(n, e).statistic) if len(genes) > 2 and np.ptp(n) > 0 else np.nan
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    table.attrs["spearman"] = rho
    return table
