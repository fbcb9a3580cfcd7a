"""Shipped data (MANIFEST, loaders, reference readers) and the readers / validation / QC / splits for users' data."""
from __future__ import annotations

import gzip
import shutil
import subprocess
import sys

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

from cisformer import data
from cisformer.data import simulate
from cisformer.utils import paths, provenance

DATA = paths.data_dir()


# ------------------------------------------------------------------------------------------------ MANIFEST
def test_manifest_matches_files():
    manifest = data.read_manifest()
    files = {p.relative_to(DATA).as_posix() for p in DATA.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    files -= {"MANIFEST", "README.md"}
    assert files == set(manifest.index), "every file in data/ needs exactly one MANIFEST line"
    for rel, row in manifest.iterrows():
        assert row["source"].strip() and row["licence"].strip() and row["description"].strip(), rel
        assert int(row["bytes"]) == (DATA / rel).stat().st_size, rel
        assert provenance.sha256(DATA / rel) == row["sha256"], f"checksum of {rel} differs from MANIFEST"


def test_no_noncommercial_files():
    manifest = data.read_manifest()
    text = " ".join(manifest.index) + " " + " ".join(manifest["source"]).lower()
    assert "celloracle" not in text.lower() and "cis-bp" not in text.lower()


def test_data_size_is_small():
    assert sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file()) < 40e6


def test_checksum_mismatch_names_the_file(tmp_path):
    root = tmp_path / "data"
    (root / "datasets").mkdir(parents=True)
    for rel in data.DATASETS["snareseq_tiny"]:
        shutil.copy(DATA / rel, root / rel)
    shutil.copy(DATA / "MANIFEST", root / "MANIFEST")
    rna, atac = data.load("snareseq_tiny", data_dir=root)  # intact copy loads
    with open(root / data.DATASETS["snareseq_tiny"][1], "ab") as fh:
        fh.write(b"corrupted")
    with pytest.raises(data.InputError, match=r"snareseq_tiny_atac\.h5ad.*sha256.*Fix"):
        data.load("snareseq_tiny", data_dir=root)
    data.load("snareseq_tiny", data_dir=root, verify=False)


def test_fetch_script_lists_datasets():
    out = subprocess.run([sys.executable, str(DATA / "fetch_full_datasets.py"), "--list"], capture_output=True, text=True,
                         check=True).stdout
    for key in ("GSE194122", "GSE140203", "GSE126074", "pbmc_granulocyte_sorted_10k"):
        assert key in out


# ------------------------------------------------------------------------------------------------ loaders
EXPECTED = {"snareseq": (10309, "mm10", True), "snareseq_tiny": (100, "mm10", True), "bmmc": (500, "hg38", True),
            "pbmc_scarlink": (9460, "hg38", False)}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_load_round_trip(name):
    n_cells, genome, counts = EXPECTED[name]
    rna, atac = data.load(name)
    assert rna.n_obs == atac.n_obs == n_cells
    assert (rna.obs_names == atac.obs_names).all()
    for adata in (rna, atac):
        assert sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
        assert adata.uns["genome"] == genome and adata.uns["dataset"] == name
        assert isinstance(adata.obs["cell_type"].dtype, pd.CategoricalDtype)
        assert isinstance(adata.obs["batch"].dtype, pd.CategoricalDtype)
    assert rna.uns["counts"] is counts and atac.uns["counts"] is True
    assert np.all(atac.X.data == np.round(atac.X.data))
    if counts:
        assert np.all(rna.X.data == np.round(rna.X.data))
    assert rna.var_names.is_unique and atac.var_names.is_unique
    for col in ("gene_id", "chrom", "start", "end", "strand", "tss"):
        assert col in rna.var
    assert (atac.var["end"] > atac.var["start"]).all()
    names = [f"{c}:{s}-{e}" for c, s, e in zip(atac.var.chrom, atac.var.start, atac.var.end)]
    assert list(atac.var_names) == names


def test_bmmc_official_split():
    rna, _ = data.load("bmmc")
    assert set(rna.obs["split"]) == {"train", "test"}
    assert (rna.obs.loc[rna.obs.split == "train", "batch"] == "s1d1").all()
    assert (rna.obs["split"] == "test").sum() == 279
    assert rna.var["gene_id"].str.startswith("ENSG").all()


def test_reference_readers():
    cres = data.load_cre_vocabulary("human")
    assert len(cres) == 1_033_239 and list(cres.columns) == ["chrom", "start", "end"]
    assert len(data.load_cre_vocabulary("mouse")) == 262_853
    genes = data.load_genes("hg38")
    assert {"gene_name", "gene_id", "chrom", "start", "end", "strand", "tss"} <= set(genes.columns)
    assert genes.loc[genes.gene_name == "CCR7", "chrom"].iloc[0] == "chr17"
    mm10 = data.load_genes("mm10")
    assert mm10.loc[mm10.gene_name == "Gapdh", "chrom"].iloc[0] == "chr6"
    assert len(data.load_tf_list("human")) == 1639 and "SPI1" in data.load_tf_list("human")
    assert "Spi1" in data.load_tf_list("mouse")
    assert "SMARCA4" in data.load_remodelers()
    assert data.reference_path("jaspar_meme").exists() and data.reference_path("chain_hg19_hg38").exists()
    clock = data.load_clock_loci()
    assert len(clock) == 61_503 and (clock.end > clock.start).all()


def test_gwas_and_chip_readers():
    gwas = data.load_gwas_finemapped()
    assert {"chrom", "start", "end", "id", "pp", "trait"} <= set(gwas.columns)
    assert set(gwas["set"]) == {"gchromvar", "scavenge"} and gwas.pp.between(0, 1).all()
    row = gwas[(gwas.id == "rs855791") & (gwas.set == "scavenge")].iloc[0]
    assert (row.chrom, row.end) == ("chr22", 37066896)  # known hg38 position
    chip = data.load_chip_peaks()
    assert len(chip) >= 76 and {"SPI1", "CTCF", "PAX5", "JUN"} <= set(chip)
    assert set(chip["EBF1"]["dataset"].unique()).__len__() == 2
    assert list(chip["CTCF"].columns[:4]) == ["chrom", "start", "end", "summit"]
    assert len(data.load_chip_peaks(by="dataset")) == 79


def test_unknown_names():
    with pytest.raises(KeyError):
        data.load("nope")
    with pytest.raises(KeyError):
        data.reference_path("nope")


# ------------------------------------------------------------------------------------------------ user readers
def _tiny_pair(n_cells=30, n_genes=20, n_peaks=25, seed=0):
    rng = np.random.default_rng(seed)
    cells = [f"AAAC{i:04d}-1" for i in range(n_cells)]
    rna = ad.AnnData(sp.csr_matrix(rng.poisson(2.0, (n_cells, n_genes)).astype(np.float32) + 0),
                     obs=pd.DataFrame(index=cells), var=pd.DataFrame(index=[f"Gene{i}" for i in range(n_genes)]))
    peaks = [f"chr1:{1000 * i}-{1000 * i + 500}" for i in range(n_peaks)]
    atac = ad.AnnData(sp.csr_matrix(rng.poisson(1.0, (n_cells, n_peaks)).astype(np.float32) + 1),
                      obs=pd.DataFrame(index=cells), var=pd.DataFrame(index=peaks))
    rna.X = rna.X + sp.csr_matrix(np.ones((n_cells, n_genes), np.float32))
    return rna, atac


def _write_10x_h5(path, rna, atac):
    rna = rna.copy()
    rna.var["gene_id"] = [f"ENSG{i:011d}" for i in range(rna.n_vars)]
    data.write_10x_h5(path, rna, atac)


def test_read_paired_10x_h5(tmp_path):
    rna, atac = _tiny_pair()
    _write_10x_h5(tmp_path / "filtered_feature_bc_matrix.h5", rna, atac)
    r, a = data.read_paired(tmp_path / "filtered_feature_bc_matrix.h5", genome="hg38")
    assert r.shape == rna.shape and a.shape == atac.shape
    assert np.allclose(r.X.toarray(), rna.X.toarray()) and np.allclose(a.X.toarray(), atac.X.toarray())
    assert {"chrom", "start", "end"} <= set(a.var.columns) and r.var["gene_id"].iloc[0].startswith("ENSG")
    assert r.uns["counts"] and a.uns["genome"] == "hg38" and (r.obs["cell_type"] == "unknown").all()
    data.validate_pair(r, a)
    assert {"chrom", "start", "end", "strand", "tss"} <= set(r.var.columns)


def test_read_paired_annotates_genes(tmp_path):
    rna, atac = _tiny_pair(n_genes=3)
    rna.var_names = ["CCR7", "ZEB2", "NOT_A_GENE"]
    rna.write_h5ad(tmp_path / "rna.h5ad")
    atac.write_h5ad(tmp_path / "atac.h5ad")
    r, _ = data.read_paired(tmp_path / "rna.h5ad", tmp_path / "atac.h5ad", genome="hg38")
    assert r.var.loc["CCR7", "chrom"] == "chr17" and r.var.loc["CCR7", "gene_id"].startswith("ENSG")
    assert r.var.loc["CCR7", "tss"] == r.var.loc["CCR7", "end"] - 1  # minus strand
    assert np.isnan(r.var.loc["NOT_A_GENE", "start"]) and r.var.loc["NOT_A_GENE", "chrom"] == ""


def test_read_paired_h5ad_and_mtx(tmp_path):
    rna, atac = _tiny_pair()
    rna.write_h5ad(tmp_path / "rna.h5ad")
    atac.write_h5ad(tmp_path / "atac.h5ad")
    r, a = data.read_paired(tmp_path / "rna.h5ad", tmp_path / "atac.h5ad")
    assert (r.obs_names == a.obs_names).all() and a.var["start"].dtype == np.int64
    folder = tmp_path / "filtered_feature_bc_matrix"
    folder.mkdir()
    X = sp.hstack([rna.X, atac.X]).T.tocoo()
    with gzip.open(folder / "matrix.mtx.gz", "wb") as fh:
        scipy.io.mmwrite(fh, X.astype(np.int64))
    feats = pd.DataFrame({"id": list(rna.var_names) + list(atac.var_names), "name": list(rna.var_names) + list(atac.var_names),
                          "type": ["Gene Expression"] * rna.n_vars + ["Peaks"] * atac.n_vars})
    feats.to_csv(folder / "features.tsv.gz", sep="\t", header=False, index=False)
    pd.Series(rna.obs_names).to_csv(folder / "barcodes.tsv.gz", sep="\t", header=False, index=False)
    r2, a2 = data.read_paired(folder)
    assert np.allclose(r2.X.toarray(), rna.X.toarray()) and np.allclose(a2.X.toarray(), atac.X.toarray())


def test_read_paired_h5mu(tmp_path):
    mudata = pytest.importorskip("mudata")
    rna, atac = _tiny_pair()
    mudata.MuData({"rna": rna, "atac": atac}).write(tmp_path / "pair.h5mu")
    r, a = data.read_paired(tmp_path / "pair.h5mu")
    assert r.shape == rna.shape and a.shape == atac.shape


def test_read_fragments_shipped_fixture():
    path = data.reference_path("fragments_tiny")
    frags = pd.read_csv(path, sep="\t", header=None, names=["chrom", "start", "end", "barcode", "count"])
    peaks = pd.DataFrame({"chrom": ["chr1", "chr1", "chr1"], "start": [10000, 55000, 56600], "end": [10300, 56500, 60000]})
    out = data.read_fragments(path, peaks)
    assert out.n_obs == frags.barcode.nunique() and out.n_vars == 3
    # brute force: fragment counts once per overlapping peak
    expect = np.zeros(out.shape)
    index = {b: i for i, b in enumerate(out.obs_names)}
    for f in frags.itertuples():
        for j, p in enumerate(peaks.itertuples()):
            if f.chrom == p.chrom and f.start < p.end and f.end > p.start:
                expect[index[f.barcode], j] += 1
    assert np.array_equal(out.X.toarray(), expect) and expect.sum() > 0
    some = list(out.obs_names[:2])[::-1]
    sub = data.read_fragments(path, peaks, barcodes=some)
    assert list(sub.obs_names) == some and np.array_equal(sub.X.toarray(), expect[[1, 0]])


# ------------------------------------------------------------------------------------------------ validation errors
def _check(err, source, field):
    msg = str(err.value)
    assert source in msg and field in msg and "Fix:" in msg, msg


def test_validate_barcodes_differ(tmp_path):
    rna, atac = _tiny_pair()
    atac.obs_names = [n.replace("-1", "-2") for n in atac.obs_names]
    with pytest.raises(data.InputError) as err:
        data.validate_pair(rna, atac, str(tmp_path / "rna.h5ad"), str(tmp_path / "atac.h5ad"))
    _check(err, "rna.h5ad", "barcodes")


def test_validate_non_integer(tmp_path):
    rna, atac = _tiny_pair()
    rna.X = rna.X * 0.5
    rna.write_h5ad(tmp_path / "rna.h5ad")
    atac.write_h5ad(tmp_path / "atac.h5ad")
    r, a = data.read_paired(tmp_path / "rna.h5ad", tmp_path / "atac.h5ad")
    with pytest.raises(data.InputError) as err:
        data.validate_pair(r, a, str(tmp_path / "rna.h5ad"), str(tmp_path / "atac.h5ad"))
    _check(err, "rna.h5ad", "'X'")
    data.validate_pair(r, a, require_counts=False)


def test_validate_unparseable_peak_names(tmp_path):
    rna, atac = _tiny_pair()
    atac.var_names = ["peak_%d" % i for i in range(atac.n_vars)]
    atac.write_h5ad(tmp_path / "atac.h5ad")
    rna.write_h5ad(tmp_path / "rna.h5ad")
    with pytest.raises(data.InputError) as err:
        data.read_paired(tmp_path / "rna.h5ad", tmp_path / "atac.h5ad")
    _check(err, "atac.h5ad", "var_names")
    with pytest.raises(data.InputError) as err:
        data.validate_pair(rna, atac, "rna.h5ad", "atac.h5ad")
    _check(err, "atac.h5ad", "var_names (peaks)")


def test_validate_duplicated_peaks_and_genes(tmp_path):
    rna, atac = _tiny_pair()
    names = list(atac.var_names)
    names[1] = "chr1-0-500"  # same interval as chr1:0-500 under another spelling
    atac.var_names = names
    with pytest.raises(data.InputError) as err:
        data.validate_pair(rna, atac, "rna.h5ad", "atac.h5ad")
    _check(err, "atac.h5ad", "duplicated peak")
    rna, atac = _tiny_pair()
    genes = list(rna.var_names)
    genes[1] = genes[0]
    rna.var_names = genes
    with pytest.raises(data.InputError) as err:
        data.validate_pair(rna, atac, "rna.h5ad", "atac.h5ad")
    _check(err, "rna.h5ad", "duplicated gene")


def test_validate_empty_cells_and_features(tmp_path):
    rna, atac = _tiny_pair()
    X = atac.X.tolil()
    X[3, :] = 0
    atac.X = X.tocsr()
    with pytest.raises(data.InputError) as err:
        data.validate_pair(rna, atac, "rna.h5ad", "atac.h5ad")
    _check(err, "atac.h5ad", "cells")
    rna, atac = _tiny_pair()
    with pytest.raises(data.InputError) as err:
        data.validate_pair(rna[:, :0].copy(), atac, "rna.h5ad", "atac.h5ad")
    _check(err, "rna.h5ad", "empty")


def test_validate_genome_build():
    rna, atac = data.load("bmmc")
    report = data.validate_pair(rna, atac, "bmmc_rna.h5ad", "bmmc_atac.h5ad", cre_vocabulary="hg38")
    assert report["genome_overlap"]["observed"] > 0.9
    # the same peaks moved by 2.5 Mb (as a wrong build would) are rejected
    bad = atac.copy()
    bad.var["start"] += 2_500_000
    bad.var["end"] += 2_500_000
    bad.var_names = [f"{c}:{s}-{e}" for c, s, e in zip(bad.var.chrom, bad.var.start, bad.var.end)]
    with pytest.raises(data.InputError) as err:
        data.validate_pair(rna, bad, "bmmc_rna.h5ad", "shifted_atac.h5ad", cre_vocabulary="hg38")
    _check(err, "shifted_atac.h5ad", "genome build")
    assert "liftover" in str(err.value)


# ------------------------------------------------------------------------------------------------ QC and splits
def test_qc_thresholds():
    rna, atac = _tiny_pair(n_cells=40, n_genes=30, n_peaks=30)
    r, a, table = data.qc(rna, atac, min_cells=5, min_genes=10, max_genes=29, min_peaks=1, max_peaks=1000)
    assert {"n_genes", "n_counts_rna", "n_peaks", "n_counts_atac", "pass_qc"} <= set(table.columns)
    assert (r.obs_names == a.obs_names).all() and r.n_obs == table.pass_qc.sum()
    assert r.obs["n_genes"].between(10, 29).all() and "n_peaks" in rna.obs
    rna_t, atac_t = data.load("snareseq_tiny")
    r, a, table = data.qc(rna_t, atac_t)  # paper thresholds: this sparse fixture keeps nothing
    assert len(table) == 100 and r.n_obs == table.pass_qc.sum()


def test_split_cells_modes():
    rna, _ = data.load("snareseq")
    obs = rna.obs
    for by in ("random", "cell_type", "batch"):
        train, val, test = data.split_cells(obs, by=by, seed=1)
        assert not (set(train) & set(val)) and not (set(train) & set(test)) and not (set(val) & set(test))
        assert len(train) + len(val) + len(test) == len(obs)
    train, val, test = data.split_cells(obs, by="cell_type", seed=0)
    frac = len(test) / len(obs)
    assert 0.15 <= frac <= 0.20, frac
    test_types = set(obs.loc[test, "cell_type"])
    assert not test_types & set(obs.loc[train, "cell_type"])
    _, _, test_b = data.split_cells(obs, by="batch", held_out=["09A"])
    assert set(obs.loc[test_b, "batch"]) == {"09A"}
    assert np.array_equal(data.split_cells(obs, seed=3)[2], data.split_cells(obs, seed=3)[2])
    rna_b, _ = data.load("bmmc")
    tr, va, te = data.split_cells(rna_b.obs, by="predefined")
    assert set(rna_b.obs.loc[te, "batch"]) == {"s1d2"} and len(tr) + len(va) == 221


def test_subsample_is_seeded_and_keeps_the_most_open_cres():
    rna, atac, _ = simulate.paired(n_cells=200, n_genes=60, n_cres=300, n_cell_types=3, seed=0)
    rna.var["chrom"] = ["chr1"] * 50 + [""] * 10
    small_rna, small_atac = data.subsample(rna, atac, n_cells=80, n_cres=100, n_genes=20, seed=3)
    assert small_rna.shape == (80, 20) and small_atac.shape == (80, 100)
    assert list(small_rna.obs_names) == list(small_atac.obs_names)
    freq = np.asarray((atac[small_atac.obs_names].X > 0).mean(axis=0)).ravel()
    kept = atac.var_names.get_indexer(small_atac.var_names)
    assert freq[kept].min() >= np.delete(freq, kept).max()           # the most frequently open CREs
    assert list(kept) == sorted(kept)                                 # in their original order
    again, _ = data.subsample(rna, atac, n_cells=80, seed=3)          # same seed, same cells
    assert list(again.obs_names) == list(small_rna.obs_names) and again.n_vars == rna.n_vars
    with_coords, _ = data.subsample(rna, atac, n_cells=80, seed=3, genes_with_coords=True)
    assert with_coords.n_vars == 50
    assert rna.shape == (200, 60) and atac.shape == (200, 300)       # inputs untouched


# ------------------------------------------------------------------------------------------------ your own data (issue 12)
def _log_normalised(rna):
    """A log1p(counts per 10,000) copy of a shipped RNA matrix, as many published objects store it."""
    out = rna.copy()
    X = sp.csr_matrix(out.X, dtype=np.float64)
    X = sp.diags(1e4 / np.asarray(X.sum(axis=1)).ravel()) @ X
    X.data = np.log1p(X.data)
    out.X = sp.csr_matrix(X, dtype=np.float32)
    return out


def test_find_counts_in_x_layers_and_raw():
    rna, _ = data.load("bmmc")
    same, note = data.find_counts(rna, "bmmc_rna.h5ad")
    assert same is rna and "found in X" in note
    logged = _log_normalised(rna)
    logged.layers["counts"] = rna.X.copy()
    found, note = data.find_counts(logged, "rna.h5ad")
    assert "layers['counts']" in note and (found.X != rna.X).nnz == 0 and found.uns["counts_source"] == "layers['counts']"
    logged = _log_normalised(rna)
    logged.raw = rna
    found, note = data.find_counts(logged, "rna.h5ad")
    assert ".raw" in note and (found.X != rna.X).nnz == 0


def test_read_rna_cellxgene_layout(tmp_path):
    """RNA-only cells as CELLxGENE ships them: log-normalised X, counts in .raw, Ensembl IDs with symbols in a column."""
    rna, _ = data.load("bmmc")
    rna = rna[:, :50].copy()
    symbols = rna.var_names.to_numpy().copy()
    symbols[1] = symbols[0]                                          # a duplicated symbol
    counts = ad.AnnData(rna.X.copy(), obs=rna.obs.assign(age="3m"),
                        var=pd.DataFrame({"feature_name": symbols}, index=[f"ENSG{i:011d}" for i in range(50)]))
    logged = _log_normalised(counts)
    logged.raw = ad.AnnData(counts.X, obs=counts.obs, var=pd.DataFrame(index=counts.var_names))  # symbols in var only
    logged.write_h5ad(tmp_path / "tms.h5ad")
    counts.write_h5ad(tmp_path / "counts.h5ad")                                                   # counts in X
    assert data.read_rna(tmp_path / "counts.h5ad", gene_column="feature_name").var_names.is_unique
    read = data.read_rna(tmp_path / "tms.h5ad", gene_column="feature_name")
    assert (read.X != rna.X).nnz == 0 and read.X.dtype == np.float32 and ".raw" in read.uns["counts_note"]
    assert read.var_names[0] == symbols[0] and read.var_names[1] != symbols[0] and read.var_names.is_unique
    assert list(read.var_names[2:]) == list(symbols[2:]) and (read.obs["age"] == "3m").all()
    assert data.read_rna(tmp_path / "tms.h5ad").var_names[0] == "ENSG00000000000"
    with pytest.raises(data.InputError, match="feature_name"):
        data.read_rna(tmp_path / "tms.h5ad", gene_column="symbol")


def test_log_normalised_rna_is_refused_or_recovered_exactly(tmp_path):
    rna, atac = data.load("bmmc")
    logged = _log_normalised(rna)
    with pytest.raises(data.InputError) as err:
        data.find_counts(logged, "rna.h5ad")
    msg = str(err.value)
    for part in ("rna.h5ad", "'X'", "max ", "not integers", "negative", "NaN", "--recover-counts", "recover_counts=True",
                 "layers['counts']"):
        assert part in msg, (part, msg)
    found, note = data.find_counts(logged, "rna.h5ad", recover=True)
    assert "recovered exactly from log1p" in note
    assert found.X.dtype == np.float32 and (found.X != rna.X).nnz == 0  # every count back, none floored
    # through the file readers: read_paired recovers on request, validate_pair explains otherwise
    logged.write_h5ad(tmp_path / "rna.h5ad")
    atac.write_h5ad(tmp_path / "atac.h5ad")
    r, a = data.read_paired(tmp_path / "rna.h5ad", tmp_path / "atac.h5ad", recover_counts=True)
    assert (r.X != rna.X).nnz == 0 and "recovered" in r.uns["counts_note"]
    r, a = data.read_paired(tmp_path / "rna.h5ad", tmp_path / "atac.h5ad")
    with pytest.raises(data.InputError, match="--recover-counts"):
        data.validate_pair(r, a, str(tmp_path / "rna.h5ad"), str(tmp_path / "atac.h5ad"))
    logged.layers["counts"] = rna.X.copy()
    with pytest.raises(data.InputError, match=r"layers\['counts'\].*find_counts"):
        data.validate_pair(logged, atac, "rna.h5ad", "atac.h5ad")


def test_values_that_cannot_be_inverted_are_refused():
    rna, _ = data.load("bmmc")
    scaled = _log_normalised(rna)
    scaled.X = scaled.X * 1.7  # not log1p of size-normalised counts any more
    with pytest.raises(data.InputError, match="cannot invert") as err:
        data.find_counts(scaled, "rna.h5ad", recover=True)
    assert "pass the raw counts" in str(err.value)
    centred = _log_normalised(rna)
    centred.X = sp.csr_matrix(centred.X.toarray() - 0.5)
    with pytest.raises(data.InputError, match=r"\d+ negative") as err:
        data.find_counts(centred, "rna.h5ad", recover=True)
    assert data.recover_counts(centred.X)[0] is None


def test_atac_values_nan_inf_negative():
    rna, atac = data.load("snareseq_tiny")
    assert "> 0" in data.check_atac_values(atac, "atac.h5ad")
    bad = atac.copy()
    bad.X = bad.X.copy()
    bad.X.data[:3] = [np.nan, -1.0, np.inf]
    with pytest.raises(data.InputError) as err:
        data.validate_pair(rna, bad, "rna.h5ad", "my_atac.h5ad", allow_empty_cells=True)
    _check(err, "my_atac.h5ad", "X")
    assert "1 NaN, 1 inf and 1 negative" in str(err.value)
    normalised = atac.copy()
    normalised.X = normalised.X * 0.37  # normalised ATAC is fine: binarised as > 0
    data.validate_pair(rna, normalised, allow_empty_cells=True)


def test_peak_names_in_every_common_form(tmp_path):
    rna, atac = _tiny_pair(n_peaks=5)
    forms = ["chr1:100-200", "chr1-300-400", "chr1_500_600", "1-700-800", "1:900-1000"]
    atac.var_names = forms
    rna.write_h5ad(tmp_path / "rna.h5ad")
    atac.write_h5ad(tmp_path / "atac.h5ad")
    _, a = data.read_paired(tmp_path / "rna.h5ad", tmp_path / "atac.h5ad")
    assert list(a.var_names) == ["chr1:100-200", "chr1:300-400", "chr1:500-600", "chr1:700-800", "chr1:900-1000"]
    bare = atac.copy()
    bare.var_names = [f"p{i}" for i in range(5)]
    bare.var = pd.DataFrame({"chrom": ["1", "2", "X", "MT", "1"], "start": [10, 20, 30, 40, 50],
                             "end": [15, 25, 35, 45, 55]}, index=bare.var_names)
    bare.write_h5ad(tmp_path / "atac_cols.h5ad")
    _, a = data.read_paired(tmp_path / "rna.h5ad", tmp_path / "atac_cols.h5ad")
    assert list(a.var_names) == ["chr1:10-15", "chr2:20-25", "chrX:30-35", "chrM:40-45", "chr1:50-55"]
    assert "5 peak chromosome names" in a.uns["chrom_note"]
    bare.var = pd.DataFrame(index=["peak1", "chr1:5-1", "chr1:1-5", "chr1:6-9", "chr1:9-12"])
    bare.write_h5ad(tmp_path / "atac_bad.h5ad")
    with pytest.raises(data.InputError) as err:
        data.read_paired(tmp_path / "rna.h5ad", tmp_path / "atac_bad.h5ad")
    _check(err, "atac_bad.h5ad", "var_names")
    assert "'peak1'" in str(err.value) and "'1-100-200'" in str(err.value) and "chrom/start/end" in str(err.value)


def test_qc_report_explains_each_rule():
    rna, atac = data.load("snareseq_tiny")
    kwargs = dict(min_cells=2, min_genes=5, max_genes=60, min_peaks=2, max_peaks=400)
    report = data.qc_report(rna, atac, **kwargs, check=False)
    assert list(report["rule"]) == ["min_cells (genes)", "min_cells (peaks)", "min_genes", "max_genes", "min_peaks",
                                    "max_peaks"]
    r, _, table = data.qc(rna, atac, **kwargs)
    assert report.attrs["n_cells_left"] == r.n_obs == report["left"].iloc[-1] > 0
    assert list(table.columns) == ["n_genes", "n_counts_rna", "n_peaks", "n_counts_atac", "pass_qc"]  # unchanged
    cells = report[report.removes == "cells"]
    assert cells["removed"].sum() == rna.n_obs - r.n_obs and (cells["removed_alone"] >= cells["removed"]).all()
    assert report.set_index("rule").loc["min_cells (genes)", "left"] == r.n_vars
    assert "--min-cres / min_peaks" in set(report["option"])
    # the paper's thresholds remove every cell of this sparse fixture: an error carrying the table
    with pytest.raises(data.InputError) as err:
        data.qc_report(rna, atac, source="tiny")
    assert "no cell of 100 passes QC" in str(err.value) and "removed_alone" in str(err.value)
    assert "min_genes" in str(err.value) and "--min-genes" in str(err.value)
    with pytest.warns(UserWarning, match=r"keeps \d+ of 100 cells; min_peaks .*--min-cres"):
        data.qc_report(rna, atac, min_cells=1, min_genes=1, min_peaks=5, max_peaks=1000)


def test_hg19_peaks_are_caught_and_lifted():
    """Fixture: the shipped hg38 BMMC peaks lifted back to hg19 with the shipped hg38 -> hg19 chain."""
    pytest.importorskip("pyliftover")
    rna, atac = data.load("bmmc")
    hg19, note = data.lift_peaks(atac, "hg38")
    assert hg19.uns["genome"] == "hg19" and hg19.n_vars > 0.95 * atac.n_vars and "failed to lift" in note
    with pytest.raises(data.InputError) as err:
        data.check_genome(hg19, "human", "own_atac.h5ad")
    _check(err, "own_atac.h5ad", "genome build")
    assert "most likely on hg19" in str(err.value) and "--liftover hg19" in str(err.value)
    back, note = data.lift_peaks(hg19, "hg19")
    assert f"lifted {back.n_vars} of {hg19.n_vars} peaks hg19 -> hg38" in note
    report = data.check_genome(back, "human")
    assert report["matches"] and report["observed"] > 0.9 and "overlap_after_hg19_to_hg38" in report


def test_species_mismatch():
    _, human = data.load("bmmc")
    with pytest.raises(data.InputError) as err:
        data.check_genome(human, "mouse", "human_atac.h5ad")
    _check(err, "human_atac.h5ad", "genome build")
    assert "species mismatch" in str(err.value) and "peaks are human" in str(err.value)
    _, mouse = data.load("snareseq")
    with pytest.raises(data.InputError, match="peaks are mouse.*species mismatch"):
        data.check_genome(mouse, "human", "mouse_atac.h5ad")
    with pytest.raises(data.InputError, match="not on the mm39 build.*mm10ToMm39"):  # SNARE-seq is mm10
        data.check_genome(mouse, "mouse", "snareseq_atac.h5ad")
    bare = human.var.assign(chrom=human.var.chrom.str.replace("chr", ""))
    with pytest.raises(data.InputError, match="chromosome names differ"):
        data.check_genome(bare, "human", "bare.h5ad")


def test_pair_cells_and_duplicates():
    rna, atac = _tiny_pair()
    r, a, note = data.pair_cells(rna, atac[5:][::-1])
    assert list(r.obs_names) == list(a.obs_names) == list(rna.obs_names[5:]) and "5 only in RNA" in note
    other = atac.copy()
    other.obs_names = [n.replace("-1", "") for n in other.obs_names]
    with pytest.raises(data.InputError) as err:
        data.pair_cells(rna, other, "rna.h5ad", "atac.h5ad")
    _check(err, "rna.h5ad / atac.h5ad", "obs_names")
    assert "share no cell" in str(err.value) and "'-1'" in str(err.value)
    dup = rna.copy()
    dup.obs_names = [rna.obs_names[0]] * 2 + list(rna.obs_names[2:])
    with pytest.raises(data.InputError, match="1 duplicated RNA name"):
        data.pair_cells(dup, atac, "rna.h5ad")
    dup = atac.copy()
    dup.var_names = [atac.var_names[0]] * 2 + list(atac.var_names[2:])
    with pytest.raises(data.InputError, match=r"atac.h5ad: field 'var_names \(features\)'"):
        data.pair_cells(rna, dup, "rna.h5ad", "atac.h5ad")


def test_empty_and_truncated_files(tmp_path):
    rna, atac = _tiny_pair()
    rna.write_h5ad(tmp_path / "rna.h5ad")
    (tmp_path / "empty.h5ad").write_bytes(b"")
    with pytest.raises(data.InputError, match=r"empty.h5ad: field 'file': is empty \(0 bytes\)"):
        data.read_paired(tmp_path / "rna.h5ad", tmp_path / "empty.h5ad")
    whole = (tmp_path / "rna.h5ad").read_bytes()
    (tmp_path / "cut.h5ad").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(data.InputError, match="cut.h5ad: field 'file'.*(truncated|cannot be read)"):
        data.read_paired(tmp_path / "cut.h5ad", tmp_path / "rna.h5ad")
    with pytest.raises(data.InputError, match="does not exist"):
        data.read_paired(tmp_path / "rna.h5ad", tmp_path / "none.h5ad")


# ------------------------------------------------------------------------------------------------ users' data folders
def test_write_dataset_data_folder(tmp_path):
    """write_dataset -> a folder with datasets/<name>_*.h5ad and MANIFEST lines; load() reads it by name, checks
    its checksums, and takes what the folder lacks (shipped sets, references) from the repo's data/."""
    rna, atac = data.read_paired(*_write_pair(tmp_path))
    folder = tmp_path / "mine"
    written = data.write_dataset(rna, atac, "own", folder, source="a paper's supplement", licence="CC BY 4.0")
    assert written == {"rna": folder / "datasets/own_rna.h5ad", "atac": folder / "datasets/own_atac.h5ad"}
    r, a = data.load("own", data_dir=folder)
    assert np.array_equal(r.X.toarray(), rna.X.toarray()) and list(a.var_names) == list(atac.var_names)
    manifest = pd.read_csv(folder / "MANIFEST", sep="\t")
    assert list(manifest.columns) == data.MANIFEST_COLUMNS and list(manifest["file"]) == sorted(written_rel := [
        "datasets/own_atac.h5ad", "datasets/own_rna.h5ad"])
    assert (manifest["licence"] == "CC BY 4.0").all() and (manifest["source"] == "a paper's supplement").all()
    assert [provenance.sha256(folder / rel) for rel in written_rel] == list(manifest["sha256"])
    assert data.reference_path("chain_hg19_hg38", data_dir=folder) == DATA / data.REFERENCES["chain_hg19_hg38"]
    assert data.load("snareseq_tiny", data_dir=folder)[0].n_obs == 100
    assert data.list_datasets(folder) == sorted([*data.DATASETS, "own"])
    # a changed file is caught by its checksum; a file without a MANIFEST line says how to add one
    with open(folder / "datasets/own_atac.h5ad", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(data.InputError, match=r"own_atac\.h5ad.*sha256.*Fix"):
        data.load("own", data_dir=folder)
    data.write_dataset(rna, atac, "own", folder)  # rewriting replaces the lines
    assert len(data.read_manifest(folder)) == 2 and data.load("own", data_dir=folder)[0].n_obs == rna.n_obs
    shutil.copy(folder / "datasets/own_rna.h5ad", folder / "datasets/other_rna.h5ad")
    shutil.copy(folder / "datasets/own_atac.h5ad", folder / "datasets/other_atac.h5ad")
    with pytest.raises(data.InputError, match="no MANIFEST line.*write_dataset"):
        data.load("other", data_dir=folder)
    with pytest.raises(KeyError, match="unknown dataset 'nope'.*own"):
        data.load("nope", data_dir=folder)
    with pytest.raises(ValueError, match="data set name"):
        data.write_dataset(rna, atac, "../escape", folder)
    with pytest.raises(ValueError, match="shipped data set"):
        data.write_dataset(rna, atac, "bmmc", DATA)
    with pytest.raises(data.InputError, match="same cells"):
        data.write_dataset(rna, atac[::-1].copy(), "own", folder)


def _write_pair(tmp_path):
    rna, atac = _tiny_pair()
    rna.write_h5ad(tmp_path / "rna.h5ad")
    atac.write_h5ad(tmp_path / "atac.h5ad")
    return tmp_path / "rna.h5ad", tmp_path / "atac.h5ad"
