"""Attention read-out: normalisation, window, denominators, sparse output, link recovery on planted truth."""
import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from cisformer.data import simulate
from cisformer.tl import attention
from cisformer.model import Cisformer, CisformerConfig


def test_log_normalize_hand_matrix():
    a = np.array([[0.5, 0.5], [0.25, 0.75]])  # mean 0.5
    np.testing.assert_allclose(attention.log_normalize(a), np.log1p([[1.0, 1.0], [0.5, 1.5]]))
    # scale-free: multiplying the matrix changes nothing; an all-zero matrix stays zero
    np.testing.assert_allclose(attention.log_normalize(3 * a), attention.log_normalize(a))
    assert not attention.log_normalize(np.zeros((2, 3))).any()


def test_rank_normalize_rows_then_columns_then_minmax():
    a = np.array([[0.1, 0.9], [0.3, 0.2]])
    # ranks within columns: [[0, 1], [1, 0]]; re-ranked within rows: the same; min-max: the same
    np.testing.assert_array_equal(attention.rank_normalize(a), [[0.0, 1.0], [1.0, 0.0]])
    b = np.array([[1.0, 2.0, 3.0], [6.0, 5.0, 4.0], [7.0, 9.0, 8.0]])
    # every column ranks the rows 0, 1, 2; each row is then constant and ties break by position
    np.testing.assert_allclose(attention.rank_normalize(b), np.tile([0.0, 0.5, 1.0], (3, 1)))
    r = attention.rank_normalize(np.random.default_rng(0).random((5, 7)))
    assert r.min() == 0.0 and r.max() == 1.0


def _toy_tables():
    genes = pd.DataFrame({"chrom": ["chr1", "chr1", "chr2", "chr1"], "start": [1_000_000, 2_000_000, 500_000, 0],
                          "end": [1_010_000, 2_010_000, 510_000, 0], "strand": ["+", "-", "+", "+"],
                          "tss": [1_000_000, 2_010_000, 500_000, np.nan]}, index=["A", "B", "C", "NoCoord"])
    genes.loc["NoCoord", ["chrom"]] = ""
    starts = [760_000, 1_200_000, 1_249_000, 1_300_000, 2_200_000, 400_000]
    cres = pd.DataFrame({"chrom": ["chr1"] * 5 + ["chr2"], "start": starts, "end": [s + 500 for s in starts]})
    cres.index = [f"{c}:{s}-{e}" for c, s, e in zip(cres.chrom, cres.start, cres.end)]
    return genes, cres


def test_window_pairs_and_mask():
    genes, cres = _toy_tables()
    pairs = attention.candidate_pairs(genes, cres, window=250_000)
    got = set(zip(pairs["gene"], pairs["cre_idx"]))
    # A (TSS 1.0 Mb): 760,250 (-239,750) and 1,200,250 and 1,249,250 in; 1,300,250 out
    # B (minus strand, TSS 2.01 Mb): 2,200,250 in; C on chr2: 400,250 in; NoCoord: nothing
    assert got == {("A", 0), ("A", 1), ("A", 2), ("B", 4), ("C", 5)}
    mask = attention.window_mask(genes, cres, window=250_000)
    assert sp.issparse(mask) and mask.shape == (4, 6) and mask.nnz == 5
    assert not mask[3].toarray().any()


def test_accumulator_divides_by_cells_where_pair_was_sampled():
    pair_id = sp.csr_matrix(np.array([[1, 2], [0, 3]]))  # genes 0,1 x CREs 0,1 ; pair ids 1..3
    acc = attention.PairAccumulator(pair_id)
    acc.add_cell(np.array([0, 1]), np.array([0, 1]), np.array([[0.2, 0.4], [0.6, 0.8]]))
    acc.add_cell(np.array([0]), np.array([0]), np.array([[0.6]]))          # pair (0,0) again, nothing else
    acc.add_cell(np.array([1]), np.array([0]), np.array([[0.9]]))          # no window pair at all
    acc.add_cell(np.array([0, 0]), np.array([1]), np.array([[0.1], [0.3]]))  # duplicated gene token: mean 0.2
    assert acc.n_cells == 4
    np.testing.assert_array_equal(acc.count, [2, 2, 1])
    np.testing.assert_allclose(acc.sum / acc.count, [0.4, 0.3, 0.8])  # not sum / 4 as the reference did


def _model(direction, rna, atac, seed=0):
    torch.manual_seed(seed)
    cfg = CisformerConfig.from_profile(direction, "quick", rna.n_vars, atac.n_vars)
    model = Cisformer(cfg)
    model.gene_names, model.cre_names = list(rna.var_names), list(atac.var_names)
    return model


@pytest.mark.parametrize("direction", ["atac2rna", "rna2atac"])
def test_extract_sparse_window_masked_per_cell_type(direction):
    rna, atac, _ = simulate.paired(n_cells=60, n_genes=30, n_cres=150, n_cell_types=2, seed=1)
    model = _model(direction, rna, atac)
    per_type = attention.extract(model, rna, atac, n_cells_per_type=10, batch_size=4)
    assert set(per_type) == {"type_0", "type_1"}
    mask = attention.window_mask(rna.var, atac.var)
    for adata in per_type.values():
        assert adata.shape == (rna.n_vars, atac.n_vars) and sp.issparse(adata.X)
        assert adata.uns["n_cells"] == 10
        assert adata.X.nnz > 0 and (adata.X.astype(bool) > mask).nnz == 0   # nothing outside the window
        n = adata.layers["n_cells"]
        assert n.max() <= 10 and (adata.X.astype(bool) > n.astype(bool)).nnz == 0
    table = attention.links_table(per_type)
    assert {"cell_type", "gene", "cre", "score", "n_cells", "rank"} <= set(table.columns)
    assert len(table) == sum(a.layers["n_cells"].nnz for a in per_type.values())
    scores = attention.gene_scores(per_type)
    assert scores.shape == (rna.n_vars, 2)
    counts = attention.linked_cre_counts(per_type)
    assert (counts.to_numpy() >= 0).all() and counts.to_numpy().sum() > 0


def test_gene_attention_rna2atac_only():
    rna, atac, _ = simulate.paired(n_cells=40, n_genes=20, n_cres=100, n_cell_types=2, seed=2)
    scores = attention.gene_attention(_model("rna2atac", rna, atac), rna, atac, n_cells_per_type=8)
    assert scores.shape == (20, 2) and np.isfinite(scores.to_numpy()).any()
    with pytest.raises(ValueError, match="rna2atac"):
        attention.gene_attention(_model("atac2rna", rna, atac), rna, atac, n_cells_per_type=8)


def test_trans_readout_needs_genes():
    rna, atac, _ = simulate.paired(n_cells=30, n_genes=10, n_cres=50, n_cell_types=1, seed=3)
    model = _model("rna2atac", rna, atac)
    with pytest.raises(ValueError, match="genes"):
        attention.extract(model, rna, atac, window=None)
    per_type = attention.extract(model, rna, atac, window=None, genes=["Gene0000"], n_cells_per_type=10)
    adata = per_type["type_0"]
    assert adata[["Gene0000"]].layers["n_cells"].nnz > 0 and adata[1:].X.nnz == 0


def test_link_recovery_scores_truth_and_baseline_beats_random():
    rna, atac, truth = simulate.paired(n_cells=300, n_genes=40, n_cres=300, n_cell_types=3, seed=4)
    pairs = attention.candidate_pairs(rna.var, atac.var)
    rng = np.random.default_rng(0)
    scores = {"random": rng.random(len(pairs)),
              "peak-to-gene": attention.peak_to_gene_correlation(rna, atac, pairs, n_metacells=60, metacell_size=10)}
    table = attention.link_recovery(pairs, scores, truth).set_index("method")
    assert 0.35 < table.loc["random", "auroc"] < 0.65
    assert table.loc["peak-to-gene", "auroc"] > 0.65
    assert table.loc["peak-to-gene", "auprc"] > table.loc["peak-to-gene", "base_rate"] + 0.1


def test_deletion_effects_shape_and_direction_check():
    rna, atac, _ = simulate.paired(n_cells=40, n_genes=12, n_cres=60, n_cell_types=2, seed=5)
    pairs = attention.candidate_pairs(rna.var, atac.var)
    model = _model("atac2rna", rna, atac)
    model.bin_edges.copy_(torch.linspace(0, 3, model.config.n_bins))
    effects = attention.deletion_effects(model, rna, atac, pairs, n_cells=8)
    assert effects.shape == (len(pairs),) and np.isfinite(effects).all() and (effects != 0).any()
    with pytest.raises(ValueError, match="atac2rna"):
        attention.deletion_effects(_model("rna2atac", rna, atac), rna, atac, pairs, n_cells=4)


def test_deletion_per_cell_type_is_the_drop_in_predicted_expression():
    """links(scorer="deletion"): for one pair, the score equals the mean over the
    type's cells in which the CRE is open of (prediction with the cell's CREs) - (prediction without that CRE),
    computed here by hand through predict.atac_to_rna; n_cells counts those cells; nothing outside the window."""
    from cisformer import predict
    rna, atac, _ = simulate.paired(n_cells=40, n_genes=12, n_cres=60, n_cell_types=2, seed=5)
    model = _model("atac2rna", rna, atac)
    model.bin_edges.copy_(torch.linspace(0, 3, model.config.n_bins))
    with torch.no_grad():
        model.path.readout.weight.normal_()  # the attention path matters too
    cells = {"type_0": np.flatnonzero(rna.obs["cell_type"] == "type_0")[:6]}
    per_type = attention.deletion(model, rna, atac, cells=cells)
    table = attention.links(model, rna, atac, "deletion", cells=cells)
    assert (table["scorer"] == "in-silico deletion").all() and len(table) == per_type["type_0"].layers["n_cells"].nnz
    mask = attention.window_mask(rna.var, atac.var)
    assert (per_type["type_0"].X.astype(bool) > mask).nnz == 0
    row = table.iloc[int(np.argmax(table["score"].abs().to_numpy()))]
    g, c = rna.var_names.get_loc(row["gene"]), atac.var_names.get_loc(row["cre"])
    rows = cells["type_0"][np.asarray(atac.X[cells["type_0"], c].todense()).ravel() > 0]
    assert row["n_cells"] == len(rows) > 0
    deleted = atac[rows].copy()
    X = deleted.X.tolil()
    X[:, c] = 0
    deleted.X = X.tocsr()
    drop = predict.atac_to_rna(model, atac[rows]).X[:, g] - predict.atac_to_rna(model, deleted).X[:, g]
    assert row["score"] == pytest.approx(float(drop.mean()), rel=1e-4, abs=1e-6)
    attn = attention.links(model, rna, atac, scorer="attention", cells=cells)
    assert (attn["scorer"] == "attention (paper's normalisation)").all()
    with pytest.raises(ValueError, match="scorer"):
        attention.links(model, rna, atac, scorer="lasso", cells=cells)
    with pytest.raises(ValueError, match="reads a trained model"):
        attention.links(None, rna, atac, scorer="deletion", cells=cells)


def test_within_cell_type_regression_is_the_default_and_is_ridge_within_each_type():
    """links() without a model: per cell type, each pair's score is the ridge coefficient of the gene's log1p CP10k
    on its window CREs' binary accessibility over that type's cells (computed here by hand), n_cells counts the
    type's cells in which the CRE is open; a model only restricts the vocabulary. The pooled form with groups is
    ridge with one unpenalised intercept per group."""
    from cisformer import data
    rna, atac, _ = simulate.paired(n_cells=120, n_genes=12, n_cres=60, n_cell_types=2, seed=5)
    table = attention.links(None, rna, atac)
    assert (table["scorer"] == "within-cell-type regression").all() and attention.DEFAULT_SCORER == "regression"
    pairs = attention.candidate_pairs(rna.var, atac.var)
    gene = pairs["gene"].value_counts().index[0]
    window = pairs[pairs["gene"] == gene]
    rows = np.flatnonzero(rna.obs["cell_type"] == "type_1")
    x = (atac[rows][:, window["cre"]].X.toarray() > 0).astype(float)
    y = data.true_expression(rna[rows])[:, rna.var_names.get_loc(gene)]
    xc, yc = x - x.mean(0), y - y.mean()
    expected = np.linalg.solve(xc.T @ xc + np.eye(len(window)), xc.T @ yc)
    got = table[(table["cell_type"] == "type_1") & (table["gene"] == gene)].set_index("cre")
    opened = x.sum(0) > 0
    assert set(got.index) == set(window["cre"][opened])
    np.testing.assert_allclose(got.loc[window["cre"][opened], "score"], expected[opened], rtol=1e-4, atol=1e-6)
    assert got.loc[window["cre"][opened], "n_cells"].tolist() == x.sum(0)[opened].astype(int).tolist()
    assert (table.groupby("cell_type")["rank"].min() == 1).all()

    groups = rna.obs["cell_type"].to_numpy()
    pooled = attention.regression_coefficients(rna, atac, window, groups=groups)
    xa = (atac[:, window["cre"]].X.toarray() > 0).astype(float)
    ya = data.true_expression(rna)[:, rna.var_names.get_loc(gene)]
    onehot = (groups[:, None] == np.unique(groups)[None, :]).astype(float)
    design = np.hstack([xa, onehot])
    penalty = np.diag([1.0] * len(window) + [0.0] * onehot.shape[1])
    np.testing.assert_allclose(pooled, np.linalg.solve(design.T @ design + penalty, design.T @ ya)[:len(window)],
                               rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="one label per cell"):
        attention.regression_coefficients(rna, atac, window, groups=groups[:-1])
    model = _model("atac2rna", rna[:, :6].copy(), atac)
    restricted = attention.links(model, rna, atac, cells={"type_1": rows})
    assert set(restricted["gene"]) <= set(rna.var_names[:6]) and len(restricted) > 0


def test_within_cell_type_regression_does_not_take_cell_identity_for_a_link():
    """trans-regulated genes follow their cell type, and so do their window CREs: plain regression ranks those
    non-links high, regression within cell types does not (the reason it is the default scorer)."""
    rna, atac, truth = simulate.paired(n_cells=1200, n_genes=40, n_cres=400, n_cell_types=4, seed=3, trans_genes=0.5)
    pairs = attention.candidate_pairs(rna.var, atac.var)
    scores = {"plain": attention.regression_coefficients(rna, atac, pairs),
              "within": attention.regression_coefficients(rna, atac, pairs, groups=rna.obs["cell_type"])}
    table = attention.link_recovery(pairs, scores, truth).set_index("method")
    assert table.loc["within", "auprc"] > table.loc["plain", "auprc"] + 0.05


def test_links_table_with_a_cell_type_without_pairs():
    genes, cres = ["g0", "g1"], ["c0", "c1", "c2"]
    seen = sp.csr_matrix(np.array([[0, 2, 0], [0, 0, 0]], dtype=np.float32))
    empty = sp.csr_matrix((2, 3), dtype=np.float32)
    per_type = {t: ad.AnnData(X=sp.csr_matrix(n * 0.5), layers={"n_cells": n},
                              obs=pd.DataFrame(index=genes), var=pd.DataFrame(index=cres))
                for t, n in {"A": seen, "B": empty}.items()}
    table = attention.links_table(per_type)
    assert table[["cell_type", "gene", "cre"]].values.tolist() == [["A", "g0", "c1"]]
    assert table["score"].tolist() == [1.0] and table["n_cells"].tolist() == [2]
    pairs = pd.DataFrame({"gene": ["g0", "g1"], "cre": ["c1", "c0"]})
    np.testing.assert_allclose(attention.pair_scores(per_type, pairs, how="max"), [1.0, 0.0])


def test_held_out_check_rewards_the_true_links_and_not_a_random_ranking():
    """On planted links, scoring pairs by the truth gives a higher held-out R^2 than random window CREs; a random
    scorer does not; fit and test cells must not overlap."""
    rna, atac, truth = simulate.paired(n_cells=400, n_genes=20, n_cres=160, n_cell_types=2, seed=6)
    pairs = attention.candidate_pairs(rna.var, atac.var)
    key = pd.MultiIndex.from_arrays([pairs["gene"], pairs["cre"]])
    planted = key.isin(pd.MultiIndex.from_arrays([truth["gene"], truth["cre"]])).astype(float)
    scores = {"truth": planted, "random": np.random.default_rng(1).random(len(pairs))}
    fit, test = rna.obs_names[:250], rna.obs_names[250:]
    table = attention.held_out_check(rna, atac, pairs, scores, fit, test, k=2, n_random=10)
    assert set(table["scorer"]) == {"truth", "random"} and table["gene"].nunique() > 5
    mean = table.groupby("scorer")["delta_random"].mean()
    assert mean["truth"] > 0.02 and mean["truth"] > mean["random"] + 0.02
    assert abs(mean["random"]) < 0.02
    with pytest.raises(ValueError, match="overlap"):
        attention.held_out_check(rna, atac, pairs, scores, fit, rna.obs_names[200:], k=2)


def test_score_reproducibility_by_hand():
    pairs = pd.DataFrame({"gene": ["g"] * 4 + ["h"] * 3 + ["k"] * 2, "cre": list("abcdefgxy")})
    a = {"same": np.array([1, 2, 3, 4, 3, 2, 1, 0, 1.0]), "flat": np.zeros(9)}
    b = {"same": np.array([10, 20, 30, 40, 1, 2, 3, 5, 6.0]), "flat": np.arange(9.0)}
    out = attention.score_reproducibility(pairs, a, b).set_index("scorer")
    assert out.loc["same", "n_genes"] == 2 and out.loc["same", "spearman_mean"] == pytest.approx(0.0)  # +1 and -1
    assert out.loc["flat", "n_genes"] == 0 and np.isnan(out.loc["flat", "spearman_mean"])
