#!/usr/bin/env python3
"""The RNA -> ATAC evidence ladder on one scenario: does the model learn cell-specific accessibility, and if not,
which rung fails? Measured on demand, never by the tests or CI.

Rungs, each scored by the benchmark's own metric code (``cisformer.metrics.rna2atac_summary``: per-cell AUROC gain
over the floor, within/across-cell spread, cell-type probe, top-k clustering AMI) on the same test cells:

1. floor (each CRE's training open frequency) and the cell-type mean (reads the test labels): how much cell-type
   signal there is to learn at all;
2. oracle: Cisformer given the cell type as its only input (``data.label_tokens``) - can the architecture learn
   CRE x cell-type structure when handed the answer?
3. the paper's architecture and this package's default model (``arch="cisformer"``), at the budget given;
4. the default model without its attention path (how much the all-CRE factorised path carries);
5. peers with the same base rate: BABEL-style, kNN (shrunk towards the floor).

    .venv/bin/python benchmarks/rna2atac_ladder.py                                # SNARE-seq random split, ~15 min
    .venv/bin/python benchmarks/rna2atac_ladder.py --split batch --paper-epochs 4
    .venv/bin/python benchmarks/rna2atac_ladder.py --profile paper --device cuda  # on a GPU

Prints one table (rung x metric) and the default model's training history.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from cisformer import data, metrics
from cisformer.peers import baselines, benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="snareseq", help="shipped paired data set (default snareseq)")
    parser.add_argument("--split", default="random", choices=["random", "cell_type", "batch", "predefined"])
    parser.add_argument("--cells", type=int, default=None, help="cells drawn (default: all)")
    parser.add_argument("--cres", type=int, default=10000, help="most frequently open CREs kept (training cells)")
    parser.add_argument("--genes", type=int, default=1500, help="most variable genes kept (training cells)")
    parser.add_argument("--test-cells", type=int, default=1000, help="test cells scored")
    parser.add_argument("--paper-epochs", type=int, default=2, help="epochs of the paper's architecture")
    parser.add_argument("--profile", default="cpu", choices=["quick", "cpu", "paper"])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rna, atac = data.subsample(*data.load(args.dataset), args.cells, seed=args.seed)
    tr, va, te = data.split_cells(rna.obs, by=args.split, seed=args.seed)
    rna, atac = data.subsample(rna, atac, n_cres=args.cres, n_genes=args.genes, select_on=np.concatenate([tr, va]))
    if args.test_cells and len(te) > args.test_cells:
        te = np.sort(np.random.default_rng(args.seed).choice(te, args.test_cells, replace=False))
    truth = atac[te]
    open_fraction = float((atac[tr].X > 0).mean())
    floor = baselines.Floor().fit(rna[tr], atac[tr]).frequency
    print(f"{args.dataset} {args.split} split: {rna.n_vars} genes, {atac.n_vars} CREs, train {len(tr)} / val {len(va)}"
          f" / test scored {len(te)} cells", flush=True)

    rungs = ["floor", "cell-type mean", "cisformer (oracle: cell type as input)", "cisformer (paper architecture)",
             "cisformer", benchmark.ABLATED, "BABEL-style", "kNN"]
    rows = {}
    for method in rungs:
        start = time.perf_counter()
        epochs = args.paper_epochs if "paper" in method else None
        pred, timing = benchmark.run_rna2atac(method, rna, atac, tr, va, te, seed=args.seed, profile=args.profile,
                                              device=args.device, epochs=epochs)
        table = metrics.rna2atac_summary(pred[:, truth.var_names], truth, open_fraction=open_fraction, floor=floor,
                                         seed=args.seed, max_cluster_cells=800).set_index("metric")["value"]
        rows[method] = table.assign(train_s=timing["train_s"])
        print(f"{method}: AUROC gain {table['AUROC_gain']:+.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    rows["measured RNA (input)"] = pd.Series({"probe": metrics.celltype_probe(data.true_expression(rna[te]),
                                                                              truth.obs["cell_type"], seed=args.seed)})
    columns = ["AUROC_gain", "AUROC", "within_sd", "across_sd", "probe", "AMI", "AUPRC", "pseudobulk_pearson", "train_s"]
    print(pd.DataFrame(rows).T.reindex(columns=columns).round(4).to_string())


if __name__ == "__main__":
    main()
