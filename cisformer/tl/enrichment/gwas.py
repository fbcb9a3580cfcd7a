"""Fine-mapped GWAS variant load of top CREs over matched random sets (Fig 3f): per trait, one-sided empirical p,
BH q, and a per-method summary over one shared trait set with bootstrap CIs.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .background import matched_random_sets, null_overlap
from .statistics import bh_qvalues, empirical_p, overlap_index

# --------------------------------------------------------------------------------------------- GWAS


def variant_load(cres: pd.DataFrame, variants: pd.DataFrame, *, trait_key: str = "trait",
                 pp_key: str = "pp") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per trait and per CRE: (sum of PIPs of the variants inside the CRE, number of such variants).

    Parameters
    ----------
    cres
        CRE intervals (``chrom``, ``start``, ``end``), in the order of the candidate universe.
    variants
        Fine-mapped variants with ``chrom``, ``start``, ``end``, a PIP and a trait column
        (:func:`cisformer.data.load_gwas_finemapped`).
    trait_key, pp_key
        Columns of ``variants`` holding the trait and the posterior inclusion probability (PIP).

    Returns
    -------
    dict trait -> ``(pip_sum, n_variants)``: two float arrays, one value per row of ``cres``.
    """
    for field in ("chrom", "start", "end", pp_key, trait_key):
        if field not in variants:
            raise ValueError(f"variant_load: variants lack the '{field}' column (expected chrom/start/end/"
                             f"{pp_key}/{trait_key}, as cisformer.data.load_gwas_finemapped() returns)")
    out = {}
    for trait, vt in variants.groupby(trait_key, observed=True):
        qi, ri = overlap_index(cres, vt)
        pp = vt[pp_key].to_numpy(dtype=float)[ri]
        out[str(trait)] = (np.bincount(qi, weights=pp, minlength=len(cres)),
                           np.bincount(qi, minlength=len(cres)).astype(float))
    return out


def gwas_traits(load: dict) -> list[str]:
    """Traits with at least one variant inside the candidate universe: the one trait set every method is tested
    on (fixed from the universe alone, before any method's top set is seen).

    Parameters
    ----------
    load
        :func:`variant_load` of the candidate universe.

    Returns
    -------
    list of trait names, in the order of ``load``.
    """
    return [trait for trait, (_, n_var) in load.items() if n_var.sum() > 0]


def gwas_enrichment(top, load: dict, bins, traits=None, n_random: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Fine-mapped GWAS PIP load of a CRE set against matched random sets, per trait.

    The PIP load of a set is the sum of the PIPs of a trait's fine-mapped variants inside its CREs (a variant in
    two CREs counts twice). The null is :func:`matched_random_sets` (same accessibility x width composition,
    same random sets for every trait).

    Parameters
    ----------
    top
        Positions of the tested CREs in the candidate universe (the CREs ``load`` was computed on).
    load
        :func:`variant_load` of the universe.
    bins
        :func:`matching_bins` of the universe (all zeros: unmatched null).
    traits
        Traits tested (default :func:`gwas_traits`: those with a variant in the universe).
    n_random, seed
        Number of matched random sets and their seed.

    Returns
    -------
    One row per trait: ``n_variants_universe``, ``n_variants_top``, ``pip_top`` (observed load), ``pip_null``
    (mean load of the random sets), ``enrichment`` (``pip_top / pip_null``; NaN when ``pip_null`` is 0),
    ``p_empirical`` (one-sided, random >= observed, +1 corrected), ``null_overlap``, and ``p_pooled`` (the same
    on every row): the one-sided empirical p of the set's load summed over all traits tested against the same
    random sets' sums. It tests the pooled enrichment of :func:`pooled_enrichment` against the CRE sampling
    noise, which the bootstrap over traits there does not see.
    """
    traits = gwas_traits(load) if traits is None else list(traits)
    missing = [t for t in traits if t not in load]
    if missing:
        raise ValueError(f"gwas_enrichment: traits {missing[:5]} are not in load (traits there: {list(load)[:5]}...)")
    top = np.asarray(top, dtype=np.int64)
    random_sets = matched_random_sets(top, bins, n_random, seed)
    overlap = null_overlap(top, bins)
    total = np.sum([load[trait][0] for trait in traits], axis=0) if traits else np.zeros(len(bins))
    p_pooled = empirical_p(float(total[top].sum()), total[random_sets].sum(1))
    rows = []
    for trait in traits:
        pip_sum, n_var = load[trait]
        observed = float(pip_sum[top].sum())
        null = pip_sum[random_sets].sum(1)
        expected = float(null.mean()) if len(null) else np.nan
        rows.append({"trait": trait, "n_variants_universe": int(n_var.sum()), "n_variants_top": int(n_var[top].sum()),
                     "pip_top": observed, "pip_null": expected,
                     "enrichment": observed / expected if expected > 0 else np.nan,
                     "p_empirical": empirical_p(observed, null), "null_overlap": overlap, "p_pooled": p_pooled})
    return pd.DataFrame(rows)


def gwas_compare(tops: dict, load: dict, bins, traits=None, n_random: int = 1000, seed: int = 0,
                 *, group: str = "method") -> pd.DataFrame:
    """:func:`gwas_enrichment` of several CRE sets (e.g. one per method) on the same traits, with
    Benjamini-Hochberg q-values over all set x trait tests (column ``q``).

    Parameters
    ----------
    tops
        Name -> positions of a tested CRE set in the universe.
    load, bins, traits, n_random, seed
        As in :func:`gwas_enrichment` (``traits`` default: :func:`gwas_traits`, the same for every set).
    group
        Column that receives each set's name.

    Returns
    -------
    The rows of :func:`gwas_enrichment` of every set, stacked, with the columns ``group`` and ``q``.
    """
    traits = gwas_traits(load) if traits is None else list(traits)
    frames = [gwas_enrichment(top, load, bins, traits, n_random, seed).assign(**{group: name})
              for name, top in tops.items()]
    table = pd.concat(frames, ignore_index=True)
    table["q"] = bh_qvalues(table["p_empirical"])
    return table


def pooled_enrichment(table: pd.DataFrame, *, group: str = "method", observed: str = "pip_top",
                      expected: str = "pip_null", unit: str = "trait", pseudocount: float = 0.1,
                      n_boot: int = 2000, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Summary over traits (or other ``unit``s) of each group's enrichment, with bootstrap confidence intervals.

    * pooled enrichment = sum of observed / sum of null expectation over the traits (traits weigh by their
      expected load, so traits with more fine-mapped signal count more);
    * geometric mean of the per-trait ratios ``(observed + pseudocount) / (expected + pseudocount)``: the
      pseudocount (default 0.1 PIP, a tenth of one certain causal variant) keeps traits with no variant in the
      set finite and shrinks ratios of traits with little expected load towards 1.

    Intervals: percentile bootstrap over traits (``n_boot`` resamples of the traits with replacement, the same
    resamples for every group). Every group must hold the same traits (compare like with like).

    Parameters
    ----------
    table
        Long table, one row per (group, unit) (e.g. :func:`gwas_compare`).
    group, unit
        Columns naming the groups compared (methods) and the units summed over (traits).
    observed, expected
        Columns of the observed load and of the null expectation (:func:`gwas_enrichment`).
    pseudocount
        Added to both before the per-unit ratios of the geometric mean.
    n_boot, ci, seed
        Bootstrap resamples, confidence level of the percentile intervals, and the seed.

    Returns
    -------
    One row per group: ``n_<unit>s`` (e.g. ``n_traits``), ``observed_total``, ``expected_total``,
    ``pooled_enrichment``, ``pooled_ci_low``, ``pooled_ci_high``, ``geometric_mean``, ``geometric_ci_low``,
    ``geometric_ci_high``.
    """
    for field in (group, observed, expected, unit):
        if field not in table:
            raise ValueError(f"pooled_enrichment: table lacks the '{field}' column")
    obs = table.pivot(index=unit, columns=group, values=observed)
    exp = table.pivot(index=unit, columns=group, values=expected)
    if obs.isna().any().any() or exp.isna().any().any():
        raise ValueError(f"pooled_enrichment: every {group} must be tested on the same {unit}s (missing or NaN "
                         f"'{observed}'/'{expected}' values); test all on one {unit} set, e.g. gwas_traits(load)")
    names = obs.columns
    obs, exp = obs.to_numpy(dtype=float), exp.loc[obs.index, names].to_numpy(dtype=float)
    n = obs.shape[0]
    rng = np.random.default_rng(seed)
    resample = rng.integers(0, n, size=(n_boot, n))
    log_ratio = np.log((obs + pseudocount) / (exp + pseudocount))
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = obs.sum(0) / exp.sum(0)
        boot_pooled = obs[resample].sum(1) / exp[resample].sum(1)   # (n_boot, groups)
    boot_geo = np.exp(log_ratio[resample].mean(1))
    tail = 100 * (1 - ci) / 2
    summary = pd.DataFrame({
        group: names, f"n_{unit}s": n, "observed_total": obs.sum(0), "expected_total": exp.sum(0),
        "pooled_enrichment": pooled,
        "pooled_ci_low": np.nanpercentile(boot_pooled, tail, axis=0),
        "pooled_ci_high": np.nanpercentile(boot_pooled, 100 - tail, axis=0),
        "geometric_mean": np.exp(log_ratio.mean(0)),
        "geometric_ci_low": np.percentile(boot_geo, tail, axis=0),
        "geometric_ci_high": np.percentile(boot_geo, 100 - tail, axis=0)})
    order = list(pd.unique(table[group]))
    return summary.set_index(group).loc[order].reset_index()


def locus_bootstrap(top, load: dict, traits, expected_total: float, *, n_boot: int = 2000, ci: float = 0.95,
                    seed: int = 0) -> dict:
    """Pooled enrichment of one CRE set with a confidence interval from a bootstrap over its loci (CREs).

    Traits are not independent evidence: correlated traits (e.g. four red-cell traits) put their fine-mapped
    variants in the same CREs, so a bootstrap over traits counts one locus several times. Here each CRE of the
    set is a locus carrying its PIP summed over ``traits``; the set's CREs are resampled with replacement
    (``n_boot`` times, seeded) and each resample's load is divided by ``expected_total`` (the matched null's mean
    load summed over the same traits, :func:`gwas_enrichment`'s ``pip_null``).

    Parameters
    ----------
    top
        Positions of the set's CREs in the candidate universe.
    load, traits
        :func:`variant_load` of the universe, and the traits whose PIPs are summed.
    expected_total
        The matched null's mean load summed over ``traits`` (e.g. the sum of ``pip_null`` over them).
    n_boot, ci, seed
        Bootstrap resamples, confidence level of the percentile interval, and the seed.

    Returns
    -------
    dict: ``pooled_enrichment``, ``locus_ci_low``, ``locus_ci_high``, ``n_loci`` (CREs in the set),
    ``loci_with_pip`` (of them, CREs holding a variant of a tested trait), ``largest_locus_share`` (share of the
    observed load carried by the single heaviest CRE).
    """
    top = np.asarray(top, dtype=np.int64)
    per_cre = np.sum([load[trait][0] for trait in traits], axis=0)[top] if len(traits) else np.zeros(len(top))
    observed = float(per_cre.sum())
    boot = per_cre[np.random.default_rng(seed).integers(0, len(top), size=(n_boot, len(top)))].sum(1)
    tail = 100 * (1 - ci) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = boot / expected_total
        return {"pooled_enrichment": observed / expected_total, "locus_ci_low": float(np.percentile(ratio, tail)),
                "locus_ci_high": float(np.percentile(ratio, 100 - tail)), "n_loci": len(top),
                "loci_with_pip": int((per_cre > 0).sum()),
                "largest_locus_share": float(per_cre.max() / observed) if observed > 0 else np.nan}
