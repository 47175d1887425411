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
.venv/bin/python - "$OUT" <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = [json.loads(p.read_text()) for p in sorted((out / "runs").rglob("result.json"))]
def ms(values):
    values = [100 * v for v in values]
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"
lines = ["| measure | mean ± std over seeds (%) |", "|---|---|"]
for t in range(rows[0]["tasks"]):
    lines.append(f"| task {t} (digits {2 * t}, {2 * t + 1}), task given | {ms([r['task_accuracy'][t] for r in rows])} |")
lines.append(f"| mean over tasks, task given | {ms([r['accuracy'] for r in rows])} |")
lines.append(f"| task inference (batches of 128) | {ms([r['task_inference_accuracy'] for r in rows])} |")
lines.append(f"| accuracy, task unknown (inferred) | {ms([r['accuracy_task_unknown'] for r in rows])} |")
lines.append(f"\n{len(rows)} seeds; {rows[0]['epochs']} epochs per task; {rows[0]['hardware']}.")
(out / "results.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
