"""The table of a multi-task experiment (docs/RESULTS.md section 6 and "Against the papers") from its runs'
``result.json``: each task's accuracy with the task given (per task when there are at most 10 tasks,
else the mean, the worst task and the best), SupSup's task inference over the test batches, and the
accuracy with the inferred task's mask; mean ± sample std over seeds. Writes ``OUT/results.md``.

    python experiments/tasks_table.py results/supsup_splitmnist
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def mean_std(values: list[float]) -> str:
    values = [100 * v for v in values]
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def table(rows: list[dict]) -> list[str]:
    tasks, per_task = rows[0]["tasks"], rows[0]["classes_per_task"]
    permuted = rows[0]["config"]["data"].get("permuted_tasks", 1) > 1
    batch = rows[0]["config"]["data"]["eval_batch_size"]
    lines = ["| measure | mean ± std over seeds (%) |", "|---|---|"]
    if tasks <= 10:
        for t in range(tasks):
            classes = ", ".join(str(t * per_task + c) for c in range(per_task))
            what = f"permutation {t}" if permuted else f"classes {classes}"
            lines.append(f"| task {t} ({what}), task given | {mean_std([r['task_accuracy'][t] for r in rows])} |")
    else:
        lines.append(
            f"| worst of the {tasks} tasks, task given | {mean_std([min(r['task_accuracy']) for r in rows])} |"
        )
        lines.append(f"| best of the {tasks} tasks, task given | {mean_std([max(r['task_accuracy']) for r in rows])} |")
    lines.append(f"| mean over tasks, task given | {mean_std([r['accuracy'] for r in rows])} |")
    lines.append(
        f"| task inference (test batches of {batch}) | {mean_std([r['task_inference_accuracy'] for r in rows])} |"
    )
    lines.append(f"| accuracy, task unknown (inferred) | {mean_std([r['accuracy_task_unknown'] for r in rows])} |")
    lines.append(
        f"\n{len(rows)} seeds; {tasks} tasks ({'permuted' if permuted else 'split'}), {rows[0]['epochs']} epochs per "
        f"task; {rows[0]['hardware']}."
    )
    return lines


def main() -> None:
    out = Path(sys.argv[1])
    rows = [json.loads(p.read_text()) for p in sorted((out / "runs").rglob("result.json"))]
    if not rows:
        sys.exit(f"no result.json under {out / 'runs'}")
    lines = table(rows)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
