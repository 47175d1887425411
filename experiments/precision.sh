#!/usr/bin/env bash
# Issue 15: does bf16 autocast train as well as fp32? The same runs in both precisions (train.bf16=true
# and false), edge-popup at k = 0.5 (signed constant weights) and learned dense weights, 3 seeds:
#   MNIST LeNet-300-100 (configs/mnist/fc.yaml, EPOCHS_MNIST epochs, default 10) and
#   CIFAR-10 (JPEG-75 rebuild) Conv4 (configs/cifar10/conv4.yaml, EPOCHS_CIFAR epochs, default 2).
# Dense: Kaiming normal weights and lr 0.01 as in experiments/cifar10_conv.sh (lr 0.1 diverged there).
# Needs a CPU (or GPU) with native bf16 for the bf16 arm: train.bf16=true is an error elsewhere; there,
# ONLY="--only train.bf16=false" runs the fp32 arm alone (same run names). Resumable.
# Usage: experiments/precision.sh [mnist|cifar|all]   Env: MNIST_DIR, CIFAR_DIR, THREADS, JOBS (1), ONLY.
set -euo pipefail
cd "$(dirname "$0")/.."
WHICH=${1:-all}
source experiments/common.sh

pair() {  # pair CONFIG OUT overrides...: edge-popup and dense, bf16 and fp32, seeds 0-2
  local config=$1 out=$2; shift 2
  set -- "$@" train.channels_last=false  # NCHW memory, as the committed runs were made
  $SM sweep "$config" "$@" "${THREADS_ARG[@]}" train.bf16=true,false train.seed=0,1,2 --out "$out" --jobs "$JOBS" ${ONLY:-}
  $SM sweep "$config" "$@" "${DENSE[@]}" "${THREADS_ARG[@]}" train.bf16=true,false train.seed=0,1,2 \
    --out "$out" --jobs "$JOBS" ${ONLY:-}
  $SM report "$out" --out "$(dirname "$out")"
}

if [ "$WHICH" = mnist ] || [ "$WHICH" = all ]; then
  pair configs/mnist/fc.yaml results/precision_mnist/runs data.root="${MNIST_DIR:-../shared/data/mnist}" \
    train.epochs="${EPOCHS_MNIST:-10}" train.progress=lines
fi
if [ "$WHICH" = cifar ] || [ "$WHICH" = all ]; then
  pair configs/cifar10/conv4.yaml results/precision_cifar10/runs data.name=cifar10-jpeg75 \
    data.root="${CIFAR_DIR:-../shared/data/cifar10-jpeg75}" train.epochs="${EPOCHS_CIFAR:-2}" train.progress=lines
fi
