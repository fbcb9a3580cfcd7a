"""Do attention-derived CRE-gene links mean something? Statistics against random sets of equal size.

* :func:`pair_correlation` + :func:`topk_vs_random`: expression-accessibility correlation across pseudobulks
  of the top-k pairs vs random candidate pairs (Fig 3d-e), one-sided tests.
* :func:`gwas_enrichment`: mean fine-mapped PIP of GWAS variants inside the top CREs over that of random CREs
  (Fig 3f), per trait, with an empirical p-value.
* :func:`chip_enrichment` and :func:`bound_vs_unbound`: overlap of a TF gene's top attention-ranked CREs with
  the TF's ChIP-seq peaks vs random CRE sets (fold, empirical p), and attention of bound vs unbound CREs
  (one-sided Welch t-test) (Fig 3b-c).
* :func:`expression_by_link_count`: expression of genes grouped by their number of linked CREs (Fig 3h-i).

Intervals are 0-based half-open (``chrom``, ``start``, ``end``); overlaps of >= 1 bp count
(:func:`cisformer.vocab.overlap_index`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats


# --------------------------------------------------------------------------------------------- intervals

def overlap_index(query: pd.DataFrame, ref: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(query row, ref row) position pairs of >= 1 bp overlaps (:func:`cisformer.vocab.overlap_index`)."""
    from .vocab import overlap_index as shared

    qi, ri = shared(query.reset_index(drop=True), ref.reset_index(drop=True))
    return np.asarray(qi, dtype=np.int64), np.asarray(ri, dtype=np.int64)


# --------------------------------------------------------------------------------------------- tests

def one_sided_ttest(a, b) -> tuple[float, float]:
    """Welch t-test of mean(a) > mean(b): (t, p). NaN when either side has fewer than 2 values."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        return float("nan"), float("nan")
    res = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    return float(res.statistic), float(res.pvalue)


def empirical_p(observed: float, null: np.ndarray) -> float:
    """One-sided empirical p-value ``(1 + #null >= observed) / (1 + n)``."""
    null = np.asarray(null, dtype=float)
    null = null[np.isfinite(null)]
    if not np.isfinite(observed) or not len(null):
        return float("nan")
    return float((1 + (null >= observed).sum()) / (1 + len(null)))


# --------------------------------------------------------------------------------------------- correlation

def metacell_groups(obs: pd.DataFrame, cell_type_key: str = "cell_type", cells_per_group: int = 20,
                    seed: int = 0) -> np.ndarray:
    """Pseudobulk labels: the cells of each type split at random into groups of about ``cells_per_group``."""
    rng = np.random.default_rng(seed)
    labels = obs[cell_type_key].astype(str).to_numpy()
    groups = np.empty(len(labels), dtype=object)
    for cell_type in pd.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == cell_type))
        n_groups = max(1, len(rows) // cells_per_group)
        for g, chunk in enumerate(np.array_split(rows, n_groups)):
            groups[chunk] = f"{cell_type}|{g}"
    return groups.astype(str)


def pseudobulk(X, groups: np.ndarray, target_sum: float = 1e4) -> tuple[np.ndarray, np.ndarray]:
    """Sum cells per group, scale each group to ``target_sum`` and log1p. Returns (group names, groups x
    features dense array)."""
    names, inverse = np.unique(np.asarray(groups), return_inverse=True)
    member = sp.csr_matrix((np.ones(len(inverse)), (inverse, np.arange(len(inverse)))),
                           shape=(len(names), len(inverse)))
    summed = np.asarray((member @ sp.csr_matrix(X)).todense(), dtype=np.float64)
    totals = summed.sum(1, keepdims=True)
    totals[totals == 0] = 1.0
    return names, np.log1p(summed / totals * target_sum)


def pearson_pairs(expr: np.ndarray, acc: np.ndarray, gene_idx, cre_idx, chunk: int = 200_000) -> np.ndarray:
    """Pearson correlation over rows (pseudobulks / metacells) of ``expr[:, gene_idx[i]]`` and
    ``acc[:, cre_idx[i]]`` for every pair i; constant columns give 0. Chunked: bounded memory."""
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

    ``pairs`` has ``gene`` and ``cre`` columns (var names of ``rna`` and ``atac``). Constant rows give 0.
    """
    _, expr = pseudobulk(rna.X, groups)
    _, acc = pseudobulk(atac.X, groups)
    gi = rna.var_names.get_indexer(pairs["gene"])
    ci = atac.var_names.get_indexer(pairs["cre"])
    if (gi < 0).any() or (ci < 0).any():
        raise ValueError("pairs name genes / CREs absent from rna.var_names / atac.var_names")
    return pearson_pairs(expr, acc, gi, ci)


def topk_vs_random(scores, values, ks=(100, 200, 500, 1000), n_random: int = 1, seed: int = 0) -> pd.DataFrame:
    """Compare ``values`` (e.g. pseudobulk correlation) of the top-k pairs by ``scores`` with ``n_random``
    random sets of k pairs drawn from the same candidates (excluding nothing: an honest null).

    Returns one row per k: ``mean_top``, ``mean_random``, one-sided Mann-Whitney U p-value (top > random) and
    one-sided Welch t-test p-value. Ks larger than the number of candidates are skipped.
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


# --------------------------------------------------------------------------------------------- GWAS

def variant_load(cres: pd.DataFrame, variants: pd.DataFrame, trait_key: str = "trait",
                 pp_key: str = "pp") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per trait and per CRE: (sum of PIPs of the variants inside the CRE, number of such variants)."""
    out = {}
    for trait, vt in variants.groupby(trait_key, observed=True):
        qi, ri = overlap_index(cres, vt)
        pp = vt[pp_key].to_numpy(dtype=float)[ri]
        out[str(trait)] = (np.bincount(qi, weights=pp, minlength=len(cres)),
                           np.bincount(qi, minlength=len(cres)).astype(float))
    return out


def gwas_enrichment(top: np.ndarray, cres: pd.DataFrame, variants: pd.DataFrame, n_random: int = 1000,
                    seed: int = 0, load: dict | None = None) -> pd.DataFrame:
    """GWAS enrichment of a CRE set: mean PIP of the fine-mapped variants inside the ``top`` CREs over the mean
    PIP of variants inside random CRE sets of the same size drawn from ``cres`` (the candidate universe).

    Parameters
    ----------
    top
        Row positions (in ``cres``) of the top CREs.
    cres
        Candidate CREs (chrom/start/end).
    variants
        Fine-mapped variants: chrom/start/end/pp/trait (``cisformer.data.load_gwas_finemapped()``).
    load
        Precomputed :func:`variant_load` (reuse it when testing several CRE sets on the same universe).

    Returns
    -------
    One row per trait: ``n_variants_top``, ``mean_pip_top``, ``mean_pip_random`` (mean over random sets that
    hold a variant), ``enrichment`` (ratio), ``p_empirical`` (random >= top). NaN where the top set holds no
    variant of the trait.
    """
    top = np.asarray(top, dtype=np.int64)
    load = load if load is not None else variant_load(cres, variants)
    rng = np.random.default_rng(seed)
    random_sets = np.stack([rng.choice(len(cres), len(top), replace=False) for _ in range(n_random)]) \
        if len(top) and n_random else np.zeros((0, len(top)), dtype=np.int64)
    rows = []
    for trait, (pip_sum, n_var) in load.items():
        n_top = n_var[top].sum()
        observed = pip_sum[top].sum() / n_top if n_top else np.nan
        rs, rn = pip_sum[random_sets].sum(1), n_var[random_sets].sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            null = np.where(rn > 0, rs / np.maximum(rn, 1), np.nan)
        mean_random = float(np.nanmean(null)) if np.isfinite(null).any() else np.nan
        rows.append({"trait": trait, "n_variants_top": int(n_top), "mean_pip_top": float(observed),
                     "mean_pip_random": mean_random,
                     "enrichment": float(observed / mean_random) if mean_random and np.isfinite(observed) else np.nan,
                     "p_empirical": empirical_p(observed, null)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- ChIP

def bound_cres(cres: pd.DataFrame, peaks: pd.DataFrame) -> np.ndarray:
    """Boolean per CRE: overlaps at least one peak."""
    qi, _ = overlap_index(cres, peaks)
    bound = np.zeros(len(cres), dtype=bool)
    bound[qi] = True
    return bound


def chip_enrichment(scores, bound, n_top: int, n_random: int = 1000, seed: int = 0) -> dict:
    """Overlap of the ``n_top`` highest-scoring CREs with ChIP peaks vs random CRE sets of the same size.

    ``scores`` and ``bound`` are per candidate CRE (same order). Returns ``n_top``, ``n_bound_top``,
    ``frac_top``, ``frac_random`` (mean over random sets), ``fold`` and ``p_empirical``.
    """
    scores, bound = np.asarray(scores, dtype=float), np.asarray(bound, dtype=bool)
    n_top = int(min(n_top, len(scores)))
    top = np.argsort(-scores, kind="stable")[:n_top]
    observed = bound[top].mean() if n_top else np.nan
    rng = np.random.default_rng(seed)
    null = np.array([bound[rng.choice(len(scores), n_top, replace=False)].mean() for _ in range(n_random)]) \
        if n_top else np.zeros(0)
    frac_random = float(null.mean()) if len(null) else np.nan
    return {"n_top": n_top, "n_bound_top": int(bound[top].sum()), "frac_top": float(observed),
            "frac_random": frac_random, "fold": float(observed / frac_random) if frac_random else np.nan,
            "p_empirical": empirical_p(observed, null)}


def bound_vs_unbound(scores, bound) -> dict:
    """Attention of CREs overlapping the TF's peaks vs the others: means and one-sided Welch t-test."""
    scores, bound = np.asarray(scores, dtype=float), np.asarray(bound, dtype=bool)
    t, p = one_sided_ttest(scores[bound], scores[~bound])
    return {"n_bound": int(bound.sum()), "n_unbound": int((~bound).sum()),
            "mean_bound": float(np.nanmean(scores[bound])) if bound.any() else np.nan,
            "mean_unbound": float(np.nanmean(scores[~bound])) if (~bound).any() else np.nan, "t": t, "p": p}


# --------------------------------------------------------------------------------------------- link counts

def link_count_group(counts, max_count: int = 10) -> pd.Categorical:
    """0, 1, ..., max_count, then ``f"{max_count}+"`` for more (ordered categories)."""
    counts = np.asarray(counts, dtype=np.int64)
    labels = [str(i) for i in range(max_count + 1)] + [f"{max_count}+"]
    names = np.where(counts > max_count, f"{max_count}+", counts.astype(str))
    return pd.Categorical(names, categories=labels, ordered=True)


def expression_by_link_count(link_counts: pd.DataFrame, expression: pd.DataFrame,
                             max_count: int = 10) -> pd.DataFrame:
    """Tidy table of gene expression per cell type with the gene's linked-CRE group.

    ``link_counts`` and ``expression`` are genes x cell types (e.g. :func:`cisformer.attention.linked_cre_counts`
    and a pseudobulk mean); genes are matched by index. Also returns per-type Spearman correlation in
    ``attrs["spearman"]`` (count vs expression).
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
