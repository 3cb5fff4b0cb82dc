#!/usr/bin/env bash
# The pending CUDA measurements (benchmarks/README.md), in one run on a machine with an NVIDIA GPU:
#
#   bash benchmarks/gpu_checks.sh [OUT_DIR]             # default: $OUT, else ./gpu-checks
#   bash benchmarks/gpu_checks.sh --dry-run [OUT_DIR]   # the same steps on CPU, tiny sizes, Triton's interpreter
#
# Steps, each under its own timeout, within GPU_CHECKS_BUDGET seconds in all (default 480: 8 minutes):
#   tests       tests/test_cuda.py (compiled kernels vs interpreted, no host sync, self-checks, ...), plus the
#               CUDA cases of tests/test_quant.py where Hypothesis is installed
#   quantizer   benchmarks/quantizer.py --device cuda: Triton kernels vs x.clone() at 4M and 64M floats
#   train_step  benchmarks/train_step.py --device cuda: float32, fixed 8/4, AdaPT, MuPPET at 512 x 4
#   paper_hours benchmarks/grid_hours.py --profile paper (2 epochs of 30,000 images per configuration, the
#   sdm_hours   second timed; then --profile sdm): the grids' GPU-hours
# Every output goes to OUT_DIR: env.txt (GPU, versions, source digest, date), <step>.txt (the step's output),
# <step>.json (its figures), summary.txt (each step's status and seconds).  Exit status: 0 when every step
# passed, 1 when one failed or timed out, 2 when something it needs is missing (checked before any step).
#
# Needs only a python3 with torch (a CUDA build), Triton (shipped with it), NumPy and pytest (the dry run: numba
# instead of Triton): no venv, no network, no install.  PYTHON picks the interpreter (default: .venv/bin/python if it works, else python3).
# Without pytest: put it in .gpu-deps/ on a machine with a package registry
# (`python3 -m pip install --target .gpu-deps pytest`, pure Python) and copy that folder along, or set
# SKIP_TESTS=1.  Override a step's time with <STEP>_S=seconds (TESTS_S, QUANTIZER_S, TRAIN_STEP_S, PAPER_S,
# SDM_S) and the grids' arguments with PAPER_HOURS_ARGS / SDM_HOURS_ARGS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

dry=0
if [ "${1:-}" = "--dry-run" ]; then dry=1; shift; fi
out=${1:-${OUT:-gpu-checks}}
mkdir -p "$out"
out=$(cd "$out" && pwd)
budget=${GPU_CHECKS_BUDGET:-480}
start=$(date +%s)
summary="$out/summary.txt"
: > "$summary"

die() { echo "gpu_checks.sh: $*" >&2; echo "preflight FAILED: $*" >> "$summary"; exit 2; }

command -v timeout >/dev/null || die "needs coreutils' timeout (not found)"
if [ -n "${PYTHON:-}" ]; then
    py=$PYTHON
elif [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then
    py=.venv/bin/python
else
    py=python3
fi
command -v "$py" >/dev/null || [ -x "$py" ] || die "no Python interpreter '$py' (set PYTHON=...)"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
[ -d .gpu-deps ] && export PYTHONPATH="$PYTHONPATH:$root/.gpu-deps"
export PYTHONDONTWRITEBYTECODE=1

# ---- preflight: everything the steps import, before any of them runs --------------------------------
need="torch numpy"
if [ "$dry" = 1 ]; then need="$need numba"; else need="$need triton"; fi  # the dry run rounds on CPU (numba)
[ "${SKIP_TESTS:-0}" = 1 ] || need="$need pytest"
missing=$("$py" - $need <<'EOF' || true
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))
EOF
)
[ -z "$missing" ] || die "$py lacks: $missing (pytest: see the header of this script, or SKIP_TESTS=1)"
if [ "$dry" = 0 ]; then
    "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || \
        die "torch ($("$py" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)' 2>&1 | tail -1)) sees no CUDA device (python: $py)"
    device=cuda
else
    device=cpu
fi
"$py" -c "import adapt.quant, adapt.train" 2>"$out/preflight.txt" || \
    die "adapt does not import with $py: $(tail -1 "$out/preflight.txt")"
{
    echo "date: $(date -u +%FT%TZ)"
    echo "mode: $([ "$dry" = 1 ] && echo 'dry run (CPU, Triton interpreter)' || echo GPU)"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi -L || true
        nvidia-smi --query-gpu=driver_version --format=csv,noheader | sed 's/^/driver: /' || true
    fi
    "$py" - <<'EOF' || echo "(the versions above are all this Python could report)"
import hashlib, platform, subprocess, sys
from pathlib import Path
import torch
print("python:", sys.executable, platform.python_version())
print("torch:", torch.__version__, "CUDA", torch.version.cuda, "cuDNN", torch.backends.cudnn.version())
try:
    import triton
    print("triton:", triton.__version__)
except ImportError as exc:
    print("triton: none", exc)
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"cuda:{i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor}")
files = sorted(p for d in ("adapt", "benchmarks", "tests") for p in Path(d).rglob("*") if p.is_file()
               and p.suffix in (".py", ".sh") and "__pycache__" not in p.parts)
digest = hashlib.sha256(b"".join(p.as_posix().encode() + p.read_bytes() for p in files)).hexdigest()[:16]
try:
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip()
except Exception:
    rev = ""
print("source:", f"git {rev}, " if rev else "", f"sha256 of adapt/, benchmarks/, tests/ sources {digest}", sep="")
EOF
} > "$out/env.txt" 2>&1
cat "$out/env.txt"

# ---- steps ----------------------------------------------------------------------------------------------
failed=0

# step_time WANT: WANT seconds, or what is left of the budget (less 5 s for the summary) if that is less.
step_time() {
    local left=$((budget - ($(date +%s) - start) - 5))
    echo $(($1 < left ? $1 : left))
}

# run_step NAME SECONDS COMMAND...: runs COMMAND under `timeout`, capped by what is left of the budget;
# output to OUT/NAME.txt (and the console's tail); records the status in summary.txt.
run_step() {
    local name=$1
    local t rc t0
    t=$(step_time "$2")
    shift 2
    if [ "$t" -lt 15 ]; then
        echo "== $name: not run, the budget of ${budget} s is spent" | tee -a "$summary"
        failed=1
        return
    fi
    echo "== $name (at most $t s): $*"
    t0=$(date +%s)
    set +e
    timeout --kill-after=10 "$t" "$@" > "$out/$name.txt" 2>&1
    rc=$?
    set -e
    tail -n 25 "$out/$name.txt"
    local took=$(( $(date +%s) - t0 ))
    case $rc in
        0) echo "$name: passed in $took s" >> "$summary" ;;
        124|137) echo "$name: TIMED OUT after $t s (exit $rc)" >> "$summary"; failed=1 ;;
        *) echo "$name: FAILED with exit $rc after $took s" >> "$summary"; failed=1 ;;
    esac
    tail -n 1 "$summary"
}

if [ "${SKIP_TESTS:-0}" = 1 ]; then
    echo "tests: skipped (SKIP_TESTS=1)" | tee -a "$summary"
else
    pytest="'$py' -m pytest -q -p no:cacheprovider -o addopts=-ra"
    tests_cmd="$pytest tests/test_cuda.py"
    if [ "$dry" = 0 ] && "$py" -c "import hypothesis" 2>/dev/null; then  # tests/test_quant.py imports it
        tests_cmd="$tests_cmd && $pytest tests/test_quant.py -k cuda"
    fi
    run_step tests "${TESTS_S:-110}" bash -c "$tests_cmd"
fi

if [ "$dry" = 1 ]; then
    run_step quantizer "${QUANTIZER_S:-70}" env TRITON_INTERPRET=1 "$py" benchmarks/quantizer.py --triton-interpret \
        --sizes 4096 --repeats 1 --warmup 1 --json "$out/quantizer.json"
    # the smallest runs that still go through every code path the GPU run takes (a quantized policy, both grids)
    run_step train_step "${TRAIN_STEP_S:-100}" "$py" benchmarks/train_step.py --device cpu --batch 2 --accumulation 1 \
        --rounds 1 --models resnet20 --modes float32,adapt --json "$out/train_step.json"
    # shellcheck disable=SC2086
    run_step paper_hours "${PAPER_S:-110}" "$py" benchmarks/grid_hours.py --profile paper --device cpu \
        ${PAPER_HOURS_ARGS:---max-train 16 --epochs 2 --match paper/float32/resnet20/cifar10\$} --json "$out/paper_hours.json"
    # shellcheck disable=SC2086
    run_step sdm_hours "${SDM_S:-70}" "$py" benchmarks/grid_hours.py --profile sdm --device cpu \
        ${SDM_HOURS_ARGS:---max-train 16 --epochs 2 --match sdm/muppet/lenet5/mnist\$} --json "$out/sdm_hours.json"
else
    run_step quantizer "${QUANTIZER_S:-70}" "$py" benchmarks/quantizer.py --device cuda --skip-qtorch-cuda \
        --json "$out/quantizer.json"
    run_step train_step "${TRAIN_STEP_S:-100}" "$py" benchmarks/train_step.py --device cuda --rounds 5 \
        --json "$out/train_step.json"
    # --time-budget: start no configuration in the step's last 30 s, so that the last one started can finish
    t=$(step_time "${PAPER_S:-110}")
    # shellcheck disable=SC2086
    run_step paper_hours "$t" "$py" benchmarks/grid_hours.py --profile paper --device cuda \
        ${PAPER_HOURS_ARGS:---epochs 2 --max-train 30000} --time-budget $((t - 30)) --json "$out/paper_hours.json"
    t=$(step_time "${SDM_S:-70}")
    # shellcheck disable=SC2086
    run_step sdm_hours "$t" "$py" benchmarks/grid_hours.py --profile sdm --device cuda \
        ${SDM_HOURS_ARGS:---epochs 2 --max-train 30000} --time-budget $((t - 30)) --json "$out/sdm_hours.json"
fi

echo "== summary ($(( $(date +%s) - start )) s; outputs in $out)"
echo "total: $(( $(date +%s) - start )) s of a ${budget} s budget" >> "$summary"
cat "$summary"
exit "$failed"
