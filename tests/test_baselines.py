"""Baselines: shapes, beating a random prediction, and each learned method beating the floor (by a margin that the
same method without learning fails) on simulated data with cell types."""
import numpy as np
import pytest
import scipy.sparse as sp
from anndata import AnnData

from cisformer import data, metrics, protocol
from cisformer.data import simulate, vocab
from cisformer.peers import baselines


@pytest.fixture(scope="module")
def split():
    """Simulated paired data with three cell types, split at random into 280 training and 80 test cells."""
    rna, atac, _ = simulate.paired(n_cells=360, n_genes=60, n_cres=480, n_cell_types=3, seed=1)
    order = np.random.default_rng(0).permutation(rna.n_obs)
    train, test = rna.obs_names[order[:280]], rna.obs_names[order[280:]]
    return rna[train].copy(), atac[train].copy(), rna[test].copy(), atac[test].copy()


def _mean(table, metric):
    return float(table.loc[table["metric"] == metric, "value"].mean())


def _random_atac(atac_test):
    rng = np.random.default_rng(0)
    return AnnData(rng.random(atac_test.shape).astype(np.float32), obs=atac_test.obs.copy(), var=atac_test.var.copy())


@pytest.mark.parametrize("method, margin", [(baselines.Floor(), 0.0), (baselines.KNNTransfer(n_neighbors=10), 0.1),
                                            (baselines.CellTypeMean(), 0.1),
                                            (baselines.BabelStyle(epochs=10, batch_size=32), 0.1)])
def test_rna2atac_shapes_and_beats_random(split, method, margin):
    rna_tr, atac_tr, rna_te, atac_te = split
    pred = method.fit(rna_tr, atac_tr, seed=0).predict_atac(rna_te)
    assert pred.shape == atac_te.shape
    assert list(pred.obs_names) == list(atac_te.obs_names) and list(pred.var_names) == list(atac_te.var_names)
    assert pred.X.dtype == np.float32 and pred.X.min() >= 0 and pred.X.max() <= 1
    assert pred.layers["binary"].shape == pred.shape
    ours = metrics.per_cell_classification(pred, atac_te)
    rand = metrics.per_cell_classification(_random_atac(atac_te), atac_te)
    assert _mean(ours, "AUROC") > _mean(rand, "AUROC") + margin   # the floor ranks CREs by frequency only
    assert _mean(ours, "AUPRC") > _mean(rand, "AUPRC")


def _mean_auroc(method, split) -> float:
    rna_tr, atac_tr, rna_te, atac_te = split
    pred = method.fit(rna_tr, atac_tr, seed=0).predict_atac(rna_te)
    return _mean(metrics.per_cell_classification(pred, atac_te), "AUROC")


AUROC_MARGIN = 0.1  # over the floor's mean per-cell AUROC; the floor scores ~0.55 here, the label reference ~0.93


@pytest.mark.parametrize("method", [baselines.BabelStyle(epochs=10, batch_size=32), baselines.KNNTransfer(10)],
                         ids=["BABEL-style", "kNN"])
def test_learned_rna2atac_beats_floor(split, method):
    assert _mean_auroc(method, split) > _mean_auroc(baselines.Floor(), split) + AUROC_MARGIN


@pytest.mark.parametrize("method", [baselines.BabelStyle(epochs=0), baselines.KNNTransfer(n_neighbors=280)],
                         ids=["BABEL-style 0 epochs", "kNN over all training cells"])
def test_rna2atac_margin_fails_without_learning(split, method):
    """The same methods with nothing learned (the base-rate start alone) do not clear the margin above."""
    assert _mean_auroc(method, split) < _mean_auroc(baselines.Floor(), split) + AUROC_MARGIN


def test_cre_base_rate_logits_by_hand():
    binary = sp.csr_matrix(np.array([[1, 0, 0], [1, 0, 2], [1, 0, 0], [0, 0, 0]], dtype=np.float32))
    logits = protocol.cre_base_rate_logits(binary)
    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits, np.log([(3 + 1) / (1 + 1), 1 / 5, 2 / 4]), rtol=1e-6)
    np.testing.assert_array_equal(protocol.cre_base_rate_logits(binary.toarray()), logits)  # dense input too


def test_babel_starts_from_the_base_rate(split):
    """Untrained BABEL-style predicts the smoothed training frequencies, so it ranks CREs like the floor."""
    rna_tr, atac_tr, rna_te, atac_te = split
    pred = baselines.BabelStyle(epochs=0).fit(rna_tr, atac_tr, seed=0).predict_atac(rna_te).X
    opened, n = (atac_tr.X > 0).sum(axis=0).A1, atac_tr.n_obs
    np.testing.assert_allclose(pred, np.tile((opened + 1) / (n + 2), (rna_te.n_obs, 1)), rtol=1e-5)
    assert abs(_mean_auroc(baselines.BabelStyle(epochs=0), split) - _mean_auroc(baselines.Floor(), split)) < 1e-3


def test_babel_selects_its_epoch_on_validation_cells(split):
    """With validation cells BABEL-style scores each epoch by the AUROC gain over the base rate on them (the
    criterion Cisformer selects by), stops after ``patience`` epochs without improvement and keeps the best epoch:
    its prediction is that of the same run stopped at the best epoch."""
    rna_tr, atac_tr, rna_te, atac_te = split
    rna_fit, atac_fit, rna_val, atac_val = rna_tr[:200], atac_tr[:200], rna_tr[200:], atac_tr[200:]
    babel = baselines.BabelStyle(epochs=30, batch_size=32, lr=1e-2, min_epoch_samples=0, patience=2,
                                 scored_val_cells=50)
    babel.fit(rna_fit, atac_fit, seed=0, validation=(rna_val, atac_val[:, ::-1]))  # CRE order read by name
    scores = [row["val_score"] for row in babel.history]
    best = int(np.argmax(scores)) + 1
    assert best < len(scores) < 30 and len(scores) - best == 2 and max(scores[best:]) <= scores[best - 1]
    scored = protocol.scored_validation_cells(np.arange(rna_val.n_obs), 50, 0)
    truth = (atac_val[scored].X > 0).toarray()
    prior = protocol.cre_base_rate_logits(atac_fit.X)
    last = baselines.BabelStyle(epochs=best, batch_size=32, lr=1e-2, min_epoch_samples=0).fit(rna_fit, atac_fit, seed=0)
    assert metrics.auroc_gain(last.predict_atac(rna_val[scored]).X, truth, prior) == pytest.approx(scores[best - 1],
                                                                                                    abs=1e-9)
    np.testing.assert_array_equal(babel.predict_atac(rna_te).X, last.predict_atac(rna_te).X)


def test_knn_shrinks_like_cell_type_mean(split):
    """kNN's neighbour frequency uses CellTypeMean's rule: (open + prior_cells * floor) / (k + prior_cells)."""
    rna_tr, atac_tr, rna_te, _ = split
    assert baselines.KNNTransfer().prior_cells == baselines.CellTypeMean().prior_cells
    floor = baselines.Floor().fit(rna_tr, atac_tr).frequency
    opened = (atac_tr.X > 0).toarray()
    for prior in (0.0, 10.0):
        knn = baselines.KNNTransfer(n_neighbors=7, prior_cells=prior).fit(rna_tr, atac_tr, seed=0)
        idx = knn.rna_nn.kneighbors(knn.rna_space.transform(rna_te), return_distance=False)
        expected = (opened[idx].sum(axis=1) + prior * floor) / (7 + prior)
        np.testing.assert_allclose(knn.predict_atac(rna_te).X, expected, rtol=1e-5, atol=1e-7)


def test_cell_type_mean_reads_labels_and_falls_back_to_floor(split):
    rna_tr, atac_tr, rna_te, _ = split
    ref = baselines.CellTypeMean().fit(rna_tr, atac_tr)
    query = rna_te[:4].copy()
    query.obs["cell_type"] = [rna_tr.obs["cell_type"].iloc[0], "unseen type", rna_tr.obs["cell_type"].iloc[0], "x"]
    pred = ref.predict_atac(query).X
    np.testing.assert_array_equal(pred[0], pred[2])
    np.testing.assert_allclose(pred[1], baselines.Floor().fit(rna_tr, atac_tr).frequency)
    with pytest.raises(KeyError, match="cell_type"):
        ref.predict_atac(AnnData(query.X, var=query.var))  # no obs["cell_type"]


def test_cell_type_mean_shrinks_towards_floor(split):
    """prior_cells=0 is the raw per-type frequency; otherwise CREs never open in the type keep the floor's order."""
    rna_tr, atac_tr, _, _ = split
    cell_type = rna_tr.obs["cell_type"].iloc[0]
    in_type = (atac_tr.obs["cell_type"] == cell_type).to_numpy()
    opened = (atac_tr.X[in_type] > 0).toarray()
    floor = baselines.Floor().fit(rna_tr, atac_tr).frequency
    raw = baselines.CellTypeMean(prior_cells=0).fit(rna_tr, atac_tr).frequency[cell_type]
    np.testing.assert_allclose(raw, opened.mean(axis=0), rtol=1e-6)
    shrunk = baselines.CellTypeMean(prior_cells=10).fit(rna_tr, atac_tr).frequency[cell_type]
    np.testing.assert_allclose(shrunk, (opened.sum(axis=0) + 10 * floor) / (in_type.sum() + 10), rtol=1e-5)
    never = ~opened.any(axis=0) & (floor > 0)
    assert never.sum() > 1 and np.all(shrunk[never] > 0)
    assert np.array_equal(np.argsort(shrunk[never], kind="stable"), np.argsort(floor[never], kind="stable"))


@pytest.mark.parametrize("method", [baselines.ArchRGeneScore(), baselines.PeakToGene(n_metacells=60, metacell_size=10),
                                    baselines.ScarlinkStyle(epochs=40), baselines.KNNTransfer(n_neighbors=10),
                                    baselines.RidgeATAC(alpha=100.0)])
def test_atac2rna_shapes_and_beats_random(split, method):
    rna_tr, atac_tr, rna_te, atac_te = split
    pred = method.fit(rna_tr, atac_tr, seed=0).predict_rna(atac_te)
    assert pred.shape == rna_te.shape and list(pred.var_names) == list(rna_te.var_names)
    assert np.isfinite(pred.X).all()
    ours = metrics.genewise_correlation(pred, rna_te)
    rng = np.random.default_rng(0)
    rand = AnnData(rng.random(rna_te.shape).astype(np.float32), obs=rna_te.obs.copy(), var=rna_te.var.copy())
    rand = metrics.genewise_correlation(rand, rna_te)
    assert _mean(ours, "pearson") > _mean(rand, "pearson") + 0.1


def _mean_gene_rmse(method, split) -> float:
    """Mean over genes of the RMSE across test cells, on the log1p(normalised) scale of data.true_expression."""
    rna_tr, atac_tr, rna_te, atac_te = split
    pred = method.fit(rna_tr, atac_tr, seed=0).predict_rna(atac_te).X
    return float(np.sqrt(((pred - data.true_expression(rna_te)) ** 2).mean(axis=0)).mean())


RMSE_MARGIN = 0.03  # a learned method's mean gene-wise RMSE must be at least 3% below the floor's


SCARLINK_ON_LOG_SCALE = pytest.mark.xfail(
    strict=True, reason="SCARlink-style predicts log1p of its Poisson mean, not the mean of log1p expression; on the "
                        "log scale that bias costs more than its links gain (known loss, reported; XPASS = fixed)")


@pytest.mark.parametrize("method", [baselines.KNNTransfer(n_neighbors=10),
                                    baselines.PeakToGene(n_metacells=60, metacell_size=10),
                                    pytest.param(baselines.ScarlinkStyle(epochs=40), marks=SCARLINK_ON_LOG_SCALE),
                                    baselines.RidgeATAC(alpha=100.0)],
                         ids=["kNN", "peak-to-gene", "SCARlink-style", "ridge"])
def test_learned_atac2rna_beats_floor(split, method):
    assert _mean_gene_rmse(method, split) < (1 - RMSE_MARGIN) * _mean_gene_rmse(baselines.GeneMean(), split)


@pytest.mark.parametrize("method", [baselines.KNNTransfer(n_neighbors=280),
                                    baselines.PeakToGene(n_metacells=60, metacell_size=10, min_corr=1.1),
                                    baselines.ScarlinkStyle(epochs=0), baselines.RidgeATAC(alpha=1e12)],
                         ids=["kNN over all training cells", "peak-to-gene without links", "SCARlink-style 0 epochs",
                              "ridge penalised to its intercepts"])
def test_atac2rna_margin_fails_without_learning(split, method):
    assert _mean_gene_rmse(method, split) > (1 - RMSE_MARGIN) * _mean_gene_rmse(baselines.GeneMean(), split)


def test_gene_mean_is_the_training_mean(split):
    rna_tr, atac_tr, rna_te, atac_te = split
    assert next(iter(baselines.ATAC2RNA_METHODS)) == "floor"
    pred = baselines.GeneMean().fit(rna_tr, atac_tr).predict_rna(atac_te)
    assert pred.shape == rna_te.shape and list(pred.var_names) == list(rna_te.var_names)
    np.testing.assert_allclose(pred.X, np.tile(data.true_expression(rna_tr).mean(axis=0), (atac_te.n_obs, 1)))


def test_archr_gene_score_reports_genes_without_cres(split):
    """Genes with no CRE in their window are listed, and their score is 0 (not silently filled in)."""
    rna_tr, atac_tr, rna_te, atac_te = split
    full = baselines.ArchRGeneScore().fit(rna_tr, atac_tr)
    assert full.genes_without_cres == [] and full.coverage == 1.0
    gene = rna_tr.var.iloc[0]
    start, end = atac_tr.var["start"].to_numpy(), atac_tr.var["end"].to_numpy()
    far = (atac_tr.var["chrom"] != gene["chrom"]).to_numpy() | (end < gene["start"] - 200_000) | (
        start > gene["end"] + 200_000)   # drop every CRE within 200 kb of gene 0 (its window reaches 105 kb)
    part = baselines.ArchRGeneScore().fit(rna_tr, atac_tr[:, far])
    assert part.genes_without_cres == [rna_tr.var_names[0]]
    assert part.coverage == pytest.approx(1 - 1 / rna_tr.n_vars)
    assert np.all(part.predict_rna(atac_te[:, far]).X[:, 0] == 0)


def test_gene_cre_pairs_window():
    import pandas as pd

    genes = pd.DataFrame({"chrom": ["chr1", "chr1"], "start": [100_000, 500_000], "end": [110_000, 520_000],
                          "strand": ["+", "-"], "tss": [100_000, 520_000]})
    cres = pd.DataFrame({"chrom": ["chr1", "chr1", "chr2"], "start": [99_000, 700_000, 100_000],
                         "end": [99_500, 700_500, 100_500]})
    pairs = vocab.gene_cre_pairs(genes, cres, 250_000, 250_000)
    assert set(map(tuple, pairs[["gene_idx", "cre_idx"]].to_numpy())) == {(0, 0), (1, 1)}
    # minus strand: a CRE downstream in genome coordinates is upstream of the gene -> negative distance
    assert pairs.set_index("gene_idx").loc[1, "distance"] < 0



def test_depth_only_is_a_least_squares_line_on_log_depth(split):
    """Each gene's prediction is the least-squares line of its expression on log(open CREs) over the training
    cells (checked against numpy's polyfit), so it reads the depth and nothing of which CREs are open."""
    rna_tr, atac_tr, rna_te, atac_te = split
    pred = baselines.DepthOnly().fit(rna_tr, atac_tr).predict_rna(atac_te)
    depth = lambda a: np.log(np.maximum(np.asarray((a.X > 0).sum(axis=1)).ravel(), 1))  # noqa: E731
    y = data.true_expression(rna_tr)
    for gene in (0, 7, 31):
        slope, intercept = np.polyfit(depth(atac_tr), y[:, gene], 1)
        np.testing.assert_allclose(pred.X[:, gene], intercept + slope * depth(atac_te), rtol=1e-4, atol=1e-5)
    shuffled = atac_te.copy()
    shuffled.X = sp.csr_matrix(np.random.default_rng(0).permuted(atac_te.X.toarray(), axis=1))  # same depth
    np.testing.assert_allclose(baselines.DepthOnly().fit(rna_tr, atac_tr).predict_rna(shuffled).X, pred.X, rtol=1e-6)


def test_rna_pca_projects_training_cells_onto_their_own_embedding():
    """With fewer highly variable genes kept than measured, new cells are normalised over all genes exactly as the
    training cells were: projecting the training cells again gives their training embedding."""
    rna, atac, _ = simulate.paired(n_cells=120, n_genes=80, n_cres=160, n_cell_types=3, seed=2)
    space = baselines.RnaPCA(n_top_genes=20, n_comps=5).fit(rna, seed=0)
    np.testing.assert_allclose(space.transform(rna), space.train_embedding, rtol=1e-5, atol=1e-5)
