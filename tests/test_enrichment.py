"""Enrichment statistics on constructed cases with a known answer."""
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cisformer.tl import enrichment


def test_overlap_index_half_open_positions():
    cres = pd.DataFrame({"chrom": ["chr1", "chr1", "chr2"], "start": [100, 200, 100], "end": [200, 300, 200]},
                        index=["a", "b", "c"])
    peaks = pd.DataFrame({"chrom": ["chr1", "chr2"], "start": [199, 300], "end": [201, 400]}, index=[7, 9])
    qi, ri = enrichment.overlap_index(cres, peaks)  # positions, whatever the indexes; touching is no overlap
    assert sorted(zip(qi.tolist(), ri.tolist())) == [(0, 0), (1, 0)]


def test_one_sided_tests_and_empirical_p():
    t, p = enrichment.one_sided_ttest([5, 6, 7, 8], [1, 2, 3, 2])
    assert t > 0 and p < 0.01
    _, p_rev = enrichment.one_sided_ttest([1, 2, 3, 2], [5, 6, 7, 8])
    assert p_rev > 0.99
    assert enrichment.empirical_p(10, np.arange(9)) == 0.1
    assert enrichment.empirical_p(0, np.arange(9)) == 1.0


def test_variant_load_sums_pips_per_cre():
    cres = pd.DataFrame({"chrom": "chr1", "start": [0, 1000, 2000], "end": [500, 1500, 2500]})
    variants = pd.DataFrame({"chrom": "chr1", "start": [10, 20, 1100, 700, 30], "trait": ["a", "a", "a", "a", "b"],
                             "pp": [0.5, 0.25, 1.0, 0.9, 0.1]})  # the 0.9 variant lies between CREs
    variants["end"] = variants["start"] + 1
    load = enrichment.variant_load(cres, variants)
    np.testing.assert_allclose(load["a"][0], [0.75, 1.0, 0.0])
    np.testing.assert_allclose(load["a"][1], [2, 1, 0])
    assert enrichment.gwas_traits(load) == ["a", "b"]
    with pytest.raises(ValueError, match="'pp'"):
        enrichment.variant_load(cres, variants.drop(columns="pp"))


def test_bh_qvalues_known_values():
    q = enrichment.bh_qvalues([0.01, 0.04, np.nan, 0.03, 0.5])
    np.testing.assert_allclose(q, [0.04, 0.04 * 4 / 3, np.nan, 0.04 * 4 / 3, 0.5])  # NaN is not a test
    assert enrichment.bh_qvalues([0.001] * 3 + [0.9]).tolist() == [0.0013333333333333333] * 3 + [0.9]


def _universe(n=3000, seed=0):
    """Candidate CREs whose accessibility (and width) drive how many variants they hold."""
    rng = np.random.default_rng(seed)
    accessibility = rng.beta(0.6, 4.0, n)
    width = rng.integers(200, 2000, n).astype(float)
    return rng, accessibility, width


def _accessibility_driven_load(rng, accessibility, width, n_traits=10):
    """Per trait: variants fall in CREs with probability rising with accessibility and width."""
    load = {}
    rate = 3 * accessibility * width / width.mean()
    for t in range(n_traits):
        n_var = rng.poisson(rate).astype(float)
        pip = np.array([rng.uniform(0, 1, int(k)).sum() for k in n_var])
        load[f"trait{t}"] = (pip, n_var)
    return load


def test_matched_sampler_reproduces_bin_composition():
    rng, accessibility, width = _universe()
    accessibility[:400] = 0.0  # ties: quantile edges collapse and are merged, not crashed on
    bins = enrichment.matching_bins(accessibility, width, n_accessibility_bins=10, n_width_bins=3, min_bin_size=50)
    assert np.bincount(bins).min() >= 50 and bins.max() + 1 >= 15
    order = np.argsort(accessibility)
    assert np.all(np.diff(bins[order][::100] // 3) >= -1)  # labels follow accessibility
    top = np.argsort(-(accessibility + rng.normal(0, 0.1, len(accessibility))))[:300]
    sets = enrichment.matched_random_sets(top, bins, n_random=200, seed=1)
    assert sets.shape == (200, 300)
    want = enrichment.bin_composition(top, bins)
    for drawn in sets:
        assert len(np.unique(drawn)) == 300
        pd.testing.assert_series_equal(enrichment.bin_composition(drawn, bins), want)
    np.testing.assert_array_equal(sets, enrichment.matched_random_sets(top, bins, n_random=200, seed=1))  # seeded
    # the matched sets reproduce the top set's accessibility and width distribution, a uniform draw does not
    uniform = enrichment.matched_random_sets(top, np.zeros_like(bins), n_random=200, seed=1)
    assert abs(accessibility[sets].mean() - accessibility[top].mean()) < 0.1 * accessibility[top].mean()
    assert accessibility[uniform].mean() < 0.6 * accessibility[top].mean()
    assert 0 < enrichment.null_overlap(top, bins) < 1
    assert enrichment.null_overlap(np.arange(50), np.zeros(50, dtype=int)) == 1.0
    with pytest.raises(ValueError, match="repeated"):
        enrichment.matched_random_sets([1, 1], bins)


def test_matching_covariates_from_atac():
    import anndata as ad

    X = sp.csr_matrix(np.array([[1, 0, 2], [0, 0, 1], [3, 0, 1], [1, 0, 0]], dtype=np.float32))
    var = pd.DataFrame({"chrom": "chr1", "start": [0, 1000, 2000], "end": [500, 1200, 3000]},
                       index=["a", "b", "c"])
    atac = ad.AnnData(X, var=var)
    cov = enrichment.matching_covariates(atac, cres=["c", "a"])
    assert cov.index.tolist() == ["c", "a"]
    np.testing.assert_allclose(cov["accessibility"], [0.75, 0.75])
    np.testing.assert_allclose(cov["width"], [1000, 500])
    np.testing.assert_allclose(enrichment.matching_covariates(atac, cells=[1, 2])["accessibility"], [0.5, 0, 1])
    with pytest.raises(ValueError, match="not in atac.var_names"):
        enrichment.matching_covariates(atac, cres=["z"])


def test_gwas_matched_null_removes_accessibility_bias():
    """Variants sit in frequently open, wide CREs; the tested set is just the most open CREs (plus noise). The
    matched null finds nothing; a uniform (unmatched) null reports spurious enrichment for every trait."""
    rng, accessibility, width = _universe()
    load = _accessibility_driven_load(rng, accessibility, width)
    top = np.argsort(-(accessibility + rng.normal(0, 0.1, len(accessibility))))[:300]
    bins = enrichment.matching_bins(accessibility, width)
    tops = {"most open": top}
    matched = enrichment.gwas_compare(tops, load, bins, n_random=500, seed=0)
    unmatched = enrichment.gwas_compare(tops, load, np.zeros_like(bins), n_random=500, seed=0)
    assert (matched["q"] > 0.05).all() and (unmatched["q"] < 0.01).all()
    assert (unmatched["enrichment"] > 1.5).all()
    # the pooled test sums ten traits and sees the residual bias left inside the most open bin (matched p was 0.07)
    assert matched["p_pooled"].iloc[0] > 0.01 and unmatched["p_pooled"].iloc[0] < 0.01
    summary = enrichment.pooled_enrichment(matched, n_boot=500).iloc[0]
    # bins are finite, so a little of the bias remains inside the most open bin (see matching_bins)
    assert summary["pooled_enrichment"] < 1.05 and summary["pooled_ci_low"] < 1.01
    assert enrichment.pooled_enrichment(unmatched, n_boot=500).iloc[0]["pooled_ci_low"] > 1.5


def test_gwas_planted_enrichment_is_significant_random_set_is_not():
    rng, accessibility, width = _universe()
    load = _accessibility_driven_load(rng, accessibility, width)
    bins = enrichment.matching_bins(accessibility, width)
    planted = rng.choice(len(accessibility), 300, replace=False)
    pip, n_var = load["trait0"]
    pip, n_var = pip.copy(), n_var.copy()
    pip[planted[:60]] += 0.9  # a causal variant in a fifth of the set's CREs
    n_var[planted[:60]] += 1
    load["trait0"] = (pip, n_var)
    random_set = rng.choice(len(accessibility), 300, replace=False)
    table = enrichment.gwas_compare({"planted": planted, "random": random_set}, load, bins, n_random=1000, seed=0)
    assert set(table.groupby("method")["trait"].apply(frozenset)) == {frozenset(load)}  # same traits for both
    hit = table.set_index(["method", "trait"]).loc[("planted", "trait0")]
    assert hit["q"] < 0.05 and hit["enrichment"] > 1.5
    assert (table.loc[table["method"] == "random", "q"] > 0.05).all()
    pooled_p = table.groupby("method")["p_pooled"].first()
    assert pooled_p["planted"] < 0.05 and pooled_p["random"] > 0.05
    assert table.loc[table["method"] == "planted"].set_index("trait")["q"].idxmin() == "trait0"
    summary = enrichment.pooled_enrichment(table, n_boot=500).set_index("method")
    assert summary.loc["random", "pooled_ci_low"] < 1 < summary.loc["random", "pooled_ci_high"]
    assert summary.loc["planted", "pooled_enrichment"] > summary.loc["random", "pooled_enrichment"]


def test_pooled_enrichment_known_values_and_shared_traits():
    table = pd.DataFrame({"method": ["a", "a", "b", "b"], "trait": ["x", "y", "x", "y"],
                          "pip_top": [3.0, 0.0, 1.0, 1.0], "pip_null": [1.0, 1.0, 1.0, 1.0]})
    summary = enrichment.pooled_enrichment(table, pseudocount=0.1, n_boot=200).set_index("method")
    assert summary.loc["a", "pooled_enrichment"] == 1.5 and summary.loc["b", "pooled_enrichment"] == 1.0
    assert np.isclose(summary.loc["a", "geometric_mean"], np.sqrt((3.1 / 1.1) * (0.1 / 1.1)))
    assert summary.loc["a", "pooled_ci_low"] <= 1.5 <= summary.loc["a", "pooled_ci_high"]
    assert summary.loc["b", "pooled_ci_low"] == summary.loc["b", "pooled_ci_high"] == 1.0
    with pytest.raises(ValueError, match="same trait"):
        enrichment.pooled_enrichment(table.iloc[:3])


def test_chip_enrichment_and_bound_vs_unbound():
    scores = np.linspace(1, 0, 100)
    bound = np.zeros(100, dtype=bool)
    bound[:10] = True
    uniform = np.zeros(100, dtype=int)
    res = enrichment.chip_enrichment(scores, bound, n_top=10, bins=uniform, n_random=300, seed=0)
    assert res["n_bound_top"] == 10 and res["frac_top"] == 1.0
    assert abs(res["frac_random"] - 0.1) < 0.03 and 7 < res["fold"] < 13 and res["p_empirical"] < 0.01
    unrelated = enrichment.chip_enrichment(np.random.default_rng(1).random(100), bound, 10, uniform, 300, seed=0)
    assert unrelated["p_empirical"] > 0.01
    res = enrichment.bound_vs_unbound(scores, bound)
    assert res["mean_bound"] > res["mean_unbound"] and res["p"] < 1e-6
    cres = pd.DataFrame({"chrom": "chr1", "start": [0, 1000], "end": [500, 1500]})
    peaks = pd.DataFrame({"chrom": "chr1", "start": [1400], "end": [1600]})
    assert enrichment.bound_cres(cres, peaks).tolist() == [False, True]


def test_chip_matched_null_removes_accessibility_bias():
    """Peaks sit in open CREs; scores rank open CREs first: no enrichment under the matched null."""
    rng, accessibility, width = _universe(n=2000, seed=3)
    bound = rng.random(len(accessibility)) < np.clip(2 * accessibility, 0, 1)
    scores = accessibility + rng.normal(0, 0.1, len(accessibility))
    bins = enrichment.matching_bins(accessibility, width)
    matched = enrichment.chip_enrichment(scores, bound, 200, bins, n_random=500, seed=0)
    unmatched = enrichment.chip_enrichment(scores, bound, 200, np.zeros_like(bins), n_random=500, seed=0)
    assert unmatched["fold"] > 2 and unmatched["p_empirical"] < 0.01
    assert 0.8 < matched["fold"] < 1.25 and matched["p_empirical"] > 0.05
    # planted binding among the top CREs beyond what accessibility explains is still found
    planted = bound.copy()
    planted[np.argsort(-scores)[:200:2]] = True
    assert enrichment.chip_enrichment(scores, planted, 200, bins, n_random=500, seed=0)["p_empirical"] < 0.01


def test_topk_vs_random_detects_informative_scores():
    rng = np.random.default_rng(0)
    values = rng.normal(size=3000)
    scores = values + rng.normal(scale=0.5, size=3000)
    table = enrichment.topk_vs_random(scores, values, ks=(100, 500, 5000), n_random=1, seed=0)
    assert table["k"].tolist() == [100, 500]  # k above the number of candidates is skipped
    assert (table["mean_top"] > table["mean_random"]).all() and (table["p_mannwhitney"] < 1e-6).all()
    null = enrichment.topk_vs_random(rng.random(3000), values, ks=(500,), seed=0)
    assert null["p_mannwhitney"].iloc[0] > 0.001


def test_pseudobulk_and_pair_correlation():
    import anndata as ad

    groups = np.array(["a", "a", "b", "b", "c", "c"])
    X = sp.csr_matrix(np.array([[1, 0], [1, 0], [2, 1], [2, 1], [3, 3], [3, 3]], dtype=float))
    names, pb = enrichment.pseudobulk(X, groups, target_sum=1.0)
    assert names.tolist() == ["a", "b", "c"]
    np.testing.assert_allclose(pb[0], np.log1p([1.0, 0.0]))
    obs = pd.DataFrame(index=[f"c{i}" for i in range(6)])
    rna = ad.AnnData(sp.csr_matrix(np.array([[1, 5], [1, 5], [4, 5], [4, 5], [9, 5], [9, 5]], dtype=np.float32)),
                     obs=obs, var=pd.DataFrame(index=["up", "flat"]))
    atac = ad.AnnData(sp.csr_matrix(np.array([[0, 1], [0, 1], [1, 1], [1, 1], [2, 1], [2, 1]], dtype=np.float32)),
                      obs=obs, var=pd.DataFrame(index=["chr1:0-10", "chr1:20-30"]))
    # library-size normalisation would flatten single features, so give each cell a second constant feature
    pairs = pd.DataFrame({"gene": ["up", "flat"], "cre": ["chr1:0-10", "chr1:0-10"]})
    r = enrichment.pair_correlation(rna, atac, pairs, groups)
    assert r[0] > 0.9 and abs(r[1]) < 1.0
    labels = enrichment.metacell_groups(pd.DataFrame({"cell_type": ["x"] * 45 + ["y"] * 5}), cells_per_group=20)
    assert len(set(labels[:45])) == 2 and len(set(labels[45:])) == 1


def test_expression_by_link_count_groups():
    counts = pd.DataFrame({"T": [0, 3, 12, 10]}, index=["g0", "g1", "g2", "g3"])
    expr = pd.DataFrame({"T": [0.1, 0.5, 2.0, 1.5]}, index=["g0", "g1", "g2", "g3"])
    table = enrichment.expression_by_link_count(counts, expr, max_count=10)
    assert table["group"].astype(str).tolist() == ["0", "3", "10+", "10"]
    assert table.attrs["spearman"]["T"] == 1.0


def test_locus_bootstrap_counts_one_heavy_locus_once():
    """One CRE carrying most of the load under four traits: the bootstrap over loci (CREs) gives a wide interval
    that reaches below 1, whatever the number of traits; the largest locus share says why."""
    from cisformer.tl import enrichment as e
    n = 40
    heavy = np.zeros(n)
    heavy[3] = 1.0
    light = np.full(n, 0.01)
    load = {f"trait{i}": (heavy + light, np.ones(n)) for i in range(4)}
    top = np.arange(10)
    expected = 4 * 10 * 0.01 * 2.0   # the null's mean load: half the observed light load, summed over 4 traits
    out = e.locus_bootstrap(top, load, list(load), expected, seed=0)
    assert out["pooled_enrichment"] == pytest.approx(4 * (1.0 + 0.1) / expected)
    assert out["n_loci"] == 10 and out["loci_with_pip"] == 10
    assert out["largest_locus_share"] == pytest.approx(1.01 / 1.1)
    assert out["locus_ci_low"] < 1 < out["pooled_enrichment"] and out["locus_ci_high"] > out["pooled_enrichment"]
    spread = e.locus_bootstrap(np.arange(10, 20), load, list(load), 4 * 10 * 0.01, seed=0)   # no heavy locus
    assert spread["locus_ci_low"] == pytest.approx(1.0) and spread["locus_ci_high"] == pytest.approx(1.0)
