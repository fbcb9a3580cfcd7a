"""Streamed full-vocabulary prediction (predict.rna_to_atac(out=...)): same values as in memory, readable backed,
resumable, refuses another model's partial file."""
import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from cisformer import predict, train
from cisformer.data import simulate
from cisformer.data.h5stream import partial_path


@pytest.fixture(scope="module")
def fitted():
    rna, atac, _ = simulate.paired(n_cells=60, n_genes=40, n_cres=300, n_cell_types=2, seed=0)
    cells = np.arange(rna.n_obs)
    # gene_len < expressed genes: the seeded key draw per cell must be the same in blocks as in one piece
    model, _ = train.fit(rna, atac, "rna2atac", cells[:40], cells[40:50], profile="quick", seed=0, progress=False,
                         epochs=1, gene_len=16)
    model.atac = atac  # for the test that trains another model on the same cells
    return model, rna, predict.rna_to_atac(model, rna, chunk=64)


def dense(x):
    return x.toarray() if sp.issparse(x) else np.asarray(x)


def test_streamed_equals_in_memory(fitted, tmp_path):
    model, rna, mem = fitted
    got = predict.rna_to_atac(model, rna, chunk=64, out=tmp_path / "p32.h5ad", dtype="float32", block_cells=7)
    assert got.isbacked and got.shape == mem.shape and got.X.dtype == np.float32
    assert np.array_equal(got.X[:], mem.X)  # float32: bit for bit
    assert list(got.obs_names) == list(mem.obs_names) and list(got.var_names) == list(mem.var_names)
    assert got.uns["threshold"] == 0.5 and got.uns["store"] == "prob+binary"
    got.file.close()
    whole = ad.read_h5ad(tmp_path / "p32.h5ad")  # not backed as well
    assert sp.issparse(whole.layers["binary"]) and np.array_equal(whole.layers["binary"].toarray(),
                                                                   mem.layers["binary"])
    assert not list(tmp_path.glob("*.partial"))

    half = predict.rna_to_atac(model, rna, chunk=64, out=tmp_path / "p16.h5ad", block_cells=25)  # float16 default
    assert half.X.dtype == np.float16
    np.testing.assert_array_equal(half.X[:], mem.X.astype(np.float16))  # exactly the float16 rounding
    assert np.abs(half.X[:].astype(np.float32) - mem.X).max() <= 2 ** -11
    half.file.close()


def test_binary_and_topk_stores(fitted, tmp_path):
    model, rna, mem = fitted
    binary = predict.rna_to_atac(model, rna, chunk=64, out=tmp_path / "b.h5ad", store="binary", threshold=0.3,
                                 block_cells=9)
    assert np.array_equal(dense(binary.X[:]), (mem.X >= 0.3).astype(np.uint8))
    assert "binary" not in binary.layers
    binary.file.close()
    mem_top = predict.rna_to_atac(model, rna, chunk=64, threshold="topk")
    top_layer = predict.rna_to_atac(model, rna, chunk=64, threshold="topk", out=tmp_path / "tl.h5ad", block_cells=8)
    assert np.array_equal(dense(top_layer.layers["binary"][:]), mem_top.layers["binary"])
    top_layer.file.close()
    top = predict.rna_to_atac(model, rna, chunk=64, out=tmp_path / "t.h5ad", store="topk", dtype="float32",
                              block_cells=11)
    k = round(model.open_fraction * model.config.n_cres)
    assert top.uns["top_k"] == k
    X = ad.read_h5ad(tmp_path / "t.h5ad").X
    assert sp.issparse(X) and np.all(np.diff(X.indptr) == k)
    assert np.array_equal(X.toarray(), mem.X * mem_top.layers["binary"])
    top.file.close()
    few = predict.rna_to_atac(model, rna[:5], chunk=64, out=tmp_path / "t3.h5ad", store="topk", top_k=3)
    assert np.all(np.diff(ad.read_h5ad(tmp_path / "t3.h5ad").X.indptr) == 3)
    few.file.close()


def test_resume_after_interruption(fitted, tmp_path):
    model, rna, _ = fitted
    clean = predict.rna_to_atac(model, rna, chunk=64, out=tmp_path / "clean.h5ad", block_cells=8)
    clean.file.close()

    def stop_after_3_blocks(done, total):
        if done >= 24:
            raise KeyboardInterrupt

    target = tmp_path / "cut.h5ad"
    with pytest.raises(KeyboardInterrupt):
        predict.rna_to_atac(model, rna, chunk=64, out=target, block_cells=8, on_block=stop_after_3_blocks)
    assert not target.exists() and partial_path(target).exists()
    # the done count is the truth: pretend the 3rd block's data were written but not recorded
    import h5py

    with h5py.File(partial_path(target), "r+") as f:
        assert int(f.attrs["cisformer_rows_done"]) == 24
        f.attrs["cisformer_rows_done"] = 16

    with pytest.raises(ValueError, match="another model.*refusing to resume"):
        other = train.fit(rna, model.atac, "rna2atac", np.arange(40), np.arange(40, 50), profile="quick",
                          seed=1, progress=False, epochs=1, gene_len=16)[0]
        predict.rna_to_atac(other, rna, chunk=64, out=target, block_cells=8)
    with pytest.raises(ValueError, match="other input cells"):
        predict.rna_to_atac(model, rna[:30], chunk=64, out=target, block_cells=8)
    seen = []
    resumed = predict.rna_to_atac(model, rna, chunk=64, out=target, block_cells=8,
                                  on_block=lambda done, total: seen.append(done))
    assert seen[0] == 24  # started again at cell 16
    a, b = ad.read_h5ad(target), ad.read_h5ad(tmp_path / "clean.h5ad")
    assert np.array_equal(a.X, b.X) and np.array_equal(a.layers["binary"].toarray(), b.layers["binary"].toarray())
    assert a.layers["binary"].nnz == b.layers["binary"].nnz
    resumed.file.close()
    assert not partial_path(target).exists()
    # resume=False discards a partial file
    with pytest.raises(KeyboardInterrupt):
        predict.rna_to_atac(model, rna, chunk=64, out=target, block_cells=8, on_block=stop_after_3_blocks)
    fresh = predict.rna_to_atac(model, rna, chunk=64, out=target, block_cells=8, resume=False,
                                on_block=lambda done, total: seen.append(-done))
    assert seen[-8] == -8
    fresh.file.close()


def test_block_logits_equal_whole(fitted):
    """predict_logits on rows of X gives those rows of the whole (same key draws per cell)."""
    model, rna, _ = fitted
    X = predict.align_features(rna, model.gene_names, "genes")
    whole = predict.predict_logits(model, X, chunk=64)
    rows = np.array([5, 2, 40, 41])
    assert np.array_equal(predict.predict_logits(model, X, chunk=64, cells=rows), whole[rows])
