"""The Fig 2 benchmark's methods behind one call each, so that every method is trained on the same cells and
predicts the same cells (notebooks 01 and 02, and the depth ablation).

:func:`run_rna2atac` and :func:`run_atac2rna` take paired AnnData, the names of the training, validation and test
cells and a seed, and return ``(prediction, timing)``: an AnnData of the test cells (RNA -> ATAC: probabilities
of every CRE; ATAC -> RNA: log1p(counts per 10,000) of every gene) and a dict with ``train_s``, ``predict_s``
and, for learned methods, how long they trained. Methods that select their epoch (Cisformer, BABEL-style) train on
the training cells and select on the validation cells, by the same criterion on the same scored cells; the others
(scButterfly, which splits off its own validation cells, and the methods without training) fit on training +
validation cells, except the RNA -> ATAC floor, fitted on the training cells like the gain it is the reference of.
Peers with a free parameter are tuned on the validation cells (:data:`TUNING`). Nothing reads the test cells'
other modality.

:func:`rna2atac_failures` names the runs that failed and :func:`rna2atac_gates` checks the learning gates of the
principal issue, with paired confidence intervals, on a per-seed table of RNA -> ATAC metrics.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..attune import alignment
from .. import metrics, predict, train
from . import baselines, external

RNA2ATAC_METHODS = ("cisformer", "cisformer (paper architecture)", "scButterfly", "BABEL-style", "kNN", "ridge",
                    "floor")
RNA2ATAC_REFERENCES = ("cell-type mean", "cisformer (oracle: cell type as input)")  # read the test labels
ATAC2RNA_METHODS = ("cisformer", "cisformer (paper architecture)", "floor", "depth only", "ArchR gene score",
                    "peak-to-gene", "SCARlink-style", "kNN", "ridge", "Attune head")
# Every peer with a free parameter is tuned on the validation cells: (parameter, values). The cheap ones get the
# same number of values per direction (RNA -> ATAC 7: kNN's best k on SNARE-seq is large) and are refitted on
# training + validation cells with the chosen one; BABEL-style trains on the training cells and selects its epoch
# on the validation cells like Cisformer, so each of its 4 trials is a full run and the best is kept as it is.
# Criterion: RNA -> ATAC the AUROC gain over the floor (Cisformer's epoch criterion), ATAC -> RNA the mean
# gene-wise Pearson (:func:`cisformer.metrics.mean_pearson`).
TUNING = {"rna2atac": {"kNN": ("n_neighbors", (20, 50, 100, 200, 400, 800, 1600)),
                       "ridge": ("alpha", (1e2, 1e3, 3e3, 1e4, 3e4, 1e5, 1e6)),
                       "BABEL-style": ("hidden", (32, 64, 128, 256))},
          "atac2rna": {"kNN": ("n_neighbors", (20, 50, 100, 200, 400, 800)),
                       "ridge": ("alpha", (1e4, 3e4, 1e5, 3e5, 1e6, 3e6))}}
ABLATED = "cisformer without attention path"  # the same trained model, predicting with its attention path off


def _fit_cisformer(method, rna, atac, direction, train_cells, val_cells, seed, profile, device, cache, epochs):
    t0 = time.time()
    arch = "paper" if "paper" in method else "cisformer"
    model, history = train.fit(rna, atac, direction, train_cells, val_cells, profile=profile, seed=seed,
                               checkpoint_dir=cache, device=device, epochs=epochs, progress=False, arch=arch)
    model.ablate_attention = method == ABLATED
    # training time from the run's own history, also when the model is reused from the cache
    timing = {"train_s": float(history["seconds"].sum()), "epochs": int(len(history)),
              "best_epoch": int(history["val_score"].idxmax()) + 1, "load_s": time.time() - t0}
    return model, timing


def _tuned(direction: str, method: str, params: dict | None, trial) -> tuple[dict, list]:
    """``(params, tuning rows)``: ``params`` as given, or the :data:`TUNING` value whose ``trial(params)`` (the
    validation score of a model fitted with them) is highest, with one row per value tried."""
    if params is not None or method not in TUNING[direction]:
        return dict(params or {}), []
    parameter, values = TUNING[direction][method]
    scores = [float(trial({parameter: v})) for v in values]
    best = values[int(np.argmax(scores))]
    rows = [{"method": method, "parameter": parameter, "value": v, "validation_score": sc, "chosen": v == best}
            for v, sc in zip(values, scores)]
    return {parameter: best}, rows


def run_rna2atac(method: str, rna, atac, train_cells, val_cells, test_cells, *, seed: int = 0, profile: str = "cpu",
                 device: str = "auto", cache=None, epochs: int | None = None, babel_epochs: int = 20,
                 butterfly_epochs: tuple[int, int] | None = None, params: dict | None = None,
                 label_key: str = "cell_type"):
    """Train ``method`` on the training cells and predict the accessibility of the test cells from their RNA.

    Parameters
    ----------
    method
        One of :data:`RNA2ATAC_METHODS`, :data:`RNA2ATAC_REFERENCES` or :data:`ABLATED`.
    rna, atac
        Paired AnnData of raw counts (identical ``obs_names``) holding all the cells.
    train_cells, val_cells, test_cells
        obs names of the training, validation and test cells.
    seed
        Seed of the model (training, tuning trials, scButterfly's validation split).
    profile, device
        Cisformer's sizes (``"quick"``, ``"cpu"``, ``"paper"``) and device, as in :func:`cisformer.train.fit`.
    cache
        Checkpoint folder for the Cisformer models (:func:`cisformer.train.fit`).
    epochs
        Cisformer's maximum epochs (default: the profile's).
    babel_epochs
        BABEL-style's maximum epochs (20, Cisformer's in the cpu profile; both stop after 3 epochs without
        improvement on the validation cells, see ``baselines.BabelStyle``).
    butterfly_epochs
        scButterfly's epoch limits ``(each pretraining phase, translator)``; ``None``: its defaults (100, 200).
    params
        The tuned parameter of a peer in :data:`TUNING` (e.g. ``{"n_neighbors": 400}``); ``None`` tunes it on the
        validation cells (the rows tried are returned in the timing dict's ``"tuning"``).
    label_key
        ``obs`` column of the cell-type labels read by the references (cell-type mean, oracle).

    Returns
    -------
    (AnnData, dict)
        The test cells' predicted open probabilities (cells x CREs, ``layers["binary"]``) and the timing dict:
        ``train_s``, ``predict_s``, for learned methods ``epochs`` / ``best_epoch``, the chosen parameter and
        ``tuning`` rows when a parameter was tuned.
    """
    train_cells, val_cells, test_cells = (pd.Index(c).astype(str) for c in (train_cells, val_cells, test_cells))
    fit_cells = train_cells.append(val_cells)
    t0 = time.time()
    if method in ("cisformer", "cisformer (paper architecture)", "cisformer (oracle: cell type as input)", ABLATED):
        source = rna
        if "oracle" in method:
            from ..data import label_tokens
            source = label_tokens(rna.obs, label_key)
        model, timing = _fit_cisformer(method, source, atac, "rna2atac", train_cells, val_cells, seed, profile,
                                       device, cache, epochs)
        if model.state_neighbor_scores:  # its smoothing's k, tried on the validation cells (train.fit)
            timing["tuning"] = [{"method": method, "parameter": "state_neighbors", "value": k, "validation_score": sc,
                                 "chosen": k == model.state_neighbors} for k, sc in model.state_neighbor_scores.items()]
        t1 = time.time()
        pred = predict.rna_to_atac(model, source[test_cells])
        return pred, {**timing, "predict_s": time.time() - t1}
    if method == "scButterfly":
        limits = dict(zip(("pretrain_epochs", "translator_epochs"), butterfly_epochs or ()))
        return external.run_scbutterfly_rna2atac(rna, atac, fit_cells, test_cells, seed=seed, threads=1, **limits)
    classes = baselines.RNA2ATAC_METHODS
    if method not in classes:
        raise ValueError(f"unknown RNA->ATAC method {method!r}; use one of "
                         f"{RNA2ATAC_METHODS + RNA2ATAC_REFERENCES + (ABLATED,)}")
    train_rna, train_atac = rna[train_cells], atac[train_cells]
    timing = {}
    if method == "BABEL-style":  # trains on the training cells, selects its epoch on the validation cells
        runs = {}

        def trial(p):
            runs[str(p)] = baselines.BabelStyle(epochs=babel_epochs, **p).fit(
                train_rna, train_atac, seed=seed, validation=(rna[val_cells], atac[val_cells]))
            return max(row["val_score"] for row in runs[str(p)].history)

        chosen, tuning = _tuned("rna2atac", method, params, trial)
        if str(chosen) not in runs:
            trial(chosen)
        fitted = runs[str(chosen)]
        scores = [row["val_score"] for row in fitted.history]
        timing.update(epochs=len(scores), best_epoch=int(np.argmax(scores)) + 1)
    else:
        if params is None and method in TUNING["rna2atac"]:  # what the trials are scored against
            floor = baselines.Floor().fit(train_rna, train_atac).frequency
            val_truth = np.asarray(sp.csr_matrix(atac[val_cells].X).toarray() > 0)

        def trial(p):
            model = classes[method](**p).fit(train_rna, train_atac, seed=seed)
            return metrics.auroc_gain(model.predict_atac(rna[val_cells]).X, val_truth, floor)

        chosen, tuning = _tuned("rna2atac", method, params, trial)
        if method == "cell-type mean":
            chosen["key"] = label_key
        # the floor is the gain's reference, so it is fitted on the same (training) cells as that reference
        cells = train_cells if method == "floor" else fit_cells
        fitted = classes[method](**chosen).fit(rna[cells], atac[cells], seed=seed)
    t1 = time.time()
    pred = fitted.predict_atac(rna[test_cells])
    timing.update(train_s=t1 - t0, predict_s=time.time() - t1, **chosen)
    if tuning:
        timing["tuning"] = tuning
    return pred, timing


def run_atac2rna(method: str, rna, atac, train_cells, val_cells, test_cells, *, seed: int = 0, profile: str = "cpu",
                 device: str = "auto", cache=None, epochs: int | None = None):
    """Train ``method`` on the training cells and predict the expression of the test cells from their ATAC
    (log1p counts per 10,000, the scale of :func:`cisformer.data.true_expression`).

    Parameters
    ----------
    method
        One of :data:`ATAC2RNA_METHODS` or :data:`ABLATED`.
    rna, atac
        Paired AnnData of raw counts (identical ``obs_names``) holding all the cells.
    train_cells, val_cells, test_cells
        obs names of the training, validation and test cells.
    seed
        Seed of the model and of the tuning trials.
    profile, device, cache
        Cisformer's / Attune's sizes (``"quick"``, ``"cpu"``, ``"paper"``), device and checkpoint folder, as in
        :func:`cisformer.train.fit`.
    epochs
        Cisformer's maximum epochs (default: the profile's).

    Returns
    -------
    (AnnData, dict)
        The test cells' predicted expression (cells x genes) and the timing dict: ``train_s``, ``predict_s``, for
        learned methods ``epochs`` (and ``best_epoch`` for Cisformer), ``tuning`` rows when a parameter was tuned.
    """
    train_cells, val_cells, test_cells = (pd.Index(c).astype(str) for c in (train_cells, val_cells, test_cells))
    fit_cells = train_cells.append(val_cells)
    t0 = time.time()
    if method in ("cisformer", "cisformer (paper architecture)", ABLATED):
        model, timing = _fit_cisformer(method, rna, atac, "atac2rna", train_cells, val_cells, seed, profile, device,
                                       cache, epochs)
        t1 = time.time()
        pred = predict.atac_to_rna(model, atac[test_cells])
        return pred, {**timing, "predict_s": time.time() - t1}
    if method == "Attune head":
        aligner, history = alignment.fit_alignment(rna, atac, train_cells, val_cells, profile=profile, seed=seed,
                                                     checkpoint_dir=cache, device=device, progress=False)
        head, head_history = alignment.fit_atac2rna(aligner, rna, atac, train_cells, val_cells, seed=seed,
                                                      checkpoint_dir=cache, device=device, progress=False)
        t1 = time.time()
        pred = alignment.predict_atac2rna(head, atac[test_cells])
        return pred, {"train_s": float(history["seconds"].sum() + head_history["seconds"].sum()),
                      "epochs": int(len(history) + len(head_history)), "predict_s": time.time() - t1}
    classes = baselines.ATAC2RNA_METHODS
    if method not in classes:
        raise ValueError(f"unknown ATAC->RNA method {method!r}; use one of {ATAC2RNA_METHODS + (ABLATED,)}")
    val_truth = rna[val_cells]

    def trial(p):
        model = classes[method](**p).fit(rna[train_cells], atac[train_cells], seed=seed)
        return metrics.mean_pearson(model.predict_rna(atac[val_cells]), val_truth)

    chosen, tuning = _tuned("atac2rna", method, None, trial)
    timing = {"tuning": tuning} if tuning else {}
    fitted = classes[method](**chosen)
    fitted.fit(rna[fit_cells], atac[fit_cells], seed=seed)
    t1 = time.time()
    pred = fitted.predict_rna(atac[test_cells])
    return pred, {**timing, "train_s": t1 - t0, "predict_s": time.time() - t1}


def rna2atac_failures(results: pd.DataFrame, runtime: pd.DataFrame, *, methods=RNA2ATAC_METHODS) -> pd.DataFrame:
    """The runs that failed, by name: a learned model that kept its first epoch (``runtime``'s ``best_epoch`` 1:
    validation never improved on the untrained model) and any method whose mean AUROC gain over the floor is at
    most 0 (it ranks CREs no better than their training frequency). One row per (scenario, method, reason) with
    the seeds concerned; the floor itself is not listed (its gain is 0 by construction).

    Parameters
    ----------
    results
        Per-seed metrics: columns ``scenario``, ``method``, ``seed``, ``metric`` (``"AUROC_gain"`` is read), ``value``.
    runtime
        Per-run timings: columns ``scenario``, ``method``, ``seed`` and, for learned methods, ``best_epoch``.
    methods
        Methods checked.

    Returns
    -------
    DataFrame with columns ``scenario``, ``method``, ``reason``, ``seeds`` (space-separated).
    """
    rows = []
    if "best_epoch" in runtime:
        first = runtime[runtime["best_epoch"] == 1]
        for (scenario, method), sub in first.groupby(["scenario", "method"], sort=False):
            if method in methods:
                rows.append({"scenario": scenario, "method": method, "reason": "keeps epoch 1",
                             "seeds": " ".join(map(str, sorted(sub["seed"])))})
    gain = results[(results["metric"] == "AUROC_gain") & results["method"].isin(methods)
                   & (results["method"] != "floor")]
    for (scenario, method), sub in gain.groupby(["scenario", "method"], sort=False):
        if sub["value"].mean() <= 0:
            rows.append({"scenario": scenario, "method": method,
                         "reason": f"below the floor (AUROC gain {sub['value'].mean():+.4f})",
                         "seeds": " ".join(map(str, sorted(sub["seed"])))})
    return pd.DataFrame(rows, columns=["scenario", "method", "reason", "seeds"])


def rna2atac_gates(results: pd.DataFrame, failures: pd.DataFrame, *, ours: str = "cisformer",
                   peers=RNA2ATAC_METHODS, reference: str = "cell-type mean") -> pd.DataFrame:
    """The principal issue's gates per scenario on a per-seed RNA -> ATAC metrics table.

    ``gain_gate``: ``ours`` beats every peer on the AUROC gain over the floor with the paired 95 % CI above 0
    (:func:`cisformer.metrics.paired_differences`; ``gain_wins`` counts the peers beaten so); ``AMI_gate``:
    ``ours``' mean AMI at least every peer's; ``probe_gate``: its mean probe at least kNN's. Where ``ours`` failed
    (:func:`rna2atac_failures`) no gate is counted (NaN) and ``failed`` says why. ``reference_gain`` is the
    cell-type mean's gain, for scale.

    Parameters
    ----------
    results
        Per-seed metrics: columns ``scenario``, ``method``, ``seed``, ``metric`` (``AUROC_gain``, ``AMI``,
        ``probe``), ``value``.
    failures
        The table of :func:`rna2atac_failures`.
    ours
        The method whose gates are checked.
    peers
        Methods it is compared with (``ours`` is skipped; absent ones are ignored).
    reference
        Method whose gain is reported as ``reference_gain``.

    Returns
    -------
    DataFrame, one row per scenario: ``failed``, the gains, ``gain_wins``, ``peers``, AMI and probe values and the
    three gates (bool, NaN where ``ours`` failed).
    """
    peers = [m for m in peers if m != ours]
    mean = results.groupby(["scenario", "method", "metric"])["value"].mean()
    diffs = metrics.paired_differences(results, "AUROC_gain", ours=ours, peers=peers)
    rows = []
    for scenario in dict.fromkeys(results["scenario"]):
        def get(method, metric):
            return mean.get((scenario, method, metric), np.nan)

        present = [m for m in peers if np.isfinite(get(m, "AUROC_gain"))]
        failed = "; ".join(failures.loc[(failures["scenario"] == scenario) & (failures["method"] == ours), "reason"])
        d = diffs[diffs["scenario"] == scenario] if len(diffs) else diffs
        wins = int(d["win"].sum()) if len(d) else 0
        peer_ami = max((get(m, "AMI") for m in present), default=np.nan)
        best_ami = max(present, key=lambda m: get(m, "AMI")) if present else ""
        row = {"scenario": scenario, "failed": failed, "AUROC_gain": get(ours, "AUROC_gain"),
               "reference_gain": get(reference, "AUROC_gain"),
               "best_peer_gain": max((get(m, "AUROC_gain") for m in present), default=np.nan),
               "gain_wins": wins, "peers": len(present), "gain_gate": wins == len(present),
               "AMI": get(ours, "AMI"), "best_peer_AMI": peer_ami, "best_peer_AMI_method": best_ami,
               "AMI_gate": get(ours, "AMI") >= peer_ami,
               "probe": get(ours, "probe"), "kNN_probe": get("kNN", "probe"),
               "probe_gate": get(ours, "probe") >= get("kNN", "probe")}
        if failed:
            row.update(gain_gate=np.nan, AMI_gate=np.nan, probe_gate=np.nan)
        rows.append(row)
    return pd.DataFrame(rows)
