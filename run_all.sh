#!/usr/bin/env bash
# Regenerate every figure of the compendium (or run the tests) from a fresh clone.
#
#   ./run_all.sh                      set up .venv if needed, run every notebook (cpu profile) -> figures/
#   ./run_all.sh --profile quick      smoke-sized run (minutes) -> figures/quick/
#   ./run_all.sh --profile paper      the paper's model sizes (GPU) -> figures/paper/
#   ./run_all.sh --only benchmark_rna2atac --data /path/to/data
#   ./run_all.sh --data work/pbmc10k --only links_gwas --param dataset=pbmc10k [--out work/pbmc10k_figures]
#                                     --data DIR: a data folder (cisformer preprocess --name NAME --out DIR; files it
#                                     lacks come from data/); --param KEY=VALUE (repeatable) sets a notebook parameter
#                                     of every notebook run, e.g. --param 'datasets=[pbmc10k, bmmc]' (lists in YAML);
#                                     --out DIR: figures folder instead of figures/ (keeps the committed ones intact)
#   ./run_all.sh --test               set up .venv if needed, then run the test suite (pytest)
#   ./run_all.sh --setup              only create / update .venv
#   ./run_all.sh --jobs N             run N notebooks at a time (default: 2 on a machine with 2 or more cores, each
#                                     notebook on CISFORMER_THREADS threads; results do not depend on it)
#   ./run_all.sh --verify [--only NAME] [--against DIR]
#                                     regenerate into a temporary folder with an empty model cache and compare
#                                     every CSV with figures/ (or DIR) within the tolerances of cisformer/utils/verify.py;
#                                     exits non-zero on any difference beyond them
#
# Environment: CISFORMER_VENV (default .venv), TORCH_SPEC (pip requirement for torch; default: the local CPU
# build torch==2.13.0, or a CUDA build from PyPI when nvidia-smi finds a GPU), CISFORMER_GPU_EXTRA=1 to also
# install flash-attn (needs CUDA and a compiler), CISFORMER_THREADS (BLAS / OpenMP threads of the notebooks,
# default 1: results depend on the thread count, so it is fixed).
set -euo pipefail

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; }

PROFILE=cpu
ONLY=""
DATA=""
AGAINST=""
OUTDIR=""
PARAMS=()
JOBS="${CISFORMER_JOBS:-}"
MODE=figures
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) PROFILE="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    --data) DATA="$(cd "$2" && pwd)"; shift 2 ;;
    --test) MODE=test; shift ;;
    --verify) MODE=verify; shift ;;
    --against) AGAINST="$(cd "$2" && pwd)"; shift 2 ;;
    --out) mkdir -p "$2"; OUTDIR="$(cd "$2" && pwd)"; shift 2 ;;
    --param)
      case "${2:-}" in
        [A-Za-z_]*=*) PARAMS+=("$2") ;;
        *) echo "run_all.sh: --param needs KEY=VALUE (got '${2:-}')" >&2; exit 2 ;;
      esac
      shift 2 ;;
    --jobs)
      case "${2:-}" in
        [1-9]|[1-9][0-9]) JOBS="$2" ;;
        *) echo "run_all.sh: --jobs needs a positive number (got '${2:-}')" >&2; exit 2 ;;
      esac
      shift 2 ;;
    --setup) MODE=setup; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run_all.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [ -n "$AGAINST" ] && [ "$MODE" != verify ]; then echo "run_all.sh: --against needs --verify" >&2; exit 2; fi
if [ -n "$OUTDIR" ] && [ "$MODE" = verify ]; then echo "run_all.sh: --verify writes to a temporary folder; compare with --against DIR instead of --out" >&2; exit 2; fi
case "$PROFILE" in quick|cpu|paper) ;; *) echo "run_all.sh: --profile must be quick, cpu or paper" >&2; exit 2 ;; esac

ROOT="$(cd "$(dirname "$0")" && pwd)"
cd "$ROOT"
VENV="${CISFORMER_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"

setup_venv() {
  if [ -z "${TORCH_SPEC:-}" ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
      TORCH_SPEC="torch>=2.1"      # CUDA build from PyPI
    else
      TORCH_SPEC="torch==2.13.0"   # CPU build, installed from local disk on the project machines
    fi
  fi
  local extras="test,liftover,snapatac2"
  [ "${CISFORMER_GPU_EXTRA:-0}" = 1 ] && extras="$extras,gpu"
  local stamp_want
  stamp_want="$(cat pyproject.toml | sha256sum | cut -c1-16) $TORCH_SPEC $extras"
  if [ -x "$PY" ] && [ "$(cat "$VENV/.cisformer-stamp" 2>/dev/null)" = "$stamp_want" ]; then
    return 0
  fi
  echo "== setting up $VENV ($TORCH_SPEC, extras: $extras)"
  local t0=$SECONDS
  [ -x "$PY" ] || python3 -m venv "$VENV"
  "$PY" -m pip install --quiet --upgrade pip
  "$PY" -m pip install --quiet "$TORCH_SPEC"
  "$PY" -m pip install --quiet -e ".[$extras]"
  # SnapATAC2 without MACS3, so that nothing is compiled (pyproject.toml, extra "snapatac2", says why); last, so
  # that pip's resolver never sees its unmet MACS3 requirement
  "$PY" -m pip install --quiet --no-deps "snapatac2==2.9.0"
  "$PY" -m ipykernel install --sys-prefix --name cisformer --display-name "Python (cisformer)" >/dev/null
  echo "$stamp_want" > "$VENV/.cisformer-stamp"
  echo "== setup took $((SECONDS - t0)) s"
}

setup_venv
[ "$MODE" = setup ] && exit 0
# Same seeds, same tables: the thread count changes BLAS / OpenMP rounding (and torch.set_num_threads also sets
# scikit-learn's OpenMP threads), and str hashes (set order) change per process unless seeded. The tests run under
# the same settings (some compare two computations bit for bit).
THREADS="${CISFORMER_THREADS:-1}"
export OMP_NUM_THREADS="$THREADS" OPENBLAS_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS" \
       NUMBA_NUM_THREADS="$THREADS" RAYON_NUM_THREADS="$THREADS" PYTHONHASHSEED=0
if [ "$MODE" = test ]; then
  exec "$PY" -m pytest -q
fi

if [ -n "$OUTDIR" ]; then FIGURES="$OUTDIR"; elif [ "$PROFILE" = cpu ]; then FIGURES="$ROOT/figures"; else FIGURES="$ROOT/figures/$PROFILE"; fi
if [ "$MODE" = verify ]; then
  REFERENCE="${AGAINST:-$FIGURES}"
  VERIFY_DIR="$(mktemp -d "${TMPDIR:-/tmp}/cisformer-verify.XXXXXX")"
  FIGURES="$VERIFY_DIR/figures"
  # an empty model cache, so that every model is trained by this code (the cache key hashes the configuration
  # and the data, not the code); the scButterfly environment is an installed tool, not a result: shared
  SHARED_CACHE="${CISFORMER_CACHE:-$ROOT/.cache}"
  export CISFORMER_CACHE="$VERIFY_DIR/cache"
  mkdir -p "$CISFORMER_CACHE"
  [ -d "$SHARED_CACHE/env-scbutterfly" ] && ln -s "$SHARED_CACHE/env-scbutterfly" "$CISFORMER_CACHE/env-scbutterfly"
  trap 'rm -rf "$VERIFY_DIR/cache"' EXIT
  echo "== verify: regenerating into $FIGURES (model cache $CISFORMER_CACHE, removed at exit), reference $REFERENCE"
fi
mkdir -p "$FIGURES"
# Notebooks run single-threaded (above), so two at a time use both cores of a 2-core machine; a notebook that reads
# another's cached models (08 reads 02's and 04's) comes later in the order and finds them, or trains them itself.
if [ -z "$JOBS" ]; then
  JOBS=$(( $(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc 2>/dev/null || echo 1) / THREADS ))  # nproc obeys OMP_NUM_THREADS
  [ "$JOBS" -gt 2 ] && JOBS=2
  [ "$JOBS" -lt 1 ] && JOBS=1
fi
STATUS_DIR="$(mktemp -d "${TMPDIR:-/tmp}/cisformer-run.XXXXXX")"

run_notebook() {  # one notebook -> $FIGURES/<name>/; its summary line -> $STATUS_DIR/<stem>
  local nb="$1" stem name out status start
  stem="$(basename "$nb" .ipynb)"
  name="${stem#[0-9][0-9]_}"
  out="$FIGURES/$name"
  mkdir -p "$out"
  rm -f "$out/provenance.jsonl"
  local params=(-p profile "$PROFILE" -p out_dir "$out")
  [ -n "$DATA" ] && params+=(-p data_dir "$DATA")
  for kv in ${PARAMS[@]+"${PARAMS[@]}"}; do
    case "${kv#*=}" in
      \[*|\{*) params+=(-y "${kv%%=*}: ${kv#*=}") ;;   # a list / mapping: YAML
      *) params+=(-p "${kv%%=*}" "${kv#*=}") ;;          # a scalar: papermill reads numbers, True/False/None
    esac
  done
  "$PY" - "$out/params.json" "notebooks/$stem.ipynb" "$PROFILE" "$DATA" ${PARAMS[@]+"${PARAMS[@]}"} <<'PYEOF'
import json, sys

import yaml
from papermill.cli import _resolve_type

path, notebook, profile, data, *extra = sys.argv[1:]
parameters = {"profile": profile}
if data:
    parameters["data_dir"] = data
for kv in extra:
    key, value = kv.split("=", 1)
    parameters[key] = yaml.safe_load(value) if value[:1] in "[{" else _resolve_type(value)
json.dump({"notebook": notebook, "parameters": parameters}, open(path, "w"), indent=1)
PYEOF
  echo "== $stem (profile $PROFILE)"
  start=$(date +%s)
  if CISFORMER_PROVENANCE="$out/provenance.jsonl" "$PY" -m papermill --no-progress-bar --log-output \
       -k cisformer "$nb" "$out/$stem.ipynb" "${params[@]}" > "$out/run.log" 2>&1; then
    status=ok
  else
    status=FAILED
    tail -n 30 "$out/run.log" | sed "s/^/[$stem] /" >&2
  fi
  printf '%-26s %-7s %6ss\n' "$stem" "$status" "$(( $(date +%s) - start ))" > "$STATUS_DIR/$stem"
  printf '%s,%s,%s,%s\n' "$stem" "$status" "$(( $(date +%s) - start ))" "$(date -u +%FT%TZ)" > "$STATUS_DIR/$stem.csv"
  echo "== $stem $status"
}

run_start=$(date +%s)
stems=()
for nb in "$ROOT"/notebooks/*.ipynb; do
  stem="$(basename "$nb" .ipynb)"
  name="${stem#[0-9][0-9]_}"
  if [ -n "$ONLY" ] && [ "$ONLY" != "$name" ] && [ "$ONLY" != "$stem" ]; then continue; fi
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
  run_notebook "$nb" &
  stems+=("$stem")
done
wait
failed=0
summary=()
for stem in ${stems[@]+"${stems[@]}"}; do
  if [ -s "$STATUS_DIR/$stem" ]; then summary+=("$(cat "$STATUS_DIR/$stem")"); else summary+=("$stem (no status: killed?)"); fi
  grep -q " ok " "$STATUS_DIR/$stem" 2>/dev/null || failed=1
done
if [ ${#stems[@]} -eq 0 ]; then echo "run_all.sh: no notebook matches --only '$ONLY'" >&2; exit 2; fi
# $FIGURES/runtime.csv: each notebook's latest wall time as run here (a notebook run again replaces its row), and
# one row for a call that ran every notebook
"$PY" - "$FIGURES/runtime.csv" "$STATUS_DIR" "$PROFILE" "$JOBS" "$(( $(date +%s) - run_start ))" "${ONLY:-all}" \
      "$(env -u OMP_NUM_THREADS nproc 2>/dev/null || echo 1)" <<'PYEOF'
import glob, os, sys, time

import pandas as pd

path, status_dir, profile, jobs, total, only, cores = sys.argv[1:]
columns = ["notebook", "status", "seconds", "finished_utc", "profile", "jobs", "cores"]
rows = [dict(zip(columns[:4], open(f).read().strip().split(",")), profile=profile, jobs=int(jobs), cores=int(cores))
        for f in sorted(glob.glob(os.path.join(status_dir, "*.csv")))]
if only == "all":
    rows.append(dict(notebook="all notebooks, one ./run_all.sh call", status="ok" if all(r["status"] == "ok" for r in rows)
                     else "FAILED", seconds=int(total), finished_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     profile=profile, jobs=int(jobs), cores=int(cores)))
old = pd.read_csv(path) if os.path.exists(path) else pd.DataFrame(columns=columns)
new = pd.DataFrame(rows, columns=columns)
table = pd.concat([old[~old["notebook"].isin(new["notebook"])], new], ignore_index=True)
table.sort_values("notebook").to_csv(path, index=False)
PYEOF
rm -rf "$STATUS_DIR"
"$PY" -m cisformer.utils.provenance "$FIGURES" >/dev/null
echo "== summary (profile $PROFILE, $JOBS at a time, $(( $(date +%s) - run_start ))s in all; index: ${FIGURES#$ROOT/}/INDEX.md)"
printf '%s\n' "${summary[@]}"
if [ "$MODE" = verify ]; then
  echo "== verify: CSVs of $FIGURES vs $REFERENCE"
  "$PY" -m cisformer.utils.verify "$FIGURES" "$REFERENCE" --names "${stems[@]#[0-9][0-9]_}" || failed=1
  echo "== verify: $([ $failed = 0 ] && echo passed || echo FAILED); regenerated tables kept in $FIGURES"
fi
exit $failed
