"""Metrics on hand-made inputs with known answers, and on simulated data."""
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

from cisformer import data, metrics


def _atac(x, labels=None):
    n = x.shape[0]
    obs = pd.DataFrame({"cell_type": labels if labels is not None else ["a"] * n}, index=[f"c{i}" for i in range(n)])
    return AnnData(np.asarray(x, dtype=np.float32), obs=obs,
                   var=pd.DataFrame(index=[f"chr1:{i * 1000}-{i * 1000 + 500}" for i in range(x.shape[1])]))


@pytest.fixture
def binary_truth():
    rng = np.random.default_rng(0)
    truth = (rng.random((30, 200)) < 0.2).astype(np.float32)
    truth[:, 0], truth[:, 1] = 1, 0          # every cell has an open and a closed CRE
    return truth


def _value(table, metric):
    return table.loc[table["metric"] == metric, "value"].to_numpy()


def test_perfect_prediction_scores_one(binary_truth):
    table = metrics.per_cell_classification(_atac(binary_truth), _atac(binary_truth))
    for metric in ("precision", "recall", "F1", "AUROC", "AUPRC"):
        np.testing.assert_allclose(_value(table, metric), 1.0)
    assert set(table.columns) == {"cell", "metric", "value"}


def test_inverted_prediction_has_auroc_zero(binary_truth):
    table = metrics.per_cell_classification(_atac(1 - binary_truth), _atac(binary_truth))
    np.testing.assert_allclose(_value(table, "AUROC"), 0.0)
    np.testing.assert_allclose(_value(table, "precision"), 0.0)


def test_constant_prediction_has_auroc_half(binary_truth):
    table = metrics.per_cell_classification(_atac(np.full_like(binary_truth, 0.3)), _atac(binary_truth))
    np.testing.assert_allclose(_value(table, "AUROC"), 0.5)


def test_binarize_rules():
    probs = np.array([[0.9, 0.6, 0.3, 0.2], [0.1, 0.1, 0.2, 0.0]], dtype=np.float32)
    # expected count: row 0 sums to 2.0 -> two called; row 1 sums to 0.4 -> none called
    np.testing.assert_array_equal(metrics.binarize(probs), [[1, 1, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(metrics.binarize(probs, "threshold", 0.25), [[1, 1, 1, 0], [0, 0, 0, 0]])
    # top-k: the same k (training open fraction x n CREs) in every cell, whatever the calibration
    np.testing.assert_array_equal(metrics.binarize(probs, "topk", open_fraction=0.25), [[1, 0, 0, 0], [0, 0, 1, 0]])
    with pytest.raises(ValueError):
        metrics.binarize(probs, "bogus")


def test_clustering_scores_invariant_to_label_names():
    truth = np.repeat(["x", "y", "z"], 10)
    pred = np.repeat(["2", "0", "1"], 10)
    table = metrics.clustering_scores(pred, truth)
    np.testing.assert_allclose(table["value"], 1.0)
    assert list(table["metric"]) == list(metrics.CLUSTER_METRICS)


def test_pseudobulk_pearson_perfect(binary_truth):
    labels = np.repeat(["a", "b", "c"], 10)
    table = metrics.pseudobulk_pearson(_atac(binary_truth, labels), _atac(binary_truth, labels))
    assert sorted(table["cell_type"]) == ["a", "b", "c"]
    np.testing.assert_allclose(table["value"], 1.0, atol=1e-6)


def test_mismatched_cells_rejected(binary_truth):
    true = _atac(binary_truth)
    pred = _atac(binary_truth[::-1])
    pred.obs_names = list(true.obs_names[::-1])
    with pytest.raises(ValueError):
        metrics.per_cell_classification(pred, true)


def _rna(counts, labels=None):
    n = counts.shape[0]
    obs = pd.DataFrame({"cell_type": labels if labels is not None else ["a"] * n}, index=[f"c{i}" for i in range(n)])
    return AnnData(sp.csr_matrix(counts.astype(np.float32)), obs=obs,
                   var=pd.DataFrame(index=[f"g{j}" for j in range(counts.shape[1])]))


def test_genewise_correlation_known_answers():
    rng = np.random.default_rng(1)
    counts = rng.poisson(3.0, (40, 6)).astype(np.float32)
    true = _rna(counts)
    perfect = AnnData(data.true_expression(true), obs=true.obs.copy(), var=true.var.copy())
    table = metrics.genewise_correlation(perfect, true)
    np.testing.assert_allclose(table["value"], 1.0, atol=1e-5)
    constant = AnnData(np.ones((40, 6), dtype=np.float32), obs=true.obs.copy(), var=true.var.copy())
    table = metrics.genewise_correlation(constant, true)
    np.testing.assert_allclose(table["value"], 0.0)        # NaN -> 0
    masked = metrics.genewise_correlation(constant, true, masked=True)
    assert set(masked["metric"]) == {"pearson_masked", "spearman_masked"}
    assert {"gene", "metric", "value"} <= set(masked.columns)


def test_masking_uses_true_zero_pattern():
    counts = np.array([[0, 5], [3, 0], [4, 4], [0, 1]], dtype=np.float32)
    true = _rna(counts)
    pred = AnnData(np.ones((4, 2), dtype=np.float32), obs=true.obs.copy(), var=true.var.copy())
    masked = metrics.genewise_correlation(pred, true, masked=True)
    # masked prediction is the indicator of the true non-zeros -> positive correlation for both genes
    assert (masked.loc[masked["metric"] == "pearson_masked", "value"] > 0.5).all()


@pytest.fixture(scope="module")
def simulated():
    from cisformer.data import simulate

    return simulate.paired(n_cells=300, n_genes=80, n_cres=600, n_cell_types=3, seed=0)


def test_atac_clustering_recovers_types(simulated):
    _, atac, _ = simulated
    scores, clusters, embedding = metrics.atac_clustering(atac, seed=0)
    assert len(clusters) == atac.n_obs and embedding.shape[0] == atac.n_obs
    assert scores.set_index("metric").loc["AMI", "value"] > 0.5


def test_rna_clustering_and_summaries(simulated):
    rna, atac, _ = simulated
    scores, _, _ = metrics.rna_clustering(rna, seed=0)
    assert scores.set_index("metric").loc["AMI", "value"] > 0.3
    summary = metrics.rna2atac_summary(atac, atac, cluster=False, open_fraction=0.1)
    assert set(summary["metric"]) == {"precision", "recall", "F1", "AUROC", "AUPRC", "pseudobulk_pearson"}
    floor = np.asarray((atac.X > 0).mean(0)).ravel()
    summary = metrics.rna2atac_summary(atac, atac, open_fraction=0.1, floor=floor, measured=True).set_index("metric")
    assert summary.loc["AMI", "value"] > 0.5 and summary.loc["probe", "value"] > 0.9
    assert summary.loc["AUROC_gain", "value"] > 0.2
    perfect = AnnData(data.true_expression(rna), obs=rna.obs.copy(), var=rna.var.copy())
    gene_mean = data.true_expression(rna).mean(0)
    summary = metrics.atac2rna_summary(perfect, rna, floor=gene_mean).set_index("metric")["value"]
    assert summary["pearson"] == pytest.approx(1.0, abs=1e-5) and "AMI" in summary
    assert summary["skill"] == pytest.approx(1.0) and summary["rmse"] == pytest.approx(0.0, abs=1e-5)
    constant = AnnData(np.tile(gene_mean, (rna.n_obs, 1)), obs=rna.obs.copy(), var=rna.var.copy())
    assert metrics.skill_over_floor(constant, rna, gene_mean).set_index("metric").loc["skill", "value"] == pytest.approx(0.0, abs=1e-6)


def test_describe_comparison():
    table = pd.DataFrame({"scenario": ["s"] * 6, "method": ["cisformer", "kNN", "floor"] * 2,
                          "seed": [0, 0, 0, 1, 1, 1], "metric": ["AMI"] * 6,
                          "value": [0.5, 0.6, 0.1, 0.5, 0.6, 0.1]})
    text = metrics.describe_comparison(table, "AMI", group="scenario")
    assert "kNN" in text and "loses" in text and "floor" in text
    # the floor is a peer: beating kNN but not the floor is no win
    above_knn = table.assign(value=np.where(table["method"] == "floor", 0.9, table["value"]))
    assert "best other method (floor included) floor" in metrics.describe_comparison(above_knn, "AMI")


def test_describe_comparison_calls_small_differences_ties():
    table = pd.DataFrame({"scenario": ["a", "a", "a", "b", "b", "b"], "method": ["cisformer", "kNN", "floor"] * 2,
                          "seed": 0, "metric": "AUROC", "value": [0.7001, 0.6, 0.7, 0.6, 0.65, 0.7]})
    a, b = metrics.describe_comparison(table, "AUROC").splitlines()
    assert "cisformer ties" in a and "ties the floor" in a
    assert "cisformer loses" in b and "is below the floor" in b
    strict = metrics.describe_comparison(table, "AUROC", tie=0.00001).splitlines()[0]
    assert "cisformer wins" in strict and "is above the floor" in strict


def test_learning_diagnostics_cannot_be_passed_by_a_shortcut():
    """A per-cell constant shift of the floor (depth only) gains no AUROC, has no within-cell spread and tells
    no cell types apart; a cell-type-specific prediction does all three."""
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "c"], 40)
    profile = rng.uniform(0.01, 0.3, (3, 300))
    truth = rng.random((120, 300)) < profile[np.repeat(np.arange(3), 40)]
    floor = truth.mean(0)
    shift = rng.normal(0, 1, (120, 1))
    shortcut = 1 / (1 + np.exp(-(np.log(floor / (1 - floor)) + shift)))
    informed = profile[np.repeat(np.arange(3), 40)]
    floor_auroc = np.nanmean(metrics.per_cell_auroc(np.broadcast_to(floor, truth.shape), truth))
    assert np.nanmean(metrics.per_cell_auroc(shortcut, truth)) == pytest.approx(floor_auroc)
    assert np.nanmean(metrics.per_cell_auroc(informed, truth)) > floor_auroc + 0.05
    within, across = metrics.deviation_spread(np.log(shortcut / (1 - shortcut)) - np.log(floor / (1 - floor)))
    assert within < 1e-6 and across > 0.5
    assert metrics.celltype_probe(informed + rng.normal(0, 0.01, informed.shape), labels) > 0.95
    assert metrics.celltype_probe(shortcut, labels) < 0.6


def test_per_cell_auroc_and_auprc_match_scikit_learn():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(1)
    truth = rng.random((5, 50)) < 0.3
    scores = np.round(rng.random((5, 50)), 1)  # ties
    np.testing.assert_allclose(metrics.per_cell_auroc(scores, truth),
                               [roc_auc_score(t, s) for t, s in zip(truth, scores)])
    np.testing.assert_allclose(metrics.per_cell_auprc(scores, truth),
                               [average_precision_score(t, s) for t, s in zip(truth, scores)])
    truth[0] = False
    assert np.isnan(metrics.per_cell_auroc(scores, truth)[0]) and np.isnan(metrics.per_cell_auprc(scores, truth)[0])


def test_paired_differences_calls_a_win_only_when_the_interval_excludes_zero():
    """A constant +0.05 over 5 paired seeds is a win; a difference that changes sign with the seed is not; a
    deterministic peer (one run) is compared with each of our seeds; one seed gives no interval."""
    import pandas as pd
    from cisformer import metrics as m
    rows = []
    for s in range(5):
        rows += [("A", "cisformer", s, 0.50 + 0.01 * s), ("A", "steady", s, 0.45 + 0.01 * s),
                 ("A", "noisy", s, 0.50 + 0.01 * s + (0.03 if s % 2 else -0.03))]
    rows += [("A", "ridge", 0, 0.40), ("B", "cisformer", 0, 0.5), ("B", "ridge", 0, 0.4)]
    table = pd.DataFrame(rows, columns=["scenario", "method", "seed", "value"]).assign(metric="pearson")
    out = m.paired_differences(table, "pearson").set_index(["scenario", "peer"])
    assert out.loc[("A", "steady"), "win"] and out.loc[("A", "steady"), "difference"] == pytest.approx(0.05)
    assert not out.loc[("A", "noisy"), "win"] and not out.loc[("A", "noisy"), "loss"]
    assert out.loc[("A", "ridge"), "n"] == 5 and out.loc[("A", "ridge"), "win"]
    assert np.isnan(out.loc[("B", "ridge"), "ci_low"]) and not out.loc[("B", "ridge"), "win"]
    assert "beats steady" in m.describe_paired(out.reset_index(), "pearson")


def test_clustering_scores_a_perfect_predictor():
    """The cell-type mean (every cell of a type gets the same profile) and the measured state at 10x-like depth
    are clustered by type; a prediction with no cell-type information (the floor, with or without a per-cell
    depth shift) is not. SnapATAC2's graph stores the distance between identical cells as an explicit zero,
    which its leiden used to read as no edge (AMI 0 for the perfect predictor)."""
    from cisformer import data
    from cisformer.data import simulate
    from cisformer.peers import baselines

    rna, atac, _ = simulate.paired(n_cells=600, n_genes=80, n_cres=1500, n_cell_types=5, seed=0)
    tr, _, te = data.split_cells(rna.obs, by="random", seed=0)
    open_fraction = float((atac[tr].X > 0).mean())

    def ami(pred, measured=False):
        table = metrics.rna2atac_summary(pred, atac[te], open_fraction=open_fraction, measured=measured, seed=0)
        return _value(table, "AMI")[0]

    assert ami(baselines.CellTypeMean().fit(rna[tr], atac[tr]).predict_atac(rna[te])) >= 0.9
    assert ami(atac[te], measured=True) >= 0.9
    floor = baselines.Floor().fit(rna[tr], atac[tr]).predict_atac(rna[te])
    assert ami(floor) == pytest.approx(0.0, abs=0.02)
    shift = np.random.default_rng(0).normal(0, 1, (floor.n_obs, 1))
    floor.X = 1 / (1 + np.exp(-(np.log(floor.X / (1 - floor.X)) + shift)))
    assert ami(floor) == pytest.approx(0.0, abs=0.02)


def test_identical_cells_share_a_cluster_and_others_keep_theirs():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(300, 5))
    points[:40] = points[0]
    labels = metrics.cluster_embedding(points, n_neighbors=15, seed=0)
    assert len(set(labels[:40])) == 1
    assert len(set(labels[40:])) > 1
    groups = metrics.identical_rows(sp.csr_matrix(points))
    assert len(set(groups[:40])) == 1 and groups[0] not in set(groups[40:]) and len(set(groups[40:])) == 260


def test_snapatac2_is_installed_without_macs3_and_what_we_call_imports():
    """run_all.sh installs SnapATAC2 with --no-deps (pyproject.toml, extra "snapatac2"): the clustering must still
    run on SnapATAC2, not on the fallback, and every SnapATAC2 function cisformer.metrics calls must import."""
    import snapatac2 as snap

    assert metrics.CLUSTERING_BACKEND == "snapatac2"
    for function in (snap.pp.select_features, snap.tl.spectral, snap.pp.knn, snap.tl.leiden):
        assert callable(function)
