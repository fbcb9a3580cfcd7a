import numpy as np
import pytest
import scipy.sparse as sp

from cisformer import simulate


def test_paired_follows_data_contract():
    rna, atac, truth = simulate.paired(n_cells=120, n_genes=40, n_cres=300, n_cell_types=3, seed=1)
    assert rna.shape == (120, 40) and atac.shape == (120, 300)
    assert list(rna.obs_names) == list(atac.obs_names)
    for a in (rna, atac):
        assert sp.isspmatrix_csr(a.X) and a.X.dtype == np.float32
        assert np.all(a.X.data == np.round(a.X.data))
        assert {"cell_type", "batch"} <= set(a.obs.columns)
        assert a.uns["genome"] == "sim"
    assert {"chrom", "start", "end"} <= set(atac.var.columns)
    assert {"chrom", "start", "end", "tss", "strand", "gene_id"} <= set(rna.var.columns)
    assert atac.var_names.is_unique and rna.var_names.is_unique
    assert set(truth.columns) == {"gene", "cre", "weight"}
    assert set(truth.gene) <= set(rna.var_names) and set(truth.cre) <= set(atac.var_names)


def test_links_are_local_and_drive_expression():
    rna, atac, truth = simulate.paired(n_cells=400, n_genes=60, n_cres=600, seed=0)
    tss = rna.var.loc[truth.gene, "tss"].to_numpy()
    mid = ((atac.var.loc[truth.cre, "start"] + atac.var.loc[truth.cre, "end"]) // 2).to_numpy()
    same_chrom = rna.var.loc[truth.gene, "chrom"].to_numpy() == atac.var.loc[truth.cre, "chrom"].to_numpy()
    assert same_chrom.all() and np.all(np.abs(tss - mid) <= simulate.WINDOW)
    # linked CRE accessibility correlates with its gene's expression more than random pairs do
    X = np.log1p(rna.X.toarray())
    A = (atac.X.toarray() > 0).astype(float)
    g = rna.var_names.get_indexer(truth.gene)
    c = atac.var_names.get_indexer(truth.cre)

    def corr(gi, ci):
        x, y = X[:, gi] - X[:, gi].mean(0), A[:, ci] - A[:, ci].mean(0)
        return (x * y).sum(0) / np.sqrt((x ** 2).sum(0) * (y ** 2).sum(0) + 1e-12)

    rng = np.random.default_rng(0)
    assert corr(g, c).mean() > corr(g, rng.permutation(c)).mean() + 0.1


def test_seeded_and_validates():
    a = simulate.paired(n_cells=30, n_genes=10, n_cres=50, seed=3)
    b = simulate.paired(n_cells=30, n_genes=10, n_cres=50, seed=3)
    assert (a[0].X != b[0].X).nnz == 0 and a[2].equals(b[2])
    with pytest.raises(ValueError, match="n_cres"):
        simulate.paired(n_genes=10, n_cres=5)
