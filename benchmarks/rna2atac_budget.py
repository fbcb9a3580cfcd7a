#!/usr/bin/env python3
"""Does more training budget lift Cisformer's RNA -> ATAC above the floor? One scenario, measured on demand.

The RNA -> ATAC benchmark notebook trains Cisformer for a couple of epochs on 1,500 SNARE-seq cells (its cpu
profile). This script asks what a larger budget buys on the same data and split rule (random 80/20 split of
SNARE-seq, the most frequently open CREs, the most variable genes): it trains Cisformer with the given sizes,
prints the loss per epoch, and scores its predictions on the test cells next to the floor, kNN transfer and the
cell-type-mean reference with the benchmark's own metric code (``cisformer.metrics.rna2atac_summary``, shared
top-k rule). Never run by the tests or CI.

    .venv/bin/python benchmarks/rna2atac_budget.py                          # all cells, 10,000 CREs, ~10 min (CPU)
    .venv/bin/python benchmarks/rna2atac_budget.py --cells 1500 --epochs 4  # the notebook's cell count
    .venv/bin/python benchmarks/rna2atac_budget.py --profile paper --device cuda --epochs 30   # on a GPU

Prints one table (method x metric) and the training history.
"""
from __future__ import annotations

import argparse
import sys
import time

import pandas as pd
import torch

from cisformer import baselines, data, metrics, predict, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=None, help="cells drawn (default: all 10,309)")
    parser.add_argument("--cres", type=int, default=10000, help="most frequently open CREs kept")
    parser.add_argument("--genes", type=int, default=1500, help="most variable genes kept")
    parser.add_argument("--epochs", type=int, default=12, help="maximum Cisformer epochs")
    parser.add_argument("--patience", type=int, default=4, help="epochs without validation gain before stopping")
    parser.add_argument("--profile", default="cpu", choices=["quick", "cpu", "paper"], help="Cisformer sizes")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rna, atac = data.subsample(*data.load("snareseq"), args.cells, args.cres, args.genes, seed=args.seed)
    train_cells, val_cells, test_cells = data.split_cells(rna.obs, by="random", seed=args.seed)
    truth = atac[test_cells]
    open_fraction = float((atac[train_cells].X > 0).mean())
    print(f"SNARE-seq random split: {rna.n_vars} genes, {atac.n_vars} CREs, train {len(train_cells)} / "
          f"val {len(val_cells)} / test {len(test_cells)} cells", flush=True)

    def score(pred) -> pd.Series:
        table = metrics.rna2atac_summary(pred[:, truth.var_names], truth, rule="topk", open_fraction=open_fraction,
                                         seed=args.seed, max_cluster_cells=800)
        return table.set_index("metric")["value"]

    rows = {"measured": score(truth)}
    for method in (baselines.Floor(), baselines.KNNTransfer(), baselines.CellTypeMean()):
        fitted = method.fit(rna[train_cells], atac[train_cells], seed=args.seed)
        rows[method.name] = score(fitted.predict_atac(rna[test_cells]))

    start = time.perf_counter()
    model, history = train.fit(rna, atac, "rna2atac", train_cells, val_cells, profile=args.profile, seed=args.seed,
                               device=args.device, epochs=args.epochs, patience=args.patience,
                               progress=sys.stderr.isatty())  # a progress bar only on a terminal
    train_s = time.perf_counter() - start
    rows["cisformer"] = score(predict.rna_to_atac(model, rna[test_cells]))

    columns = ["AMI", "NMI", "AUROC", "AUPRC", "precision", "recall", "pseudobulk_pearson"]
    print(pd.DataFrame(rows).T[columns].round(3).to_string())
    print(f"\nCisformer training: {len(history)} epochs, {train_s:.0f} s "
          f"(best validation loss at epoch {int(history['val_loss'].idxmin()) + 1})")
    print(history.round(4).to_string(index=False))


if __name__ == "__main__":
    main()
