#!/usr/bin/env bash
# Regenerate every figure of the compendium (or run the tests) from a fresh clone.
#
#   ./run_all.sh                      set up .venv if needed, run every notebook (cpu profile) -> figures/
#   ./run_all.sh --profile quick      smoke-sized run (minutes) -> figures/quick/
#   ./run_all.sh --profile paper      the paper's model sizes (GPU) -> figures/paper/
#   ./run_all.sh --only benchmark_rna2atac --data /path/to/data
#   ./run_all.sh --test               set up .venv if needed, then run the test suite (pytest)
#   ./run_all.sh --setup              only create / update .venv
#
# Environment: CISFORMER_VENV (default .venv), TORCH_SPEC (pip requirement for torch; default: the local CPU
# build torch==2.13.0, or a CUDA build from PyPI when nvidia-smi finds a GPU), CISFORMER_GPU_EXTRA=1 to also
# install flash-attn (needs CUDA and a compiler).
set -euo pipefail

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }

PROFILE=cpu
ONLY=""
DATA=""
MODE=figures
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) PROFILE="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    --data) DATA="$(cd "$2" && pwd)"; shift 2 ;;
    --test) MODE=test; shift ;;
    --setup) MODE=setup; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run_all.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
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
  local extras="test,liftover"
  [ "${CISFORMER_GPU_EXTRA:-0}" = 1 ] && extras="test,liftover,gpu"
  local stamp_want
  stamp_want="$(cat pyproject.toml | sha256sum | cut -c1-16) $TORCH_SPEC $extras"
  if [ -x "$PY" ] && [ "$(cat "$VENV/.cisformer-stamp" 2>/dev/null)" = "$stamp_want" ]; then
    return 0
  fi
  echo "== setting up $VENV ($TORCH_SPEC, extras: $extras)"
  [ -x "$PY" ] || python3 -m venv "$VENV"
  "$PY" -m pip install --quiet --upgrade pip
  "$PY" -m pip install --quiet "$TORCH_SPEC"
  "$PY" -m pip install --quiet -e ".[$extras]"
  "$PY" -m ipykernel install --sys-prefix --name cisformer --display-name "Python (cisformer)" >/dev/null
  echo "$stamp_want" > "$VENV/.cisformer-stamp"
}

setup_venv
[ "$MODE" = setup ] && exit 0
if [ "$MODE" = test ]; then
  exec "$PY" -m pytest -q
fi

if [ "$PROFILE" = cpu ]; then FIGURES="$ROOT/figures"; else FIGURES="$ROOT/figures/$PROFILE"; fi
mkdir -p "$FIGURES"
failed=0
summary=()
for nb in "$ROOT"/notebooks/*.ipynb; do
  stem="$(basename "$nb" .ipynb)"
  name="${stem#[0-9][0-9]_}"
  if [ -n "$ONLY" ] && [ "$ONLY" != "$name" ] && [ "$ONLY" != "$stem" ]; then continue; fi
  out="$FIGURES/$name"
  mkdir -p "$out"
  rm -f "$out/provenance.jsonl"
  params=(-p profile "$PROFILE" -p out_dir "$out")
  [ -n "$DATA" ] && params+=(-p data_dir "$DATA")
  "$PY" - "$out/params.json" "notebooks/$stem.ipynb" "$PROFILE" "$DATA" <<'PYEOF'
import json, sys
path, notebook, profile, data = sys.argv[1:]
parameters = {"profile": profile}
if data:
    parameters["data_dir"] = data
json.dump({"notebook": notebook, "parameters": parameters}, open(path, "w"), indent=1)
PYEOF
  echo "== $stem (profile $PROFILE)"
  start=$(date +%s)
  if CISFORMER_PROVENANCE="$out/provenance.jsonl" "$PY" -m papermill --no-progress-bar --log-output \
       -k cisformer "$nb" "$out/$stem.ipynb" "${params[@]}" > "$out/run.log" 2>&1; then
    status=ok
  else
    status=FAILED; failed=1
    tail -n 30 "$out/run.log" >&2
  fi
  summary+=("$(printf '%-26s %-7s %6ss' "$stem" "$status" "$(( $(date +%s) - start ))")")
done
"$PY" -m cisformer.provenance "$FIGURES" >/dev/null
echo "== summary (profile $PROFILE; index: ${FIGURES#$ROOT/}/INDEX.md)"
printf '%s\n' "${summary[@]}"
exit $failed
