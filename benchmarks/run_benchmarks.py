#!/usr/bin/env python3
"""Speed and memory of our Cisformer against the reference implementation (PyPI cisformer==1.1.2), side by side
in one run on this machine: same shapes (paper profile), fp32 on both sides, the same torch thread count.

Run on demand (never by the tests or CI), after ``bash benchmarks/setup_reference_env.sh``:

    .venv/bin/python benchmarks/run_benchmarks.py            # ~30-40 min on 2 shared cores
    .venv/bin/python benchmarks/run_benchmarks.py --quick    # smoke test of the harness, ~5 min

Every measurement runs in a fresh subprocess (ours in the project's .venv, the reference in
benchmarks/.env-reference) so that its peak memory (RSS high-water mark) is its own. Reference and ours are
interleaved, alternating which goes first, so that load from other users of the machine hits both alike; the
table reports medians. Prints one table and writes benchmarks/results.csv and benchmarks/results.md.

Full-vocabulary prediction costs ~47 TFLOP per cell at the paper's shapes (about 15-30 minutes per run on this
machine), so by default it is measured at two vocabulary sizes and extrapolated linearly to the 1,033,239 human
cCREs (both implementations' time and memory are affine in the number of CRE queries; the table says so);
``--predict-cres full`` measures the whole vocabulary instead.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import bench_common as bc  # noqa: E402

OURS_PY = REPO / ".venv" / "bin" / "python"
REF_PY = HERE / ".env-reference" / "bin" / "python"


def shipped_cre_bed() -> Path:
    """The 1,033,239 hg38 cCREs the repository ships (data/reference/human_cCREs_hg38.bed.gz), located and
    checksum-verified by cisformer.data; nothing outside the repository is read."""
    if str(REPO) not in sys.path:
        sys.path.insert(1, str(REPO))  # after benchmarks/: this checkout's cisformer, whatever is installed
    from cisformer import data

    return data.reference_path("human_cres")


CRE_BED = None  # set by main(): --cre-bed, else shipped_cre_bed()
N_FULL = bc.N_HUMAN_CRES


# ------------------------------------------------------------------------------------------------ running

def driver_env(impl: str) -> dict:
    """The drivers' environment: the reference's without PYTHONPATH, so that no checkout's ``cisformer/`` (ours)
    can shadow the reference package ``cisformer.M2Mmodel`` (ref_driver.py also drops such paths itself)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if impl == "reference":
        env.pop("PYTHONPATH", None)
    return env


def run_task(impl: str, task: str, args: list[str], timeout: float, log) -> dict:
    """One driver task in a fresh process; returns its BENCH_RESULT dict or {'error': ...}."""
    py, driver = (OURS_PY, HERE / "ours_driver.py") if impl != "reference" else (REF_PY, HERE / "ref_driver.py")
    if not py.exists():
        hint = "bash benchmarks/setup_reference_env.sh" if impl == "reference" else "create .venv (README)"
        return {"error": f"{py} missing: run {hint}"}
    cmd = [str(py), str(driver), task, *map(str, args)]
    log(f"  $ {' '.join(cmd[1:])}")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                              env=driver_env(impl))
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("BENCH_RESULT "):
            res = json.loads(line[len("BENCH_RESULT "):])
            res["wall_process_s"] = time.perf_counter() - t0
            if "error" in res:
                log(f"    -> n/a: {res['error']}")
            return res
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": f"exit {proc.returncode}: {' | '.join(tail)}"[:300]}


def interleaved(pairs, repeats: int, log):
    """pairs: {impl: (task, args)}. Runs repeats x each impl, alternating which goes first; returns lists."""
    out = {impl: [] for impl in pairs}
    impls = list(pairs)
    for r in range(repeats):
        order = impls if r % 2 == 0 else impls[::-1]
        for impl in order:
            task, args, timeout = pairs[impl]
            res = run_task(impl, task, args, timeout, log)
            out[impl].append(res)
            if "error" in res:  # no point repeating a task that cannot run
                pairs = {k: v for k, v in pairs.items() if k != impl}
        impls = [i for i in impls if i in pairs]
        if not impls:
            break
    return out


def ok(results):
    return [r for r in results if "error" not in r]


def first_error(results):
    errs = [r["error"] for r in results if "error" in r]
    return errs[0] if errs else "not run"


def med(values):
    values = [v for v in values if v is not None]
    return bc.median(values) if values else None


# ------------------------------------------------------------------------------------------------ table

class Table:
    def __init__(self):
        self.rows = []

    def add(self, benchmark, metric, ours, reference, unit, ratio=None, target="", met=None, note=""):
        self.rows.append(dict(benchmark=benchmark, metric=metric, ours=ours, reference=reference, unit=unit,
                              ratio=ratio, target=target, met=met, note=note))

    @staticmethod
    def fmt(v):
        if v is None:
            return "-"
        if isinstance(v, str):
            return v
        if isinstance(v, bool):
            return "yes" if v else "NO"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 1:
            return f"{v:.2f}"
        return f"{v:.3g}"

    def lines(self):
        head = ["benchmark", "metric", "ours", "reference", "unit", "ours vs ref", "target", "met", "note"]
        body = [[r["benchmark"], r["metric"], self.fmt(r["ours"]), self.fmt(r["reference"]), r["unit"],
                 "-" if r["ratio"] is None else f"{r['ratio']:.2f}x", r["target"] or "-",
                 "-" if r["met"] is None else ("yes" if r["met"] else "NO"), r["note"]] for r in self.rows]
        return head, body

    def text(self):
        head, body = self.lines()
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
        widths[-1] = min(widths[-1], 80)
        sep = "  "
        out = [sep.join(h.ljust(w) for h, w in zip(head, widths)), sep.join("-" * w for w in widths)]
        out += [sep.join(str(c).ljust(w) for c, w in zip(row, widths)) for row in body]
        return "\n".join(out)

    def markdown(self):
        head, body = self.lines()
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in body]
        return "\n".join(out)

    def write_csv(self, path):
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(self.rows[0]))
            w.writeheader()
            for r in self.rows:
                w.writerow({k: ("" if v is None else v) for k, v in r.items()})


def affine_extrapolate(points: dict, n_target: int):
    """points {N: value}: value at n_target from a line through the two largest N (proportional if one)."""
    ns = sorted(points)
    if n_target in points:
        return points[n_target], "measured"
    if len(ns) == 1:
        n = ns[0]
        return points[n] * n_target / n, f"extrapolated x{n_target / n:.1f} from N={n:,}"
    n1, n2 = ns[-2], ns[-1]
    slope = (points[n2] - points[n1]) / (n2 - n1)
    return points[n2] + slope * (n_target - n2), f"extrapolated (line through N={n1:,} and {n2:,})"


# ------------------------------------------------------------------------------------------------ main

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads for both implementations (default 1: 2 cores shared by several "
                        "users give steadier numbers single-threaded)")
    p.add_argument("--repeats", type=int, default=2, help="interleaved repeats per measurement (median)")
    p.add_argument("--train-steps", type=int, default=2, help="timed batch-16 training steps per process")
    p.add_argument("--train-warmup", type=int, default=1, help="untimed warm-up steps (on 2 samples)")
    p.add_argument("--predict-cres", default="16384,65536",
                   help="vocabulary sizes for the one-cell prediction, comma-separated, or 'full' (1,033,239)")
    p.add_argument("--map-cells", type=int, default=10_000)
    p.add_argument("--map-peaks", type=int, default=80_000)
    p.add_argument("--ref-preprocess-cells", type=int, default=200)
    p.add_argument("--fit-cells", type=int, default=1000, help="simulated cells for the cpu-profile fit")
    p.add_argument("--skip", default="", help="comma-separated: train,predict,map,preprocess,fit")
    p.add_argument("--profile", action="store_true",
                   help="also profile both implementations (torch.profiler: one prediction of 4,096 CREs and one "
                        "training step of 2 samples) and list where the time goes")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the harness, numbers not meaningful")
    p.add_argument("--timeout", type=float, default=5400, help="seconds per subprocess")
    p.add_argument("--out-dir", default=str(HERE))
    p.add_argument("--cre-bed", type=Path,
                   help="CRE vocabulary BED (chrom, start, end; .gz allowed) for the prediction and mapping rows "
                        "(default: the repository's data/reference/human_cCREs_hg38.bed.gz)")
    args = p.parse_args(argv)
    global CRE_BED
    CRE_BED = args.cre_bed.resolve() if args.cre_bed is not None else shipped_cre_bed()
    if not CRE_BED.exists():
        raise SystemExit(f"error: --cre-bed {CRE_BED} does not exist")
    if args.quick:
        args.repeats, args.train_steps, args.train_warmup = 1, 1, 1
        args.predict_cres, args.map_cells, args.map_peaks = "2048,4096", 500, 20_000
        args.ref_preprocess_cells, args.fit_cells = 20, 300
    skip = set(filter(None, args.skip.split(",")))
    sizes = [N_FULL] if args.predict_cres == "full" else sorted(int(x) for x in args.predict_cres.split(","))

    logs = []

    def log(msg):
        print(msg, flush=True)
        logs.append(msg)

    started = dt.datetime.now(dt.timezone.utc)
    load0 = os.getloadavg()
    log(f"cisformer benchmarks - {started:%Y-%m-%d %H:%M} UTC, threads={args.threads} for both implementations")
    T = Table()
    common = ["--threads", args.threads]

    # this machine's fp32 matmul rate, before and after (best of both)
    mm = [run_task("ours", "matmul", common + ["--steps", 7], args.timeout, log)]

    # 1. training step, RNA->ATAC, paper profile, batch 16
    if "train" not in skip:
        log("training step, paper profile RNA->ATAC, batch 16 ...")
        targs = common + ["--warmup", args.train_warmup, "--steps", args.train_steps]
        tr = interleaved({"reference": ("train", targs, args.timeout), "ours": ("train", targs, args.timeout)},
                         args.repeats, log)
        o, r = ok(tr["ours"]), ok(tr["reference"])
        o_sps = med([16 / t for x in o for t in x["step_s"]]) if o else None
        r_sps = med([16 / t for x in r for t in x["step_s"]]) if r else None
        o_cpu = med([t for x in o for t in x["step_cpu_s"]]) if o else None
        r_cpu = med([t for x in r for t in x["step_cpu_s"]]) if r else None
        ratio = o_sps / r_sps if (o_sps and r_sps) else None
        shp = (o or r or [{}])[0].get("shapes", {})
        note = (f"dim {shp.get('dim')}, {shp.get('n_layers')} layers, {shp.get('n_heads')}x{shp.get('head_dim')} "
                f"heads, {shp.get('gene_len')} genes -> {shp.get('cre_len')} CREs; median of "
                f"{len(o) * args.train_steps}/{len(r) * args.train_steps} steps") if shp else ""
        T.add("train RNA->ATAC (paper, b16)", "samples/s (wall)", o_sps if o else "n/a: " + first_error(tr["ours"]),
              r_sps if r else "n/a: " + first_error(tr["reference"]), "samples/s", ratio, ">= 1.5x ref",
              None if ratio is None else ratio >= 1.5, note)
        T.add("train RNA->ATAC (paper, b16)", "CPU time per step", o_cpu, r_cpu, "CPU s",
              (r_cpu / o_cpu) if (o_cpu and r_cpu) else None, "", None, "process CPU time (less disturbed by load)")

    # 2. full-vocabulary prediction of one cell
    if "predict" not in skip:
        log(f"one-cell RNA->ATAC prediction at vocabulary sizes {sizes} ...")
        per = {"ours": {}, "reference": {}}
        raw = {"ours": [], "reference": []}
        for n in sizes:
            pargs = common + ["--n-cres", n, "--cre-bed", CRE_BED]
            pr = interleaved({"reference": ("predict", pargs, args.timeout), "ours": ("predict", pargs, args.timeout)},
                             args.repeats, log)
            for impl in per:
                raw[impl] += pr[impl]
                good = ok(pr[impl])
                if good:
                    per[impl][n] = {k: med([x[k] for x in good]) for k in ("seconds", "cpu_seconds", "peak_rss_mb")}
        est = {}
        for impl in per:
            if per[impl]:
                est[impl] = {k: affine_extrapolate({n: v[k] for n, v in per[impl].items()}, N_FULL)[0]
                             for k in ("seconds", "cpu_seconds", "peak_rss_mb")}
                est[impl]["how"] = affine_extrapolate({n: v["seconds"] for n, v in per[impl].items()}, N_FULL)[1]
        o, r = est.get("ours"), est.get("reference")
        how = (o or r or {}).get("how", "")
        name = f"predict 1 cell x {N_FULL:,} CREs"
        for key, metric, unit, target in (("seconds", "time (wall)", "s", ">= 2x faster"),
                                          ("cpu_seconds", "CPU time", "CPU s", ""),
                                          ("peak_rss_mb", "peak memory (RSS)", "MB", "")):
            ratio = r[key] / o[key] if (o and r) else None
            T.add(name, metric, o[key] if o else "n/a: " + first_error(raw["ours"]),
                  r[key] if r else "n/a: " + first_error(raw["reference"]), unit, ratio, target,
                  (None if ratio is None else ratio >= 2) if target else None, how)
        for impl in ("ours", "reference"):
            for n, v in sorted(per[impl].items()):
                log(f"    {impl:9s} N={n:>9,}: {v['seconds']:8.2f} s wall, {v['cpu_seconds']:8.2f} s CPU, "
                    f"peak RSS {v['peak_rss_mb']:8.0f} MB")
        # compute floor: matmul FLOPs of the config / this machine's matmul rate (filled in at the end)
        good = ok(raw["ours"]) or ok(raw["reference"])
        if good:
            shp, n_keys = good[0]["shapes"], good[0]["n_keys"]
            fl = bc.rna2atac_predict_flops(N_FULL, n_keys, shp["dim"], shp["n_layers"], shp["n_heads"],
                                           shp["head_dim"], shp["ff_mult"])
            T.rows.append(None)  # placeholder, filled once the closing matmul rate is known
            floor_slot = (len(T.rows) - 1, fl, n_keys, o, r)
        else:
            floor_slot = None
    else:
        floor_slot = None

    # 3. mapping 10,000 cells' peaks onto the vocabulary
    if not ({"map", "preprocess"} <= skip):
        log(f"peak -> CRE mapping: simulating {args.map_cells:,} cells x ~{args.map_peaks:,} peaks ...")
        tmp = tempfile.TemporaryDirectory(prefix="cisformer-bench-")
        npz = Path(tmp.name) / "peaks.npz"
        sim = run_task("ours", "simulate_peaks", ["--cre-bed", CRE_BED, "--out", npz, "--n-cells", args.map_cells,
                                                  "--n-peaks", args.map_peaks], args.timeout, log)
        if "error" in sim:
            T.add("map peaks -> CREs", "time", "n/a: " + sim["error"], None, "s")
        else:
            desc = f"{sim['n_cells']:,} cells x {sim['n_peaks']:,} peaks, {sim['nnz'] / sim['n_cells']:,.0f} per cell"
            mo = {"ours": []}
            if "map" not in skip:
                mo = interleaved({"ours": ("map", ["--peaks-npz", npz, "--cre-bed", CRE_BED], args.timeout)},
                                 args.repeats, log)
            rp = []
            if "preprocess" not in skip:
                rp = [run_task("reference", "preprocess", ["--peaks-npz", npz, "--n-cells", args.ref_preprocess_cells],
                               args.timeout, log)]
            o, r = ok(mo["ours"]), ok(rp)
            o_t = med([x["seconds"] for x in o]) if o else None
            o_m = med([x["peak_rss_mb"] for x in o]) if o else None
            scale = args.map_cells / args.ref_preprocess_cells
            r_t = r[0]["seconds"] * scale if r else None
            r_m = (r[0]["rss_before_mb"] + (r[0]["peak_rss_mb"] - r[0]["rss_before_mb"]) * scale) if r else None
            rnote = (f"; ref: map_rna_atac.main on {args.ref_preprocess_cells} cells ({r[0]['seconds']:.1f} s, "
                     f"{r[0]['peak_rss_mb']:,.0f} MB), scaled x{scale:.0f}") if r else \
                ("; ref: " + first_error(rp) if rp else "")
            extra = f"; vocabulary load {o[0]['load_seconds']:.1f} s not included" if o else ""
            T.add(f"map {args.map_cells:,} cells' peaks -> CREs", "time",
                  o_t if o else "n/a: " + first_error(mo["ours"]), r_t, "s",
                  (r_t / o_t) if (o_t and r_t) else None, "< 60 s", None if o_t is None else o_t < 60,
                  desc + extra + rnote)
            T.add(f"map {args.map_cells:,} cells' peaks -> CREs", "peak memory (RSS)", o_m, r_m, "MB",
                  (r_m / o_m) if (o_m and r_m) else None, "< 2,048 MB", None if o_m is None else o_m < 2048,
                  "whole process incl. the input matrix" + ("; ref extrapolated linearly in cells" if r else ""))
        tmp.cleanup()

    # 4. our cpu-profile training throughput (cisformer.train.fit on simulated data)
    if "fit" not in skip:
        log("cpu-profile training throughput (cisformer.train.fit) ...")
        for direction in ("rna2atac", "atac2rna"):
            fr = run_task("ours", "fit_cpu", common + ["--direction", direction, "--n-cells", args.fit_cells,
                                                      "--epochs", 2], args.timeout, log)
            if "error" in fr:
                T.add(f"fit cpu profile {direction}", "samples/s", "n/a: " + fr["error"], None, "samples/s")
            else:
                s = fr["shapes"]
                T.add(f"fit cpu profile {direction}", "samples/s", fr["samples_per_s"], None, "samples/s", None, "",
                      None, f"dim {s['dim']}, {s['n_layers']} layers, {s['gene_len']} genes / {s['cre_len']} CREs, "
                            f"{fr['n_cells']} simulated cells, epoch 2 of 2 (sampler included)")

    # 5. where the time goes (torch.profiler, top operators by self CPU time)
    profiles = []
    if args.profile:
        log("profiling (torch.profiler) ...")
        for impl in ("ours", "reference"):
            for task, extra in (("predict", ["--n-cres", 4096, "--cre-bed", CRE_BED]),
                                ("train", ["--warmup", 1, "--steps", 0, "--profile-batch", 2])):
                res = run_task(impl, task, common + extra + ["--profile"], args.timeout, log)
                if "profile" in res:
                    what = "prediction, 1 cell x 4,096 CREs" if task == "predict" else "training step, 2 samples"
                    profiles.append(f"{impl} - {what}:")
                    profiles += [f"  {e['share'] * 100:5.1f}%  {e['self_ms']:10.1f} ms  {e['calls']:6d} calls  {e['op']}"
                                 for e in res["profile"]]
        for line in profiles:
            log(line)

    mm.append(run_task("ours", "matmul", common + ["--steps", 7], args.timeout, log))
    good_mm = ok(mm)
    rates = {}
    for x in good_mm:
        for k, v in x["rates"].items():
            rates[k] = max(rates.get(k, 0), v)
    if floor_slot is not None:
        idx, fl, n_keys, o, r = floor_slot
        del T.rows[idx]
        name = f"predict 1 cell x {N_FULL:,} CREs"
        if rates:
            rate = max(rates.values())
            floor = fl["total"] / rate
            note = (f"floor = {fl['total'] / 1e12:.1f} TFLOP (matmuls, {n_keys} gene keys) / {rate / 1e9:.1f} "
                    f"GFLOP/s (best fp32 matmul rate here, {args.threads} thread(s)) = {floor:,.0f} s")
            T.add(name, "wall time / compute floor", o["seconds"] / floor if o else None,
                  r["seconds"] / floor if r else None, "x floor", None, "< 1.5x",
                  None if not o else o["seconds"] / floor < 1.5, note)
            T.add(name, "CPU time / threads / floor", o["cpu_seconds"] / args.threads / floor if o else None,
                  r["cpu_seconds"] / args.threads / floor if r else None, "x floor", None, "< 1.5x",
                  None if not o else o["cpu_seconds"] / args.threads / floor < 1.5,
                  "the same with the process's CPU time (what other users' load does not inflate)")
        else:
            T.add(name, "time / compute floor", "n/a: " + first_error(mm), None, "")

    finished = dt.datetime.now(dt.timezone.utc)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True).stdout.strip() or "no commit"
    except OSError:
        commit = "unknown"
    header = [
        f"cisformer benchmarks: ours (repo {commit}) vs reference cisformer==1.1.2 (PyPI, flash-attn stand-in = "
        f"fp32 scaled_dot_product_attention)",
        f"run {started:%Y-%m-%d %H:%M}-{finished:%H:%M} UTC on {platform.node()}: {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}), torch threads = {args.threads} for both, fp32 both",
        f"load average at start {load0[0]:.1f}, at end {os.getloadavg()[0]:.1f} (other users share this machine)",
        "fp32 matmul rate (GFLOP/s, best of start/end): " + (", ".join(f"{k} {v / 1e9:.1f}" for k, v in rates.items())
                                                             if rates else "n/a"),
        f"command: {' '.join([Path(sys.executable).name, 'benchmarks/run_benchmarks.py', *(argv or sys.argv[1:])])}",
    ]
    table = T.text()
    print("\n" + "\n".join(header) + "\n\n" + table, flush=True)
    out_dir = Path(args.out_dir)
    T.write_csv(out_dir / "results.csv")
    kept = bc.other_sections((out_dir / "results.md").read_text()) if (out_dir / "results.md").exists() else ""
    (out_dir / "results.md").write_text("# Benchmark results\n\n" + "\n".join(f"- {h}" for h in header) + "\n\n"
                                        + T.markdown() + "\n\n"
                                        + (("## Where the time goes (torch.profiler, self CPU time)\n\n```\n"
                                            + "\n".join(profiles) + "\n```\n\n") if profiles else "")
                                        + "<details><summary>log</summary>\n\n```\n"
                                        + "\n".join(logs) + "\n```\n</details>\n"
                                        + ("\n" + kept if kept else ""))  # e.g. scale.py's section
    print(f"\nwrote {out_dir / 'results.csv'} and {out_dir / 'results.md'}")


if __name__ == "__main__":
    main()
