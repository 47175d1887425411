#!/usr/bin/env bash
# Issue 13: every mask method side by side, under one definition of k. Resumable: rerun to continue.
# Usage: experiments/methods.sh [mnist|cifar|all]   (default: all; MNIST first)
# Env: MNIST_DIR (../shared/data/mnist), CIFAR_DIR (../shared/data/cifar10-jpeg75), EPOCHS_MNIST (10),
#      EPOCHS_CIFAR (2), THREADS (unset: PyTorch's default), JOBS (1).
# The same schedule for every method (SGD momentum 0.9, batch 128, cosine, the epochs above); each
# method's own recommended optimiser settings fill lr / weight decay / optimiser where its paper has
# them (bernoulli: lr 20, no weight decay; threshold: Adam lr 1e-4; gem-miner: no weight decay), the
# rest use the defaults (lr 0.1, weight decay 1e-4). Methods with a k run at k = 0.05, 0.1, 0.3, 0.5;
# the others at their natural density; learned dense weights are the baseline. 3 seeds each.
set -euo pipefail
cd "$(dirname "$0")/.."
WHICH=${1:-all}
source experiments/common.sh

grid() {  # grid OUT K_EXTRA common...: K_EXTRA is added to the runs of the per-layer methods with a k
  local out=$1 k_extra=$2; shift 2
  local k_grid=(supermask.method=edge-popup,edge-popup-global,biprop,gem-miner,iterand supermask.k=0.05,0.1,0.3,0.5
    train.seed=0,1,2 --out "$out" --jobs "$JOBS")
  if [ -z "$k_extra" ]; then
    $SM sweep "$@" "${THREADS_ARG[@]}" "${k_grid[@]}"
  else  # K_EXTRA (scale_fan) assumes each layer keeps k: the global selection runs without it
    $SM sweep "$@" $k_extra "${THREADS_ARG[@]}" "${k_grid[@]}" --only supermask.method=edge-popup,biprop,gem-miner,iterand
    $SM sweep "$@" "${THREADS_ARG[@]}" "${k_grid[@]}" --only supermask.method=edge-popup-global
  fi
  $SM sweep "$@" "${THREADS_ARG[@]}" supermask.method=bernoulli,signed-supermask,threshold,dense \
    train.seed=0,1,2 --out "$out" --jobs "$JOBS"
  $SM report "$out" --out "$(dirname "$out")"
}

if [ "$WHICH" = mnist ] || [ "$WHICH" = all ]; then
  grid results/methods_mnist/runs "" model.name=fc data.name=mnist data.root="${MNIST_DIR:-../shared/data/mnist}" \
    data.batch_size=128 train.epochs="${EPOCHS_MNIST:-10}" train.bf16=false train.channels_last=false train.progress=lines  # fp32, NCHW, as committed
fi
if [ "$WHICH" = cifar ] || [ "$WHICH" = all ]; then
  # Conv4 has no BatchNorm: at k = 0.05 without scale_fan the kept signal vanishes (edge-popup: 13.7% and
  # 14.1%, results/methods_cifar10/without_scale_fan), so the per-layer methods with a k scale the fan by k
  # here. edge-popup-global cannot (each layer keeps another, changing fraction; scale_fan with it is a
  # config error since 2026-11-29): its runs with scale_fan collapsed to 10%
  # (results/methods_cifar10/global_with_scale_fan), and it runs without scale_fan.
  grid results/methods_cifar10/runs supermask.scale_fan=true model.name=conv4 data.name=cifar10-jpeg75 \
    data.root="${CIFAR_DIR:-../shared/data/cifar10-jpeg75}" data.batch_size=128 train.epochs="${EPOCHS_CIFAR:-2}" \
    train.bf16=false train.channels_last=true train.progress=lines
  # fp32, pinned: the grid outlasts a session, and the sessions' machines differ (some CPUs have no bf16,
  # where train.bf16=auto means fp32), so every run of the table is made in the one precision that every
  # machine has (bf16 would be 2.9x faster on a CPU with AVX-512 BF16, docs/BENCHMARKS.md). Channels-last
  # memory: a Conv4 fp32 step 1.58x faster on a 2-core Intel Xeon without bf16 (1.31x on the AMD EPYC);
  # a layout changes only rounding, as a thread count does. The first 10 runs (edge-popup k = 0.05-0.3
  # and k = 0.5 seed 0) ran in NCHW; each epoch's layout is recorded in its metrics.jsonl.
fi
