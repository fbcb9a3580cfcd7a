#!/usr/bin/env python3
"""Scale benchmark: paper-size data in bounded memory. Run on demand (never by the tests or CI):

    OMP_NUM_THREADS=1 python benchmarks/scale.py            # ~40 min on 2 cores; prints the table
    python benchmarks/scale.py --tasks predict --predict-cells 10,100

Writes ``benchmarks/scale.csv`` (columns ``task,n_cells,n_cres,seconds,peak_rss_gb``) and prints a table with
the details. Every row runs in a fresh subprocess (``scale.py --row TASK N``), so its peak RSS (``ru_maxrss`` = ``VmHWM``, the
resident-set high-water mark of that process: inputs, model and work, everything) is its own.

Rows
----
``map``
    ``cisformer.data.vocab.map_peaks_to_cres`` of N simulated cells onto the 1,033,239 hg38 cCREs the repository ships
    (``cisformer.data.load_cre_vocabulary("human")``). The peak set is 150,000 500-bp peaks placed like real
    ATAC peaks (``bench_common.simulate_peak_matrix``: 80 % within 250 bp of a cCRE, the rest between cCREs); each
    cell has 3,000-5,000 of them (uniform), counts 1-4, float32 CSR as an AnnData holds them. ``seconds`` times
    the mapping only. The input is simulated first (untimed) and written block by block to an ``.h5ad``, which
    is read backed; the output is written to an ``.h5ad`` chunk by chunk (``map_peaks_to_cres(..., out=)``), so
    neither is ever whole in memory.
``predict``
    ``cisformer.predict.rna_to_atac(out=...)``: full-vocabulary prediction (1,033,239 CREs) of N simulated
    cells (2,000 genes, ~800 expressed per cell), streamed to an ``.h5ad`` with the defaults (float16 P(open)
    dense in ``X`` plus the sparse binary layer by the paper's 0.5 rule, no compression), with a small untrained
    but complete rna2atac model (``arch="cisformer"``, dim 16, 1 head, 64 gene keys, rank 16, decoder width 32),
    carrying what ``train.fit`` attaches: gene and CRE names, CRE coordinates, base-rate logits, the encoder's
    input scaling and the open fraction. ``seconds`` times the call (writing included). The table states
    seconds per cell as a multiple of two compute floors measured in the same process on one cell: the model's
    forward pass over every CRE (``encode_keys`` + ``decode`` in the same chunks, nothing else), and the final
    matmul alone (cell features x the 1,033,239 x 32 output factors).
``train_epoch``
    One epoch of ``cisformer.train.fit`` (rna2atac, the default model, cpu profile, one process) on N simulated
    cells read from backed ``.h5ad`` files (``anndata.read_h5ad(..., backed="r")``): 2,000 genes (~800 expressed
    per cell, as ``predict``) and the 10,000-CRE vocabulary of the Fig 2 benchmark (each CRE open at its own rate,
    beta(0.5, 60), ~0.8 % of CREs per cell, SNARE-seq-like); 90 % of the cells train, 10 % validate (up to 256 are
    scored). The files are written block by block first (untimed). ``seconds`` is the epoch's wall-clock from the
    history (validation included); the notes give training samples per second and the whole ``fit`` call (its
    streamed statistics, the epoch and the state smoothing's choice).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import bench_common as bc  # noqa: E402

bc.use_this_checkout()

N_GENES = 2000
N_PEAKS = 150_000
PEAKS_PER_CELL = (3000, 5000)
MODEL = dict(dim=16, n_layers=1, n_heads=1, head_dim=16, gene_len=64, rank=16, hidden=64, decoder_width=32,
             dropout=0.0, input_dropout=0.0)
COLUMNS = ["task", "n_cells", "n_cres", "seconds", "peak_rss_gb"]


def peak_rss_gb() -> float:
    """The RSS high-water mark of this process (``bench_common.peak_rss_mb``), in GB (10^9 bytes)."""
    return bc.peak_rss_mb() * 2 ** 20 / 1e9


# ------------------------------------------------------------------------------------------------ inputs

def write_simulated_peaks(cres, n_cells: int, path, seed: int = 0) -> dict:
    """Write an ``.h5ad`` of cells x peaks (float32 CSR counts) block by block, never whole in memory: the peak
    set of bench_common.simulate_peak_matrix, then per cell 3,000-5,000 distinct peaks drawn uniformly, counts
    1-4, stored with lzf compression. Returns ``{"n_peaks", "nnz"}``."""
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp
    from cisformer.data.h5stream import StreamedH5ad

    chrom = cres["chrom"].to_numpy().astype(str)
    peaks = bc.simulate_peak_matrix(chrom, cres["start"].to_numpy(), cres["end"].to_numpy(), 0, N_PEAKS,
                                    PEAKS_PER_CELL, seed=seed)
    n_peaks = len(peaks["start"])
    var = pd.DataFrame({"chrom": peaks["chrom"], "start": peaks["start"], "end": peaks["end"]})
    var.index = [f"{c}:{s}-{e}" for c, s, e in zip(var["chrom"], var["start"], var["end"])]
    obs = pd.DataFrame(index=[f"cell{i}" for i in range(n_cells)])
    # lzf: the 1,000,000-cell input is ~32 GB uncompressed; compressed, it and the mapped output fit a 64 GB disk
    writer = StreamedH5ad.create(path, n_cells, n_peaks, obs, var, {}, {"X": ("csr", np.float32)}, {},
                                 compression="lzf")
    rng = np.random.default_rng(seed + 1)
    nnz, step = 0, 4000
    for lo in range(0, n_cells, step):
        size = rng.integers(PEAKS_PER_CELL[0], PEAKS_PER_CELL[1] + 1, min(step, n_cells - lo))
        draw = rng.integers(0, n_peaks, (len(size), PEAKS_PER_CELL[1]), dtype=np.int32)
        draw[np.arange(PEAKS_PER_CELL[1])[None, :] >= size[:, None]] = n_peaks  # beyond the cell's size
        draw.sort(axis=1)
        keep = draw < n_peaks
        keep[:, 1:] &= draw[:, 1:] != draw[:, :-1]  # distinct peaks per cell
        indices = draw[keep]
        indptr = np.concatenate([[0], np.cumsum(keep.sum(1))])
        data = np.minimum(rng.geometric(0.6, size=len(indices)), 4).astype(np.float32)
        writer.write_block(lo, {"X": sp.csr_matrix((data, indices, indptr), shape=(len(size), n_peaks))})
        nnz += len(indices)
    writer.finish()
    return {"n_peaks": n_peaks, "nnz": nnz}


def simulated_rna(n_cells: int, seed: int = 0):
    """AnnData cells x 2,000 genes of raw counts, ~800 expressed genes per cell."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_cells):
        genes = np.sort(rng.choice(N_GENES, int(rng.integers(600, 1000)), replace=False))
        rows.append(genes)
    indptr = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=indptr[1:])
    indices = np.concatenate(rows).astype(np.int32)
    data = np.minimum(rng.geometric(0.4, size=len(indices)), 200).astype(np.float32)
    X = sp.csr_matrix((data, indices, indptr), shape=(n_cells, N_GENES))
    return ad.AnnData(X, obs=pd.DataFrame(index=[f"cell{i}" for i in range(n_cells)]),
                      var=pd.DataFrame(index=[f"gene{i}" for i in range(N_GENES)]))


def small_model(cres, seed: int = 0):
    """An untrained rna2atac Cisformer over the whole vocabulary, carrying what train.fit attaches."""
    import numpy as np
    import torch
    from cisformer.data import log_normalized
    from cisformer.model import Cisformer, CisformerConfig

    torch.manual_seed(seed)
    model = Cisformer(CisformerConfig(direction="rna2atac", n_genes=N_GENES, n_cres=len(cres), **MODEL))
    model.gene_names = [f"gene{i}" for i in range(N_GENES)]
    chrom, start, end = cres["chrom"].astype(str), cres["start"].astype(np.int64), cres["end"].astype(np.int64)
    model.cre_names = [f"{c}:{s}-{e}" for c, s, e in zip(chrom, start, end)]
    model.cre_coords = {"chrom": chrom.tolist(), "start": start.tolist(), "end": end.tolist()}
    rng = np.random.default_rng(seed)
    rate = rng.beta(0.5, 15.0, len(cres))  # per-CRE open frequency, mean ~3 %
    model.open_fraction = float(rate.mean())
    model.query_prior.copy_(torch.from_numpy(np.log(rate + 1e-4) - np.log1p(-rate + 1e-4)).float())
    log_expr = log_normalized(simulated_rna(200, seed + 1).X)
    mean = np.asarray(log_expr.mean(axis=0)).ravel()
    sd = np.sqrt(np.maximum(np.asarray(log_expr.multiply(log_expr).mean(axis=0)).ravel() - mean ** 2, 0.0))
    model.encoder.input_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
    model.encoder.input_std.copy_(torch.as_tensor(sd + 1e-3, dtype=torch.float32))
    return model.eval()


# ------------------------------------------------------------------------------------------------ rows

def row_map(n_cells: int) -> dict:
    import anndata as ad
    from cisformer import data
    from cisformer.data import vocab

    cres = data.load_cre_vocabulary("human")
    with tempfile.TemporaryDirectory(dir=os.environ.get("SCALE_TMP")) as tmp:
        made = write_simulated_peaks(cres, n_cells, Path(tmp) / "peaks.h5ad")
        atac = ad.read_h5ad(Path(tmp) / "peaks.h5ad", backed="r")
        t0 = time.perf_counter()
        out = vocab.map_peaks_to_cres(atac, cres, out=Path(tmp) / "mapped.h5ad")
        seconds = time.perf_counter() - t0
        shape, nnz_out = out.shape, int(out.file["X/indptr"][-1])
        out.file.close()
        atac.file.close()
    assert shape == (n_cells, len(cres))
    return {"task": "map", "n_cells": n_cells, "n_cres": len(cres), "seconds": seconds,
            "peak_rss_gb": peak_rss_gb(), "peaks_per_cell": made["nnz"] / n_cells, "n_peaks": made["n_peaks"],
            "cres_per_cell": nnz_out / n_cells}


def compute_floors(model, rna) -> dict:
    """Seconds for one cell: the model's forward over every CRE (keys + all chunks), and the final matmul."""
    import numpy as np
    import torch
    from cisformer.predict import _batches, align_features
    from cisformer.sampler import CellKeys

    X = align_features(rna[:1], model.gene_names, "genes")
    dataset = CellKeys(X, model.config, 0)
    _, batch = next(_batches(model, dataset, 1, np.diff(dataset.X.indptr)))
    queries = torch.arange(model.config.n_cres)
    chunk = 8192

    def forward():
        keys = model.encode_keys(batch)
        for lo in range(0, len(queries), chunk):
            model.decode(queries[lo:lo + chunk][None], keys)

    with torch.no_grad():
        z = model.encoder(batch)
        h = model.cell_features(z)
        u = model.out_factor.weight.view(-1, model.config.decoder_width)

        def matmul():
            return h @ u.T

        out = {}
        for name, fn in (("forward", forward), ("matmul", matmul)):
            fn()
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            out[name] = min(times)
    return out


def row_predict(n_cells: int, threads: int) -> dict:
    import torch
    from cisformer import data, predict

    torch.set_num_threads(threads)
    cres = data.load_cre_vocabulary("human")
    model = small_model(cres)
    del cres
    rna = simulated_rna(n_cells, seed=2)
    with tempfile.TemporaryDirectory(dir=os.environ.get("SCALE_TMP")) as tmp:
        path = Path(tmp) / "pred.h5ad"
        t0 = time.perf_counter()
        out = predict.rna_to_atac(model, rna, out=path)
        seconds = time.perf_counter() - t0
        shape, nnz = out.shape, int(out.file["layers/binary/indptr"][-1])
        out.file.close()
        size_gb = path.stat().st_size / 1e9
    rss = peak_rss_gb()  # before the floors: they are not part of the prediction
    floors = compute_floors(model, rna)
    assert shape == (n_cells, model.config.n_cres)
    return {"task": "predict", "n_cells": n_cells, "n_cres": model.config.n_cres, "seconds": seconds,
            "peak_rss_gb": rss, "file_gb": size_gb, "binary_per_cell": nnz / n_cells,
            "floor_forward_s": floors["forward"], "floor_matmul_s": floors["matmul"], "threads": threads,
            "block_cells": max(1, (1 << 25) // model.config.n_cres)}


# ------------------------------------------------------------------------------------------------ driver

TRAIN_CRES = 10_000


def write_simulated_pair(n_cells: int, folder, seed: int = 2) -> None:
    """Write ``rna.h5ad`` (cells x 2,000 genes, raw counts, as :func:`simulated_rna`) and ``atac.h5ad`` (cells x
    the 10,000-CRE vocabulary, each CRE open at its own rate, beta(0.5, 60)) to ``folder`` block by block, never
    whole in memory."""
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp
    from cisformer.data.h5stream import StreamedH5ad

    folder = Path(folder)
    obs = pd.DataFrame(index=[f"cell{i}" for i in range(n_cells)])
    rna = StreamedH5ad.create(folder / "rna.h5ad", n_cells, N_GENES, obs,
                              pd.DataFrame(index=[f"gene{i}" for i in range(N_GENES)]), {}, {"X": ("csr", np.float32)}, {})
    atac = StreamedH5ad.create(folder / "atac.h5ad", n_cells, TRAIN_CRES, obs,
                               pd.DataFrame(index=[f"cre{i}" for i in range(TRAIN_CRES)]), {}, {"X": ("csr", np.float32)},
                               {})
    rng = np.random.default_rng(seed)
    rate = rng.beta(0.5, 60.0, TRAIN_CRES).astype(np.float32)
    step = 2000
    for lo in range(0, n_cells, step):
        n = min(step, n_cells - lo)
        genes = [np.sort(rng.choice(N_GENES, int(rng.integers(600, 1000)), replace=False)) for _ in range(n)]
        indptr = np.concatenate([[0], np.cumsum([len(g) for g in genes])])
        counts = np.minimum(rng.geometric(0.4, size=indptr[-1]), 200).astype(np.float32)
        rna.write_block(lo, {"X": sp.csr_matrix((counts, np.concatenate(genes), indptr), shape=(n, N_GENES))})
        atac.write_block(lo, {"X": sp.csr_matrix((rng.random((n, TRAIN_CRES), dtype=np.float32) < rate)
                                                 .astype(np.float32))})
    rna.finish()
    atac.finish()


def row_train_epoch(n_cells: int, threads: int) -> dict:
    import anndata as ad
    import numpy as np
    import torch
    from cisformer import train

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(dir=os.environ.get("SCALE_TMP")) as tmp:
        write_simulated_pair(n_cells, tmp)
        rna = ad.read_h5ad(Path(tmp) / "rna.h5ad", backed="r")
        atac = ad.read_h5ad(Path(tmp) / "atac.h5ad", backed="r")
        cells = np.random.default_rng(3).permutation(n_cells)
        n_train = int(0.9 * n_cells)
        t0 = time.perf_counter()
        _, history = train.fit(rna, atac, "rna2atac", cells[:n_train], cells[n_train:], profile="cpu", seed=0,
                               epochs=1, progress=False, device="cpu")
        fit_seconds = time.perf_counter() - t0
        rna.file.close()
        atac.file.close()
    row = history.iloc[0]
    return {"task": "train_epoch", "n_cells": n_cells, "n_cres": TRAIN_CRES, "seconds": float(row["seconds"]),
            "peak_rss_gb": peak_rss_gb(), "samples": int(row["samples"]), "fit_s": fit_seconds,
            "samples_per_s": float(row["samples_per_s"]), "threads": threads}


def run_row(task: str, n: int, threads: int, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--row", task, str(n), "--threads", str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("SCALE_ROW "):
            res = json.loads(line[len("SCALE_ROW "):])
            res["process_s"] = time.perf_counter() - t0
            return res
    raise RuntimeError(f"{task} {n}: exit {proc.returncode}: {proc.stderr.strip()[-2000:]}")


def table(rows: list[dict]) -> str:
    lines = ["| task | n_cells | n_cres | seconds | peak RSS (GB) | notes |", "|---|---:|---:|---:|---:|---|"]
    smallest = {}
    for r in rows:
        smallest.setdefault(r["task"], r["peak_rss_gb"])
        if r["task"] == "map":
            note = (f"{r['peaks_per_cell']:,.0f} peaks/cell of {r['n_peaks']:,} -> {r['cres_per_cell']:,.0f} "
                    f"cCREs/cell; {r['n_cells'] / r['seconds']:,.0f} cells/s")
        elif r["task"] == "train_epoch":
            note = (f"from backed .h5ad; {r['samples']:,} training samples, {r['samples_per_s']:,.0f} samples/s "
                    f"(validation included in seconds); fit() {r['fit_s']:.0f} s in all; {r['threads']} thread(s)")
        else:
            per_cell = r["seconds"] / r["n_cells"]
            note = (f"{per_cell:.3f} s/cell = {per_cell / r['floor_forward_s']:.2f}x the model's forward over all "
                    f"CREs ({r['floor_forward_s']:.3f} s), {per_cell / r['floor_matmul_s']:.0f}x the final matmul "
                    f"({r['floor_matmul_s'] * 1e3:.1f} ms); RSS {r['peak_rss_gb'] / smallest['predict']:.2f}x the "
                    f"smallest; file {r['file_gb']:.2f} GB; {r['threads']} thread(s)")
        lines.append(f"| {r['task']} | {r['n_cells']:,} | {r['n_cres']:,} | {r['seconds']:.1f} | "
                     f"{r['peak_rss_gb']:.2f} | {note} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="map,predict,train_epoch",
                   help="comma-separated: map,predict,train_epoch (default all)")
    p.add_argument("--map-cells", default="10000,50000,150000,1000000")
    p.add_argument("--train_epoch-cells", dest="train_epoch_cells", default="10000,50000,150000")
    p.add_argument("--predict-cells", default="10,100,1000")
    p.add_argument("--threads", type=int, default=1, help="torch / BLAS threads per row (default 1)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per row")
    p.add_argument("--out", type=Path, default=HERE / "scale.csv")
    p.add_argument("--results-md", type=Path, default=HERE / "results.md",
                   help="markdown file whose 'scale.py' section gets the table (default benchmarks/results.md)")
    p.add_argument("--no-md", dest="results_md", action="store_const", const=None, help="write no markdown")
    p.add_argument("--row", nargs=2, metavar=("TASK", "N"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.row:
        task, n = args.row[0], int(args.row[1])
        rows_of = {"map": lambda: row_map(n), "predict": lambda: row_predict(n, args.threads),
                   "train_epoch": lambda: row_train_epoch(n, args.threads)}
        res = rows_of[task]()
        print("SCALE_ROW " + json.dumps(res), flush=True)
        return
    rows = []
    tasks = [t for t in args.tasks.split(",") if t]
    started, load0, busy0 = time.strftime("%Y-%m-%d %H:%M", time.gmtime()), os.getloadavg()[0], other_jobs()
    for task in ("map", "predict", "train_epoch"):
        if task not in tasks:
            continue
        for n in [int(x) for x in getattr(args, f"{task}_cells").split(",")]:
            print(f"{task} {n:,} cells ...", flush=True)
            res = run_row(task, n, args.threads, args.timeout)
            print(f"  {res['seconds']:.1f} s, peak RSS {res['peak_rss_gb']:.2f} GB (process {res['process_s']:.0f} s)",
                  flush=True)
            rows.append(res)
    kept = []  # rows of the tasks not run this time stay in the CSV
    if args.out.exists():
        with open(args.out, newline="") as f:
            kept = [r for r in csv.DictReader(f) if r["task"] not in tasks]
    with open(args.out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for r in kept:
            w.writerow([r[c] for c in COLUMNS])
        for r in rows:
            w.writerow([r["task"], r["n_cells"], r["n_cres"], f"{r['seconds']:.2f}", f"{r['peak_rss_gb']:.3f}"])
    text = table(rows)
    verdicts = []
    for task in ("map", "predict", "train_epoch"):
        task_rows = [r for r in rows if r["task"] == task]
        if len(task_rows) >= 2:
            small, large = task_rows[0], task_rows[-1]
            ok = large["peak_rss_gb"] < 4 and large["peak_rss_gb"] < 1.5 * small["peak_rss_gb"]
            verdicts.append(f"{task}: the largest ({large['n_cells']:,} cells) peaks at {large['peak_rss_gb']:.2f} GB, "
                            f"{large['peak_rss_gb'] / small['peak_rss_gb']:.2f}x the smallest "
                            f"({small['n_cells']:,} cells): {'meets' if ok else 'MISSES'} the bar (< 4 GB and < 1.5x).")
    verdict = "\n".join(verdicts)
    busy1 = other_jobs()
    header = [f"run {started}-{time.strftime('%H:%M', time.gmtime())} UTC on {os.cpu_count()} cores, "
              f"{args.threads} thread(s) per row, load average {load0:.1f} at start, {os.getloadavg()[0]:.1f} at end",
              "other jobs on the machine: " + sharing(busy0, busy1, load0, os.getloadavg()[0], args.threads),
              "command: OMP_NUM_THREADS=1 python benchmarks/scale.py " + " ".join(argv or sys.argv[1:])]
    print("\n".join(header) + "\n\n" + text + "\n" + verdict)
    if args.results_md is not None:
        section = "scale.py" if set(tasks) >= {"map", "predict", "train_epoch"} else "scale.py " + ",".join(tasks)
        bc.write_section(args.results_md, section, "## Scale: paper-size data in bounded memory "
                         "(`benchmarks/scale.py`)\n\n" + "\n".join(f"- {h}" for h in header) + "\n\n" + text
                         + "\n\n" + verdict + "\n\n" + SECTION_NOTES)
        print(f"wrote {args.out} and the scale section of {args.results_md}")
    else:
        print(f"wrote {args.out}")


SECTION_NOTES = """\
How to read it: every row is a fresh process; `peak RSS` is its VmHWM (everything: Python, inputs, model, work).
`map` reads its input from a backed `.h5ad` and writes its output to one, 500 cells at a time (`map_peaks_to_cres(atac,
cres, out=...)`): memory is the vocabulary, the peak x cCRE incidence and one chunk, whatever the cells (in memory,
the input and output alone take about 8 bytes per stored peak and per mapped cCRE). `predict` streams to disk: the
model (1,033,239 CREs x 32 output factors), the vocabulary's names and one block of 32 cells are in memory, so its
peak does not grow with the cells. Its seconds include the streamed writing (float16 P(open), sparse binary layer,
no compression); the floors are measured in the same process on one cell. The final matmul is a loose floor for this
architecture: its attention path (every CRE attends to the cell's 64 gene keys) is most of the model's forward, so
the forward over all CREs is the floor that matters; above it are the per-call setup (fingerprints, writing the
1,033,239-row var; the 10-cell row), the sigmoid, float16 conversion, binary layer and writing. `train_epoch` is one
epoch of the cpu profile over the Fig 2 benchmark's 10,000-CRE vocabulary, the data read from backed `.h5ad` files:
`train.fit` computes every whole-matrix statistic (base rates, input scaling, depth, the fingerprint when it
checkpoints) block by block and the sampler reads rows (`cisformer.sampler.DiskCSR`), so memory holds the model,
row pointers and per-cell depths (tens of bytes per cell), not the matrices.
"""


def sharing(busy0: bool, busy1: bool, load0: float, load1: float, threads: int) -> str:
    """In words: whether the timing ran beside other work (run_all.sh, or a load average above this benchmark's
    own threads)."""
    if busy0 or busy1:
        return (f"the timing ran beside another job (run_all.sh running at {'start' if busy0 else 'end'}"
                f"{' and end' if busy0 and busy1 else ''}): seconds are inflated by sharing the cores; peak RSS is "
                "per process and unaffected")
    if max(load0, load1) > threads + 0.5:
        return (f"run_all.sh was not running, but the load average ({load0:.1f} at start, {load1:.1f} at end, with "
                f"this benchmark using {threads} thread(s)) shows other processes sharing the "
                f"{os.cpu_count()} cores: seconds are inflated by that sharing (the floors are measured in the same "
                "processes, under the same load); peak RSS is per process and unaffected")
    return "none seen (run_all.sh not running, load average at most the benchmark's own threads)"


def other_jobs() -> bool:
    """Whether a run_all.sh (the figures' driver, the heavy job on this machine) is running."""
    return subprocess.run(["pgrep", "-f", "run_all.sh"], capture_output=True).returncode == 0


if __name__ == "__main__":
    main()
