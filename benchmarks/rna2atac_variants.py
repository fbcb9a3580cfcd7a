#!/usr/bin/env python3
"""Variants of the default RNA -> ATAC model on the Fig 2 scenarios: do size or learning-rate changes move the
clustering (AMI) of its predictions beyond seed noise? Measured on demand, never by the tests or CI.

Each variant is the cpu profile with :func:`cisformer.train.fit` overrides (any ``CisformerConfig`` /
``TrainConfig`` field), trained on the scenario's training cells (notebook 01's setup: 10,000 most open CREs,
1,500 genes, up to 1,000 test cells, 800 clustered) and scored by ``metrics.rna2atac_summary`` exactly as the
notebook scores it. ``--babel`` adds BABEL-style with the same seeds for comparison.

    .venv/bin/python benchmarks/rna2atac_variants.py --scenario random --seeds 0,1,2 --babel \\
        --variant base= --variant rank8=rank:8 --variant dec64=decoder_width:64 --variant lr5e-4=lr:0.0005

Prints one JSON line per (variant, seed) and a table of means at the end.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd
import torch

from cisformer import data, metrics, predict, train
from cisformer.peers import baselines, benchmark

SCENARIOS = {"random": ("snareseq", "random"), "cell_type": ("snareseq", "cell_type"),
             "library": ("snareseq", "batch"), "bmmc": ("bmmc", "predefined")}


def parse_variant(text: str) -> tuple[str, dict]:
    """``name=key:value,key:value`` -> (name, overrides); values are read as int, then float, else str."""
    name, _, spec = text.partition("=")
    overrides = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition(":")
        for cast in (int, float, str):
            try:
                overrides[key] = cast(value)
                break
            except ValueError:
                continue
    return name, overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="random", choices=list(SCENARIOS))
    parser.add_argument("--seeds", default="0", help="comma-separated training / clustering seeds")
    parser.add_argument("--variant", action="append", default=[], help="name=key:value,... (repeatable)")
    parser.add_argument("--babel", action="store_true", help="also BABEL-style with the same seeds")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset, by = SCENARIOS[args.scenario]
    rna, atac = data.load(dataset)
    tr, va, te = data.split_cells(rna.obs, by=by, seed=0)
    rna, atac = data.subsample(rna, atac, n_cres=10000, n_genes=1500, select_on=np.concatenate([tr, va]))
    if len(te) > 1000:
        te = np.sort(np.random.default_rng(0).choice(te, 1000, replace=False))
    truth = atac[te]
    open_fraction = float((atac[tr].X > 0).mean())
    floor = baselines.Floor().fit(rna[tr], atac[tr]).frequency
    variants = [parse_variant(v) for v in args.variant] or [("base", {})]
    runs = [(name, overrides) for name, overrides in variants] + ([("BABEL-style", None)] if args.babel else [])
    rows = []
    for name, overrides in runs:
        for seed in map(int, args.seeds.split(",")):
            t0 = time.time()
            if overrides is None:  # notebook 01's BABEL-style: training cells, epoch selected on validation cells
                pred, timing = benchmark.run_rna2atac("BABEL-style", rna, atac, tr, va, te, seed=seed)
                extra = {"epochs": timing["epochs"], "best_epoch": timing["best_epoch"]}
            else:
                model, history = train.fit(rna, atac, "rna2atac", tr, va, profile="cpu", seed=seed, progress=False,
                                           **overrides)
                pred = predict.rna_to_atac(model, rna[te])
                extra = {"epochs": len(history), "best_epoch": int(history["val_score"].idxmax()) + 1}
            table = metrics.rna2atac_summary(pred[:, truth.var_names], truth, open_fraction=open_fraction, floor=floor,
                                             seed=seed, max_cluster_cells=800).set_index("metric")["value"]
            row = {"scenario": args.scenario, "variant": name, "seed": seed, "AMI": round(table["AMI"], 4),
                   "AUROC_gain": round(table["AUROC_gain"], 4), "probe": round(table["probe"], 4), **extra,
                   "seconds": round(time.time() - t0)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(pd.DataFrame(rows).groupby("variant", sort=False)[["AMI", "AUROC_gain", "probe"]].agg(["mean", "std"])
          .round(4).to_string())


if __name__ == "__main__":
    main()
