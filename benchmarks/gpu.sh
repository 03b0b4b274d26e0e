#!/usr/bin/env bash
# One prepared GPU check, for a session that is lent a GPU machine (15 minutes of device
# time in all; this script stays under 10 minutes: every step runs under a share of a
# fixed budget, BUDGET seconds, default 540).
#
#   1. Python: the project's own venv as in the README (python3 -m venv .venv && .venv/bin/pip
#      install -e .) when pip can reach an index (GPU_ONLINE=1). The lent machines reach
#      nothing: there the image's python3 (which holds torch) is used as it is, PySDD and
#      klaycircuits come from wheels carried in .whl/, and the project from PYTHONPATH.
#      Prepare the wheels here, once (cp312, the machine's Python):
#        python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#          --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#          pysdd==1.0.6 klaycircuits==0.1.2
#   2. Data: the first of $NESY_GEDI_DATA, shared/data, ../shared/data, .data that holds
#      MNIST/raw is copied into a writable folder (torchvision extracts next to the .gz
#      files) and NESY_GEDI_DATA points there. ../shared does not travel to the machine:
#      copy ../shared/data to .data and carry it.
#   3. MNIST-addition N=1 on cuda: 1 seed, 2 epochs (benchmarks/addition.py).
#   4. Circuit scaling N=1..15 on cuda, circuit throughput at N=1 and at N=15 (also with
#      torch.compile at N=15: its first calls compile, which takes a while).
#   5. One GEDI pretraining epoch: nesy-gedi pretrain tasks/gedi_mnist.yaml (guarded: a
#      failure or a missing task file is logged and the script goes on).
# JSON results go to $OUT when set (the device tool's folder), else benchmarks/results/gpu/.
#
# Device call, from the repo root:   bash benchmarks/gpu.sh       carry: [".whl", ".data"]
# Dry run on a CPU (same steps, tiny sizes):   DEVICE=cpu QUICK=1 bash benchmarks/gpu.sh
set -u
cd "$(dirname "$0")/.."
REPO=$(pwd)
START=$SECONDS
BUDGET=${BUDGET:-540}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
RESULTS=${OUT:-$REPO/benchmarks/results/gpu}
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
                --target /tmp/nesy-site .whl/*.whl 2>&1 | tee -a "$LOG"
            export PYTHONPATH=/tmp/nesy-site${PYTHONPATH:+:$PYTHONPATH}
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
for candidate in "${NESY_GEDI_DATA:-}" shared/data ../shared/data .data; do
    if [ -n "$candidate" ] && [ -d "$candidate/MNIST/raw" ]; then DATA_SRC=$candidate; break; fi
done
if [ -n "$DATA_SRC" ]; then
    rm -rf /tmp/nesy-gpu-data && mkdir -p /tmp/nesy-gpu-data
    cp -r "$DATA_SRC"/. /tmp/nesy-gpu-data/ && chmod -R u+w /tmp/nesy-gpu-data
    export NESY_GEDI_DATA=/tmp/nesy-gpu-data
    say "data: copied $DATA_SRC to $NESY_GEDI_DATA"
else
    say "data: no MNIST found (NESY_GEDI_DATA, shared/data, ../shared/data, .data); MNIST steps will fail"
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
    rm -rf /tmp/nesy-gedi-epoch
    step gedi_epoch 240 $PY -m nesy_gedi pretrain tasks/gedi_mnist.yaml --set train.epochs=1 \
        --set train.progress=false "${GEDI_SET[@]}" --device "$DEVICE" --out /tmp/nesy-gedi-epoch \
        && cp /tmp/nesy-gedi-epoch/final.json "$RESULTS/gedi_epoch_final.json"
else
    say "SKIP gedi_epoch: tasks/gedi_mnist.yaml does not exist yet"
fi
say "done in $((SECONDS - START)) s; results in $RESULTS:"
ls -la "$RESULTS" | tee -a "$LOG"
