import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cisformer import sampler
from cisformer.data import log_normalized
from cisformer.data import simulate
from cisformer.model import CisformerConfig


@pytest.fixture(scope="module")
def data():
    rna, atac, _ = simulate.paired(n_cells=80, n_genes=60, n_cres=500, seed=0)
    return rna.X.tocsr(), atac.X.tocsr()


def _cfg(direction, arch="paper", **kw):
    base = dict(n_genes=60, n_cres=500, dim=30, n_digits=3, gene_len=20, cre_len=40)
    base.update(kw)
    return CisformerConfig(direction=direction, arch=arch, **base)


def test_closed_indices_avoid_open():
    rng = np.random.default_rng(0)
    open_ = np.sort(rng.choice(1000, 300, replace=False))
    closed = sampler._closed_indices(rng, open_, 1000, 500)
    assert len(closed) == len(np.unique(closed)) == 500
    assert not np.isin(closed, open_).any() and closed.min() >= 0 and closed.max() < 1000


def test_rna2atac_items(data):
    rna_X, atac_X = data
    cfg = _cfg("rna2atac")
    ds = sampler.PairedCells(rna_X, atac_X, np.arange(40), cfg, multiple=3, seed=0)
    assert len(ds) == 120
    for i in range(0, 120, 7):
        it = ds[i]
        cell = it["cell"]
        assert cell == i // 3
        expressed = rna_X[cell].indices
        assert len(it["gene_idx"]) == min(cfg.gene_len, len(expressed))
        assert np.isin(it["gene_idx"], expressed).all() and len(np.unique(it["gene_idx"])) == len(it["gene_idx"])
        counts = rna_X[cell].toarray()[0, it["gene_idx"]]
        assert np.array_equal(it["gene_value"], np.clip(np.floor(counts), 1, 64))
        # queries: cre_len CREs, half open (when the cell has enough), the rest closed, targets = truth
        assert len(it["cre_idx"]) == cfg.cre_len == len(np.unique(it["cre_idx"]))
        truth = atac_X[cell].toarray()[0, it["cre_idx"]] > 0
        assert np.array_equal(truth, it["target"] == 1)
        n_open = min(cfg.cre_len // 2, atac_X[cell].nnz)
        assert it["target"].sum() == n_open
    # repeats of a cell draw differently; the same item is reproducible
    assert not np.array_equal(ds[0]["cre_idx"], ds[1]["cre_idx"])
    assert np.array_equal(ds[5]["cre_idx"], ds[5]["cre_idx"])
    ds.set_epoch(1)
    assert not np.array_equal(ds[5]["cre_idx"], sampler.PairedCells(rna_X, atac_X, np.arange(40), cfg, 3)[5]["cre_idx"])


def test_atac2rna_items_and_bins(data):
    rna_X, atac_X = data
    cfg = _cfg("atac2rna", gene_len=25, cre_len=30)
    log_X = log_normalized(rna_X)
    edges = sampler.expression_bin_edges(log_X, cfg.n_bins)
    assert len(edges) == 8 and edges[0] == 0 and np.isclose(edges[-1], log_X.data.max())
    ds = sampler.PairedCells(rna_X, atac_X, np.arange(10, 30), cfg, seed=0, bin_edges=edges)
    it = ds[3]
    cell = it["cell"]
    assert np.isin(it["cre_idx"], atac_X[cell].indices).all()
    assert len(it["cre_idx"]) == min(cfg.cre_len, atac_X[cell].nnz)
    assert len(it["gene_idx"]) == cfg.gene_len
    counts = rna_X[cell].toarray()[0, it["gene_idx"]]
    assert np.array_equal(it["target"] == 0, counts == 0)  # zeros are queried too, and labelled 0
    assert it["target"].max() <= 7 and it["target"].min() >= 0
    with pytest.raises(ValueError, match="bin_edges"):
        sampler.PairedCells(rna_X, atac_X, np.arange(3), cfg)


def test_binning():
    edges = np.linspace(0, np.log1p(100.0), 8)
    bins = sampler.bin_expression(np.log1p(np.array([0, 1, 5, 30, 100, 1000.0])), edges)
    assert bins[0] == 0 and bins[1] >= 1 and np.all(np.diff(bins) >= 0) and bins[-1] == 7 and bins[-2] == 7
    centres = sampler.bin_centres(edges)
    assert centres[0] == 0 and len(centres) == 8 and np.all(np.diff(centres) > 0)


def test_collate_and_loader_only_given_cells(data):
    rna_X, atac_X = data
    cfg = _cfg("rna2atac")
    train = np.arange(0, 80, 2)
    ds = sampler.PairedCells(rna_X, atac_X, train, cfg, multiple=2, seed=0)
    seen = []
    for batch in sampler.make_loader(ds, batch_size=16, shuffle=True, seed=0):
        B, Lg = batch["gene_idx"].shape
        assert batch["gene_value"].shape == batch["gene_pad"].shape == (B, Lg)
        assert batch["cre_idx"].shape == batch["target"].shape == batch["cre_pad"].shape
        assert batch["gene_idx"].dtype == torch.long and batch["target"].dtype == torch.float32
        assert torch.all(batch["gene_value"][~batch["gene_pad"]] >= 1)
        seen.extend(batch["cell"].tolist())
    assert sorted(seen) == sorted(np.repeat(train, 2).tolist())  # every training cell twice, no other cell
    # the shuffle order is seeded
    a = [b["cell"].tolist() for b in sampler.make_loader(ds, 16, shuffle=True, seed=0, epoch=3)]
    b = [b["cell"].tolist() for b in sampler.make_loader(ds, 16, shuffle=True, seed=0, epoch=3)]
    assert a == b


def test_cell_keys_reads_only_keys(data):
    rna_X, atac_X = data
    ds = sampler.CellKeys(atac_X, _cfg("atac2rna", cre_len=10))
    it = ds[4]
    assert set(it) == {"cell", "cre_idx"} and len(it["cre_idx"]) == min(10, atac_X[4].nnz)


def test_shape_errors(data):
    rna_X, atac_X = data
    with pytest.raises(ValueError, match="vocabulary"):
        sampler.PairedCells(rna_X, atac_X, [0], _cfg("rna2atac", n_genes=61))
    with pytest.raises(ValueError, match="cells"):
        sampler.PairedCells(rna_X[:5], atac_X, [0], _cfg("rna2atac"))


def test_base_rate_logits_by_hand():
    atac = sp.csr_matrix(np.array([[1, 0, 3], [1, 0, 0], [2, 0, 0]], dtype=np.float32))  # 3 cells x 3 CREs
    cfg = CisformerConfig(direction="rna2atac", n_genes=2, n_cres=3, dim=4, n_digits=1, cre_len=2, arch="paper")
    logit = sampler.base_rate_logits(None, atac, cfg)
    freq = (np.array([3, 0, 1]) + 1) / (3 + 2)  # one pseudocount per outcome
    # queries: 1 open + 1 closed CRE per cell; cells have 2, 1, 1 open CREs (and 1, 2, 2 closed)
    p_open_drawn, p_closed_drawn = np.mean([1 / 2, 1, 1]), np.mean([1 / 1, 1 / 2, 1 / 2])
    np.testing.assert_allclose(logit, np.log(freq / (1 - freq)) + np.log(p_open_drawn / p_closed_drawn), rtol=1e-6)
    # arch="cisformer" trains on natural proportions (all CREs, case-control offsets on draws): no correction
    natural = sampler.base_rate_logits(None, atac, CisformerConfig(direction="rna2atac", n_genes=2, n_cres=3))
    np.testing.assert_allclose(natural, np.log(freq / (1 - freq)), rtol=1e-6)
    rna = sp.csr_matrix(np.array([[0, 1], [0, 7], [0, 0], [0, 1]], dtype=np.float32))  # 4 cells x 2 genes
    edges = np.linspace(0, np.log1p(7), 3)  # bins: 0 = zero, 1 = low, 2 = high
    log_freq = sampler.base_rate_logits(rna, None, _cfg("atac2rna", n_genes=2, n_bins=3), edges)
    counts = np.array([[4, 0, 0], [1, 2, 1]])  # gene 0 always zero; gene 1: one zero, two low, one high
    np.testing.assert_allclose(np.exp(log_freq), (counts + 1) / (4 + 3), rtol=1e-6)


def test_cisformer_items_carry_dense_targets_depth_and_draw_offset(data):
    rna_X, atac_X = data
    cfg = _cfg("rna2atac", "cisformer", cre_len=40)
    ds = sampler.PairedCells(rna_X, atac_X, np.arange(40), cfg, seed=0)
    depths = np.log(np.maximum(np.diff(atac_X[:40].indptr), 1))
    assert np.isclose(ds.depth_centre, depths.mean())
    it = ds[7]
    cell = it["cell"]
    assert np.array_equal(it["open_all"], (atac_X[cell].toarray()[0] > 0).astype(np.float32))
    counts = rna_X[cell].toarray()[0]
    np.testing.assert_allclose(it["expr"], np.log1p(counts / counts.sum() * 1e4), rtol=1e-5)
    assert np.isclose(it["depth"], depths[cell] - depths.mean())
    n_open, n_drawn_open = atac_X[cell].nnz, int(it["target"].sum())
    n_drawn_closed = len(it["target"]) - n_drawn_open
    expected = np.log((n_drawn_open / n_open) / (n_drawn_closed / (500 - n_open)))
    assert np.isclose(it["draw_offset"], expected, rtol=1e-5)
    # a validation set uses the training cells' centre
    val = sampler.PairedCells(rna_X, atac_X, np.arange(40, 60), cfg, depth_centre=ds.depth_centre)
    assert val.depth_centre == ds.depth_centre
    batch = sampler.collate([ds[0], ds[1]])
    assert batch["expr"].shape == (2, 60) and batch["open_all"].shape == (2, 500) and batch["depth"].shape == (2,)

    cfg = _cfg("atac2rna", "cisformer", gene_len=25)
    edges = sampler.expression_bin_edges(log_normalized(rna_X), cfg.n_bins)
    it = sampler.PairedCells(rna_X, atac_X, np.arange(10), cfg, bin_edges=edges)[3]
    assert np.array_equal(it["bins_all"][it["gene_idx"]], it["target"])
    log_row = log_normalized(rna_X[it["cell"]]).toarray()[0]
    assert np.array_equal(it["bins_all"], sampler.bin_expression(log_row, edges))


def test_log_normalized_and_bins_on_that_scale():
    X = sp.csr_matrix(np.array([[1, 3, 0], [0, 0, 0], [5, 5, 10]], dtype=np.float32))
    log_X = log_normalized(X).toarray()
    np.testing.assert_allclose(log_X[0], np.log1p([2500, 7500, 0]), rtol=1e-6)
    assert log_X[1].sum() == 0 and np.isclose(np.expm1(log_X[2]).sum(), 1e4)
    edges = sampler.expression_bin_edges(log_normalized(X), 8)
    assert np.isclose(edges[-1], np.log1p(7500))
