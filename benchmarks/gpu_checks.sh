#!/usr/bin/env bash
# The CUDA measurements that remain open (README "Speed" GPU column, the paper grid's GPU-hours), as
# one prepared run for a machine with an NVIDIA GPU and this repository set up (`make setup`):
#
#   bash benchmarks/gpu_checks.sh [OUT_DIR]        # default: $OUT, else ./gpu-checks
#
# Writes every output to OUT_DIR (device.txt, tests.txt, quantizer.txt/json, train_step.txt/json,
# paper_hours.txt/json). About 10 minutes on one recent GPU, most of it the 16 one-epoch timings of
# benchmarks/grid_hours.py; set SKIP_HOURS=1 to leave those out.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-${OUT:-gpu-checks}}
py=${PYTHON:-.venv/bin/python}
mkdir -p "$out"
if ! $py -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_checks.sh: torch sees no CUDA device (python: $py); run it on a machine with an NVIDIA GPU" >&2
    exit 2
fi
{ nvidia-smi -L; date -u +%FT%TZ; $py -c "import torch; print('torch', torch.__version__)"; } | tee "$out/device.txt"
echo "== CUDA tests (quantizers through the Triton kernels; interpreter tests)"
$py -m pytest tests/test_quant.py tests/test_triton_kernels.py -q -p no:cacheprovider 2>&1 | tee "$out/tests.txt" | tail -3
echo "== quantizer vs x.clone() (target <= 1.3x, nearest and stochastic, 4M and 64M floats)"
$py benchmarks/quantizer.py --device cuda --skip-qtorch-cuda --json "$out/quantizer.json" 2>&1 | tee "$out/quantizer.txt"
echo "== train step at the paper batch (targets: fixed 8/4 and AdaPT <= 1.15x float32, MuPPET <= 1.3x)"
$py benchmarks/train_step.py --device cuda --rounds 5 --json "$out/train_step.json" 2>&1 | tee "$out/train_step.txt"
if [ "${SKIP_HOURS:-0}" != 1 ]; then
    echo "== one epoch of each paper configuration -> device-hours of the paper grid"
    $py benchmarks/grid_hours.py --profile paper --json "$out/paper_hours.json" 2>&1 | tee "$out/paper_hours.txt"
fi
