"""MultiVI and scGLUE (cisformer.external): the guidance-graph edges, and real runs on a small simulated pair."""
import numpy as np
import pandas as pd
import pytest

from cisformer import external, simulate


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
