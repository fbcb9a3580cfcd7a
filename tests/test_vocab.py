"""Interval overlap, peak -> CRE mapping, gene mapping, genome-build score, liftover hook."""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cisformer import data
from cisformer.data import simulate, vocab


def _df(rows):
    return pd.DataFrame(rows, columns=["chrom", "start", "end"])


def _brute(q, r):
    return sorted((i, j) for i, a in enumerate(q.itertuples()) for j, b in enumerate(r.itertuples())
                  if a.chrom == b.chrom and a.start < b.end and a.end > b.start)


def test_overlap_edge_cases():
    ref = _df([("chr1", 100, 200), ("chr1", 150, 400), ("chr1", 0, 1000), ("chr2", 100, 200), ("chr1", 500, 600)])
    query = _df([
        ("chr1", 200, 300),   # touches ref0 at 200 (half-open: no overlap), overlaps ref1 and ref2
        ("chr1", 0, 100),     # touches ref0 at 100: only ref2
        ("chr1", 199, 200),   # 1 bp inside ref0, ref1, ref2
        ("chr2", 50, 100),    # touches chr2 ref: none
        ("chr3", 0, 10**9),   # chromosome absent from the reference
        ("chr1", 400, 500),   # between ref1 and ref4, inside ref2
    ])
    qi, ri = vocab.overlap_index(query, ref)
    assert sorted(zip(qi.tolist(), ri.tolist())) == _brute(query, ref)
    assert set(zip(qi.tolist(), ri.tolist())) == {(0, 1), (0, 2), (1, 2), (2, 0), (2, 1), (2, 2), (5, 2)}


def test_overlap_matches_brute_force_random():
    rng = np.random.default_rng(0)

    def rand(n, width):
        start = rng.integers(0, 20_000, n)
        return _df(list(zip(rng.choice(["chr1", "chr2", "chrX"], n), start, start + rng.integers(1, width, n))))

    q, r = rand(300, 400), rand(200, 3000)
    qi, ri = vocab.overlap_index(q, r)
    assert list(zip(qi.tolist(), ri.tolist())) == _brute(q, r)
    qi2, ri2 = vocab.overlap_index(q, r, chunk=7)  # chunking does not change the answer
    assert np.array_equal(qi, qi2) and np.array_equal(ri, ri2)


def test_parse_peak_names():
    df = vocab.parse_peak_names(["chr1:10-20", "chr2-30-40", "chrX_5_9", "chr1_KI270706v1_random:1-5"])
    assert df["chrom"].tolist() == ["chr1", "chr2", "chrX", "chr1_KI270706v1_random"]
    assert df["start"].tolist() == [10, 30, 5, 1] and df["end"].tolist() == [20, 40, 9, 5]
    with pytest.raises(ValueError, match="do not parse"):
        vocab.parse_peak_names(["chr1:10-20", "peak7", "chr1:30-20"])


def test_map_peaks_to_cres_sums_binarised_counts():
    cres = _df([("chr1", 0, 100), ("chr1", 100, 200), ("chr1", 1000, 1100), ("chr2", 0, 50)])
    peaks = _df([("chr1", 50, 150), ("chr1", 90, 95), ("chr1", 500, 600), ("chr2", 10, 20)])
    X = sp.csr_matrix(np.array([[3, 0, 1, 0],      # peak0 -> cre0, cre1
                                [2, 5, 0, 0],      # peaks 0 and 1 both hit cre0 -> 2
                                [0, 0, 0, 7]], np.float32))
    atac = ad.AnnData(X, var=pd.DataFrame(peaks.values, columns=peaks.columns, index=vocab.peak_names(peaks)))
    atac.var["start"] = atac.var["start"].astype(int)
    atac.var["end"] = atac.var["end"].astype(int)
    out = vocab.map_peaks_to_cres(atac, cres, chunk_cells=2)
    expect = np.array([[1, 1, 0, 0], [2, 1, 0, 0], [0, 0, 0, 1]], np.float32)
    assert sp.isspmatrix_csr(out.X) and np.array_equal(out.X.toarray(), expect)
    assert list(out.var_names) == ["chr1:0-100", "chr1:100-200", "chr1:1000-1100", "chr2:0-50"]
    assert out.uns["n_peaks_mapped"] == 3
    small = vocab.map_peaks_to_cres(atac, cres, dtype=np.uint8)
    assert small.X.dtype == np.uint8 and np.array_equal(small.X.toarray(), expect)


def test_map_peaks_from_a_backed_file_to_a_file(tmp_path):
    """A backed input is read chunk by chunk and ``out=`` writes the result chunk by chunk: the same matrix,
    names and uns as the in-memory map."""
    sim = simulate.paired(n_cells=30, n_genes=20, n_cres=80, n_cell_types=2, seed=0)[1]
    sim.write_h5ad(tmp_path / "peaks.h5ad")
    cres = pd.DataFrame({"chrom": sim.var["chrom"].to_numpy(), "start": sim.var["start"].to_numpy() + 100,
                         "end": sim.var["end"].to_numpy() + 300})
    memory = vocab.map_peaks_to_cres(sim, cres, chunk_cells=7)
    backed = ad.read_h5ad(tmp_path / "peaks.h5ad", backed="r")
    from_disk = vocab.map_peaks_to_cres(backed, cres, chunk_cells=7)
    streamed = vocab.map_peaks_to_cres(backed, cres, chunk_cells=7, out=tmp_path / "mapped.h5ad")
    assert streamed.isbacked and not (tmp_path / "mapped.h5ad.partial").exists()
    written = ad.read_h5ad(tmp_path / "mapped.h5ad")
    for other in (from_disk, written):
        assert np.array_equal(other.X.toarray(), memory.X.toarray()) and memory.X.nnz > 0
        assert list(other.obs_names) == list(memory.obs_names) and list(other.var_names) == list(memory.var_names)
        assert other.uns["n_peaks_mapped"] == memory.uns["n_peaks_mapped"]
    streamed.file.close()


def test_map_real_peaks_onto_human_vocabulary():
    rna, atac = data.load("bmmc")
    cres = data.load_cre_vocabulary("human")
    out = vocab.map_peaks_to_cres(atac, cres)
    assert out.shape == (500, len(cres)) and (out.obs_names == atac.obs_names).all()
    assert out.uns["n_peaks_mapped"] >= 0.9 * atac.n_vars
    # every open CRE is explained by an open overlapping peak
    qi, ri = vocab.overlap_index(atac.var, cres)
    cell = 0
    open_peaks = set(atac.X[cell].indices)
    expect = {r for q, r in zip(qi, ri) if q in open_peaks}
    assert set(out.X[cell].indices) == expect


def test_genome_overlap_score():
    _, atac = data.load("bmmc")
    cres = data.load_cre_vocabulary("human")
    good = vocab.genome_overlap_score(atac.var, cres)
    assert good["matches"] and good["observed"] > good["null"]
    renamed = atac.var.assign(chrom=atac.var.chrom.str.replace("chr", ""))
    assert not vocab.genome_overlap_score(renamed, cres)["matches"]


def test_map_genes_by_id_then_symbol():
    genes = pd.DataFrame({"gene_name": ["A", "B", "C", "D"], "gene_id": ["ENSG1", "ENSG2", "", "ENSG4"]})
    var = pd.DataFrame({"gene_id": ["ENSG2.5", "", "", "ENSG9"]}, index=["renamed", "C", "a", "D"])
    rna = ad.AnnData(sp.csr_matrix((2, 4), dtype=np.float32), var=var)
    assert vocab.map_genes(rna, genes).tolist() == [1, 2, 0, 3]
    real, _ = data.load("bmmc")
    hits = vocab.map_genes(real, data.load_genes("hg38"))
    assert (hits >= 0).mean() > 0.95


def test_liftover_hook():
    chain = data.reference_path("chain_hg19_hg38")
    df = _df([("chr22", 37462935, 37462936)])  # rs855791, hg19 (0-based)
    try:
        import pyliftover  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install pyliftover"):
            vocab.liftover(df, chain)
        return
    out = vocab.liftover(df, chain)
    assert (out.chrom[0], out.end[0]) == ("chr22", 37066896)


def test_peak_name_forms_and_chromosome_names():
    forms = ["chr1:100-200", "chr1-100-200", "chr1_100_200", "1-100-200", "1:100-200"]
    df = vocab.parse_peak_names(forms)
    assert df["chrom"].tolist() == ["chr1"] * 3 + ["1"] * 2 and set(df["start"]) == {100} and set(df["end"]) == {200}
    with pytest.raises(ValueError, match=r"1 of 2 peak name\(s\).*'GATA1'.*accepted forms: 'chr1:100-200'.*'1-100-200'"):
        vocab.parse_peak_names(["chr1:1-2", "GATA1"])
    names, n = vocab.normalize_chroms(["1", "chr2", "X", "MT", "GL000194.1", "22"])
    assert list(names) == ["chr1", "chr2", "chrX", "chrM", "GL000194.1", "chr22"] and n == 4
    names, n = vocab.normalize_chroms(["chr1", "chrM", "chrUn_x"], "bare")
    assert list(names) == ["1", "MT", "chrUn_x"] and n == 2
    assert vocab.chrom_style(["1", "2", "chrX"]) == "bare" and vocab.chrom_style(["chr1", "GL000194.1"]) == "chr"


def test_overlap_share():
    ref = _df([("chr1", 100, 200)])
    assert vocab.overlap_share(_df([("chr1", 150, 160), ("chr1", 300, 400), ("chr2", 150, 160)]), ref) == 1 / 3
    assert vocab.overlap_share(_df([]), ref) == 0.0
