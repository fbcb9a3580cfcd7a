"""Baselines: fit/predict shapes and that each beats a random prediction on simulated data."""
import numpy as np
import pytest
from anndata import AnnData

from cisformer import baselines, metrics, simulate


@pytest.fixture(scope="module")
def split():
    rna, atac, truth = simulate.paired(n_cells=360, n_genes=60, n_cres=480, n_cell_types=3, seed=1)
    train, test = rna.obs_names[:280], rna.obs_names[280:]
    return rna[train].copy(), atac[train].copy(), rna[test].copy(), atac[test].copy()


def _mean(table, metric):
    return float(table.loc[table["metric"] == metric, "value"].mean())


def _random_atac(atac_test):
    rng = np.random.default_rng(0)
    return AnnData(rng.random(atac_test.shape).astype(np.float32), obs=atac_test.obs.copy(), var=atac_test.var.copy())


@pytest.mark.parametrize("method, margin", [(baselines.Floor(), 0.0), (baselines.KNNTransfer(n_neighbors=10), 0.1),
                                            (baselines.CellTypeMean(), 0.1),
                                            (baselines.BabelStyle(epochs=30, batch_size=32), 0.1)])
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


def test_learned_rna2atac_beat_floor_on_pseudobulk(split):
    rna_tr, atac_tr, rna_te, atac_te = split
    floor = metrics.pseudobulk_pearson(baselines.Floor().fit(rna_tr, atac_tr).predict_atac(rna_te), atac_te)
    knn = metrics.pseudobulk_pearson(baselines.KNNTransfer(10).fit(rna_tr, atac_tr).predict_atac(rna_te), atac_te)
    assert knn["value"].mean() > floor["value"].mean()


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
                                    baselines.ScarlinkStyle(epochs=40), baselines.KNNTransfer(n_neighbors=10)])
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


def test_gene_cre_pairs_window():
    import pandas as pd

    genes = pd.DataFrame({"chrom": ["chr1", "chr1"], "start": [100_000, 500_000], "end": [110_000, 520_000],
                          "strand": ["+", "-"], "tss": [100_000, 520_000]})
    cres = pd.DataFrame({"chrom": ["chr1", "chr1", "chr2"], "start": [99_000, 700_000, 100_000],
                         "end": [99_500, 700_500, 100_500]})
    pairs = baselines.gene_cre_pairs(genes, cres, 250_000, 250_000)
    assert set(map(tuple, pairs[["gene_idx", "cre_idx"]].to_numpy())) == {(0, 0), (1, 1)}
    # minus strand: a CRE downstream in genome coordinates is upstream of the gene -> negative distance
    assert pairs.set_index("gene_idx").loc[1, "distance"] < 0

