"""Enrichment statistics on constructed cases with a known answer."""
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cisformer import enrichment


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


def test_gwas_enrichment_known_ratio():
    cres = pd.DataFrame({"chrom": "chr1", "start": np.arange(20) * 1000, "end": np.arange(20) * 1000 + 500})
    # one variant per CRE: PIP 0.9 in CREs 0-3, 0.1 elsewhere; plus a variant outside every CRE
    variants = pd.DataFrame({"chrom": "chr1", "start": list(np.arange(20) * 1000 + 10) + [700],
                             "trait": "t1"})
    variants["end"] = variants["start"] + 1
    variants["pp"] = [0.9] * 4 + [0.1] * 16 + [1.0]
    table = enrichment.gwas_enrichment(np.arange(4), cres, variants, n_random=500, seed=0).set_index("trait")
    row = table.loc["t1"]
    assert row["n_variants_top"] == 4 and np.isclose(row["mean_pip_top"], 0.9)
    expected_random = (4 * 0.9 + 16 * 0.1) / 20  # each random CRE holds one variant: mean PIP = 0.26
    assert abs(row["mean_pip_random"] - expected_random) < 0.03
    assert abs(row["enrichment"] - 0.9 / expected_random) < 0.4 and row["p_empirical"] < 0.01


def test_chip_enrichment_and_bound_vs_unbound():
    scores = np.linspace(1, 0, 100)
    bound = np.zeros(100, dtype=bool)
    bound[:10] = True
    res = enrichment.chip_enrichment(scores, bound, n_top=10, n_random=300, seed=0)
    assert res["n_bound_top"] == 10 and res["frac_top"] == 1.0
    assert abs(res["frac_random"] - 0.1) < 0.03 and 7 < res["fold"] < 13 and res["p_empirical"] < 0.01
    unrelated = enrichment.chip_enrichment(np.random.default_rng(1).random(100), bound, 10, 300, seed=0)
    assert unrelated["p_empirical"] > 0.01
    res = enrichment.bound_vs_unbound(scores, bound)
    assert res["mean_bound"] > res["mean_unbound"] and res["p"] < 1e-6
    cres = pd.DataFrame({"chrom": "chr1", "start": [0, 1000], "end": [500, 1500]})
    peaks = pd.DataFrame({"chrom": "chr1", "start": [1400], "end": [1600]})
    assert enrichment.bound_cres(cres, peaks).tolist() == [False, True]


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
