"""cisformer.peers.benchmark: every peer with a free parameter is tuned on the validation cells over the same grid size,
the chosen value is the best validation score, and the tuned method is refitted on training + validation cells."""
import numpy as np
import pytest

from cisformer import data, metrics
from cisformer.data import simulate
from cisformer.peers import baselines, benchmark


@pytest.fixture(scope="module")
def cells():
    rna, atac, _ = simulate.paired(n_cells=300, n_genes=40, n_cres=240, n_cell_types=3, seed=2)
    return rna, atac, data.split_cells(rna.obs, by="random", seed=0)


@pytest.mark.parametrize("method", sorted(benchmark.TUNING["atac2rna"]))
def test_atac2rna_peers_are_tuned_on_validation_cells(cells, method):
    rna, atac, (tr, va, te) = cells
    pred, timing = benchmark.run_atac2rna(method, rna, atac, tr, va, te)
    parameter, values = benchmark.TUNING["atac2rna"][method]
    tuning = timing["tuning"]
    assert [row["value"] for row in tuning] == list(values) and {row["parameter"] for row in tuning} == {parameter}
    assert {len(v) for _, v in benchmark.TUNING["atac2rna"].values()} == {len(values)}  # one budget for every peer
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


@pytest.mark.parametrize("method", ["kNN", "ridge"])
def test_rna2atac_peers_are_tuned_on_validation_cells(cells, method):
    """kNN's k and ridge's penalty: every grid value scored by the AUROC gain over the floor on the validation
    cells, the best refitted on training + validation cells; ``params`` skips the search."""
    rna, atac, (tr, va, te) = cells
    pred, timing = benchmark.run_rna2atac(method, rna, atac, tr, va, te)
    parameter, values = benchmark.TUNING["rna2atac"][method]
    assert len(values) >= 6 and [row["value"] for row in timing["tuning"]] == list(values)
    scores = [row["validation_score"] for row in timing["tuning"]]
    best = values[int(np.argmax(scores))]
    assert timing[parameter] == best
    floor = baselines.Floor().fit(rna[tr], atac[tr]).frequency
    trial = baselines.RNA2ATAC_METHODS[method](**{parameter: best}).fit(rna[tr], atac[tr])
    assert max(scores) == pytest.approx(metrics.auroc_gain(trial.predict_atac(rna[va]).X, atac[va].X.toarray() > 0,
                                                           floor))
    fit = np.concatenate([tr, va])
    refit = baselines.RNA2ATAC_METHODS[method](**{parameter: best}).fit(rna[fit], atac[fit])
    np.testing.assert_allclose(pred.X, refit.predict_atac(rna[te]).X, rtol=1e-5, atol=1e-6)
    again, timing = benchmark.run_rna2atac(method, rna, atac, tr, va, te, params={parameter: best})
    assert "tuning" not in timing
    np.testing.assert_allclose(again.X, pred.X)


def test_rna2atac_babel_keeps_its_best_trial_and_the_floor_gains_exactly_zero(cells):
    rna, atac, (tr, va, te) = cells
    pred, timing = benchmark.run_rna2atac("BABEL-style", rna, atac, tr, va, te, babel_epochs=2)
    tried = [row["value"] for row in timing["tuning"]]
    assert tried == list(benchmark.TUNING["rna2atac"]["BABEL-style"][1])
    assert timing["hidden"] == [row["value"] for row in timing["tuning"] if row["chosen"]][0]
    # a given width trains once, and the same seed and width give the same model
    again, timing_again = benchmark.run_rna2atac("BABEL-style", rna, atac, tr, va, te, babel_epochs=2,
                                                 params={"hidden": timing["hidden"]})
    assert "tuning" not in timing_again
    np.testing.assert_allclose(again.X, pred.X, rtol=1e-5, atol=1e-6)
    floor = baselines.Floor().fit(rna[tr], atac[tr]).frequency
    floor_pred, _ = benchmark.run_rna2atac("floor", rna, atac, tr, va, te)
    table = metrics.rna2atac_summary(floor_pred, atac[te], floor=floor, cluster=False, open_fraction=0.1)
    assert table.set_index("metric").loc["AUROC_gain", "value"] == pytest.approx(0.0, abs=1e-12)


def test_ridge_rna_learns_cell_type_structure(cells):
    rna, atac, (tr, va, te) = cells
    floor = baselines.Floor().fit(rna[tr], atac[tr]).frequency
    pred = baselines.RidgeRNA(alpha=10.0).fit(rna[tr], atac[tr]).predict_atac(rna[te])
    assert metrics.auroc_gain(pred.X, atac[te].X.toarray() > 0, floor) > 0.02
    flat = baselines.RidgeRNA(alpha=1e12).fit(rna[tr], atac[tr]).predict_atac(rna[te])
    np.testing.assert_allclose(flat.X, np.clip(np.broadcast_to(floor, flat.shape), 1e-4, 1), atol=1e-5)


def test_rna2atac_gates_need_a_paired_interval_and_name_failures():
    """A win on the AUROC gain needs the paired CI above 0 against every peer; a model that kept epoch 1 or is
    below the floor is named, and no gate is counted for it."""
    import pandas as pd

    rows = []
    for s in range(5):
        rows += [("A", "cisformer", s, "AUROC_gain", 0.030 + 0.001 * s), ("A", "BABEL-style", s, "AUROC_gain", 0.025 + 0.001 * s),
                 ("A", "cisformer", s, "AMI", 0.5), ("A", "BABEL-style", s, "AMI", 0.4),
                 ("A", "cisformer", s, "probe", 0.7),
                 ("B", "cisformer", s, "AUROC_gain", 0.030 + (0.004 if s % 2 else -0.004)),
                 ("B", "BABEL-style", s, "AUROC_gain", 0.030), ("B", "cisformer", s, "AMI", 0.5),
                 ("C", "cisformer", s, "AUROC_gain", -0.001), ("C", "BABEL-style", s, "AUROC_gain", -0.002)]
    rows += [(sc, "kNN", 0, "AUROC_gain", 0.01) for sc in "ABC"] + [("A", "kNN", 0, "AMI", 0.45),
                                                                    ("A", "kNN", 0, "probe", 0.75)]
    rows += [(sc, "floor", 0, "AUROC_gain", 0.0) for sc in "ABC"]
    results = pd.DataFrame(rows, columns=["scenario", "method", "seed", "metric", "value"])
    runtime = pd.DataFrame({"scenario": ["C"] * 5, "method": ["cisformer"] * 5, "seed": range(5), "best_epoch": 1})
    failures = benchmark.rna2atac_failures(results, runtime)
    assert set(zip(failures["scenario"], failures["method"])) == {("C", "cisformer"), ("C", "BABEL-style")}
    assert {"keeps epoch 1"} < set(failures["reason"]) and "floor" not in set(failures["method"])
    gates = benchmark.rna2atac_gates(results, failures).set_index("scenario")
    assert gates.loc["A", "gain_gate"] and gates.loc["A", "gain_wins"] == 3 and gates.loc["A", "AMI_gate"]
    assert not gates.loc["A", "probe_gate"]
    assert not gates.loc["B", "gain_gate"] and gates.loc["B", "gain_wins"] == 2  # the noisy tie is no win
    assert "epoch 1" in gates.loc["C", "failed"] and np.isnan(gates.loc["C", "gain_gate"])
