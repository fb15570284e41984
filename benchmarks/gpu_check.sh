#!/usr/bin/env bash
# The GPU path on the same code, in under 5 minutes, on a machine with a CUDA device:
#   benchmarks/gpu_check.sh
# 1. train_cam images/s at fp32 and at `auto` in IRN's real setting (ResNet-50, 512-px
#    crops, batch 16, random weights and images: benchmarks/train_cam_speed.py);
# 2. the tests' tiny config (method irn) through the whole DAG with its torch jobs on the
#    GPU, then the precision each stage recorded.
# Uses .venv (or $PYTHON's environment) when it has the project, else installs it into a
# fresh venv. Any failure exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
python=${PYTHON:-$repo/.venv/bin/python}
if ! "$python" -c "import csd, snakemake" 2>/dev/null; then
    python3 -m venv /tmp/gpu_check_venv
    /tmp/gpu_check_venv/bin/pip install --quiet -e .
    python=/tmp/gpu_check_venv/bin/python
fi
"$python" - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device: this check is for a GPU machine"
from csd.runtime.precision import resolve
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"{torch.cuda.get_device_name(0)}: auto = {resolve('auto', 'cuda')}")
PY
timeout 150 "$python" benchmarks/train_cam_speed.py --device cuda 2>/dev/null

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" -c "
import sys
from tests.conftest import TINY, write_config
write_config(sys.argv[1], dict(TINY, methods=['irn']))" "$work/tiny.yaml"
start=$(date +%s)
timeout 150 "$python" -m snakemake -s "$repo/Snakefile" -d "$work" --cores 8 \
    --resources gpu=1 --configfile "$work/tiny.yaml" >"$work/dag.log" 2>&1 \
    || { tail -40 "$work/dag.log"; exit 1; }
echo "tiny DAG on the GPU: $(( $(date +%s) - start )) s"
grep -h "device:" "$work"/logs/irn/seed0/*.log | sort | uniq -c
"$python" -c "
import json, sys, pathlib
for path in sorted(pathlib.Path(sys.argv[1]).glob('results/irn/seed0/*_history.json')):
    print(path.name, json.loads(path.read_text())[-1]['precision'])
print(open(pathlib.Path(sys.argv[1]) / 'results/table.csv').read().splitlines()[1][:120])
" "$work"
