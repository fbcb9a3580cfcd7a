"""MultiVI and scGLUE (cisformer.peers.external): the guidance-graph edges, and real runs on a small simulated pair."""
import numpy as np
import pandas as pd
import pytest

from cisformer.data import simulate
from cisformer.peers import external


def _foscttm(x_rna, x_atac):
    """Fraction of cells closer than the true match (Euclidean), averaged over both directions."""
    d = ((x_rna[:, None, :] - x_atac[None, :, :]) ** 2).sum(-1)
    true = np.diag(d)
    return float(((d < true[:, None]).mean() + (d < true[None, :]).mean()) / 2)


def test_scglue_guidance_edges():
    genes = pd.DataFrame({"chrom": ["chr1", "chr1", "chr2"], "start": [10_000, 50_000, 5_000],
                          "end": [20_000, 60_000, 9_000], "strand": ["+", "-", "+"]}, index=["gA", "gB", "gC"])
    peaks = pd.DataFrame({"chrom": ["chr1", "chr1", "chr1", "chr2"], "start": [9_000, 30_000, 64_000, 400_000],
                          "end": [9_500, 30_500, 64_500, 400_500]}, index=["p0", "p1", "p2", "p3"])
    edges = external.scglue_guidance_edges(genes, peaks, window=30_000)
    fwd = edges[edges["type"] == "fwd"]
    # peak midpoints within 30 kb of the TSS (gA: 10,000 on +; gB: 60,000 on -; gC: 5,000 on chr2)
    assert list(zip(fwd["source"], fwd["target"])) == [("gA", "p0"), ("gA", "p1"), ("gB", "p1"), ("gB", "p2")]
    # gap to the promoter (2 kb upstream of the TSS: gA [8,000, 10,000], gB [60,000, 62,000]): p0 overlaps gA's,
    # p1 lies 20,000 bp after gA's and 29,500 bp before gB's, p2 2,000 bp after gB's
    gaps = np.array([0, 20_000, 29_500, 2_000])
    np.testing.assert_allclose(fwd["weight"], ((gaps + 1000) / 1000) ** -0.75)
    rev = edges[edges["type"] == "rev"]
    assert list(zip(rev["source"], rev["target"])) == list(zip(fwd["target"], fwd["source"]))
    np.testing.assert_allclose(rev["weight"], fwd["weight"])
    loops = edges[edges["type"] == "loop"]
    assert list(loops["source"]) == list(loops["target"]) == ["gA", "gB", "gC", "p0", "p1", "p2", "p3"]
    assert (loops["weight"] == 1).all() and (edges["sign"] == 1).all()


def test_linked_features_are_variable_genes_and_the_peaks_near_them():
    rna, atac, _ = simulate.paired(n_cells=120, n_genes=40, n_cres=200, n_cell_types=3, seed=0)
    cells = rna.obs_names[:90]
    genes, peaks = external.linked_features(rna, atac, cells, n_top_genes=10, window=50_000)
    assert 0 < len(genes) <= 10 and set(genes) <= set(rna.var_names) and len(peaks) > 0
    pairs = external.scglue_guidance_edges(rna.var.loc[genes], atac.var, 50_000)
    assert set(peaks) == set(pairs.loc[pairs["type"] == "fwd", "target"])  # exactly the peaks within the window
    again, _ = external.linked_features(rna[cells], atac[cells], cells, n_top_genes=10, window=50_000)
    assert list(again) == list(genes)  # only the given cells decide (held-out cells never enter)


def test_converged_peer_is_saved_once_and_read_only_for_the_same_inputs(tmp_path, monkeypatch, capsys):
    """rerun=True trains (here a stand-in for MultiVI) and saves embeddings + record; rerun=False reads them back,
    and refuses a saved result whose fingerprint differs (other counts) with a line saying so."""
    rna, atac, _ = simulate.paired(n_cells=60, n_genes=20, n_cres=80, n_cell_types=2, seed=1)
    train, embed = rna.obs_names[:45], rna.obs_names[45:]
    calls = []

    def fake_multivi(rna_, atac_, train_cells, embed_cells, seed=0, threads=1, snapshot_every=None):
        calls.append(len(train_cells))
        rng = np.random.default_rng(seed)
        embedding = lambda: {m: rng.normal(size=(len(embed_cells), 4)).astype(np.float32) for m in ("rna", "atac")}
        return {**embedding(), "epochs": 123, "stopped": "early_stopping", "max_epochs": 500, "seconds": 1.0,
                "snapshots": [(e, embedding()) for e in range(snapshot_every, 124, snapshot_every)]}

    monkeypatch.setitem(external.CONVERGED_RUNNERS, "MultiVI", fake_multivi)
    monkeypatch.setattr(external.integration, "ensure_integration_env", lambda: None)
    monkeypatch.setattr(external.integration, "integration_versions", lambda: {"scvi-tools": "x"})
    args = ("MultiVI", rna, atac, train, embed, "sim")
    assert external.converged_peer(*args, folder=tmp_path) is None
    assert "no saved result" in capsys.readouterr().out and not calls
    made = external.converged_peer(*args, folder=tmp_path, rerun=True)
    assert calls == [45] and (tmp_path / "sim_MultiVI_seed0.npz").exists()
    read = external.converged_peer(*args, folder=tmp_path)
    assert calls == [45] and read["epochs"] == 123 and read["stopped"] == "early_stopping"
    # FOSCTTM every 10 epochs and at the end (epoch 123): 12 snapshots + the final embedding
    curve = np.array(read["foscttm_by_epoch"])
    assert list(curve[:, 0]) == [*range(10, 121, 10), 123] and ((curve[:, 1] >= 0) & (curve[:, 1] <= 1)).all()
    assert curve[-1, 1] == pytest.approx(_foscttm(made["rna"], made["atac"]))
    np.testing.assert_array_equal(read["rna"], made["rna"])
    assert read["fingerprint"] == made["fingerprint"] and read["versions"] == {"scvi-tools": "x"}
    changed = rna.copy()
    changed.X = changed.X.copy()
    changed.X[0, 0] += 1
    assert external.converged_peer("MultiVI", changed, atac, train, embed, "sim", folder=tmp_path) is None
    assert "fingerprint differs" in capsys.readouterr().out
    assert external.converged_peer(*args, seed=1, folder=tmp_path) is None  # another seed: another file


needs_env = pytest.mark.skipif(not external.integration_python().exists(),
                               reason="MultiVI/scGLUE environment not installed (external.ensure_integration_env())")


@pytest.fixture(scope="module")
def tiny():
    rna, atac, _ = simulate.paired(n_cells=200, n_genes=60, n_cres=300, seed=0)
    train, held_out = rna.obs_names[:150], rna.obs_names[150:]
    embed = np.concatenate([held_out, held_out[::-1]])  # the same cells twice, the second time reversed
    return rna, atac, train, embed


@needs_env
@pytest.mark.parametrize("method, max_epochs", [("multivi", 100), ("scglue", 20)])
def test_integration_peer_embeds_held_out_cells(tiny, method, max_epochs):
    rna, atac, train, embed = tiny
    out = getattr(external, f"run_{method}")(rna, atac, train, embed, seed=0, max_epochs=max_epochs)
    n = len(embed) // 2
    for modality in ("rna", "atac"):
        x = out[modality]
        assert x.shape == (len(embed), out["rna"].shape[1]) and np.isfinite(x).all()
        np.testing.assert_allclose(x[:n], x[n:][::-1], rtol=1e-5, atol=1e-6)  # rows follow embed_cells
    assert out["stopped"] == "max_epochs" and out["seconds"] > 0
    assert out["epochs"] == (max_epochs if method == "multivi" else 2 * max_epochs)  # scGLUE: two stages
    assert _foscttm(out["rna"][:n], out["atac"][:n]) < 0.5


@needs_env
@pytest.mark.parametrize("method", ["multivi", "scglue"])
def test_snapshots_leave_training_unchanged(tiny, method):
    """Embedding the cells every 10 epochs (the FOSCTTM-vs-epoch curve of a converged peer) restores the model's
    mode and every random state: the final embeddings are those of the run without snapshots."""
    rna, atac, train, embed = tiny
    run = getattr(external, f"run_{method}")
    plain = run(rna, atac, train, embed, seed=0, max_epochs=20)  # scGLUE gives NaN after 2 or 4 epochs a stage
    watched = run(rna, atac, train, embed, seed=0, max_epochs=20, snapshot_every=10)
    assert plain["snapshots"] == []
    assert [epoch for epoch, _ in watched["snapshots"]] == ([10, 20] if method == "multivi" else [10, 20, 30, 40])
    for modality in ("rna", "atac"):
        np.testing.assert_array_equal(watched[modality], plain[modality])
        np.testing.assert_array_equal(watched["snapshots"][-1][1][modality], plain[modality])
