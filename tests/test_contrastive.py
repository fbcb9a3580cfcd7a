"""Attune alignment model (cisformer.attune.alignment): exact sparse pooling, NT-Xent, training, resume, ATAC->RNA."""
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from cisformer import metrics
from cisformer.data import simulate
from cisformer import runs
from cisformer.metrics import foscttm
from cisformer.attune.alignment import (TeacherEncoder, embed, embed_anndata, fit_alignment, fit_atac2rna, nt_xent,
                                   predict_atac2rna)


def _dense_teacher_pooled(enc: TeacherEncoder, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: every feature of every cell a token, zeros included; softmax over all of them."""
    tokens = enc.feature_embedding.weight.unsqueeze(0) * (x * enc.value_scale).unsqueeze(-1)  # [B, F, D]
    scores = torch.tanh(enc.pool_proj(tokens)) @ enc.pool_context  # [B, F]
    weights = torch.softmax(scores, dim=-1)
    weighted = weights.unsqueeze(-1) * tokens
    return torch.tanh(weighted.sum(1)), weighted


def test_sparse_pooling_equals_dense_reference():
    torch.manual_seed(0)
    enc = TeacherEncoder(n_features=40, dim=16).double()
    enc.value_scale.copy_(torch.rand(40, dtype=torch.float64) + 0.5)
    with torch.no_grad():
        enc.pool_proj.bias.normal_()
    x = torch.rand(6, 40, dtype=torch.float64) * (torch.rand(6, 40) < 0.3)
    x[2] = 0.0  # a cell with no nonzero entry
    x[3] = torch.rand(40, dtype=torch.float64) + 0.1  # a cell with no zero entry
    pooled, weighted = _dense_teacher_pooled(enc, x)
    assert torch.allclose(enc.pooled(x), pooled, atol=1e-12)
    assert torch.allclose(enc.weighted_tokens(x), weighted, atol=1e-12)
    cols = torch.tensor([5, 0, 39])
    assert torch.allclose(enc.weighted_tokens(x, cols), weighted[:, cols], atol=1e-12)
    assert (enc.weighted_tokens(x)[x == 0] == 0).all()
    enc.eval()
    assert enc(x).shape == (6, 16)


def test_nt_xent_symmetric_chance_and_matched():
    torch.manual_seed(0)
    B = 32
    a, b = torch.randn(B, 512), torch.randn(B, 512)
    assert torch.allclose(nt_xent(a, b, 0.1), nt_xent(b, a, 0.1))
    assert abs(nt_xent(a, b, 1.0).item() - np.log(2 * B - 1)) < 0.05  # unrelated: chance among 2B - 1
    assert nt_xent(a, a, 0.1).item() < 0.01  # identical pairs (random directions: others far below)
    assert nt_xent(a, a + 0.01 * torch.randn(B, 512), 0.1).item() < nt_xent(a, b, 0.1).item()


@pytest.fixture(scope="module")
def sim():
    rna, atac, _ = simulate.paired(n_cells=300, n_genes=60, n_cres=300, seed=0)
    return rna, atac, np.arange(200), np.arange(200, 240), np.arange(240, 300)


@pytest.fixture(scope="module")
def aligned(sim):
    rna, atac, train, val, _ = sim
    return fit_alignment(rna, atac, train, val, profile="quick", seed=0, progress=False)


def test_an_epoch_shows_at_least_min_epoch_samples_cells(sim):
    rna, atac, train, val, _ = sim
    _, history = fit_alignment(rna, atac, train, val, profile="quick", seed=0, progress=False, epochs=1,
                               min_epoch_samples=500)
    assert history["samples"].tolist() == [(3 * len(train) // 64) * 64]  # 3 shuffled passes over 200 cells
    _, history = fit_alignment(rna, atac, train, val, profile="quick", seed=0, progress=False, epochs=1)
    assert history["samples"].tolist() == [(len(train) // 64) * 64]  # quick profile: one pass, full batches


def test_alignment_matches_held_out_pairs(sim, aligned):
    rna, atac, _, _, test = sim
    model, history = aligned
    assert list(history.columns[:5]) == ["epoch", "train_loss", "val_loss", "val_foscttm", "val_score"]
    assert history.val_score.idxmax() == history.val_foscttm.idxmin()
    assert {"lr", "seconds"} <= set(history.columns)
    emb = embed(model, rna, atac, test)
    assert emb["rna"].shape == emb["atac"].shape == (len(test), model.config.dim)
    assert np.allclose(np.linalg.norm(emb["rna"], axis=1), 1, atol=1e-5)
    assert foscttm(emb["rna"], emb["atac"]) < 0.3  # chance: 0.5
    r, a = embed_anndata(model, rna, atac, rna.obs_names[test])
    assert np.array_equal(r.obsm["X_attune"], emb["rna"]) and list(a.obs_names) == list(rna.obs_names[test])
    assert r.X.shape == (len(test), rna.n_vars) and rna.obsm.get("X_attune") is None


def test_resume_after_interruption_equals_uninterrupted_run(sim, tmp_path, monkeypatch):
    rna, atac, train, val, _ = sim
    kw = dict(profile="quick", seed=1, progress=False, epochs=4, dim=16)
    full_model, full = fit_alignment(rna, atac, train, val, checkpoint_dir=tmp_path / "a", **kw)

    writes = {"n": 0}
    real_write = runs.write_atomic

    def write_then_die(path, write):  # killed after the second epoch's checkpoint
        real_write(path, write)
        writes["n"] += path.name == "history.csv"
        if writes["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(runs, "write_atomic", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        fit_alignment(rna, atac, train, val, checkpoint_dir=tmp_path / "b", **kw)
    monkeypatch.setattr(runs, "write_atomic", real_write)
    run_dir = next((tmp_path / "b").iterdir())
    assert not (run_dir / "done.json").exists() and (run_dir / "last.pt").exists()
    torch.manual_seed(123)  # the resumed run restores its own RNG state
    resumed_model, resumed = fit_alignment(rna, atac, train, val, checkpoint_dir=tmp_path / "b", **kw)
    cols = ["epoch", "train_loss", "val_loss", "val_score", "lr"]
    pd.testing.assert_frame_equal(full[cols], resumed[cols], rtol=1e-6)
    for x, y in zip(full_model.state_dict().values(), resumed_model.state_dict().values()):
        assert torch.allclose(x, y, atol=1e-6)
    assert {"best.pt", "last.pt", "history.csv", "done.json"} <= {p.name for p in run_dir.iterdir()}
    # a finished run is loaded, not retrained
    (run_dir / "last.pt").unlink()
    loaded, history = fit_alignment(rna, atac, train, val, checkpoint_dir=tmp_path / "b", **kw)
    pd.testing.assert_frame_equal(history[cols], resumed[cols], rtol=1e-6)
    for x, y in zip(loaded.state_dict().values(), resumed_model.state_dict().values()):
        assert torch.equal(x, y)


def test_test_cells_are_never_read(sim):
    """Training reads training and validation cells only: changing the test cells' counts changes nothing."""
    rna, atac, train, val, test = sim
    kw = dict(profile="quick", seed=2, progress=False, epochs=2, dim=16)
    model, history = fit_alignment(rna, atac, train, val, **kw)
    rna2, atac2 = rna.copy(), atac.copy()
    rng = np.random.default_rng(0)
    for a in (rna2, atac2):
        X = a.X.toarray()
        X[test] = rng.poisson(3.0, size=(len(test), a.n_vars))
        a.X = sp.csr_matrix(X)
    model2, history2 = fit_alignment(rna2, atac2, train, val, **kw)
    pd.testing.assert_frame_equal(history.drop(columns="seconds"), history2.drop(columns="seconds"))
    for x, y in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(x, y)
    head, _ = fit_atac2rna(model, rna, atac, train, val, seed=0, progress=False, epochs=2)
    head2, _ = fit_atac2rna(model2, rna2, atac2, train, val, seed=0, progress=False, epochs=2)
    for x, y in zip(head.state_dict().values(), head2.state_dict().values()):
        assert torch.equal(x, y)


def test_atac2rna_beats_the_per_gene_mean(sim, aligned):
    rna, atac, train, val, test = sim
    model, _ = aligned
    before = {k: v.clone() for k, v in model.state_dict().items()}
    head, history = fit_atac2rna(model, rna, atac, train, val, seed=0, progress=False)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the aligner is not modified
    assert list(history.columns) == ["epoch", "train_loss", "val_loss", "val_score", "lr", "seconds", "samples"]
    pred = predict_atac2rna(head, atac, rna.obs_names[test])
    assert pred.shape == (len(test), rna.n_vars) and list(pred.var_names) == list(rna.var_names)
    assert list(pred.obs_names) == list(rna.obs_names[test])
    r = metrics.genewise_correlation(pred, rna[test])
    assert r[r.metric == "pearson"].value.mean() > 0.1  # the per-gene mean scores 0
