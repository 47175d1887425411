#!/usr/bin/env bash
# Issue 15: the paper's schedule (Figure 3), on CIFAR-10 (JPEG-75 rebuild): SGD lr 0.1, momentum 0.9,
# weight decay 1e-4, cosine, batch 128 (configs/cifar10/*.yaml); learned dense weights from Kaiming normal
# at lr 0.01 as in experiments/cifar10_conv.sh (lr 0.1 diverged from signed-constant weights there). The
# defaults of precision and memory layout: train.bf16=auto (bf16 on CPUs with AVX-512 BF16 / AMX and on
# GPUs) and train.channels_last=auto (channels-last on CPUs: a Conv4 bf16 step 1.22x faster on this
# project's CPU); both recorded per epoch in metrics.jsonl.
#   long:  Conv4 edge-popup at k = 0.5 (signed constant weights) and Conv4 dense, EPOCHS_LONG (100) epochs
#          (about 91 s an epoch, 2.5 hours a run, on this project's 2-core CPU with bf16 and channels-last).
#   short: EPOCHS_SHORT (30) epochs, in this order: Conv4's k curve (0.1, 0.3, 0.5, 0.7, 0.9; scale_fan,
#          the fan scaled by k, as the k curves of experiments/cifar10_conv.sh), then the Conv2 and Conv6
#          edge-popup / dense pairs at k = 0.5.
# A run's state does not survive a change of machine: start and finish each run on one machine (rerunning
# continues an interrupted run there). On a GPU, run the whole grid at 100 epochs: EPOCHS_SHORT=100.
# Usage: experiments/paper_schedule.sh [long|short|all]   Env: CIFAR_DIR, THREADS, JOBS (1), SEEDS (0),
#   BF16 (auto; the 100-epoch edge-popup run of 2026-12-03 runs in fp32: BF16=false THREADS=1 continues it,
#   after experiments/park.sh resume results/paper_schedule_100/parked/conv4-edge-popup.tar.gz).
set -euo pipefail
cd "$(dirname "$0")/.."
WHICH=${1:-all}
source experiments/common.sh
SEEDS=${SEEDS:-0}
sweep() {  # sweep MODEL OUT EPOCHS overrides...
  local model=$1 out=$2 epochs=$3; shift 3
  $SM sweep "configs/cifar10/$model.yaml" data.name=cifar10-jpeg75 data.root="${CIFAR_DIR:-../shared/data/cifar10-jpeg75}" \
    train.epochs="$epochs" train.progress=lines train.seed="$SEEDS" train.bf16="${BF16:-auto}" "${THREADS_ARG[@]}" "$@" \
    --out "$out" --jobs "$JOBS"
}
if [ "$WHICH" = long ] || [ "$WHICH" = all ]; then
  OUT=results/paper_schedule_100/runs
  sweep conv4 $OUT "${EPOCHS_LONG:-100}" supermask.method=edge-popup supermask.k=0.5
  sweep conv4 $OUT "${EPOCHS_LONG:-100}" "${DENSE[@]}"
  $SM report $OUT --out "$(dirname $OUT)"
fi
if [ "$WHICH" = short ] || [ "$WHICH" = all ]; then
  OUT=results/paper_schedule_${EPOCHS_SHORT:-30}/runs
  sweep conv4 "$OUT/k_curve" "${EPOCHS_SHORT:-30}" supermask.k=0.5,0.3,0.7,0.1,0.9 supermask.scale_fan=true
  for model in conv2 conv6; do
    sweep $model "$OUT" "${EPOCHS_SHORT:-30}" supermask.method=edge-popup supermask.k=0.5
    sweep $model "$OUT" "${EPOCHS_SHORT:-30}" "${DENSE[@]}"
  done
  $SM report "$OUT" --out "$(dirname "$OUT")"
fi
