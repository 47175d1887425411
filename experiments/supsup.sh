#!/usr/bin/env bash
# Issue 14: SupSup on SplitMNIST. One random LeNet-300-100, 5 tasks of 2 digits, one edge-popup mask per
# task (k = 0.5, signed constant weights), a shared 2-way output layer with task-local labels, each task
# trained for EPOCHS epochs (SGD lr 0.1, cosine within the task); task inference over test batches of 128.
# Resumable. Usage: experiments/supsup.sh   Env: MNIST_DIR (../shared/data/mnist), EPOCHS (5), THREADS.
set -euo pipefail
cd "$(dirname "$0")/.."
SM=${SUPERMASK:-.venv/bin/supermask}
THREADS_ARG=()
[ -n "${THREADS:-}" ] && THREADS_ARG=(train.threads="$THREADS")
OUT=results/supsup_splitmnist
$SM sweep configs/mnist/fc.yaml data.root="${MNIST_DIR:-../shared/data/mnist}" data.split_tasks=5 \
  data.eval_batch_size=128 train.epochs="${EPOCHS:-5}" train.progress=lines train.bf16=false "${THREADS_ARG[@]}" \
  train.seed=0,1,2 --out "$OUT/runs"
# The summary: per-task accuracy with the task given, task inference, accuracy with the inferred task.
.venv/bin/python experiments/tasks_table.py "$OUT"
