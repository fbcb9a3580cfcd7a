"""cisformer.benchmark: every peer with a free parameter is tuned on the validation cells over the same grid size,
the chosen value is the best validation score, and the tuned method is refitted on training + validation cells."""
import numpy as np
import pytest

from cisformer import baselines, benchmark, data, metrics, simulate


@pytest.fixture(scope="module")
def cells():
    rna, atac, _ = simulate.paired(n_cells=300, n_genes=40, n_cres=240, n_cell_types=3, seed=2)
    return rna, atac, data.split_cells(rna.obs, by="random", seed=0)


@pytest.mark.parametrize("method", sorted(benchmark.TUNING))
def test_atac2rna_peers_are_tuned_on_validation_cells(cells, method):
    rna, atac, (tr, va, te) = cells
    pred, timing = benchmark.run_atac2rna(method, rna, atac, tr, va, te)
    parameter, values = benchmark.TUNING[method]
    tuning = timing["tuning"]
    assert [row["value"] for row in tuning] == list(values) and {row["parameter"] for row in tuning} == {parameter}
    assert {len(v) for _, v in benchmark.TUNING.values()} == {len(values)}  # one trial budget for every peer
    scores = [row["validation_score"] for row in tuning]
    chosen = [row["value"] for row in tuning if row["chosen"]]
    assert chosen == [values[int(np.argmax(scores))]]
    # the chosen value, refitted on training + validation cells, is what predicts the test cells
    refit = baselines.ATAC2RNA_METHODS[method](**{parameter: chosen[0]}).fit(rna[np.concatenate([tr, va])],
                                                                          atac[np.concatenate([tr, va])])
    np.testing.assert_allclose(pred.X, refit.predict_rna(atac[te]).X, rtol=1e-5, atol=1e-6)
    assert scores[int(np.argmax(scores))] == pytest.approx(metrics.mean_pearson(
        baselines.ATAC2RNA_METHODS[method](**{parameter: chosen[0]}).fit(rna[tr], atac[tr]).predict_rna(atac[va]),
        rna[va]))


def test_untuned_peers_and_unknown_methods(cells):
    rna, atac, (tr, va, te) = cells
    pred, timing = benchmark.run_atac2rna("depth only", rna, atac, tr, va, te)
    assert "tuning" not in timing and pred.shape == (len(te), rna.n_vars)
    with pytest.raises(ValueError, match="unknown ATAC->RNA method"):
        benchmark.run_atac2rna("magic", rna, atac, tr, va, te)
