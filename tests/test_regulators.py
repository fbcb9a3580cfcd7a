"""Cell-type-specific CREs (Fig 4): planted programs, the attention rank scheme, the DA baseline, region-set
enrichment."""
import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats

from cisformer import train
from cisformer.data import simulate
from cisformer.tl import attention, enrichment, regulators


@pytest.fixture(scope="module")
def programs():
    return simulate.celltype_programs(n_cells=600, n_genes=60, n_cres=600, n_cell_types=3, seed=0)


def test_celltype_programs_plants_type_specific_cres_driving_markers(programs):
    rna, atac, truth = programs
    assert rna.shape == (600, 60) and atac.shape == (600, 600)
    assert list(truth.columns) == ["cell_type", "cre", "gene", "weight"]
    labels = atac.obs["cell_type"].astype(str).to_numpy()
    open_ = (atac.X > 0).toarray()
    decoys = truth.attrs["decoys"]
    for cell_type, group in truth.groupby("cell_type"):
        cols = atac.var_names.get_indexer(group["cre"])
        member = labels == cell_type
        assert open_[member][:, cols].mean() > 0.4 > 0.1 > open_[~member][:, cols].mean()
        genes = truth.attrs["markers"][cell_type]
        assert set(group["gene"]) <= set(genes)
        expr = np.asarray(rna[:, genes].X.mean(1)).ravel()
        assert expr[member].mean() > 5 * expr[~member].mean()
        dec = atac.var_names.get_indexer(decoys[cell_type])
        assert len(dec) and not set(decoys[cell_type]) & set(truth["cre"])
        assert open_[member][:, dec].mean() > 0.4 > 0.1 > open_[~member][:, dec].mean()
    again = simulate.celltype_programs(n_cells=600, n_genes=60, n_cres=600, n_cell_types=3, seed=0)
    assert (again[1].X != atac.X).nnz == 0 and again[2].equals(truth)


def _per_type(matrices, n_cells):
    """Hand-made extract output: cell type -> (X, co-sampling counts) on 1 gene x 4 CREs."""
    out = {}
    for cell_type, (X, n) in matrices.items():
        adata = ad.AnnData(sp.csr_matrix(np.asarray(X, dtype=np.float32)),
                           obs=pd.DataFrame(index=["g"]), var=pd.DataFrame(index=["c0", "c1", "c2", "c3"]))
        adata.layers["n_cells"] = sp.csr_matrix(np.asarray(n, dtype=np.float32))
        adata.uns["n_cells"] = n_cells
        out[cell_type] = adata
    return out


def test_celltype_cres_rank_scheme_on_a_hand_example():
    # c0 seen often in A only; c1 seen often in both; c2 seen once in A with a high mean; c3 never
    per_type = _per_type({"A": ([[0.5, 0.5, 0.9, 0.0]], [[10, 10, 1, 0]]),
                          "B": ([[0.0, 0.5, 0.0, 0.0]], [[0, 10, 0, 0]])}, n_cells=10)
    attn = regulators.cre_attention(per_type)
    np.testing.assert_allclose(attn["A"], [0.5, 0.5, 0.09, 0.0], rtol=1e-6)  # sum over cells / cells read
    np.testing.assert_allclose(regulators.cre_attention(per_type, denominator="cosampled")["A"], [0.5, 0.5, 0.9, 0],
                               rtol=1e-6)
    table = regulators.celltype_cres(per_type, n_top=1)
    assert list(table.columns[:5]) == regulators.COLUMNS
    a = table[table.cell_type == "A"].set_index("cre")
    # percentiles in A: c0, c1 tie (3.5/4), c2 2/4, c3 0 (no attention); in B: c1 4/4, the rest 0
    np.testing.assert_allclose(a.loc[["c0", "c1", "c2", "c3"], "score"], [0.875, 0.875 - 1.0, 0.5, 0.0])
    assert a.index[a["rank"] == 1].tolist() == ["c0"] and a["specific"].sum() == 1
    b = table[table.cell_type == "B"].set_index("cre")
    assert b["rank"].idxmin() == "c1"
    assert len(table) == 8 and table.groupby("cell_type")["rank"].apply(sorted).map(list).tolist() == [[1, 2, 3, 4]] * 2
    # asked for 4 per type, B has one CRE with a positive score (c1) and A two (c0, c2): no padding
    padded = regulators.celltype_cres(per_type, n_top=4)
    assert padded.loc[padded.specific].groupby("cell_type")["cre"].apply(sorted).to_dict() == {"A": ["c0", "c2"],
                                                                                             "B": ["c1"]}
    assert (padded.loc[padded.specific, "score"] > 0).all()
    mean = regulators.celltype_cres(per_type, against="mean").set_index(["cell_type", "cre"])
    assert mean.loc[("A", "c0"), "score"] == pytest.approx(0.875)  # two types: max and mean agree
    with pytest.raises(ValueError, match="against"):
        regulators.celltype_cres(per_type, against="min")


def test_differential_accessibility_wilcoxon_matches_scipy_and_applies_bh(programs):
    _, atac, _ = programs
    table = regulators.differential_accessibility(atac, method="wilcoxon", n_top=20)
    assert list(table.columns) == regulators.COLUMNS + ["pvalue", "qvalue", "frac_in", "frac_out"]
    assert len(table) == 3 * atac.n_vars and table.groupby("cell_type")["specific"].sum().eq(20).all()
    labels = atac.obs["cell_type"].astype(str).to_numpy()
    binary = (atac.X > 0).toarray().astype(float)
    t0 = table[table.cell_type == "type_0"].set_index("cre")
    for cre in t0.index[[0, 5, 300]]:
        col = binary[:, atac.var_names.get_loc(cre)]
        ref = stats.mannwhitneyu(col[labels == "type_0"], col[labels != "type_0"], alternative="greater",
                                 use_continuity=False, method="asymptotic")
        assert t0.loc[cre, "pvalue"] == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-300)
    for _, group in table.groupby("cell_type"):
        np.testing.assert_allclose(group["qvalue"], enrichment.bh_qvalues(group["pvalue"]))
    assert (table["qvalue"] >= table["pvalue"] - 1e-15).all()
    logreg = regulators.differential_accessibility(atac, method="logreg")
    assert list(logreg.columns) == list(table.columns) and logreg["pvalue"].isna().all()


def test_attention_ranking_and_da_recover_planted_programs(programs):
    rna, atac, truth = programs
    cells = np.random.default_rng(0).permutation(rna.n_obs)
    model, _ = train.fit(rna, atac, "atac2rna", cells[:480], cells[480:540], profile="quick", seed=0, device="cpu",
                         progress=False)
    per_type = attention.extract(model, rna, atac, n_cells_per_type=60, batch_size=16)
    results = {"attention": regulators.program_recovery(regulators.celltype_cres(per_type), truth),
               "DA wilcoxon": regulators.program_recovery(regulators.differential_accessibility(atac), truth),
               "DA logreg": regulators.program_recovery(
                   regulators.differential_accessibility(atac, method="logreg"), truth)}
    # among the type-specific CREs only (program vs decoy): regulation beyond accessibility
    specific_only = {k: set(atac.var_names) - set(truth.loc[truth.cell_type == k, "cre"]) - set(v)
                     for k, v in truth.attrs["decoys"].items()}
    results["attention, program vs decoy"] = regulators.program_recovery(regulators.celltype_cres(per_type), truth,
                                                                       exclude=specific_only)
    results["DA, program vs decoy"] = regulators.program_recovery(regulators.differential_accessibility(atac), truth,
                                                                exclude=specific_only)
    summary = "; ".join(f"{m}: AUPRC {r['auprc'].round(3).tolist()} (base {r['base_rate'].round(3).tolist()})"
                        for m, r in results.items())
    print(summary)
    for method in ("attention", "DA wilcoxon", "DA logreg"):
        rec = results[method]
        assert len(rec) == 3, summary
        assert (rec["auprc"] > 10 * rec["base_rate"]).all() and (rec["auroc"] > 0.9).all(), summary


def test_region_set_enrichment_finds_planted_overlap_not_random(programs):
    rna, atac, truth = programs
    background = atac.var
    sets = {k: list(g["cre"]) for k, g in truth.groupby("cell_type")}
    rng = np.random.default_rng(1)
    half = background.loc[sets["type_0"][::2], ["chrom", "start", "end"]]   # half of type_0's CREs (8 of 15)
    half = half.assign(start=half["start"] + 100, end=half["start"] + 300)
    others = background.loc[rng.choice(background.index, 30, replace=False), ["chrom", "start", "end"]]
    random = background.loc[rng.choice(background.index, 60, replace=False), ["chrom", "start", "end"]]
    region_sets = {"planted": pd.concat([half, others]).reset_index(drop=True),
                   "random": random.reset_index(drop=True)}
    table = enrichment.region_set_enrichment(sets, region_sets, background)
    assert list(table.columns) == ["cre_set", "region_set", "n_set", "n_set_overlap", "n_background",
                                   "n_background_overlap", "frac_set", "frac_background", "odds_ratio", "pvalue",
                                   "qvalue"]
    assert len(table) == 6
    np.testing.assert_allclose(table["qvalue"], enrichment.bh_qvalues(table["pvalue"]))
    hit = table.set_index(["cre_set", "region_set"])
    row = hit.loc[("type_0", "planted")]
    assert row["n_set_overlap"] >= 8 and row["qvalue"] < 1e-3 and row["odds_ratio"] > 5
    a, b = row["n_set_overlap"], row["n_set"] - row["n_set_overlap"]
    c, d = row["n_background_overlap"], row["n_background"] - row["n_background_overlap"]
    assert row["pvalue"] == pytest.approx(stats.fisher_exact([[a, b], [c, d]], alternative="greater")[1])
    assert (table.loc[table.region_set == "random", "qvalue"] > 0.05).all()
    assert (table.loc[(table.region_set == "planted") & (table.cre_set != "type_0"), "qvalue"] > 0.05).all()
    # matched background: accessibility x width bins of the universe
    cov = enrichment.matching_covariates(atac)
    bins = enrichment.matching_bins(cov["accessibility"], cov["width"], n_accessibility_bins=10, min_bin_size=20)
    matched = enrichment.region_set_enrichment(sets, region_sets, background, bins=bins, n_matched=10, seed=0)
    m = matched.set_index(["cre_set", "region_set"]).loc[("type_0", "planted")]
    assert m["pvalue"] < 1e-3 and 0 < m["n_background"] < len(background) - 15
    with pytest.raises(ValueError, match="not in the background"):
        enrichment.region_set_enrichment({"x": ["chr9:1-2"]}, region_sets, background)


def test_marker_genes_and_proximity_find_the_planted_markers_and_their_cres(programs):
    rna, atac, truth = programs
    markers = regulators.marker_genes(rna, "cell_type", n_markers=5)
    for cell_type, planted in truth.attrs["markers"].items():
        assert len(set(markers[cell_type]) & set(planted)) >= 4, (cell_type, markers[cell_type], planted)
    program = {k: list(g["cre"]) for k, g in truth.groupby("cell_type")}
    table = regulators.marker_proximity(program, markers, atac.var, rna.var).set_index("group")
    assert list(table.index) == sorted(program)
    assert (table["frac_near_specific"] > table["frac_near_background"]).all()
    assert (table["pvalue"] < 1e-3).all() and (table["n_specific"] == [len(v) for v in program.values()]).all()
    row = table.iloc[0]
    near_set, n_set = round(row["frac_near_specific"] * row["n_specific"]), row["n_specific"]
    n_bg = atac.n_vars - n_set
    near_bg = round(row["frac_near_background"] * n_bg)
    expected = stats.fisher_exact([[near_set, n_set - near_set], [near_bg, n_bg - near_bg]], alternative="greater")
    assert row["pvalue"] == pytest.approx(expected[1]) and row["odds_ratio"] == pytest.approx(expected[0])
    # random CREs are not nearer the markers than the rest
    rng = np.random.default_rng(0)
    random = {k: list(rng.choice(atac.var_names, len(v), replace=False)) for k, v in program.items()}
    assert (regulators.marker_proximity(random, markers, atac.var, rna.var)["pvalue"] > 0.01).all()
    with pytest.raises(ValueError, match="two groups"):
        regulators.marker_genes(rna, "cell_type", min_cells=10_000)


def test_subtypes_recover_planted_subtypes_and_connect_them_with_paga():
    rna, _, _ = simulate.paired(n_cells=600, n_genes=100, n_cres=200, n_cell_types=3, seed=1)
    rna.obs["parent"] = "all"
    sub = regulators.subtypes(rna, "parent", "all", resolution=0.3, n_top_genes=100, seed=0)
    assert sub.n_obs == 600 and sub.obs["subtype"].astype(str).str.startswith("all s").all()
    from sklearn.metrics import adjusted_rand_score
    assert adjusted_rand_score(sub.obs["cell_type"], sub.obs["subtype"]) > 0.8
    conn = sub.uns["paga"]["connectivities"]
    n = len(sub.obs["subtype"].cat.categories)
    assert conn.shape == (n, n) and np.allclose(conn, conn.T)
    again = regulators.subtypes(rna, "parent", "all", resolution=0.3, n_top_genes=100, seed=0)
    assert (again.obs["subtype"] == sub.obs["subtype"]).all()
    with pytest.raises(ValueError, match="cells"):
        regulators.subtypes(rna[:20], "parent", "all")


def test_common_universe_same_cres_and_same_n_per_type():
    """Two methods, one ranking every CRE and one scoring few: both are re-ranked within the universe and mark the
    same number of specific CREs per type, the smaller positive count (capped at n_top), never a non-positive one."""
    import pandas as pd
    cres = [f"c{i}" for i in range(6)]
    da = pd.DataFrame({"cell_type": ["A"] * 6 + ["B"] * 6, "cre": cres * 2,
                       "score": [5, 4, 3, 2, 1, 0.5] * 2, "rank": list(range(1, 7)) * 2})
    att = pd.DataFrame({"cell_type": ["A"] * 6 + ["B"] * 6, "cre": cres * 2,
                        "score": [0, 0.9, 0.8, 0, 0, 0] + [0.3, 0, 0, 0, 0, 0], "rank": [4, 1, 2, 3, 5, 6] + list(range(1, 7))})
    out = regulators.common_universe({"DA": da, "attention": att}, universe=["c0", "c1", "c2", "c3"], n_top=3)
    for table in out.values():
        assert set(table["cre"]) == {"c0", "c1", "c2", "c3"}
        assert table.groupby("cell_type")["rank"].apply(sorted).map(list).tolist() == [[1, 2, 3, 4]] * 2
        assert (table.loc[table.specific, "score"] > 0).all()
    n = {m: t[t.specific].groupby("cell_type").size().to_dict() for m, t in out.items()}
    assert n["DA"] == {"A": 2, "B": 1} and n["attention"] == {"A": 2, "B": 1}
    assert out["DA"].loc[out["DA"].specific & (out["DA"].cell_type == "A"), "cre"].tolist() == ["c0", "c1"]
