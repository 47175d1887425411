#!/usr/bin/env bash
# Issue 5, part 1: MNIST LeNet-300-100, 3 seeds. Resumable: rerun to continue where it stopped.
# Usage: experiments/mnist_fc.sh [RUNS_DIR] [MNIST_DIR]   (defaults: results/mnist_fc/runs, ../shared/data/mnist)
# Each run's config.yaml, metrics.jsonl and result.json are small and meant to be committed (checkpoints are
# git-ignored), so the sweep resumes across machines. The 2026-11-24 runs predate this layout: their
# numbers are in results/mnist_fc/runs.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-results/mnist_fc/runs}
DATA=${2:-../shared/data/mnist}
SM=${SUPERMASK:-.venv/bin/supermask}
EPOCHS=${EPOCHS:-10}
# fp32, as the committed results were made (before train.bf16=auto made bf16 the default on bf16 CPUs)
common=(configs/mnist/fc.yaml data.root="$DATA" train.epochs="$EPOCHS" train.progress=lines train.bf16=false)
$SM sweep "${common[@]}" supermask.k=0.05,0.1,0.3,0.5,0.7,0.9 \
  supermask.weight_init=signed_constant,kaiming_normal train.seed=0,1,2 --out "$RUNS"
# Zhou et al.'s supermask: a large mask learning rate (20 was best of 5, 20, 100 in a 2-epoch check), no weight decay.
$SM sweep "${common[@]}" supermask.method=bernoulli optim.lr=20 optim.weight_decay=0 \
  train.seed=0,1,2 --out "$RUNS"
# Learned dense weights, same network and schedule.
$SM sweep "${common[@]}" supermask.method=dense optim.lr=0.05 train.seed=0,1,2 --out "$RUNS"
$SM report "$RUNS" --out results/mnist_fc
