"""supermask benchmarks (issue 4). Not tests: they print medians and ratios.

    python benchmarks/run_all.py [--reps N] [--only step,paper,eval,memory,checkpoint,epoch] [--models lenet,conv4,resnet18]

Variants are timed in one process, alternating (A B C A B C ...), and reported as medians and ratios.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import supermask  # noqa: E402
from common import alternate, current_rss, machine, peak_rss, reset_peak_rss  # noqa: E402
from paper_reference import to_paper_subnet  # noqa: E402
from supermask.models import create  # noqa: E402

MODELS = {
    "lenet": lambda: create("fc", in_channels=1, image_size=28),
    "conv4": lambda: create("conv4"),
    "resnet18": lambda: create("cifar_resnet18"),
}
SHAPES = {"lenet": (1, 28), "conv4": (3, 32), "resnet18": (3, 32)}


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor):  # type: ignore[no-untyped-def]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def variants(name: str, k: float = 0.5) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    dense = MODELS[name]()
    ours = supermask.to_supermask(MODELS[name](), supermask.SupermaskConfig(k=k))
    paper = to_paper_subnet(MODELS[name](), k)
    return {"dense": dense.to(device()), "supermask": ours.to(device()), "paper-sort": paper.to(device())}


def batch(name: str, n: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    c, s = SHAPES[name]
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, c, s, s, generator=g).to(device()), torch.randint(0, 10, (n,), generator=g).to(device())


def with_sort_below(n: int, step):  # type: ignore[no-untyped-def]
    """``step`` run with :data:`supermask.core.masks.SORT_BELOW` set to ``n`` (restored after)."""
    from supermask.core import masks

    def f() -> None:
        saved, masks.SORT_BELOW = masks.SORT_BELOW, n
        try:
            step()
        finally:
            masks.SORT_BELOW = saved

    return f


def bench_step(names: list[str], reps: int, out: dict) -> None:
    print("\n## (a, b) training step, batch 128: median seconds and ratios")
    print(f"{'model':10} {'dense':>9} {'supermask':>10} {'paper-sort':>11} {'ours/dense':>11} {'paper/ours':>11}")
    for name in names:
        x, y = batch(name)
        steps = {v: make_step(m, x, y) for v, m in variants(name).items()}
        if device().type == "cuda":  # the same model, selection by topk only
            steps["supermask-topk"] = with_sort_below(0, steps["supermask"])
        r = max(3, reps // 4) if name == "resnet18" and device().type == "cpu" else reps
        t = alternate(steps, r)
        out[f"step/{name}"] = t
        print(
            f"{name:10} {t['dense']:9.4f} {t['supermask']:10.4f} {t['paper-sort']:11.4f} "
            f"{t['supermask'] / t['dense']:11.3f} {t['paper-sort'] / t['supermask']:11.2f}"
            + (f"  topk-only/dense {t['supermask-topk'] / t['dense']:.3f}" if "supermask-topk" in t else "")
        )


def bench_eval(names: list[str], reps: int, out: dict) -> None:
    print("\n## (c) evaluation throughput, batch 512: merged supermask vs dense (images/s)")
    for name in names:
        x, _ = batch(name, 512)
        ms = variants(name)
        merged = supermask.merge(ms["supermask"]).eval()
        dense = ms["dense"].eval()
        if name == "resnet18":  # same BatchNorm kind, so only the weights differ
            dense = supermask.merge(supermask.to_supermask(MODELS[name](), supermask.SupermaskConfig(method="dense")))
            dense = dense.to(device()).eval()
            for m in dense.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.affine, m.weight, m.bias = False, None, None

        def run(model: nn.Module):  # type: ignore[no-untyped-def]
            def f() -> None:
                with torch.no_grad():
                    model(x)

            return f

        r = max(3, reps // 4) if name == "resnet18" and device().type == "cpu" else reps
        t = alternate({"dense": run(dense), "merged": run(merged)}, r)
        out[f"eval/{name}"] = t
        print(
            f"{name:10} dense {512 / t['dense']:9.0f}/s  merged {512 / t['merged']:9.0f}/s  "
            f"merged/dense time {t['merged'] / t['dense']:.3f}"
        )


def memory_child(name: str, variant: str) -> int:
    """Run in a fresh process: the peak extra bytes of training steps beyond the built model and batch."""
    x, y = batch(name)
    model = variants(name)[variant]
    step = make_step(model, x, y)
    reset_peak_rss()
    before = current_rss()
    for _ in range(3):
        step()
    return peak_rss() - before


# glibc grows its mmap threshold after the first large free, after which freed blocks of up to 32 MiB
# stay in the process; RSS then depends on the order of frees, not on what a step needs. A fixed
# threshold returns every freed large block at once, so the peak RSS is the peak of live memory.
FIXED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


def bench_memory_cuda(names: list[str], out: dict) -> None:
    print("\n## (d) peak GPU memory of training steps beyond the model and batch (allocator peak), batch 128")
    for name in names:
        peaks = {}
        for v in ("dense", "supermask"):
            x, y = batch(name)
            model = variants(name)[v]
            step = make_step(model, x, y)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            for _ in range(3):
                step()
            torch.cuda.synchronize()
            peaks[v] = torch.cuda.max_memory_allocated() - before
            del model, step
        out[f"memory/{name}"] = peaks
        d, s = peaks["dense"], peaks["supermask"]
        print(f"{name:10} dense {d / 2**20:7.1f} MiB  supermask {s / 2**20:7.1f} MiB  ratio {s / d:.3f}")


def bench_memory(names: list[str], out: dict) -> None:
    import os
    import subprocess

    if device().type == "cuda":
        bench_memory_cuda(names, out)
        return
    print("\n## (d) peak memory of training steps beyond the model and batch (process RSS), batch 128")
    print("   live: glibc with a fixed mmap threshold (peak of live memory); default: glibc's defaults")
    for name in names:
        peaks = {}
        for alloc, extra_env in (("live", FIXED_MALLOC), ("default", {})):
            for v in ("dense", "supermask"):
                code = (
                    f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import torch; "
                    f"torch.set_num_threads({torch.get_num_threads()}); "
                    f"from run_all import memory_child; print(memory_child({name!r}, {v!r}))"
                )
                env = {k: v for k, v in os.environ.items() if k not in FIXED_MALLOC} | extra_env
                res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
                peaks[f"{alloc}/{v}"] = int(res.stdout.strip().splitlines()[-1])
        out[f"memory/{name}"] = peaks
        line = f"{name:10}"
        for alloc in ("live", "default"):
            d, s = peaks[f"{alloc}/dense"], peaks[f"{alloc}/supermask"]
            line += f"  {alloc}: dense {d / 2**20:7.1f} MiB supermask {s / 2**20:7.1f} MiB ratio {s / d:.3f}"
        print(line)


def bench_checkpoint(names: list[str], out: dict) -> None:
    print("\n## (e) checkpoint bytes: supermask.save (k=0.5) vs fp32 state_dict")
    for name in names:
        ms = variants(name)
        buf = io.BytesIO()
        torch.save(ms["dense"].state_dict(), buf)
        with tempfile.TemporaryDirectory() as d:
            supermask.save(ms["supermask"], d)
            size = sum(p.stat().st_size for p in Path(d).iterdir())
        out[f"checkpoint/{name}"] = {"state_dict": buf.tell(), "supermask": size}
        print(f"{name:10} state_dict {buf.tell():>11,} B  supermask {size:>9,} B  ratio 1/{buf.tell() / size:.1f}")


def bench_epoch(out: dict, steps_conv4: int, data_dir: str | None) -> None:
    from supermask.data import DATASETS, TensorLoader

    print("\n## (f) data pipeline share of an epoch: loader steps vs the same steps on one fixed batch")
    shared = Path(data_dir) if data_dir else Path(__file__).resolve().parents[2] / "shared" / "data"
    for name, dataset, model_name, steps in (
        ("mnist-fc", "mnist", "lenet", None),
        ("cifar-conv4", "cifar10", "conv4", steps_conv4),
    ):
        info = DATASETS[dataset]
        n = 60000 if dataset == "mnist" else 50000
        try:
            from supermask.data import load_arrays

            if dataset == "mnist":
                arr = load_arrays("mnist", shared / "mnist")["train"]
            elif (shared / "cifar10-jpeg75" / "cifar-10-batches-py").is_dir():  # unpacked (md5s checked)
                arr = load_arrays("cifar10-jpeg75", shared / "cifar10-jpeg75")["train"]
            else:
                tmp = Path(tempfile.mkdtemp())
                (tmp / "cifar-10-jpeg75-python.tar.gz").symlink_to(
                    shared / "cifar10-jpeg75" / "cifar-10-jpeg75-python.tar.gz"
                )
                arr = load_arrays("cifar10-jpeg75", tmp)["train"]
            xs, ys = torch.from_numpy(arr[0].copy()), torch.from_numpy(arr[1].copy())
            source = "real"
        except Exception:
            c, s = info.in_channels, info.image_size
            xs, ys = torch.randint(0, 256, (n, c, s, s), dtype=torch.uint8), torch.randint(0, 10, (n,))
            source = "random"
        loader = TensorLoader(xs, ys, info, 128, train=True, device=device(), seed=0)
        model = supermask.to_supermask(MODELS[model_name](), supermask.SupermaskConfig()).to(device())
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
        total = len(loader) if steps is None else steps
        x0, y0 = next(iter(loader))

        def train_step(x: torch.Tensor, y: torch.Tensor) -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()

        def e2e() -> None:
            for i, (x, y) in enumerate(loader):
                if i >= total:
                    break
                train_step(x, y)

        def compute() -> None:
            for _ in range(total):
                train_step(x0, y0)

        def data_only() -> None:
            for i, _ in enumerate(loader):
                if i >= total:
                    break

        t = alternate({"e2e": e2e, "compute": compute, "data": data_only}, 3, warmup=1)
        share = t["data"] / t["e2e"]
        out[f"epoch/{name}"] = {**t, "steps": total, "data_share": share, "source": source}
        print(
            f"{name:12} {total} steps ({source} data): end-to-end {t['e2e']:.2f}s  compute {t['compute']:.2f}s  "
            f"data alone {t['data']:.3f}s  data share {100 * share:.1f}%"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=12)
    parser.add_argument("--only", default="step,eval,memory,checkpoint,epoch")
    parser.add_argument("--models", default="lenet,conv4,resnet18")
    parser.add_argument("--conv4-steps", type=int, default=40)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--data-dir", default=None, help="holds mnist/ and cifar10-jpeg75/ (default ../shared/data)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.models.split(",")
    print(f"# supermask benchmarks: {machine()}")
    out: dict = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M")}
    only = args.only.split(",")
    if "step" in only:
        bench_step(names, args.reps, out)
    if "eval" in only:
        bench_eval(names, args.reps, out)
    if "memory" in only:
        bench_memory(names, out)
    if "checkpoint" in only:
        bench_checkpoint(names, out)
    if "epoch" in only:
        bench_epoch(out, args.conv4_steps, args.data_dir)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
