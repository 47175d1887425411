#!/usr/bin/env bash
# Issue 13: every mask method side by side, under one definition of k. Resumable: rerun to continue.
# Usage: experiments/methods.sh [mnist|cifar|all]   (default: all; MNIST first)
# Env: MNIST_DIR (../shared/data/mnist), CIFAR_DIR (../shared/data/cifar10-jpeg75), EPOCHS_MNIST (10),
#      EPOCHS_CIFAR (2), THREADS (unset: PyTorch's default), JOBS (1), ONLY (e.g. ONLY="--only train.seed=0":
#      a subset of the grid under the whole grid's run names, such as every method's first seed first).
# The same schedule for every method (SGD momentum 0.9, batch 128, cosine, the epochs above); each
# method's own recommended optimiser settings fill lr / weight decay / optimiser where its paper has
# them (bernoulli: lr 20, no weight decay; threshold: Adam lr 1e-4; gem-miner: no weight decay), the
# rest use the defaults (lr 0.1, weight decay 1e-4). Methods with a k run at k = 0.05, 0.1, 0.3, 0.5;
# the others at their natural density; learned dense weights are the baseline. 3 seeds each.
set -euo pipefail
cd "$(dirname "$0")/.."
WHICH=${1:-all}
source experiments/common.sh

grid() {  # grid OUT common...: the MNIST grid (every method in the same sweeps)
  local out=$1; shift
  local k_grid=(supermask.method=edge-popup,edge-popup-global,biprop,gem-miner,iterand supermask.k=0.05,0.1,0.3,0.5
    train.seed=0,1,2 --out "$out" --jobs "$JOBS")
  $SM sweep "$@" "${THREADS_ARG[@]}" "${k_grid[@]}" ${ONLY:-}
  $SM sweep "$@" "${THREADS_ARG[@]}" supermask.method=bernoulli,signed-supermask,threshold,dense \
    train.seed=0,1,2 --out "$out" --jobs "$JOBS" ${ONLY:-}
  $SM report "$out" --out "$(dirname "$out")"
}

if [ "$WHICH" = mnist ] || [ "$WHICH" = all ]; then
  grid results/methods_mnist/runs model.name=fc data.name=mnist data.root="${MNIST_DIR:-../shared/data/mnist}" \
    data.batch_size=128 train.epochs="${EPOCHS_MNIST:-10}" train.bf16=false train.channels_last=false train.progress=lines  # fp32, NCHW, as committed
fi
if [ "$WHICH" = cifar ] || [ "$WHICH" = all ]; then
  out=results/methods_cifar10/runs
  common=(model.name=conv4 data.name=cifar10-jpeg75 data.root="${CIFAR_DIR:-../shared/data/cifar10-jpeg75}"
    data.batch_size=128 train.epochs="${EPOCHS_CIFAR:-2}" train.bf16=false train.channels_last=true train.progress=lines)
  k_grid=(supermask.method=edge-popup,edge-popup-global,biprop,gem-miner,iterand supermask.k=0.05,0.1,0.3,0.5
    train.seed=0,1,2 --out "$out" --jobs "$JOBS")
  # Conv4 has no BatchNorm: at k = 0.05 without scale_fan the kept signal vanishes (edge-popup: 13.7% and
  # 14.1%, results/methods_cifar10/without_scale_fan), so the methods whose every layer keeps k scale the
  # fan by k here.
  $SM sweep "${common[@]}" supermask.scale_fan=true "${THREADS_ARG[@]}" "${k_grid[@]}" \
    --only supermask.method=edge-popup,biprop,iterand ${ONLY:-}
  # edge-popup-global's layers keep other, changing fractions (scale_fan with it is a config error since
  # 2026-11-29; its runs with it collapsed to 10%: results/methods_cifar10/global_with_scale_fan).
  $SM sweep "${common[@]}" "${THREADS_ARG[@]}" "${k_grid[@]}" --only supermask.method=edge-popup-global ${ONLY:-}
  # Gem-Miner keeps about half of each layer until it prunes (scale_fan is a config error with it too), and
  # its default period of 5 epochs never prunes in 2: period = 1 prunes to k after epoch 1 and trains the
  # final mask in epoch 2 (the paper's schedule, compressed).
  $SM sweep "${common[@]}" supermask.options.period=1 "${THREADS_ARG[@]}" "${k_grid[@]}" \
    --only supermask.method=gem-miner ${ONLY:-}
  $SM sweep "${common[@]}" "${THREADS_ARG[@]}" supermask.method=bernoulli,signed-supermask,threshold \
    train.seed=0,1,2 --out "$out" --jobs "$JOBS" ${ONLY:-}
  # The learned dense baseline is the fp32 arm of experiments/precision.sh (docs/RESULTS.md section 7): the
  # same resolved experiment as a dense run here would be (Kaiming-normal weights, lr 0.01: lr 0.1 from
  # signed-constant weights diverges to NaN on Conv4), so it is run (or found finished) there, not twice.
  $SM sweep configs/cifar10/conv4.yaml data.name=cifar10-jpeg75 data.root="${CIFAR_DIR:-../shared/data/cifar10-jpeg75}" \
    train.epochs="${EPOCHS_CIFAR:-2}" train.progress=lines train.channels_last=false "${DENSE[@]}" "${THREADS_ARG[@]}" \
    train.bf16=true,false train.seed=0,1,2 --out results/precision_cifar10/runs --jobs "$JOBS" --only train.bf16=false ${ONLY:-}
  $SM report "$out" results/precision_cifar10/runs/conv4-dense_bf16=false_seed=* --out results/methods_cifar10
  # fp32, pinned: the grid outlasts a session, and the sessions' machines differ (some CPUs have no bf16,
  # where train.bf16=auto means fp32), so every run of the table is made in the one precision that every
  # machine has (bf16 would be 2.9x faster on a CPU with AVX-512 BF16, docs/BENCHMARKS.md). Channels-last
  # memory: a Conv4 fp32 step 1.58x faster on a 2-core Intel Xeon without bf16 (1.31x on the AMD EPYC);
  # a layout changes only rounding, as a thread count does. The first 10 runs (edge-popup k = 0.05-0.3
  # and k = 0.5 seed 0) ran in NCHW; each epoch's layout is recorded in its metrics.jsonl.
fi
