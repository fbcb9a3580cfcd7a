"""Training data larger than memory: PairedCells reading rows from disk (a backed .h5ad's CSR matrix, or memory-mapped
.npy files) gives the batches of the matrices in memory - same cells, same token draws, same order - with 0 or 2
DataLoader workers."""
import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cisformer.data import simulate
from cisformer.model import CisformerConfig
from cisformer.sampler import DiskCSR, PairedCells, expression_bin_edges, make_loader
from cisformer.data import log_normalized


@pytest.fixture(scope="module")
def on_disk(tmp_path_factory):
    folder = tmp_path_factory.mktemp("disk")
    rna, atac, _ = simulate.paired(n_cells=70, n_genes=60, n_cres=400, n_cell_types=3, seed=1)
    rna.X, atac.X = sp.csr_matrix(rna.X), sp.csr_matrix(atac.X)
    rna.write_h5ad(folder / "rna.h5ad")
    atac.write_h5ad(folder / "atac.h5ad")
    backed = (DiskCSR.from_anndata(ad.read_h5ad(folder / "rna.h5ad", backed="r")),
              DiskCSR.from_anndata(ad.read_h5ad(folder / "atac.h5ad", backed="r")))
    mapped = (DiskCSR.write_memmap(rna.X, folder / "rna_mm", rows_per_block=16),
              DiskCSR.write_memmap(atac.X, folder / "atac_mm", rows_per_block=16))
    return rna.X, atac.X, {"backed": backed, "memmap": mapped}


def _config(direction, arch):
    return CisformerConfig(direction=direction, arch=arch, n_genes=60, n_cres=400, dim=30, n_digits=3, gene_len=12,
                           cre_len=24)


def _batches(dataset, num_workers):
    loader = make_loader(dataset, 8, shuffle=True, seed=3, epoch=1, num_workers=num_workers)
    return list(loader)


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            assert x[key].dtype == y[key].dtype and torch.equal(x[key], y[key]), key


@pytest.mark.parametrize("direction,arch", [("rna2atac", "cisformer"), ("atac2rna", "cisformer"),
                                            ("rna2atac", "paper")])
def test_disk_rows_give_the_in_memory_batches(on_disk, direction, arch):
    rna_X, atac_X, sources = on_disk
    cfg = _config(direction, arch)
    cells = np.arange(5, 65)
    edges = expression_bin_edges(log_normalized(rna_X)[cells], cfg.n_bins) if direction == "atac2rna" else None
    memory = PairedCells(rna_X, atac_X, cells, cfg, multiple=2, seed=7, bin_edges=edges)
    memory.set_epoch(1)
    expected = _batches(memory, 0)
    for name, (rna_disk, atac_disk) in sources.items():
        disk = PairedCells(rna_disk, atac_disk, cells, cfg, multiple=2, seed=7, bin_edges=edges)
        assert np.array_equal(disk.depth, memory.depth) and disk.depth_centre == memory.depth_centre
        disk.set_epoch(1)
        _same(_batches(disk, 0), expected)
        _same(_batches(disk, 2), expected)  # two worker processes, each opening the file itself
    _same(_batches(memory, 2), expected)


def test_rows_are_canonical(tmp_path):
    # unsorted indices, a duplicate and a stored zero: read as the in-memory path canonicalises them
    X = sp.csr_matrix((np.array([2.0, 0.0, 1.0, 3.0, 4.0]), np.array([5, 1, 2, 2, 0]), np.array([0, 4, 5])),
                      shape=(2, 8))
    disk = DiskCSR.write_memmap(X, tmp_path / "m")
    idx, values = disk.row(0)
    assert idx.tolist() == [2, 5] and values.tolist() == [4.0, 2.0] and values.dtype == np.float32
    assert disk.positive_per_row().tolist() == [2, 1]  # of the canonical rows, as PairedCells.n_open in memory
    assert disk.positive_per_row(rows_per_block=1).tolist() == [2, 1]
    with pytest.raises(ValueError, match="not a CSR matrix"):
        dense = ad.AnnData(np.ones((3, 4), dtype=np.float32))
        dense.write_h5ad(tmp_path / "dense.h5ad")
        DiskCSR.from_h5ad(tmp_path / "dense.h5ad")


def test_blocks_take_and_whole_matrix_statistics_from_disk(tmp_path):
    """DiskCSR.blocks / take give the rows of the file (any order for take); the whole-matrix statistics of
    training (column_mean, expression_bin_edges, base_rate_logits) read blocks as they read one matrix: one block
    is the matrix itself (scipy's mean exactly), several blocks the same numbers up to float rounding."""
    from cisformer import sampler
    rng = np.random.default_rng(0)
    X = sp.random(1000, 50, density=0.1, format="csr", dtype=np.float32, random_state=1)
    X.data = np.ceil(X.data * 5)
    disk = DiskCSR.write_memmap(X, tmp_path / "m")
    rows = np.sort(rng.choice(1000, 300, replace=False))
    assert [b.shape[0] for b in disk.blocks(rows, rows_per_block=128)] == [np.sum((rows >= lo) & (rows < lo + 128))
                                                                         for lo in range(0, 1000, 128)
                                                                         if ((rows >= lo) & (rows < lo + 128)).any()]
    np.testing.assert_array_equal(sp.vstack(list(disk.blocks(rows, 128))).toarray(), X[rows].toarray())
    pick = rng.choice(1000, 40)  # unsorted, with repeats
    np.testing.assert_array_equal(disk.take(pick).toarray(), X[pick].toarray())
    with pytest.raises(ValueError, match="sorted"):
        next(disk.blocks(rows[::-1]))

    log = log_normalized(X[rows])
    blocks = lambda: (log_normalized(b) for b in sampler.row_blocks(disk, rows, 64))
    np.testing.assert_array_equal(sampler.column_mean(log, len(rows)), np.asarray(log.mean(axis=0)).ravel())
    np.testing.assert_allclose(sampler.column_mean(blocks(), len(rows)), np.asarray(log.mean(axis=0)).ravel(),
                               rtol=1e-5)
    edges = expression_bin_edges(log, 8)
    np.testing.assert_array_equal(expression_bin_edges(blocks(), 8), edges)
    for direction in ("rna2atac", "atac2rna"):
        cfg = CisformerConfig(direction=direction, n_genes=50, n_cres=50, n_bins=8)
        whole = sampler.base_rate_logits(log, X[rows], cfg, edges)
        streamed = sampler.base_rate_logits(blocks(), sampler.row_blocks(disk, rows, 64), cfg, edges)
        np.testing.assert_array_equal(streamed, whole)  # counts: exact in any order
