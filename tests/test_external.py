"""scButterfly (cisformer.peers.external): preprocessing on training cells only, and a real run beats the floor."""
import numpy as np
import pytest
import scipy.sparse as sp

from cisformer import data, metrics
from cisformer.data import simulate
from cisformer.peers import baselines, external
from cisformer.utils.matrix import dense


@pytest.fixture(scope="module")
def small():
    rna, atac, _ = simulate.paired(n_cells=160, n_genes=80, n_cres=400, n_cell_types=3, seed=2)
    return rna, atac, rna.obs_names[:120], rna.obs_names[120:]


def _with_test_cells_replaced(rna, atac, test):
    """Copies of rna/atac whose test cells hold other counts (drawn at random)."""
    rng = np.random.default_rng(0)
    rna2, atac2 = rna.copy(), atac.copy()
    is_test = np.isin(rna.obs_names, test)
    x_rna, x_atac = dense(rna2.X).astype(np.float32), dense(atac2.X).astype(np.float32)
    x_rna[is_test] = rng.poisson(5.0, (is_test.sum(), rna.n_vars))
    x_atac[is_test] = rng.random((is_test.sum(), atac.n_vars)) < 0.5
    rna2.X, atac2.X = sp.csr_matrix(x_rna), sp.csr_matrix(x_atac)
    return rna2, atac2


def test_butterfly_preprocessing_reads_training_cells_only(small):
    rna, atac, train, test = small
    prep = external.ButterflyPreprocessing.fit(rna, atac, train, n_top_genes=30)
    rna2, atac2 = _with_test_cells_replaced(rna, atac, test)
    prep2 = external.ButterflyPreprocessing.fit(rna2, atac2, train, n_top_genes=30)
    for field in ("target_sum", "genes", "cres", "idf", "scale", "mean_open"):
        np.testing.assert_array_equal(getattr(prep, field), getattr(prep2, field), err_msg=field)
    np.testing.assert_array_equal(dense(prep.transform_atac(atac[train])), dense(prep2.transform_atac(atac2[train])))
    np.testing.assert_array_equal(dense(prep.transform_rna(rna[train])), dense(prep2.transform_rna(rna2[train])))
    # the replaced test cells would have changed the statistics had they been read
    everyone = external.ButterflyPreprocessing.fit(rna2, atac2, rna2.obs_names, n_top_genes=30)
    assert everyone.mean_open != prep.mean_open and everyone.target_sum != prep.target_sum


def test_butterfly_tfidf_targets_and_their_inverse(small):
    rna, atac, train, _ = small
    prep = external.ButterflyPreprocessing.fit(rna, atac, train)
    b = dense(atac[train].X) > 0
    df = b.sum(axis=0)
    kept = np.flatnonzero(df > 0)
    b = b[:, kept].astype(float)
    n_open = b.sum(axis=1, keepdims=True)
    tfidf = np.divide(b, n_open, out=np.zeros_like(b), where=n_open > 0) * np.log(1 + len(train) / df[kept])
    targets = dense(prep.transform_atac(atac[train]))
    np.testing.assert_array_equal(prep.cres, kept)
    np.testing.assert_allclose(targets, tfidf / tfidf.max(), rtol=1e-5, atol=1e-7)
    assert targets.max() == pytest.approx(1.0)
    # inverse: b / n_i scaled by the training mean of n_i, i.e. each cell's open CREs share one score
    scores = prep.to_accessibility(targets)
    expected = np.divide(b * b.sum(axis=1).mean(), n_open, out=np.zeros_like(b), where=n_open > 0)
    np.testing.assert_allclose(scores, np.clip(expected, 0, 1), rtol=1e-4)
    # the base-rate bias is the logit of each CRE's mean target
    bias = external.base_rate_bias(sp.csr_matrix(targets))
    np.testing.assert_allclose(1 / (1 + np.exp(-bias)), np.clip(targets.mean(axis=0), 1e-6, 1 - 1e-6), rtol=1e-4)


@pytest.mark.skipif(not external.scbutterfly_python().exists(), reason="scButterfly environment not installed")
def test_scbutterfly_beats_floor():
    rna, atac, _ = simulate.paired(n_cells=600, n_genes=200, n_cres=2000, seed=0)
    train, val, test = data.split_cells(rna.obs, by="random", seed=0)
    train = np.concatenate([train, val])
    x = atac.X.tolil()
    x[np.flatnonzero(np.isin(atac.obs_names, train)), 5] = 0  # a CRE never open in training cells
    atac.X = x.tocsr()
    budget = 15.0
    pred, timing = external.run_scbutterfly_rna2atac(rna, atac, train, test, seed=0, threads=1, time_budget_s=budget)
    assert list(pred.obs_names) == list(test) and list(pred.var_names) == list(atac.var_names)
    assert np.isfinite(pred.X).all() and pred.X.min() >= 0 and pred.X.max() <= 1 and not pred.X[:, 5].any()
    phases = ("rna_pretrain", "atac_pretrain", "translator")
    assert all(timing[f"stop_{p}"] in ("time_budget", "early_stopping", "max_epochs") for p in phases)
    assert all(timing[f"epochs_{p}"] >= 1 for p in phases) and timing["train_loop_s"] < budget + 30
    open_fraction = float((atac[train].X > 0).mean())
    floor = baselines.Floor().fit(rna[train], atac[train]).predict_atac(rna[test])
    auroc = {name: metrics.per_cell_classification(p, atac[test], rule="topk", open_fraction=open_fraction)
             .query("metric == 'AUROC'")["value"].mean() for name, p in (("butterfly", pred), ("floor", floor))}
    assert auroc["butterfly"] > auroc["floor"] + 0.1, auroc
