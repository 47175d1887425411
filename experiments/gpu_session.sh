#!/usr/bin/env bash
# One prepared script for a lent GPU (the device tool: one call, a fixed budget of device time). In order,
# while time remains: the CUDA tests, the step benchmark (whole-model selection, SegmentedTopK, on the GPU:
# docs/BENCHMARKS.md "not yet timed"), the selection kernels alone, then the issue-23 GPU-scale runs on
# CIFAR-10 (JPEG-75 rebuild), each sweep under train.time_limit = the time left, so the script ends inside
# the budget. A run cut short is not a result (its state stays on the GPU machine); finished runs and the
# logs are written under OUT, which the device tool brings back.
# Usage (on the GPU machine, from the repository root): BUDGET=780 OUT=$OUT experiments/gpu_session.sh
# Env: BUDGET (seconds for the whole script, 780), OUT (where to write, results/gpu_session),
#      CIFAR_DIR (../shared/data/cifar10-jpeg75), EPOCHS (100), PYTHON (python3), RUNS (the sweeps, below),
#      EXTRA (more overrides for every sweep; a smoke test on a CPU: EPOCHS=1 EXTRA=train.max_steps=2),
#      SKIP (names of steps to leave out, e.g. "cuda_tests step_benchmark selection").
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
BUDGET=${BUDGET:-780}
OUT=${OUT:-results/gpu_session}
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
step() {  # step NAME COMMAND...: run it if time is left, its output in OUT/NAME.log
  local name=$1; shift
  case " ${SKIP:-} " in *" $name "*) return ;; esac
  if [ "$(left)" -lt 60 ]; then echo "skipped $name: $(left) s left" | tee -a "$OUT/summary.log"; return; fi
  echo "== $name ($(left) s left)" | tee -a "$OUT/summary.log"
  timeout "$(left)" "$@" > "$OUT/$name.log" 2>&1
  echo "   exit $? after $(( $(date +%s) - START )) s" | tee -a "$OUT/summary.log"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.txt" 2>&1 || true
step cuda_tests "$PYTHON" -m pytest -q -p no:cacheprovider tests/system/test_cuda.py
step step_benchmark "$PYTHON" benchmarks/run_all.py --only step,memory --reps 30
step selection "$PYTHON" benchmarks/selection.py
CIFAR="data.name=cifar10-jpeg75 data.root=${CIFAR_DIR:-../shared/data/cifar10-jpeg75}"
# the issue's order after Conv4 (which runs on the CPU): IteRand against edge-popup on Conv6 at one k,
# then the Conv2/Conv6/Conv8 edge-popup / dense pairs of Figure 3
RUNS=${RUNS:-"iterand:configs/papers/iterand/cifar10_conv6.yaml
edge-popup:configs/papers/iterand/cifar10_conv6.yaml supermask.method=edge-popup supermask.options={}
conv2-edge-popup:configs/cifar10/conv2.yaml supermask.method=edge-popup
conv2-dense:configs/cifar10/conv2.yaml supermask.method=dense supermask.weight_init=kaiming_normal optim.lr=0.01"}
while IFS= read -r line; do
  [ -n "$line" ] || continue
  name=${line%%:*}; args=${line#*:}
  # shellcheck disable=SC2086  # the arguments are words
  step "run_$name" "$PYTHON" -m supermask sweep $args $CIFAR train.epochs="${EPOCHS:-100}" train.progress=lines \
    train.time_limit="$(( $(left) - 45 ))" ${EXTRA:-} --out "$OUT/runs/$name"
done <<< "$RUNS"
echo "done after $(( $(date +%s) - START )) s of $BUDGET" | tee -a "$OUT/summary.log"
