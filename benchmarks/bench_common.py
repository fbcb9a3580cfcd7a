"""Helpers shared by the two benchmark drivers (ours_driver.py in the project's .venv, ref_driver.py in
benchmarks/.env-reference). Only the standard library, numpy and torch: it must import in both environments.

Every driver task runs in a fresh process and ends by printing one line ``BENCH_RESULT {json}`` that
run_benchmarks.py parses; peak memory is that process's RSS high-water mark (``resource.getrusage``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

import numpy as np

N_HUMAN_CRES = 1_033_239
PAPER_RNA2ATAC = dict(dim=210, n_layers=6, n_heads=6, head_dim=128, ff_mult=4, gene_len=2048, cre_len=2048,
                      batch_size=16)


# ------------------------------------------------------------------------------------------------ which cisformer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _is_our_checkout(entry: str) -> bool:
    """Whether ``sys.path`` entry ``entry`` ('' = the working directory) holds this project's ``cisformer/``
    package (ours has ``cisformer/predict.py``; the reference has ``cisformer/M2Mmodel/``)."""
    root = os.path.abspath(entry or os.getcwd())
    pkg = os.path.join(root, "cisformer")
    return os.path.isfile(os.path.join(pkg, "predict.py")) and not os.path.isdir(os.path.join(pkg, "M2Mmodel"))


def use_reference_package() -> None:
    """Drop every path that would make ``import cisformer`` find a checkout of this project (the working
    directory when run from the repository root, a PYTHONPATH entry) instead of the reference package
    ``cisformer.M2Mmodel`` installed in benchmarks/.env-reference. Call before importing cisformer."""
    sys.path[:] = [p for p in sys.path if not _is_our_checkout(p)]


def use_this_checkout() -> None:
    """Put this repository first on ``sys.path``, so ``import cisformer`` is the code being benchmarked,
    whatever is installed or on PYTHONPATH. Call before importing cisformer."""
    sys.path[:] = [REPO] + [p for p in sys.path if os.path.abspath(p or os.getcwd()) != REPO]


# ------------------------------------------------------------------------------------------------ results.md

def section_markers(name: str) -> tuple[str, str]:
    return f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"


def other_sections(text: str) -> str:
    """The marked sections (written by scale.py, ...) of a results.md, so that a script rewriting the file keeps
    the others' sections."""
    import re
    return "".join(m.group(0) + "\n" for m in re.finditer(r"<!-- BEGIN (\S+) -->.*?<!-- END \1 -->", text, re.S))


def write_section(path, name: str, body: str) -> None:
    """Replace (or append) the marked section ``name`` of the markdown file ``path``."""
    begin, end = section_markers(name)
    text = open(path).read() if os.path.exists(path) else ""
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


# ------------------------------------------------------------------------------------------------ measuring

def peak_rss_mb() -> float:
    """RSS high-water mark of this process (Linux reports KiB), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def emit(result: dict) -> None:
    """Hand the result to run_benchmarks.py (last line of stdout)."""
    result.setdefault("peak_rss_mb", peak_rss_mb())
    print("BENCH_RESULT " + json.dumps(result), flush=True)


def set_threads(n: int) -> int:
    import torch
    torch.set_num_threads(n)
    return torch.get_num_threads()


def timed_steps(step, warmup: int, steps: int, batch_size: int, warmup_size: int = 2):
    """Run ``step(n)`` (a training step on the first ``n`` samples of the batch) ``warmup`` times on
    ``warmup_size`` samples (lazy initialisation: optimizer state, kernel selection), then ``steps`` times on the
    full batch. Returns (wall-clock seconds, CPU seconds of this process) of the timed steps; CPU time is the
    figure that other users of a shared machine disturb least."""
    for _ in range(warmup):
        step(min(warmup_size, batch_size))
    wall, cpu = [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        step(batch_size)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def median(xs):
    return statistics.median(xs) if xs else float("nan")


# ------------------------------------------------------------------------------------------------ FLOPs

def matmul_rate(threads: int, repeats: int = 5, m: int = 4096, dim: int = 210, heads: int = 6,
                head_dim: int = 128, n_keys: int = 2048, ff_mult: int = 4) -> dict:
    """fp32 matmul rate (FLOP/s) of the shapes the RNA->ATAC decoder runs, best of ``repeats`` each.

    Shapes (rows = ``m`` query tokens): Q projection (m x D)@(D x H*Dh), scores per head (m x Dh)@(Dh x Lk),
    weighted values per head (m x Lk)@(Lk x Dh), output projection, FFN up and down.
    """
    import torch
    set_threads(threads)
    inner = heads * head_dim
    shapes = {
        "q_proj": (m, dim, inner), "qk": (m, head_dim, n_keys), "av": (m, n_keys, head_dim),
        "out_proj": (m, inner, dim), "ffn_up": (m, dim, ff_mult * dim), "ffn_down": (m, ff_mult * dim, dim),
    }
    g = torch.Generator().manual_seed(0)
    rates = {}
    for name, (a, b, c) in shapes.items():
        x, y = torch.randn(a, b, generator=g), torch.randn(b, c, generator=g)
        out = torch.empty(a, c)
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.matmul(x, y, out=out)
            best = min(best, time.perf_counter() - t0)
        rates[name] = 2 * a * b * c / best
    return rates


def rna2atac_predict_flops(n_queries: int, n_keys: int, dim: int, n_layers: int, n_heads: int, head_dim: int,
                           ff_mult: int) -> dict:
    """Matmul FLOPs (2 per multiply-add) of RNA->ATAC prediction for one cell.

    CRE embedding: a table lookup (0 FLOPs). Once per cell and layer: K and V projections of the keys. Per query
    and layer: Q projection, scores against the keys, weighted sum of values, output projection, FFN.
    Per query: the 1-logit head. LayerNorm, softmax and activations are not matmuls and are not counted.
    """
    inner = n_heads * head_dim
    per_query_layer = {
        "q_proj": 2 * dim * inner,
        "qk": 2 * n_keys * inner,
        "av": 2 * n_keys * inner,
        "out_proj": 2 * inner * dim,
        "ffn": 2 * 2 * dim * ff_mult * dim,
    }
    per_query = n_layers * sum(per_query_layer.values()) + 2 * dim
    keys = n_layers * 2 * (2 * n_keys * dim * inner)
    parts = {k: v * n_layers * n_queries for k, v in per_query_layer.items()}
    parts["head"] = 2 * dim * n_queries
    parts["kv_proj"] = keys
    return {"total": per_query * n_queries + keys, "parts": parts}


# ------------------------------------------------------------------------------------------------ inputs

def n_reference_genes(genes_tsv: str) -> int:
    """Length of the reference's gene vocabulary (one gene per line of its human_genes.tsv)."""
    with open(genes_tsv) as f:
        return sum(1 for _ in f)


def synthetic_rna2atac_batch(batch_size: int, gene_len: int, cre_len: int, n_genes: int, n_cres: int,
                             seed: int = 0) -> dict:
    """One RNA->ATAC training batch as numpy arrays, identical for both implementations (no padding):

    gene_idx (B, Lg) distinct 0-based genes per cell, gene_value (B, Lg) counts 1..64 (geometric-ish, as
    scRNA counts are), cre_idx (B, Lp) 0-based CREs, target (B, Lp) 0/1 with half of the CREs open.
    """
    rng = np.random.default_rng(seed)
    gene_idx = np.stack([rng.choice(n_genes, gene_len, replace=False) for _ in range(batch_size)])
    gene_value = np.minimum(rng.geometric(0.45, size=(batch_size, gene_len)), 64)
    cre_idx = np.stack([rng.choice(n_cres, cre_len, replace=False) for _ in range(batch_size)])
    target = np.zeros((batch_size, cre_len), dtype=np.float32)
    target[:, : cre_len // 2] = 1.0
    return {"gene_idx": gene_idx.astype(np.int64), "gene_value": gene_value.astype(np.int64),
            "cre_idx": cre_idx.astype(np.int64), "target": target}


def synthetic_cell(n_expressed: int, n_genes: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """One cell's expressed genes (0-based, sorted) and counts, for the full-vocabulary prediction."""
    rng = np.random.default_rng(seed)
    genes = np.sort(rng.choice(n_genes, n_expressed, replace=False))
    counts = np.minimum(rng.geometric(0.45, size=n_expressed), 64).astype(np.float32)
    return genes.astype(np.int64), counts


def read_cre_bed(path: str):
    """(chrom array of str, start int64, end int64) of a BED / BED.gz vocabulary, in file order."""
    import gzip
    opener = gzip.open if path.endswith(".gz") else open
    chroms, starts, ends = [], [], []
    with opener(path, "rt") as f:
        for line in f:
            c, s, e = line.split("\t")[:3]
            chroms.append(c)
            starts.append(int(s))
            ends.append(int(e))
    return np.array(chroms), np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64)


def simulate_peak_matrix(cre_chrom, cre_start, cre_end, n_cells: int, n_peaks: int,
                         peaks_per_cell: tuple[int, int], seed: int = 0, frac_on_cre: float = 0.8) -> dict:
    """A cells x peaks count matrix (CSR parts) whose 500 bp peaks sit like real ATAC peaks: ``frac_on_cre``
    of them centred within 250 bp of a vocabulary CRE, the rest between CREs (most of those overlap none).

    Returns dict(indptr, indices, data, chrom, start, end) with peaks sorted by chrom/start and unique.
    """
    rng = np.random.default_rng(seed)
    n_on = int(n_peaks * frac_on_cre)
    pick = rng.choice(len(cre_start), n_on, replace=False)
    centre_on = (cre_start[pick] + cre_end[pick]) // 2 + rng.integers(-250, 251, n_on)
    pick_off = rng.choice(len(cre_start), n_peaks - n_on, replace=False)
    centre_off = cre_end[pick_off] + rng.integers(2_000, 20_000, n_peaks - n_on)
    chrom = np.concatenate([cre_chrom[pick], cre_chrom[pick_off]])
    centre = np.concatenate([centre_on, centre_off])
    start = np.maximum(centre - 250, 0)
    end = start + 500
    order = np.lexsort((start, chrom))
    chrom, start, end = chrom[order], start[order], end[order]
    keep = np.ones(len(start), bool)
    keep[1:] = (chrom[1:] != chrom[:-1]) | (start[1:] != start[:-1])
    chrom, start, end = chrom[keep], start[keep], end[keep]
    n_peaks = len(start)
    # per cell: a random subset of peaks, counts 1-4 (mostly 1-2, as in ATAC fragments per peak)
    sizes = rng.integers(peaks_per_cell[0], peaks_per_cell[1] + 1, n_cells)
    indptr = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(sizes, out=indptr[1:])
    indices = np.empty(indptr[-1], dtype=np.int32)
    popularity = rng.gamma(0.7, size=n_peaks)
    popularity /= popularity.sum()
    cdf = np.cumsum(popularity)
    for i in range(n_cells):
        idx = np.unique(np.searchsorted(cdf, rng.random(int(sizes[i] * 1.3)) * cdf[-1]))
        idx = np.minimum(idx, n_peaks - 1)
        if len(idx) > sizes[i]:
            idx = np.sort(rng.choice(idx, sizes[i], replace=False))
        indices[indptr[i]:indptr[i] + len(idx)] = idx
        sizes[i] = len(idx)
    # re-pack in case a cell got fewer peaks than asked for
    new_indptr = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(sizes, out=new_indptr[1:])
    packed = np.empty(new_indptr[-1], dtype=np.int32)
    for i in range(n_cells):
        packed[new_indptr[i]:new_indptr[i + 1]] = indices[indptr[i]:indptr[i] + sizes[i]]
    data = np.minimum(rng.geometric(0.6, size=len(packed)), 4).astype(np.float32)
    return {"indptr": new_indptr, "indices": packed, "data": data, "chrom": chrom, "start": start, "end": end}


def profile_ops(fn, top: int = 12) -> list[dict]:
    """Run ``fn()`` under torch.profiler; the ``top`` operators by self CPU time (name, ms, share, calls)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: -e.self_cpu_time_total)
    return [{"op": e.key, "self_ms": e.self_cpu_time_total / 1e3, "share": e.self_cpu_time_total / total,
             "calls": e.count} for e in events[:top]]


def fail(task: str, exc: BaseException) -> None:
    """Report a task that could not run (printed in the table as 'n/a: <reason>'); never a number."""
    emit({"task": task, "error": f"{type(exc).__name__}: {exc}"[:300]})
    sys.exit(0)


def driver_parser(doc: str, tasks) -> argparse.ArgumentParser:
    """The command line both drivers share; each adds its own options."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=list(tasks))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-cres", type=int, default=N_HUMAN_CRES)
    p.add_argument("--n-expressed", type=int, default=2048)
    p.add_argument("--cre-bed", default=None)
    p.add_argument("--peaks-npz", default=None)
    p.add_argument("--profile", action="store_true", help="also run once under torch.profiler (top operators)")
    p.add_argument("--profile-batch", type=int, default=2)
    return p


def run_task(tasks: dict, args) -> None:
    """Run ``tasks[args.task]`` and print its result line; a failure is reported as n/a, never as a number."""
    try:
        result = tasks[args.task](args)
    except Exception as exc:
        fail(args.task, exc)
    emit(result)
