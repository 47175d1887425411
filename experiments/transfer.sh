#!/usr/bin/env bash
# Issue 14: masks over trained weights. CIFAR-10 (JPEG-75 rebuild), Conv4: trained dense on classes 0-4,
# then classes 5-9 learned by (a) a threshold mask over those weights (Piggyback), (b) an edge-popup mask
# over them at k = BEST_K, (c) full fine-tuning, (d) an edge-popup mask over random weights, (e) dense from
# scratch. Every phase-2 run has a learned 5-way head (last_layer_dense) and EPOCHS epochs. 3 seeds.
# Resumable. Env: CIFAR_DIR (../shared/data/cifar10-jpeg75), EPOCHS (2), BEST_K (0.5), THREADS.
# Precision: train.bf16=auto (bf16 on this project's CPU; recorded in each result.json); NCHW memory
# (train.channels_last=false), as the committed runs were made.
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/common.sh
OUT=results/transfer_cifar10
common=(model.name=conv4 data.name=cifar10-jpeg75 data.root="${CIFAR_DIR:-../shared/data/cifar10-jpeg75}"
        data.batch_size=128 train.epochs="${EPOCHS:-2}" train.progress=lines train.channels_last=false
        "${THREADS_ARG[@]}")
late=(data.classes="[5, 6, 7, 8, 9]" supermask.last_layer_dense=true)
for seed in 0 1 2; do
  base="$OUT/runs/base-s$seed"
  $SM train "${common[@]}" data.classes="[0, 1, 2, 3, 4]" supermask.method=dense optim.lr=0.01 \
    train.seed=$seed train.out_dir="$OUT/runs" train.run_name="base-s$seed"
  trained=(model.init_from="$base" supermask.weight_init=pretrained)
  $SM train "${common[@]}" "${late[@]}" "${trained[@]}" supermask.method=threshold supermask.bias=frozen \
    train.seed=$seed train.out_dir="$OUT/runs" train.run_name="a-threshold-s$seed"
  $SM train "${common[@]}" "${late[@]}" "${trained[@]}" supermask.method=edge-popup supermask.k="${BEST_K:-0.5}" \
    supermask.bias=frozen train.seed=$seed train.out_dir="$OUT/runs" train.run_name="b-edge-popup-s$seed"
  $SM train "${common[@]}" "${late[@]}" "${trained[@]}" supermask.method=dense optim.lr=0.01 \
    train.seed=$seed train.out_dir="$OUT/runs" train.run_name="c-fine-tune-s$seed"
  $SM train "${common[@]}" "${late[@]}" supermask.method=edge-popup supermask.k="${BEST_K:-0.5}" \
    train.seed=$seed train.out_dir="$OUT/runs" train.run_name="d-edge-popup-random-s$seed"
  $SM train "${common[@]}" "${late[@]}" supermask.method=dense optim.lr=0.01 \
    train.seed=$seed train.out_dir="$OUT/runs" train.run_name="e-scratch-s$seed"
done
$SM report "$OUT/runs" --out "$OUT"
PY=${PYTHON:-.venv/bin/python}  # the bytes each run's checkpoint adds, and the table of docs/RESULTS.md section 6
$PY experiments/checkpoint_sizes.py "$OUT/runs" > "$OUT/checkpoint_bytes.csv"
$PY experiments/transfer_table.py "$OUT/checkpoint_bytes.csv" > "$OUT/transfer_table.md"
