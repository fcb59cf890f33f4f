#!/usr/bin/env bash
# Device check for a lent GPU (< 8 minutes): CUDA sanity, a few hundred training steps in bf16,
# fp16 and fp32 (and data-parallel over every GPU when there are several), fine-tuning one
# MoleculeNet set for a few epochs from the trained encoder, and cellpose on CUDA vs CPU.
# Prints each step's timings as `RESULT {json}` and any CUDA error; exits non-zero if a step
# failed (the others still run). Nothing is downloaded.
#
#   bash benchmarks/gpu_check.sh            # PYTHON=/path/to/python to choose the interpreter
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" CMCL_PROGRESS=0 PYTHONUNBUFFERED=1
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
failed=()
t0=$(date +%s)

step() {  # step NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2; shift 2
  local s=$(date +%s)
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" 2>&1 | tee "$WORK/$name.log" | grep -E "RESULT|ERROR|Error|error:|CUDA|Traceback" | grep -v "^  warnings.warn"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $(( $(date +%s) - s )) s"
  if [ "$rc" -ne 0 ]; then
    failed+=("$name")
    echo "---- last lines of $name:"; tail -n 25 "$WORK/$name.log"
  fi
  return "$rc"
}

DEV=${CHECK_DEVICE:-cuda}   # CHECK_DEVICE=cpu: dry run of this script at tiny sizes, no GPU needed
if [ "$DEV" = cuda ]; then
  if ! step cuda 60 "$PY" benchmarks/gpu_check.py cuda; then
    echo "CUDA ERROR: no usable CUDA device; nothing else was run" >&2
    exit 2
  fi
  NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())"); N=400; LONG=300; SHORT=100; EP=5; F=8; W=4
else
  NGPU=0; N=60; LONG=6; SHORT=2; EP=1; F=1; W=0
fi
step store 60 "$PY" benchmarks/gpu_check.py store "$WORK/store" --compounds $N
step train_bf16 120 "$PY" benchmarks/gpu_check.py train "$WORK/store" --steps $LONG --precision bf16 --device $DEV --workers $W --max-minutes 1.5 --export "$WORK/model.pt"
[ "$DEV" = cuda ] && step train_fp16 45 "$PY" benchmarks/gpu_check.py train "$WORK/store" --steps $SHORT --precision fp16 --workers $W --max-minutes 0.5
step train_fp32 45 "$PY" benchmarks/gpu_check.py train "$WORK/store" --steps $SHORT --precision fp32 --device $DEV --workers $W --max-minutes 0.5
if [ "$NGPU" -gt 1 ]; then
  step train_ddp 120 "$PY" -m torch.distributed.run --standalone --nproc-per-node "$NGPU" -m cmcl_model.train.worker \
    --store "$WORK/store" --preset quick --set device=cuda --set precision=bf16 --set epochs=10000 \
    --set max_steps=300 --set max_minutes=1.5 --set batch_size=$((32 * NGPU)) --quiet
fi
if [ -f "$WORK/model.pt" ]; then
  step finetune 120 "$PY" benchmarks/gpu_check.py finetune "$WORK/model.pt" --dataset bbbp --epochs $EP --device $DEV
else
  echo "== finetune skipped: training exported no model"; failed+=("finetune")
fi
step cellpose 90 "$PY" benchmarks/gpu_check.py cellpose --fields $F --device $DEV
echo "== total $(( $(date +%s) - t0 )) s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "ALL OK"
