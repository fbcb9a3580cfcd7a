import subprocess
import sys

import anndata as ad
import pandas as pd
import pytest

from cisformer import cli


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


def test_link_on_simulated_pairs(tmp_path):
    """link needs genes and CREs within the window of each other: use the simulator (planted local links)."""
    pytest.importorskip("cisformer.attention")
    from cisformer import simulate

    rna, atac, _ = simulate.paired(n_cells=60, n_genes=20, n_cres=100, n_cell_types=2, seed=0)
    rna.write_h5ad(tmp_path / "rna.h5ad")
    atac.write_h5ad(tmp_path / "atac.h5ad")
    run("train", "--data", tmp_path, "--direction", "rna2atac", "--profile", "quick", "--out", tmp_path / "r2a",
        "--set", "dim=30", "--set", "n_layers=1", "--epochs", 1)
    run("link", "--model", tmp_path / "r2a" / "model.pt", "--data", tmp_path, "--out", tmp_path / "links.csv",
        "--cells-per-type", 10)
    links = pd.read_csv(tmp_path / "links.csv")
    assert {"cell_type", "gene", "cre", "score"} <= set(links.columns) and len(links) > 0
    assert set(links["gene"]) <= set(rna.var_names) and set(links["cre"]) <= set(atac.var_names)


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


def test_train_split_by_cell_type(tmp_path):
    from cisformer import simulate

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
