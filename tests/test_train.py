import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from cisformer import data, metrics, predict, train
from cisformer.data import simulate
from cisformer.peers import baselines
from cisformer.model import ARCHS


def auroc(y, score):
    """Mann-Whitney AUROC (ties get average ranks)."""
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    _, inv, counts = np.unique(score, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    ranks = (sums / counts)[inv]
    n1 = y.sum()
    return (ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * (len(y) - n1))


@pytest.fixture(scope="module")
def sim():
    return simulate.paired(n_cells=500, n_genes=100, n_cres=400, n_cell_types=3, seed=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_rna2atac_learns_held_out_cells(sim, arch):
    """A quick-profile model generates ATAC of unseen cells with AUROC > 0.9, and gains over the floor (each
    CRE's training open frequency) per cell: a model that learned base rates and depth only would not."""
    rna, atac, _ = sim
    cells = np.arange(rna.n_obs)
    extra = dict(epochs=6, multiple=6) if arch == "paper" else {}
    model, history = train.fit(rna, atac, "rna2atac", cells[:350], cells[350:400], profile="quick", seed=0,
                               arch=arch, progress=False, **extra)
    assert history["val_score"].max() > history["val_score"].iloc[0]
    out = predict.rna_to_atac(model, rna[400:])
    assert out.shape == (100, atac.n_vars) and out.X.dtype == np.float32
    assert list(out.var_names) == list(atac.var_names) and list(out.obs_names) == list(rna.obs_names[400:])
    truth = atac.X[400:].toarray() > 0
    assert auroc(truth.ravel(), out.X.ravel()) > 0.9
    floor = baselines.Floor().fit(rna[:350], atac[:350]).frequency
    gain = np.nanmean(metrics.per_cell_auroc(out.X, truth)) - np.nanmean(
        metrics.per_cell_auroc(np.broadcast_to(floor, truth.shape), truth))
    assert gain > 0.1
    assert out.uns["threshold"] == 0.5 and np.array_equal(out.layers["binary"], out.X >= 0.5)
    topk = predict.rna_to_atac(model, rna[400:410], threshold="topk")
    k = round(model.open_fraction * atac.n_vars)
    assert np.all(topk.layers["binary"].sum(1) == k)
    subset = predict.rna_to_atac(model, rna[400:405], cres=atac.var_names[10:20])
    np.testing.assert_allclose(subset.X, out.X[:5, 10:20], rtol=1e-5, atol=1e-6)
    assert list(subset.var_names) == list(atac.var_names[10:20])
    # genes are matched by name: shuffling the input's gene order changes nothing
    shuffled = rna[400:410, np.random.default_rng(0).permutation(rna.n_vars)]
    np.testing.assert_allclose(predict.rna_to_atac(model, shuffled).X, out.X[:10], rtol=1e-5, atol=1e-6)


def test_an_epoch_shows_at_least_min_epoch_samples_cells(sim):
    """Small data sets: each training cell is drawn several times per epoch, by the same rule for Cisformer and
    BABEL-style, so that an epoch is not a handful of optimiser steps."""
    rna, atac, _ = sim
    cells = np.arange(rna.n_obs)
    for minimum, expected in [(0, 100), (1000, 1000), (1050, 1100)]:
        _, history = train.fit(rna, atac, "rna2atac", cells[:100], cells[100:150], profile="quick", seed=0,
                               epochs=1, progress=False, min_epoch_samples=minimum)
        assert history["samples"].tolist() == [expected]
        babel = baselines.BabelStyle(epochs=1, min_epoch_samples=minimum).fit(rna[:100], atac[:100], seed=0)
        assert [row["samples"] for row in babel.history] == [expected]
    assert train.TrainConfig.from_profile("rna2atac", "cpu").min_epoch_samples == 6400


def test_stored_zeros_are_not_open(sim):
    """Stored zeros in the ATAC matrix are not open (base rates, top-k fraction), and fit leaves the input as it was."""
    rna, atac, _ = sim
    rna, atac = rna[:60].copy(), atac[:60].copy()
    padded = atac.copy()
    x = padded.X.tocoo()
    closed = np.argwhere(atac.X.toarray() == 0)[::7]          # store a zero for every 7th closed entry
    padded.X = sp.csr_matrix((np.r_[x.data, np.zeros(len(closed))], (np.r_[x.row, closed[:, 0]],
                              np.r_[x.col, closed[:, 1]])), shape=x.shape)
    assert padded.X.nnz > atac.X.nnz
    stored = padded.X.copy()
    fitted = [train.fit(rna, a, "rna2atac", np.arange(40), np.arange(40, 60), profile="quick", epochs=1,
                        progress=False)[0] for a in (atac, padded)]
    for before, after in ((stored.indptr, padded.X.indptr), (stored.indices, padded.X.indices),
                          (stored.data, padded.X.data)):
        np.testing.assert_array_equal(before, after)          # the caller's matrix is left as it was
    assert fitted[0].open_fraction == pytest.approx(fitted[1].open_fraction)
    torch.testing.assert_close(fitted[0].query_prior, fitted[1].query_prior)


@pytest.mark.parametrize("arch", ARCHS)
def test_atac2rna_predicts_every_gene_without_mask(sim, arch):
    rna, atac, _ = sim
    cells = np.arange(rna.n_obs)
    extra = dict(epochs=6, multiple=4) if arch == "paper" else {}
    model, _ = train.fit(rna, atac, "atac2rna", cells[:350], cells[350:400], profile="quick", seed=0, arch=arch,
                         progress=False, **extra)
    out = predict.atac_to_rna(model, atac[400:])
    assert out.shape == (100, rna.n_vars) and not out.uns["masked"]
    probs = np.stack([out.layers[f"p_bin{j}"] for j in range(8)], -1)
    np.testing.assert_allclose(probs.sum(-1), 1, rtol=1e-4)
    np.testing.assert_allclose(out.X, probs @ out.uns["bin_centres"], rtol=1e-4, atol=1e-5)
    # the prediction reads ATAC only: changing the RNA of these cells cannot change it
    again = predict.atac_to_rna(model, atac[400:])
    np.testing.assert_array_equal(out.X, again.X)
    # gene-wise correlation with the truth (log1p counts per 10,000, the predictions' scale) is positive
    x = data.true_expression(rna[400:])
    r = [np.corrcoef(out.X[:, g], x[:, g])[0, 1] for g in range(rna.n_vars) if x[:, g].std() > 0]
    assert np.nanmean(r) > 0.2
    masked = predict.atac_to_rna(model, atac[400:], mask=rna[400:])
    assert masked.uns["masked"] and np.all(masked.X[x == 0] == 0) and np.all(masked.layers["bin"][x > 0] > 0)


def test_resume_equals_uninterrupted_and_finished_run_loads(sim, tmp_path):
    rna, atac, _ = sim
    train_cells, val_cells = rna.obs_names[:120], rna.obs_names[120:160]
    kw = dict(profile="quick", seed=3, progress=False, multiple=1, dim=24, n_layers=1)
    _, full = train.fit(rna, atac, "rna2atac", train_cells, val_cells, epochs=3, checkpoint_dir=tmp_path / "a", **kw)
    _, first = train.fit(rna, atac, "rna2atac", train_cells, val_cells, epochs=2, checkpoint_dir=tmp_path / "b", **kw)
    resumed_model, resumed = train.fit(rna, atac, "rna2atac", train_cells, val_cells, epochs=3,
                                       checkpoint_dir=tmp_path / "b", **kw)
    cols = ["epoch", "train_loss", "val_loss", "val_score", "lr"]
    pd.testing.assert_frame_equal(full[cols], resumed[cols], rtol=1e-6)
    run_dir = next((tmp_path / "b").iterdir())
    assert {"best.pt", "last.pt", "history.csv", "done.json"} <= {p.name for p in run_dir.iterdir()}
    # a finished run with the same config and data is loaded, not retrained
    (run_dir / "last.pt").unlink()
    loaded, history = train.fit(rna, atac, "rna2atac", train_cells, val_cells, epochs=3,
                                checkpoint_dir=tmp_path / "b", **kw)
    pd.testing.assert_frame_equal(history[cols], resumed[cols], rtol=1e-6)
    for a, b in zip(loaded.state_dict().values(), resumed_model.state_dict().values()):
        assert torch.equal(a, b)
    assert loaded.gene_names == list(rna.var_names) and loaded.cre_names == list(atac.var_names)
    # the state smoothing is set again on the loaded model, identically
    assert loaded.state_neighbors == resumed_model.state_neighbors
    assert torch.equal(loaded.reference_states, resumed_model.reference_states)


def test_rna2atac_state_smoothing_is_chosen_on_validation_cells_and_saved(sim, tmp_path):
    """fit keeps the training cells' states and picks k (state_neighbors) by the validation criterion; a state
    is averaged with its k nearest training states at prediction only, and a saved model predicts the same."""
    rna, atac, _ = sim
    model, _ = train.fit(rna, atac, "rna2atac", np.arange(200), np.arange(200, 250), profile="quick", seed=0,
                         epochs=2, progress=False)
    scores = model.state_neighbor_scores
    assert set(scores) == set(train.STATE_NEIGHBORS) and scores[model.state_neighbors] == max(scores.values())
    assert model.reference_states.shape == (200, model.config.rank)
    # the scores (the attention path computed once) are the validation criterion of the model at each k
    val = (sp.csr_matrix(rna.X[200:250]), data.log_expression(rna[200:250]))
    truth = sp.csr_matrix(atac.X[200:250]) > 0
    chosen = model.state_neighbors
    for k in (0, 30):
        model.state_neighbors = k
        assert train.validation_criterion(model, val, truth)["val_score"] == pytest.approx(scores[k], abs=1e-6)
    model.state_neighbors = chosen
    z = torch.randn(5, model.config.rank)
    model.state_neighbors = 3
    ref = model.reference_states.numpy()
    nearest = np.argsort(((z.numpy()[:, None] - ref[None]) ** 2).sum(-1), axis=1)[:, :3]
    expected = (z.numpy() + ref[nearest].sum(1)) / 4
    np.testing.assert_allclose(model.smoothed_state(z).numpy(), expected, rtol=1e-5, atol=1e-5)
    model.train()
    assert torch.equal(model.smoothed_state(z), z)  # never while training
    model.eval()
    smoothed = predict.rna_to_atac(model, rna[400:420]).X
    model.save(tmp_path / "m.pt")
    np.testing.assert_array_equal(predict.rna_to_atac(type(model).load(tmp_path / "m.pt"), rna[400:420]).X, smoothed)
    model.state_neighbors = 0
    assert not np.allclose(predict.rna_to_atac(model, rna[400:420]).X, smoothed)


def test_clear_errors(sim):
    rna, atac, _ = sim
    with pytest.raises(ValueError, match="overlap"):
        train.fit(rna, atac, "rna2atac", np.arange(10), np.arange(5, 15), profile="quick")
    with pytest.raises(TypeError, match="unknown override"):
        train.fit(rna, atac, "rna2atac", np.arange(10), np.arange(10, 15), profile="quick", dimension=5)
    with pytest.raises(ValueError, match="obs_names"):
        train.fit(rna, atac[::-1], "rna2atac", np.arange(10), np.arange(10, 15), profile="quick")
    with pytest.raises(ValueError, match="not in obs_names"):
        train.fit(rna, atac, "rna2atac", ["nope"], np.arange(10, 15), profile="quick")
    with pytest.raises(ValueError, match="direction"):
        train.fit(rna, atac, "dna2rna", np.arange(10), np.arange(10, 15))
    model, _ = train.fit(rna, atac, "rna2atac", np.arange(20), np.arange(20, 25), profile="quick", epochs=1,
                         progress=False, dim=24, n_layers=1)
    with pytest.raises(ValueError, match="rna2atac model"):
        predict.atac_to_rna(model, atac[:3])
    with pytest.raises(ValueError, match="match the model"):
        predict.rna_to_atac(model, atac[:3])


def test_oracle_cell_type_key_recovers_the_cell_type_means_gain():
    """Given the cell type as its only input token, the model must recover >= 80 % of the cell-type mean's
    per-cell AUROC gain over the floor: the model can learn CRE x cell-type structure when the input has it."""
    rna, atac, _ = simulate.paired(n_cells=600, n_genes=50, n_cres=600, n_cell_types=4, seed=1)
    oracle = data.label_tokens(rna.obs, "cell_type")
    tr, va, te = np.arange(400), np.arange(400, 450), np.arange(450, 600)
    model, _ = train.fit(oracle, atac, "rna2atac", tr, va, profile="quick", seed=0, progress=False)
    truth = atac.X[te].toarray() > 0
    floor = baselines.Floor().fit(rna[tr], atac[tr]).frequency
    reference = baselines.CellTypeMean().fit(rna[tr], atac[tr]).predict_atac(rna[te]).X

    def mean_auroc(scores):
        return np.nanmean(metrics.per_cell_auroc(np.broadcast_to(scores, truth.shape), truth))

    gain_model = mean_auroc(predict.rna_to_atac(model, oracle[te]).X) - mean_auroc(floor)
    gain_reference = mean_auroc(reference) - mean_auroc(floor)
    assert gain_reference > 0.1
    assert gain_model >= 0.8 * gain_reference


@pytest.mark.parametrize("direction", ["rna2atac", "atac2rna"])
def test_training_from_backed_files_equals_training_in_memory(tmp_path, direction):
    """fit() on AnnData opened with backed="r" reads the files block by block (never the whole matrices) and
    gives the in-memory model: the same history and weights up to the float rounding of streamed means, and the
    same fingerprint (row blocks hash as the whole matrix). Subset views of a backed file and normalised RNA are
    refused with the fix."""
    import anndata as ad
    from cisformer.sampler import DiskCSR

    rna, atac, _ = simulate.paired(n_cells=200, n_genes=30, n_cres=150, n_cell_types=3, seed=4)
    rna.write_h5ad(tmp_path / "rna.h5ad")
    atac.write_h5ad(tmp_path / "atac.h5ad")
    rna_b, atac_b = ad.read_h5ad(tmp_path / "rna.h5ad", backed="r"), ad.read_h5ad(tmp_path / "atac.h5ad", backed="r")
    cells = np.random.default_rng(0).permutation(200)
    kwargs = dict(profile="quick", seed=0, epochs=2, progress=False, device="cpu")
    memory, h_memory = train.fit(rna, atac, direction, cells[:160], cells[160:], **kwargs)
    disk, h_disk = train.fit(rna_b, atac_b, direction, cells[:160], cells[160:], **kwargs)
    pd.testing.assert_frame_equal(h_memory.drop(columns=["seconds", "samples_per_s"]),
                                  h_disk.drop(columns=["seconds", "samples_per_s"]), rtol=1e-4)
    for name, value in memory.state_dict().items():
        torch.testing.assert_close(disk.state_dict()[name], value, rtol=1e-4, atol=1e-5)
    cfg = memory.config
    tcfg = train.TrainConfig.from_profile(direction, "quick", "cisformer")
    on_disk = (DiskCSR.from_anndata(rna_b), DiskCSR.from_anndata(atac_b))
    assert (train.fingerprint(cfg, tcfg, 0, rna, atac, cells[:160], cells[160:])
            == train.fingerprint(cfg, tcfg, 0, rna_b, atac_b, cells[:160], cells[160:], *on_disk))
    with pytest.raises(ValueError, match="subset view of a backed file"):
        train.fit(rna_b[:100], atac_b[:100], direction, np.arange(80), np.arange(80, 100), **kwargs)
    rna.uns["counts"] = False
    rna.write_h5ad(tmp_path / "normalised.h5ad")
    with pytest.raises(ValueError, match="raw counts"):
        train.fit(ad.read_h5ad(tmp_path / "normalised.h5ad", backed="r"), atac_b, direction, cells[:160],
                  cells[160:], **kwargs)
