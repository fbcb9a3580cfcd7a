"""The Fig 2 benchmark's methods behind one call each, so that every method is trained on the same cells and
predicts the same cells (notebooks 01 and 02, and the depth ablation).

:func:`run_rna2atac` and :func:`run_atac2rna` take paired AnnData, the names of the training, validation and test
cells and a seed, and return ``(prediction, timing)``: an AnnData of the test cells (RNA -> ATAC: probabilities
of every CRE; ATAC -> RNA: log1p(counts per 10,000) of every gene) and a dict with ``train_s``, ``predict_s``
and, for learned methods, how long they trained. Methods that select their epoch (Cisformer, BABEL-style) train on
the training cells and select on the validation cells, by the same criterion on the same scored cells; the others
(scButterfly, which splits off its own validation cells, and the methods without training) fit on training +
validation cells. Nothing reads the test cells' other modality.

:func:`rna2atac_gates` checks the learning gates of the principal issue on a summary table.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from . import baselines, contrastive, external, metrics, predict, train

RNA2ATAC_METHODS = ("cisformer", "cisformer (paper architecture)", "scButterfly", "BABEL-style", "kNN", "floor")
RNA2ATAC_REFERENCES = ("cell-type mean", "cisformer (oracle: cell type as input)")  # read the test labels
ATAC2RNA_METHODS = ("cisformer", "cisformer (paper architecture)", "floor", "depth only", "ArchR gene score",
                    "peak-to-gene", "SCARlink-style", "kNN", "ridge", "Attune head")
# every peer with a free parameter is tuned on the validation cells over the same grid size (6 values); the
# chosen value is refitted on training + validation cells (Cisformer selects its epoch on the same cells)
TUNING = {"kNN": ("n_neighbors", (20, 50, 100, 200, 400, 800)),
          "ridge": ("alpha", (1e4, 3e4, 1e5, 3e5, 1e6, 3e6))}
ABLATED = "cisformer without attention path"  # the same trained model, predicting with its attention path off
LEARNED = ("cisformer", "cisformer (paper architecture)", "scButterfly", "BABEL-style")


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


def run_rna2atac(method: str, rna, atac, train_cells, val_cells, test_cells, seed: int = 0, profile: str = "cpu",
                 device: str = "auto", cache=None, epochs: int | None = None, babel_epochs: int = 20,
                 time_budget_s: float | None = None, label_key: str = "cell_type"):
    """Train ``method`` on the training cells and predict the accessibility of the test cells from their RNA.

    Parameters
    ----------
    method
        One of :data:`RNA2ATAC_METHODS`, :data:`RNA2ATAC_REFERENCES` or :data:`ABLATED`.
    cache
        Checkpoint folder for the Cisformer models (:func:`cisformer.train.fit`).
    epochs
        Cisformer's maximum epochs (default: the profile's).
    babel_epochs
        BABEL-style's maximum epochs (20, Cisformer's in the cpu profile; both stop after 3 epochs without
        improvement on the validation cells, see ``baselines.BabelStyle``).
    time_budget_s
        scButterfly's wall-clock training budget (``None``: its own default epochs).
    """
    train_cells, val_cells, test_cells = (pd.Index(c).astype(str) for c in (train_cells, val_cells, test_cells))
    fit_cells = train_cells.append(val_cells)
    t0 = time.time()
    if method in ("cisformer", "cisformer (paper architecture)", "cisformer (oracle: cell type as input)", ABLATED):
        source = rna
        if "oracle" in method:
            from .data import label_tokens
            source = label_tokens(rna.obs, label_key)
        model, timing = _fit_cisformer(method, source, atac, "rna2atac", train_cells, val_cells, seed, profile,
                                       device, cache, epochs)
        t1 = time.time()
        pred = predict.rna_to_atac(model, source[test_cells])
        return pred, {**timing, "predict_s": time.time() - t1}
    if method == "scButterfly":
        pred, timing = external.run_scbutterfly_rna2atac(rna, atac, fit_cells, test_cells, seed=seed, threads=1,
                                                         time_budget_s=time_budget_s)
        return pred, timing
    cells, fit_kwargs = fit_cells, {}
    if method == "BABEL-style":  # trains on the training cells, selects its epoch on the validation cells
        fitted, cells = baselines.BabelStyle(epochs=babel_epochs), train_cells
        fit_kwargs = {"validation": (rna[val_cells], atac[val_cells])}
    elif method == "kNN":
        fitted = baselines.KNNTransfer()
    elif method == "floor":
        fitted = baselines.Floor()
    elif method == "cell-type mean":
        fitted = baselines.CellTypeMean(key=label_key)
    else:
        raise ValueError(f"unknown RNA->ATAC method {method!r}; use one of "
                         f"{RNA2ATAC_METHODS + RNA2ATAC_REFERENCES + (ABLATED,)}")
    fitted.fit(rna[cells], atac[cells], seed=seed, **fit_kwargs)
    t1 = time.time()
    pred = fitted.predict_atac(rna[test_cells])
    timing = {"train_s": t1 - t0, "predict_s": time.time() - t1}
    if fit_kwargs:
        scores = [row["val_score"] for row in fitted.history]
        timing.update(epochs=len(scores), best_epoch=int(np.argmax(scores)) + 1)
    return pred, timing

def run_atac2rna(method: str, rna, atac, train_cells, val_cells, test_cells, seed: int = 0, profile: str = "cpu",
                 device: str = "auto", cache=None, epochs: int | None = None):
    """Train ``method`` on the training cells and predict the expression of the test cells from their ATAC
    (log1p counts per 10,000, the scale of :func:`cisformer.metrics.true_expression`)."""
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
        aligner, history = contrastive.fit_alignment(rna, atac, train_cells, val_cells, profile=profile, seed=seed,
                                                     checkpoint_dir=cache, device=device, progress=False)
        head, head_history = contrastive.fit_atac2rna(aligner, rna, atac, train_cells, val_cells, seed=seed,
                                                      checkpoint_dir=cache, device=device, progress=False)
        t1 = time.time()
        pred = contrastive.predict_atac2rna(head, atac[test_cells])
        return pred, {"train_s": float(history["seconds"].sum() + head_history["seconds"].sum()),
                      "epochs": int(len(history) + len(head_history)), "predict_s": time.time() - t1}
    classes = baselines.ATAC2RNA_METHODS
    if method not in classes:
        raise ValueError(f"unknown ATAC->RNA method {method!r}; use one of {ATAC2RNA_METHODS + (ABLATED,)}")
    timing = {}
    if method in TUNING:
        parameter, values = TUNING[method]
        val_truth = rna[val_cells]
        scores = []
        for value in values:
            trial = classes[method](**{parameter: value}).fit(rna[train_cells], atac[train_cells], seed=seed)
            scores.append(metrics.mean_pearson(trial.predict_rna(atac[val_cells]), val_truth))
        best = values[int(np.argmax(scores))]
        timing["tuning"] = [{"method": method, "parameter": parameter, "value": v, "validation_score": sc,
                             "chosen": v == best} for v, sc in zip(values, scores)]
        fitted = classes[method](**{parameter: best})
    else:
        fitted = classes[method]()
    fitted.fit(rna[fit_cells], atac[fit_cells], seed=seed)
    t1 = time.time()
    pred = fitted.predict_rna(atac[test_cells])
    return pred, {**timing, "train_s": t1 - t0, "predict_s": time.time() - t1}


def rna2atac_gates(summary: pd.DataFrame, ours: str = "cisformer", reference: str = "cell-type mean",
                   group: str = "scenario") -> pd.DataFrame:
    """The principal issue's learning gates on a :func:`cisformer.metrics.summarize` table of RNA->ATAC metrics.

    Per group (scenario): the AUROC gains of ``ours`` and of ``reference`` over the floor (the gain gate applies
    where the reference gains at least 0.01: ours must reach half of it), ``ours``' AMI against the best of
    BABEL-style and scButterfly, and ``ours``' probe against 0.8 x kNN's. Returns one row per group with the
    numbers and a pass/fail column per gate (NaN where the gate does not apply).
    """
    mean = summary.set_index([group, "method", "metric"])["mean"]

    def get(g, method, metric):
        return mean.get((g, method, metric), np.nan)

    rows = []
    for g in dict.fromkeys(summary[group]):
        gain, ref_gain = get(g, ours, "AUROC_gain"), get(g, reference, "AUROC_gain")
        peers_ami = [get(g, m, "AMI") for m in ("BABEL-style", "scButterfly")]
        peers_ami = max([a for a in peers_ami if np.isfinite(a)], default=np.nan)
        knn_probe = get(g, "kNN", "probe")
        applies = np.isfinite(ref_gain) and ref_gain >= 0.01
        rows.append({group: g, "AUROC_gain": gain, "reference_gain": ref_gain,
                     "gain_gate": (gain >= 0.5 * ref_gain) if applies else np.nan,
                     "AMI": get(g, ours, "AMI"), "best_translator_AMI": peers_ami,
                     "AMI_gate": get(g, ours, "AMI") >= peers_ami if np.isfinite(peers_ami) else np.nan,
                     "kNN_AMI": get(g, "kNN", "AMI"), "AMI_vs_kNN": get(g, ours, "AMI") >= get(g, "kNN", "AMI"),
                     "probe": get(g, ours, "probe"), "kNN_probe": knn_probe,
                     "probe_gate": get(g, ours, "probe") >= 0.8 * knn_probe if np.isfinite(knn_probe) else np.nan})
    return pd.DataFrame(rows)
