import shlex
import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cisformer import cli, data
from cisformer.utils.paths import write_atomic


def run(*argv):
    return cli.main([str(a) for a in argv])


def test_round_trip_on_tiny_fixture(tmp_path, capsys):
    """preprocess -> train (both directions) -> predict -> link on the shipped 100-cell SNARE-seq fixture."""
    prep = tmp_path / "tiny"
    run("preprocess", "--dataset", "snareseq_tiny", "--out", prep, "--min-cells", 1, "--min-genes", 1,
        "--min-cres", 1)
    rna = ad.read_h5ad(prep / "rna.h5ad")
    assert rna.n_obs > 50 and (prep / "atac.h5ad").exists()

    small = ["--set", "dim=30", "--set", "n_layers=1", "--epochs", 1]
    run("train", "--data", prep, "--direction", "rna2atac", "--profile", "quick", "--out", tmp_path / "r2a", *small)
    split = pd.read_csv(tmp_path / "r2a" / "split.csv")
    assert set(split["split"]) == {"train", "val", "test"} and len(split) == rna.n_obs
    run("predict", "--model", tmp_path / "r2a" / "model.pt", "--data", prep, "--cells", "test",
        "--out", tmp_path / "r2a" / "pred.h5ad", "--threshold", "topk")
    pred = ad.read_h5ad(tmp_path / "r2a" / "pred.h5ad")
    assert list(pred.obs_names) == split.loc[split["split"] == "test", "cell"].tolist()
    assert pred.uns["threshold"] == "topk" and ((pred.X >= 0) & (pred.X <= 1)).all()

    run("train", "--data", prep, "--direction", "atac2rna", "--profile", "quick", "--out", tmp_path / "a2r", *small)
    run("predict", "--model", tmp_path / "a2r" / "model.pt", "--atac", prep / "atac.h5ad",
        "--out", tmp_path / "a2r" / "pred.h5ad")
    pred = ad.read_h5ad(tmp_path / "a2r" / "pred.h5ad")
    assert pred.shape == rna.shape and not pred.uns["masked"] and "bin" in pred.layers

    # training again with the same command loads the finished model
    capsys.readouterr()
    run("train", "--data", prep, "--direction", "rna2atac", "--profile", "quick", "--out", tmp_path / "r2a", *small)
    assert "epoch 1:" not in capsys.readouterr().out

    # the tiny set's 100 genes and 500 chr1 peaks share no chromosome: an empty link table says so and what to do
    capsys.readouterr()
    run("link", "--model", tmp_path / "r2a" / "model.pt", "--data", prep, "--out", tmp_path / "links.csv")
    out = capsys.readouterr()
    assert "link: 0 CRE-gene links" in out.out and "no links because no CRE lies within 250,000 bp" in out.err
    assert "share no chromosome" in out.err and "Fix:" in out.err


def test_link_on_simulated_pairs(tmp_path):
    """link needs genes and CREs within the window of each other: use the simulator (planted local links)."""
    pytest.importorskip("cisformer.tl.attention")
    from cisformer.data import simulate

    rna, atac, _ = simulate.paired(n_cells=60, n_genes=20, n_cres=100, n_cell_types=2, seed=0)
    rna.write_h5ad(tmp_path / "rna.h5ad")
    atac.write_h5ad(tmp_path / "atac.h5ad")
    run("train", "--data", tmp_path, "--direction", "rna2atac", "--profile", "quick", "--out", tmp_path / "r2a",
        "--set", "dim=30", "--set", "n_layers=1", "--epochs", 1)
    run("link", "--model", tmp_path / "r2a" / "model.pt", "--data", tmp_path, "--out", tmp_path / "links.csv",
        "--cells-per-type", 10, "--scorer", "attention")
    links = pd.read_csv(tmp_path / "links.csv")
    assert {"cell_type", "gene", "cre", "score"} <= set(links.columns) and len(links) > 0
    assert set(links["gene"]) <= set(rna.var_names) and set(links["cre"]) <= set(atac.var_names)
    assert (links["scorer"] == "attention (paper's normalisation)").all()
    with pytest.raises(SystemExit, match="--scorer deletion reads a trained model: pass --model"):
        run("link", "--data", tmp_path, "--out", tmp_path / "l.csv", "--scorer", "deletion")


def test_clear_errors(tmp_path, capsys):
    with pytest.raises(SystemExit, match="exactly one input"):
        run("train", "--direction", "rna2atac", "--out", tmp_path / "x")
    with pytest.raises(SystemExit, match="does not exist"):
        run("train", "--rna", tmp_path / "none.h5ad", "--atac", tmp_path / "none.h5ad", "--direction", "rna2atac",
            "--out", tmp_path / "x")
    with pytest.raises(SystemExit, match="model file"):
        run("predict", "--model", tmp_path / "none.pt", "--data", tmp_path, "--out", tmp_path / "p.h5ad")
    with pytest.raises(SystemExit):  # argparse: invalid choice
        run("train", "--data", tmp_path, "--direction", "dna2rna", "--out", tmp_path / "x")
    assert "invalid choice" in capsys.readouterr().err


def test_train_from_backed_files(tmp_path, capsys):
    """train --backed reads the .h5ad files from disk (train.fit on backed AnnData) and writes the model of the
    in-memory command; a data set by name, or RNA without raw counts in X, is refused with the fix."""
    import torch

    from cisformer.data import simulate
    from cisformer.model import Cisformer

    rna, atac, _ = simulate.paired(n_cells=60, n_genes=20, n_cres=100, n_cell_types=2, seed=0)
    rna.write_h5ad(tmp_path / "rna.h5ad")
    atac.write_h5ad(tmp_path / "atac.h5ad")
    small = ["--direction", "rna2atac", "--profile", "quick", "--set", "dim=30", "--set", "n_layers=1", "--epochs", 1]
    run("train", "--data", tmp_path, "--out", tmp_path / "memory", *small)
    run("train", "--rna", tmp_path / "rna.h5ad", "--atac", tmp_path / "atac.h5ad", "--backed", "--out",
        tmp_path / "disk", *small)
    assert (pd.read_csv(tmp_path / "memory" / "split.csv")).equals(pd.read_csv(tmp_path / "disk" / "split.csv"))
    memory, disk = Cisformer.load(tmp_path / "memory" / "model.pt"), Cisformer.load(tmp_path / "disk" / "model.pt")
    for name, value in memory.state_dict().items():
        torch.testing.assert_close(disk.state_dict()[name], value, rtol=1e-4, atol=1e-5)
    with pytest.raises(SystemExit, match="--backed reads .h5ad files from disk, not --dataset"):
        run("train", "--dataset", "snareseq_tiny", "--backed", "--out", tmp_path / "x", *small)
    rna.X = np.log1p(rna.X)
    (tmp_path / "log").mkdir()
    rna.write_h5ad(tmp_path / "log" / "rna.h5ad")
    atac.write_h5ad(tmp_path / "log" / "atac.h5ad")
    with pytest.raises(SystemExit, match=r"rna \(.*rna.h5ad\): field 'X' holds non-integer values.*Fix"):
        run("train", "--data", tmp_path / "log", "--backed", "--out", tmp_path / "y", *small)


def test_train_split_by_cell_type(tmp_path):
    from cisformer.data import simulate

    rna, atac, _ = simulate.paired(n_cells=60, n_genes=20, n_cres=100, n_cell_types=3, seed=0)
    rna.write_h5ad(tmp_path / "rna.h5ad")
    atac.write_h5ad(tmp_path / "atac.h5ad")
    run("train", "--data", tmp_path, "--direction", "rna2atac", "--profile", "quick", "--out", tmp_path / "m",
        "--split", "cell_type", "--held-out", "type_1", "--set", "dim=30", "--set", "n_layers=1", "--epochs", 1)
    split = pd.read_csv(tmp_path / "m" / "split.csv").set_index("cell")["split"]
    is_type1 = (rna.obs["cell_type"] == "type_1").to_numpy()
    assert (split[rna.obs_names[is_type1]] == "test").all() and (split[rna.obs_names[~is_type1]] != "test").all()


def test_module_help_teaches():
    out = subprocess.run([sys.executable, "-m", "cisformer", "--help"], capture_output=True, text=True, check=True)
    assert "examples" in out.stdout and "cisformer train" in out.stdout
    for command in ("preprocess", "train", "predict", "link"):
        assert command in out.stdout


# ------------------------------------------------------------------------------------------------ issue 12: own data
def test_help_example_produces_links(tmp_path, capsys):
    """The `cisformer --help` example, run as written (work/ -> a temporary folder), ends with CRE-gene links."""
    lines = [line.strip() for line in cli.EXAMPLES.splitlines() if line.strip().startswith("cisformer ")]
    wanted = [line for line in lines[:6] if " preprocess " in line or "--direction rna2atac" in line or " link " in line]
    assert [line.split()[1] for line in wanted] == ["preprocess", "train", "link"]
    for line in wanted:
        run(*[a.replace("work/", f"{tmp_path}/") for a in shlex.split(line)[1:]])
    out = capsys.readouterr().out
    links = pd.read_csv(tmp_path / "links.csv")
    assert len(links) > 0 and f"link: {len(links)} CRE-gene links scored by within-cell-type regression" in out


def _own_files(tmp_path):
    """The issue's user data, built from shipped BMMC: log-normalised RNA, peaks on hg19 named like '1-9963-10665'."""
    rna, atac = data.load("bmmc")
    logged = rna.copy()
    X = sp.diags(1e4 / np.asarray(rna.X.sum(axis=1)).ravel()) @ sp.csr_matrix(rna.X, dtype=np.float64)
    X.data = np.log1p(X.data)
    logged.X = sp.csr_matrix(X, dtype=np.float32)
    logged.var = logged.var[[]]
    logged.write_h5ad(tmp_path / "rna.h5ad")
    hg19, _ = data.lift_peaks(atac, "hg38")
    hg19.var_names = [f"{c[3:]}-{s}-{e}" for c, s, e in zip(hg19.var.chrom, hg19.var.start, hg19.var.end)]
    hg19.var = hg19.var[[]]
    hg19.write_h5ad(tmp_path / "atac.h5ad")
    return rna, atac


def test_preprocess_own_data_refuses_then_recovers_and_lifts(tmp_path, capsys):
    pytest.importorskip("pyliftover")
    rna, _ = _own_files(tmp_path)
    base = ["preprocess", "--rna", tmp_path / "rna.h5ad", "--atac", tmp_path / "atac.h5ad", "--cre-vocabulary",
            "human", "--out", tmp_path / "own", "--min-cells", 1, "--min-genes", 1, "--min-cres", 1]
    with pytest.raises(SystemExit, match=r"error: .*rna.h5ad: field 'X': RNA values are not raw counts \(max .*"
                                         r"not integers.*NaN.*--recover-counts"):
        run(*base)
    with pytest.raises(SystemExit, match=r"error: .*atac.h5ad: field 'var \(peak coordinates / genome build\)'.*"
                                         r"most likely on hg19.*--liftover hg19"):
        run(*base, "--recover-counts")
    assert not (tmp_path / "own").exists()  # nothing written by the refused runs
    with pytest.raises(SystemExit, match=r"error: .*rna.h5ad: field 'X': RNA values are not raw counts"):
        run("train", "--rna", tmp_path / "rna.h5ad", "--atac", tmp_path / "atac.h5ad", "--direction", "rna2atac",
            "--out", tmp_path / "m")  # train never floors log-normalised values either
    capsys.readouterr()
    run(*base, "--recover-counts", "--liftover", "hg19")
    out = capsys.readouterr().out
    for part in ("RNA counts recovered exactly from log1p", "peak chromosome names given the 'chr' prefix",
                 "peaks hg19 -> hg38", "failed to lift", "binarised" if False else "open (1) where > 0",
                 "CRE of the hg38 vocabulary", "removed_alone", "min_cells (genes)"):
        assert part in out, (part, out)
    own = ad.read_h5ad(tmp_path / "own" / "rna.h5ad")
    assert (own.X != rna[own.obs_names][:, own.var_names].X).nnz == 0  # exact counts, nothing floored
    assert own.var["chrom"].iloc[0].startswith("chr")  # --genome hg38 implied by the human vocabulary
    assert not list((tmp_path / "own").glob(".tmp*"))


def test_preprocess_qc_warning_and_error(tmp_path, capsys):
    base = ["preprocess", "--dataset", "snareseq_tiny", "--out", tmp_path / "t", "--min-cells", 1, "--min-genes", 1]
    run(*base, "--min-cres", 5)
    err = capsys.readouterr().err
    assert "warning:" in err and "min_peaks" in err and "--min-cres" in err
    with pytest.raises(SystemExit, match=r"(?s)error: .*no cell of 100 passes QC.*removed_alone.*Fix: relax"):
        run("preprocess", "--dataset", "snareseq_tiny", "--out", tmp_path / "t2")
    assert not (tmp_path / "t2").exists()


def test_preprocess_bad_pairs(tmp_path):
    rna, atac = data.load("snareseq_tiny")
    rna.write_h5ad(tmp_path / "rna.h5ad")
    other = atac.copy()
    other.obs_names = [f"x{i}" for i in range(other.n_obs)]
    other.write_h5ad(tmp_path / "other.h5ad")
    args = ["preprocess", "--rna", tmp_path / "rna.h5ad", "--out", tmp_path / "o"]
    with pytest.raises(SystemExit, match="error: .*share no cell name"):
        run(*args, "--atac", tmp_path / "other.h5ad")
    dup = atac.copy()
    dup.obs_names = [atac.obs_names[0]] * 2 + list(atac.obs_names[2:])
    dup.write_h5ad(tmp_path / "dup.h5ad")
    with pytest.raises(SystemExit, match=r"error: .*dup.h5ad: field 'obs_names \(barcodes\)': 1 duplicated ATAC name"):
        run(*args, "--atac", tmp_path / "dup.h5ad")
    (tmp_path / "empty.h5ad").write_bytes(b"")
    with pytest.raises(SystemExit, match=r"error: .*empty.h5ad: field 'file': is empty"):
        run(*args, "--atac", tmp_path / "empty.h5ad")
    bmmc_rna, bmmc_atac = data.load("bmmc")
    bmmc_rna.write_h5ad(tmp_path / "hrna.h5ad")
    bmmc_atac.write_h5ad(tmp_path / "hatac.h5ad")
    with pytest.raises(SystemExit, match="error: .*hatac.h5ad.*species mismatch"):
        run("preprocess", "--rna", tmp_path / "hrna.h5ad", "--atac", tmp_path / "hatac.h5ad", "--cre-vocabulary",
            "mouse", "--out", tmp_path / "o")


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """A simulated pair as one .h5mu, preprocessed through it, and an rna2atac model trained on it (1 epoch)."""
    from cisformer.data import simulate

    mudata = pytest.importorskip("mudata")
    root = tmp_path_factory.mktemp("sim")
    rna, atac, _ = simulate.paired(n_cells=60, n_genes=20, n_cres=100, n_cell_types=2, seed=0)
    mudata.MuData({"rna": rna, "atac": atac}).write(root / "pair.h5mu")
    run("preprocess", "--mudata", root / "pair.h5mu", "--out", root / "prep", "--min-cells", 1, "--min-genes", 1,
        "--min-cres", 1)
    run("train", "--data", root / "prep", "--direction", "rna2atac", "--profile", "quick", "--out", root / "r2a",
        "--set", "dim=30", "--set", "n_layers=1", "--epochs", 1)
    return root, rna, atac


def test_mudata_in_and_prediction_as_modality(sim, capsys):
    mudata = pytest.importorskip("mudata")
    root, rna, atac = sim
    assert ad.read_h5ad(root / "prep" / "rna.h5ad").n_obs == rna.n_obs
    run("predict", "--model", root / "r2a" / "model.pt", "--mudata", root / "pair.h5mu", "--out", root / "pred.h5mu")
    assert "provides 20 of the model's 20 genes (100.0%)" in capsys.readouterr().out
    out = mudata.read_h5mu(root / "pred.h5mu")
    assert {"rna", "atac", "atac_predicted"} <= set(out.mod) and out.mod["atac_predicted"].n_obs == rna.n_obs
    assert not list(root.glob(".tmp*"))


def test_predict_streams_h5ad_with_storage_choices(sim, tmp_path, capsys):
    """rna2atac .h5ad output is streamed: float16 by default, --store topk sparse; an interrupted file of another
    model is refused in one line (--restart starts over)."""
    root, rna, _ = sim
    model = root / "r2a" / "model.pt"
    run("predict", "--model", model, "--data", root / "prep", "--out", tmp_path / "p.h5ad", "--block-cells", 7)
    pred = ad.read_h5ad(tmp_path / "p.h5ad", backed="r")
    assert pred.X.dtype == np.float16 and pred.uns["store"] == "prob+binary" and "binary" in pred.layers
    assert "cells written" in capsys.readouterr().err
    run("predict", "--model", model, "--data", root / "prep", "--out", tmp_path / "t.h5ad", "--store", "topk",
        "--top-k", 5, "--compression", "none")
    top = ad.read_h5ad(tmp_path / "t.h5ad")
    assert sp.issparse(top.X) and np.all(np.diff(top.X.indptr) == 5)
    from cisformer import predict
    from cisformer.model import Cisformer

    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # an interrupted run with other settings (and all cells)
        predict.rna_to_atac(Cisformer.load(model), rna, out=tmp_path / "q.h5ad", block_cells=7, on_block=interrupt)
    partial = tmp_path / "q.h5ad.partial"
    assert partial.exists()
    with pytest.raises(SystemExit, match=r"error: .*q.h5ad.partial holds an interrupted prediction made with .*"
                                         r"refusing to resume"):
        run("predict", "--model", model, "--data", root / "prep", "--out", tmp_path / "q.h5ad", "--store", "prob")
    run("predict", "--model", model, "--data", root / "prep", "--out", tmp_path / "q.h5ad", "--store", "prob",
        "--restart")
    assert not partial.exists() and ad.read_h5ad(tmp_path / "q.h5ad").n_obs == rna.n_obs


def test_predict_feature_mismatch_and_bad_models(sim, tmp_path):
    root, rna, _ = sim
    model = root / "r2a" / "model.pt"
    ids = rna.copy()
    ids.var_names = [f"ENSG{i:011d}" for i in range(ids.n_vars)]
    ids.write_h5ad(tmp_path / "ids.h5ad")
    with pytest.raises(SystemExit, match=r"error: .*ids.h5ad: field 'var_names \(genes\)': the input provides 0 of "
                                         r"the model's 20 genes.*e\.g\. \[.*Fix: the input names genes by Ensembl id"):
        run("predict", "--model", model, "--rna", tmp_path / "ids.h5ad", "--out", tmp_path / "p.h5ad")
    half = rna[:, :8].copy()
    half.write_h5ad(tmp_path / "half.h5ad")
    with pytest.raises(SystemExit, match="provides 8 of the model's 20 genes"):
        run("predict", "--model", model, "--rna", tmp_path / "half.h5ad", "--out", tmp_path / "p.h5ad")
    with pytest.raises(SystemExit, match=r"error: .*field 'direction': the model is rna2atac .*not atac2rna"):
        run("predict", "--model", model, "--direction", "atac2rna", "--data", root / "prep", "--out", tmp_path / "p.h5ad")
    with pytest.raises(SystemExit, match=r"error: .*the model is rna2atac .*but only --atac was given"):
        run("predict", "--model", model, "--atac", root / "prep" / "atac.h5ad", "--out", tmp_path / "p.h5ad")
    whole = model.read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(SystemExit, match=r"error: .*cut.pt: field 'model file': cannot be read .*truncated or corrupt"):
        run("predict", "--model", tmp_path / "cut.pt", "--data", root / "prep", "--out", tmp_path / "p.h5ad")
    (tmp_path / "zero.pt").write_bytes(b"")
    with pytest.raises(SystemExit, match="is empty"):
        run("link", "--model", tmp_path / "zero.pt", "--data", root / "prep", "--out", tmp_path / "l.csv")
    assert not (tmp_path / "p.h5ad").exists() and not (tmp_path / "l.csv").exists()


def test_outputs_are_renamed_into_place(tmp_path):
    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_atomic(tmp_path / "out.csv", broken)
    assert list(tmp_path.iterdir()) == []
    write_atomic(tmp_path / "out.csv", lambda tmp: tmp.write_text("whole"))
    assert (tmp_path / "out.csv").read_text() == "whole" and len(list(tmp_path.iterdir())) == 1


def test_preprocess_10x_download_with_fragments_and_labels(tmp_path, tenx_download):
    """A 10x-format fixture from shipped data (conftest.tenx_download): Signac's fragments (54 barcodes, chr1) and
    BMMC RNA counts for those barcodes, peaks tiling chr1:0-1 Mb, labels in a CSV column named by --cell-type-column."""
    frags, peaks = tenx_download["fragments"], tenx_download["peaks"]
    run("preprocess", "--10x-h5", tenx_download["h5"], "--fragments", frags,
        "--cell-types", tenx_download["labels"], "--cell-type-column", "celltype", "--out", tmp_path / "pbmc",
        "--min-cells", 1, "--min-genes", 1, "--min-cres", 1)
    out_rna, out_atac = ad.read_h5ad(tmp_path / "pbmc" / "rna.h5ad"), ad.read_h5ad(tmp_path / "pbmc" / "atac.h5ad")
    fragments = data.read_fragments(frags, peaks, barcodes=list(out_atac.obs_names))
    assert out_atac.X.sum() == fragments[:, out_atac.var_names].X.sum() > 0
    assert set(out_rna.obs["cell_type"]) <= {"B", "T"} and (out_rna.obs_names == out_atac.obs_names).all()
    with pytest.raises(SystemExit, match="error: .*labels.csv: field 'type': column missing"):
        run("preprocess", "--10x-h5", tenx_download["h5"], "--fragments", frags,
            "--cell-types", tenx_download["labels"], "--cell-type-column", "type", "--out", tmp_path / "x")


def test_preprocess_10x_download_to_a_data_folder(tmp_path, tenx_download, capsys):
    """--name NAME --out DIR writes a data folder (DIR/datasets/NAME_*.h5ad + MANIFEST) that data.load(NAME,
    data_dir=DIR) and --dataset NAME --data-dir DIR read; reference files and shipped sets come from the repo's data/."""
    from cisformer.utils import paths, provenance

    folder = tmp_path / "tenx_folder"
    run("preprocess", "--10x-h5", tenx_download["h5"], "--fragments", tenx_download["fragments"],
        "--cell-types", tenx_download["labels"], "--cell-type-column", "celltype", "--genome", "hg38",
        "--name", "tenx", "--out", folder, "--min-cells", 1, "--min-genes", 1, "--min-cres", 1)
    assert "--dataset tenx --data-dir" in capsys.readouterr().out
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "MANIFEST", "datasets/tenx_atac.h5ad", "datasets/tenx_rna.h5ad"]  # nothing else, no temporary file
    rna, atac = data.load("tenx", data_dir=folder)
    assert rna.n_obs == atac.n_obs == 54 and (rna.obs_names == atac.obs_names).all()
    for adata in (rna, atac):
        assert set(adata.obs["cell_type"]) == {"B", "T"} and (adata.obs["cell_type"] == "B").sum() == 20
        assert adata.uns["dataset"] == "tenx" and adata.uns["genome"] == "hg38"
    manifest = data.read_manifest(folder)
    assert list(manifest.columns) == list(data.read_manifest().columns)
    for rel in ("datasets/tenx_rna.h5ad", "datasets/tenx_atac.h5ad"):
        assert manifest.loc[rel, "sha256"] == provenance.sha256(folder / rel)
        assert int(manifest.loc[rel, "bytes"]) == (folder / rel).stat().st_size
        assert manifest.loc[rel, "licence"] == "user data" and "filtered_feature_bc_matrix.h5" in manifest.loc[rel, "source"]
    # references and shipped data sets fall back to the repo's data/ (checksums verified there)
    assert data.reference_path("human_cres", data_dir=folder) == paths.REPO_ROOT / "data" / data.REFERENCES["human_cres"]
    assert len(data.load_genes("hg38", data_dir=folder)) > 30_000
    assert data.load("snareseq_tiny", data_dir=folder)[0].n_obs == 100
    assert "tenx" in data.list_datasets(folder) and "tenx" not in data.list_datasets()
    with pytest.raises(KeyError, match="unknown dataset 'nope'.*tenx"):
        data.load("nope", data_dir=folder)

    # the CLI reads it by name; --data on a data folder says how
    capsys.readouterr()
    run("preprocess", "--dataset", "tenx", "--data-dir", folder, "--out", tmp_path / "again",
        "--min-cells", 1, "--min-genes", 1, "--min-cres", 1)
    assert "54 -> 54 cells" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"is a data folder \(data sets \['tenx'\]\).*--dataset NAME --data-dir"):
        run("train", "--data", folder, "--direction", "rna2atac", "--out", tmp_path / "m")

    # a second data set joins the same folder; rewriting one replaces its MANIFEST lines
    run("preprocess", "--dataset", "snareseq_tiny", "--name", "tiny_copy", "--licence", "GPL-3", "--out", folder,
        "--min-cells", 1, "--min-genes", 1, "--min-cres", 1)
    manifest = data.read_manifest(folder)
    assert len(manifest) == 4 and manifest.loc["datasets/tiny_copy_rna.h5ad", "licence"] == "GPL-3"
    assert data.load("tiny_copy", data_dir=folder)[0].n_obs > 50 and data.load("tenx", data_dir=folder)[0].n_obs == 54

    # a 10x h5 has no labels: --cell-type-column without --cell-types is refused
    with pytest.raises(SystemExit, match="--cell-type-column celltype has nothing to read.*--cell-types"):
        run("preprocess", "--10x-h5", tenx_download["h5"], "--cell-type-column", "celltype", "--out", tmp_path / "x")


def test_cell_type_column_of_h5ad_and_h5mu_inputs(tmp_path):
    """--cell-type-column picks an obs column of .h5ad / .h5mu inputs into obs['cell_type'] of both modalities; a
    missing one is an error naming the file and the columns there are."""
    rna, atac = data.load("snareseq_tiny")
    rna.obs["annotation"] = ["A"] * 60 + ["B"] * 40
    rna.obs = rna.obs.drop(columns=["cell_type"])
    rna.write_h5ad(tmp_path / "rna.h5ad")
    atac.write_h5ad(tmp_path / "atac.h5ad")
    small = ["--min-cells", 1, "--min-genes", 1, "--min-cres", 1]
    run("preprocess", "--rna", tmp_path / "rna.h5ad", "--atac", tmp_path / "atac.h5ad", "--cell-type-column",
        "annotation", "--name", "own", "--out", tmp_path / "folder", *small)
    r, a = data.load("own", data_dir=tmp_path / "folder")
    assert set(r.obs["cell_type"]) == set(a.obs["cell_type"]) == {"A", "B"}
    assert (r.obs["cell_type"].astype(str) == rna.obs.loc[r.obs_names, "annotation"]).all()
    assert (a.obs["cell_type"].astype(str) == rna.obs.loc[a.obs_names, "annotation"]).all()
    with pytest.raises(SystemExit, match=r"error: .*rna\.h5ad.*field 'obs\['celltype'\]'.*annotation.*Fix: .*--cell-type-column"):
        run("preprocess", "--rna", tmp_path / "rna.h5ad", "--atac", tmp_path / "atac.h5ad", "--cell-type-column",
            "celltype", "--out", tmp_path / "x", *small)
    mudata = pytest.importorskip("mudata")
    mdata = mudata.MuData({"rna": ad.read_h5ad(tmp_path / "rna.h5ad"), "atac": atac})
    mdata.obs["label"] = np.where(np.arange(mdata.n_obs) % 2, "odd", "even")
    mdata.write(tmp_path / "pair.h5mu")
    run("preprocess", "--mudata", tmp_path / "pair.h5mu", "--cell-type-column", "label", "--out", tmp_path / "mu", *small)
    assert set(ad.read_h5ad(tmp_path / "mu" / "atac.h5ad").obs["cell_type"]) == {"odd", "even"}
    with pytest.raises(SystemExit, match=r"pair\.h5mu: field 'obs\['nope'\]'.*label"):
        run("preprocess", "--mudata", tmp_path / "pair.h5mu", "--cell-type-column", "nope", "--out", tmp_path / "y",
            *small)
