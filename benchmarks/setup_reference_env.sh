#!/usr/bin/env bash
# Create benchmarks/.env-reference: the reference Cisformer (PyPI cisformer==1.1.2) in its own venv, for
# benchmarks/run_benchmarks.py. Needs PyPI only. Idempotent: re-running reuses what is there.
#   bash benchmarks/setup_reference_env.sh      (from any directory)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ENV="$HERE/.env-reference"
PY="${PYTHON:-python3}"

if [ ! -x "$ENV/bin/python" ]; then
  "$PY" -m venv "$ENV"
fi
PIP="$ENV/bin/pip"
# torch ALWAYS pinned (an unpinned install pulls multi-GB CUDA wheels); same version as the project's .venv
"$PIP" install --quiet "torch==2.13.0"
# runtime deps the reference imports on its model / training / prediction / preprocessing paths
# (cisformer/M2Mmodel/{M2M,block,utils}.py, rna2atac_predict.py, map_rna_atac.py, data_preprocess.py)
"$PIP" install --quiet numpy scipy pandas einops pyyaml packaging "accelerate>=0.30" matplotlib seaborn \
    tqdm anndata scanpy pybedtools psutil
# the reference itself, without letting it pull anything (its metadata has no pins we want)
"$PIP" install --quiet --no-deps "cisformer==1.1.2"
# flash-attn cannot be built here (CUDA only): install our fp32 scaled_dot_product_attention stand-in
"$PIP" install --quiet --no-deps --no-build-isolation "$HERE/flash_attn_standin"
rm -rf "$HERE/flash_attn_standin/build" "$HERE/flash_attn_standin/"*.egg-info

# pybedtools (reference preprocessing path only) shells out to the bedtools binary
if ! command -v bedtools >/dev/null 2>&1; then
  echo "note: 'bedtools' not found; the reference preprocessing benchmark will be skipped." \
       "Install it with: apt-get install -y bedtools" >&2
fi
# the check imports the INSTALLED reference: -I keeps the working directory (e.g. the repository root, whose
# cisformer/ is ours) and PYTHONPATH off sys.path, and it runs from inside the env, so it works from anywhere
(cd "$ENV" && "$ENV/bin/python" -I - <<'PY'
import torch, flash_attn, cisformer.M2Mmodel.M2M as m
print("reference env ready: torch", torch.__version__, "| flash_attn", flash_attn.__version__, "|", m.__file__)
PY
)
