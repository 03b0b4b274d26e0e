#!/usr/bin/env bash
# A short check on a CUDA machine, under a fixed time budget (BUDGET seconds, default 540;
# every step runs under its own share of it, and a failed step is logged, not fatal):
#
#   1. Python: the project's venv as in the README (python3 -m venv .venv && .venv/bin/pip
#      install -e .) when pip can reach a package index (GPU_ONLINE=1). Otherwise the
#      machine's python3, which must already hold torch, with PySDD and klaycircuits
#      installed from wheels in .whl/ and the project on PYTHONPATH. Prepare the wheels once,
#      on a machine with an index (cp312 here; match the target's Python):
#        python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#          --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#          pysdd==1.0.6 klaycircuits==0.1.2
#   2. Data: $NESY_GEDI_DATA, else .data/ in the repository (torchvision's layout, MNIST/raw),
#      is copied into a writable scratch folder (torchvision extracts next to the .gz files)
#      and NESY_GEDI_DATA points there.
#   3. MNIST-addition N=1 on cuda: 1 seed, 2 epochs (benchmarks/addition.py).
#   4. Circuit scaling N=1..15 on cuda, circuit throughput at N=1 and at N=15 (also with
#      torch.compile at N=15: its first calls compile, which takes a while).
#   5. One GEDI pretraining epoch: nesy-gedi pretrain tasks/gedi_mnist.yaml.
# JSON results and the log go to $OUT when set, else runs/gpu/ (the results the README cites
# live in benchmarks/results/; copy a result there, and cite it, only on purpose).
#
# Run from the repository root:          bash benchmarks/gpu.sh
# Dry run on a CPU (same steps, tiny):   DEVICE=cpu QUICK=1 bash benchmarks/gpu.sh
set -u
cd "$(dirname "$0")/.."
REPO=$(pwd)
START=$SECONDS
BUDGET=${BUDGET:-540}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
RESULTS=${OUT:-$REPO/runs/gpu}
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/nesy-gpu.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT
mkdir -p "$RESULTS"
LOG=$RESULTS/gpu_log.txt
: > "$LOG"
export PYTHONUNBUFFERED=1

say() { echo "[gpu.sh +$((SECONDS - START))s] $*" | tee -a "$LOG"; }
left() { echo $((BUDGET - (SECONDS - START))); }
# step NAME CAP COMMAND...: run under min(CAP, time left); log, never stop the script.
step() {
    local name=$1 cap=$2; shift 2
    local limit; limit=$(left)
    [ "$cap" -lt "$limit" ] && limit=$cap
    if [ "$limit" -le 5 ]; then say "SKIP $name: budget spent"; return 1; fi
    say "START $name (limit ${limit}s): $*"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    if [ "$rc" -eq 0 ]; then say "OK $name"; else say "FAILED $name (rc $rc$([ "$rc" -eq 124 ] && echo ', timed out'))"; fi
    return "$rc"
}

# ------------------------------------------------------------------ 1. Python environment
if [ "${GPU_ONLINE:-0}" = 1 ]; then
    python3 -m venv .venv && .venv/bin/pip install -q -e . || { say "pip install -e . failed"; exit 1; }
    PY=$REPO/.venv/bin/python
else
    PY=${PYTHON:-python3}
    if ! $PY -c "import pysdd, klay" 2>/dev/null; then
        if ls .whl/*.whl >/dev/null 2>&1; then
            $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
                --target "$SCRATCH/site" .whl/*.whl 2>&1 | tee -a "$LOG"
            export PYTHONPATH=$SCRATCH/site${PYTHONPATH:+:$PYTHONPATH}
        else
            say "PySDD/klaycircuits missing and no .whl/ carried; trying pip install -e . (needs an index)"
            python3 -m venv .venv && .venv/bin/pip install -q -e . && PY=$REPO/.venv/bin/python
        fi
    fi
    export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
fi
if ! $PY -c "import torch, pysdd, klay, nesy_gedi" 2>&1 | tee -a "$LOG"; then
    say "the environment is incomplete (see above); stopping"; exit 1
fi
$PY - <<'EOF' 2>&1 | tee -a "$LOG"
import os, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available(), "cpus", os.cpu_count())
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(0))
EOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$LOG"
say "environment ready: $PY"

# ------------------------------------------------------------------ 2. data
DATA_SRC=""
for candidate in "${NESY_GEDI_DATA:-}" .data; do
    if [ -n "$candidate" ] && [ -d "$candidate/MNIST/raw" ]; then DATA_SRC=$candidate; break; fi
done
if [ -n "$DATA_SRC" ]; then
    mkdir -p "$SCRATCH/data"
    cp -r "$DATA_SRC"/. "$SCRATCH/data/" && chmod -R u+w "$SCRATCH/data"
    export NESY_GEDI_DATA=$SCRATCH/data
    say "data: copied $DATA_SRC to $NESY_GEDI_DATA"
else
    say "data: no MNIST/raw under \$NESY_GEDI_DATA or .data; MNIST steps need torchvision to download it"
fi

# ------------------------------------------------------------------ 3-5. benchmarks
if [ "$QUICK" = 1 ]; then
    ADD_ARGS=(--train-examples 300 --test-examples 200 --epochs 1); NMAX=3; REPS=3; GEDI_SET=(--set data.train_examples=256)
else
    ADD_ARGS=(--epochs 2); NMAX=15; REPS=10; GEDI_SET=()
fi
step addition_n1 200 $PY benchmarks/addition.py --n 1 --seeds 1 "${ADD_ARGS[@]}" --device "$DEVICE" \
    --compile false --out "$RESULTS/addition_n1.json"
step scaling 120 $PY benchmarks/scaling.py --n-max "$NMAX" --reps "$REPS" --device "$DEVICE" \
    --out "$RESULTS/scaling.json"
step throughput_n1 40 $PY benchmarks/scaling.py --n 1 --reps "$REPS" --device "$DEVICE" \
    --out "$RESULTS/circuit_throughput_n1.json"
step throughput_n15_compiled 120 $PY benchmarks/scaling.py --n "$([ "$QUICK" = 1 ] && echo 2 || echo 15)" \
    --reps "$REPS" --device "$DEVICE" --compile true --out "$RESULTS/circuit_throughput_n15_compiled.json"
if [ -f tasks/gedi_mnist.yaml ]; then
    step gedi_epoch 240 $PY -m nesy_gedi pretrain tasks/gedi_mnist.yaml --set train.epochs=1 \
        --set train.progress=false "${GEDI_SET[@]}" --device "$DEVICE" --out "$SCRATCH/gedi_epoch" \
        && cp "$SCRATCH/gedi_epoch/final.json" "$RESULTS/gedi_epoch_final.json"
else
    say "SKIP gedi_epoch: tasks/gedi_mnist.yaml not found"
fi
say "done in $((SECONDS - START)) s; results in $RESULTS:"
ls -la "$RESULTS" | tee -a "$LOG"
