"""Benchmark driver for OUR implementation (the ``cisformer`` package of this repo), run with the project's
``.venv/bin/python`` by run_benchmarks.py, one task per fresh process.

Tasks: ``matmul`` (this machine's fp32 matmul rate), ``train`` (paper-profile RNA->ATAC training step),
``predict`` (full-vocabulary RNA->ATAC prediction of one cell through ``cisformer.predict.rna_to_atac``),
``simulate_peaks`` (the 10,000-cell peak matrix, untimed input), ``map`` (``cisformer.data.vocab.map_peaks_to_cres``)
and ``fit_cpu`` (``cisformer.train.fit`` throughput at the cpu profile). Prints ``BENCH_RESULT {json}``.
A task whose API is not in the package yet reports ``error`` (shown as n/a), never a number.
"""
from __future__ import annotations

import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402
bc.use_this_checkout()  # see bench_common: which cisformer package is imported

warnings.filterwarnings("ignore")


def paper_model(n_genes: int, n_cres: int, seed: int = 0):
    import torch
    from cisformer.model import Cisformer, CisformerConfig
    torch.manual_seed(seed)
    cfg = CisformerConfig.from_profile("rna2atac", "paper", n_genes=n_genes, n_cres=n_cres)
    return Cisformer(cfg), cfg


def shape_info(cfg, batch_size=None) -> dict:
    info = dict(dim=cfg.dim, n_layers=cfg.n_layers, n_heads=cfg.n_heads, head_dim=cfg.head_dim,
                ff_mult=cfg.ff_mult, gene_len=cfg.gene_len, cre_len=cfg.cre_len, n_genes=cfg.n_genes)
    if batch_size is not None:
        info["batch_size"] = batch_size
    return info


def task_matmul(args) -> dict:
    threads = bc.set_threads(args.threads)
    p = bc.PAPER_RNA2ATAC
    rates = bc.matmul_rate(threads, repeats=args.steps, dim=p["dim"], heads=p["n_heads"], head_dim=p["head_dim"],
                           n_keys=p["gene_len"], ff_mult=p["ff_mult"])
    return {"task": "matmul", "impl": "machine", "threads": threads, "rates": rates}


def task_train(args) -> dict:
    """One optimisation step exactly as the body of cisformer.train.fit's loop (Accelerate is a no-op on one
    CPU process): forward, model.loss, zero_grad, backward, clip_grad_norm_(1), Adam step."""
    import torch
    from cisformer.train import TrainConfig

    threads = bc.set_threads(args.threads)
    n_genes = args.n_genes
    model, cfg = paper_model(n_genes, bc.N_HUMAN_CRES, args.seed)
    tcfg = TrainConfig.from_profile("rna2atac", "paper")
    b = bc.synthetic_rna2atac_batch(tcfg.batch_size, cfg.gene_len, cfg.cre_len, n_genes, bc.N_HUMAN_CRES,
                                    seed=args.seed)
    batch = {k: torch.from_numpy(v) for k, v in b.items()}
    batch["gene_pad"] = torch.zeros_like(batch["gene_idx"], dtype=torch.bool)
    batch["cre_pad"] = torch.zeros_like(batch["cre_idx"], dtype=torch.bool)
    optimizer = torch.optim.Adam(model.parameters(), lr=tcfg.lr)
    model.train()

    def step(n):
        part = {k: v[:n] for k, v in batch.items()}
        logits = model(part)
        loss = model.loss(logits, part)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        optimizer.step()
        return loss.item()

    times, cpu = bc.timed_steps(step, args.warmup, args.steps, tcfg.batch_size)
    res = {"task": "train", "impl": "ours", "threads": threads, "step_s": times, "step_cpu_s": cpu,
           "samples_per_s": tcfg.batch_size / bc.median(times) if times else None,
           "shapes": shape_info(cfg, tcfg.batch_size)}
    if args.profile:
        res["profile"] = bc.profile_ops(lambda: step(args.profile_batch))
    return res


def task_predict(args) -> dict:
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp
    from cisformer.predict import rna_to_atac

    threads = bc.set_threads(args.threads)
    n_genes, n_cres = args.n_genes, args.n_cres
    model, cfg = paper_model(n_genes, n_cres, args.seed)
    model.eval()
    # the vocabulary a trained model carries (names + coordinates), here the first n_cres of the human cCREs
    chrom, start, end = bc.read_cre_bed(args.cre_bed)
    chrom, start, end = chrom[:n_cres], start[:n_cres], end[:n_cres]
    model.gene_names = [f"gene{i}" for i in range(n_genes)]
    model.cre_names = [f"{c}:{s}-{e}" for c, s, e in zip(chrom, start, end)]
    model.cre_coords = {"chrom": list(chrom), "start": start.tolist(), "end": end.tolist()}
    genes, counts = bc.synthetic_cell(args.n_expressed, n_genes, seed=args.seed)
    X = sp.csr_matrix((counts, genes, [0, len(genes)]), shape=(1, n_genes))
    rna = ad.AnnData(X, obs=pd.DataFrame(index=["cell0"]), var=pd.DataFrame(index=model.gene_names))
    rss_before = bc.current_rss_mb()
    kwargs = {} if args.chunk is None else {"chunk": args.chunk}
    t0, c0 = time.perf_counter(), time.process_time()
    out = rna_to_atac(model, rna, **kwargs)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    assert out.shape == (1, n_cres) and np.isfinite(out.X).all()
    res = {"task": "predict", "impl": "ours", "threads": threads, "n_cres": n_cres, "seconds": seconds,
           "cpu_seconds": cpu_seconds, "rss_before_mb": rss_before, "peak_rss_mb": bc.peak_rss_mb(), "n_keys": min(args.n_expressed,
           cfg.gene_len), "shapes": shape_info(cfg)}
    if args.profile:
        res["profile"] = bc.profile_ops(lambda: rna_to_atac(model, rna, **kwargs))
    return res


def task_simulate_peaks(args) -> dict:
    import numpy as np
    chrom, start, end = bc.read_cre_bed(args.cre_bed)
    sim = bc.simulate_peak_matrix(chrom, start, end, args.n_cells, args.n_peaks,
                                  (args.peaks_min, args.peaks_max), seed=args.seed)
    np.savez(args.out, **sim)
    return {"task": "simulate_peaks", "n_cells": args.n_cells, "n_peaks": int(len(sim["start"])),
            "nnz": int(len(sim["indices"]))}


def task_map(args) -> dict:
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp
    from cisformer.data import vocab

    sim = np.load(args.peaks_npz)
    n_peaks = len(sim["start"])
    X = sp.csr_matrix((sim["data"], sim["indices"], sim["indptr"]), shape=(len(sim["indptr"]) - 1, n_peaks))
    names = [f"{c}:{s}-{e}" for c, s, e in zip(sim["chrom"], sim["start"], sim["end"])]
    var = pd.DataFrame({"chrom": sim["chrom"].astype(str), "start": sim["start"], "end": sim["end"]}, index=names)
    atac = ad.AnnData(X, obs=pd.DataFrame(index=[f"cell{i}" for i in range(X.shape[0])]), var=var)
    t0 = time.perf_counter()
    try:
        from cisformer import data
        cres = data.load_cre_vocabulary("human")
        source = "cisformer.data.load_cre_vocabulary('human')"
    except Exception:  # loader not there yet: read the shipped resource ourselves
        c, s, e = bc.read_cre_bed(args.cre_bed)
        cres = pd.DataFrame({"chrom": c, "start": s, "end": e})
        source = args.cre_bed
    load_seconds = time.perf_counter() - t0
    rss_before = bc.current_rss_mb()
    t0 = time.perf_counter()
    mapped = vocab.map_peaks_to_cres(atac, cres)
    seconds = time.perf_counter() - t0
    return {"task": "map", "impl": "ours", "n_cells": int(X.shape[0]), "n_peaks": n_peaks, "nnz": int(X.nnz),
            "n_cres": int(len(cres)), "out_nnz": int(mapped.X.nnz), "seconds": seconds,
            "load_seconds": load_seconds, "vocabulary": source, "rss_before_mb": rss_before,
            "peak_rss_mb": bc.peak_rss_mb()}


def task_fit_cpu(args) -> dict:
    """cisformer.train.fit at the cpu profile on simulated paired data; samples/s from its own history."""
    import numpy as np
    from cisformer.data import simulate
    from cisformer.train import fit

    threads = bc.set_threads(args.threads)
    rna, atac, _ = simulate.paired(n_cells=args.n_cells, n_genes=args.sim_genes, n_cres=args.sim_cres,
                                   seed=args.seed)
    cells = np.arange(rna.n_obs)
    n_val = max(1, rna.n_obs // 10)
    model, history = fit(rna, atac, args.direction, cells[n_val:], cells[:n_val], profile="cpu", seed=args.seed,
                         checkpoint_dir=None, device="cpu", epochs=args.epochs)
    sps = history["samples_per_s"].tolist()
    return {"task": "fit_cpu", "impl": "ours", "direction": args.direction, "threads": threads,
            "samples_per_s_epochs": sps, "samples_per_s": bc.median(sps[1:] if len(sps) > 1 else sps),
            "n_cells": int(rna.n_obs), "n_genes": int(rna.n_vars), "n_cres": int(atac.n_vars),
            "shapes": shape_info(model.config)}


def main():
    tasks = {"matmul": task_matmul, "train": task_train, "predict": task_predict,
             "simulate_peaks": task_simulate_peaks, "map": task_map, "fit_cpu": task_fit_cpu}
    p = bc.driver_parser(__doc__, tasks)
    p.add_argument("--n-genes", type=int, default=38244)
    p.add_argument("--chunk", type=int, default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--n-cells", type=int, default=10_000)
    p.add_argument("--n-peaks", type=int, default=80_000)
    p.add_argument("--peaks-min", type=int, default=5_000)
    p.add_argument("--peaks-max", type=int, default=10_000)
    p.add_argument("--direction", default="rna2atac")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--sim-genes", type=int, default=2000)
    p.add_argument("--sim-cres", type=int, default=20000)
    bc.run_task(tasks, p.parse_args())


if __name__ == "__main__":
    main()
