#!/usr/bin/env bash
# Issue 5, parts 2-3: CIFAR-10 (JPEG-75 rebuild) Conv2/Conv4. Resumable: rerun to continue; finished
# runs are skipped, an interrupted one resumes from its last epoch. Ordered by priority, so a partial
# run still answers the main questions first: edge-popup vs dense vs bernoulli and the init at k = 0.5
# (Conv4, then Conv2), then width, then the k curves.
# Usage: experiments/cifar10_conv.sh [RUNS_DIR] [CIFAR_DIR]
#   RUNS_DIR (default results/cifar10_conv/runs): each run's config.yaml, metrics.jsonl and result.json
#     are small and committed, so the sweep also resumes across machines; checkpoints are git-ignored.
#   CIFAR_DIR holds cifar-10-jpeg75-python.tar.gz (default: ../shared/data/cifar10-jpeg75)
#   EPOCHS (default 2 on a 2-core CPU, about 11 min per Conv4 run; the paper uses 100: EPOCHS=100 on a GPU,
#     with another RUNS_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-results/cifar10_conv/runs}
DATA=${2:-../shared/data/cifar10-jpeg75}
SM=${SUPERMASK:-.venv/bin/supermask}
EPOCHS=${EPOCHS:-2}
sweep() { $SM sweep "configs/cifar10/$1.yaml" data.name=cifar10-jpeg75 data.root="$DATA" \
  train.epochs="$EPOCHS" train.progress=lines "${@:2}" --out "${OUT:-$RUNS}"; }
# learned weights: Kaiming normal init and lr 0.01 (lr 0.1 from signed-constant weights diverged to NaN)
dense=(supermask.method=dense supermask.weight_init=kaiming_normal optim.lr=0.01)
for model in conv4 conv2; do
  sweep $model supermask.method=edge-popup                              # k = 0.5
  sweep $model "${dense[@]}"
  # vs signed_constant at k=0.5; kept apart (a sweep names runs by model, method and swept axes only)
  OUT="$RUNS/kaiming_normal" sweep $model supermask.weight_init=kaiming_normal
  sweep $model supermask.method=bernoulli optim.lr=20 optim.weight_decay=0
done
sweep conv4 model.width=0.5,2 supermask.method=edge-popup              # width (1.0 above)
sweep conv4 model.width=0.5,2 "${dense[@]}"
# the k sweep with scale_fan (fan x k): without it, k = 0.1 left the loss at ln(10) for 2 epochs (the
# signal shrinks by k per layer in this BatchNorm-free net); kept apart in RUNS/scale_fan
for model in conv4 conv2; do
  OUT="$RUNS/scale_fan" sweep $model supermask.k=0.1,0.3,0.5,0.7,0.9 supermask.scale_fan=true
done
$SM report "$RUNS" --out results/cifar10_conv
