"""What a run records: the record of ``result.json`` that single and split-task runs share, the
environment of each epoch, the stretches of epochs per environment, the hardware's name, and the rule
that a run resumes in the precision it ran in."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch

from supermask.data import describe
from supermask.errors import TrainingError
from supermask.precision import precision_name
from supermask.runconfig import RunConfig


def run_record(
    cfg: RunConfig,
    run_dir: Path,
    history: list[dict[str, Any]],
    device: torch.device,
    world: int,
    autocast: bool,
    channels_last: bool,
) -> dict[str, Any]:
    """The part of ``result.json`` that every run writes, single or split-task: what ran (data, model,
    mask settings, seed, the full config), on what (device, hardware, the stretches of epochs per
    environment) and in what precision. The caller adds its results (accuracy, kept fraction, ...)."""
    sm = cfg.supermask
    return {
        "run_dir": str(run_dir),
        "dataset": describe(cfg.data.name),
        "split": "test",
        "epochs": cfg.train.epochs,
        "model": cfg.model.name,
        "width": cfg.model.width,
        "method": sm.method,
        "k": sm.k,
        "weight_init": sm.weight_init,
        "scale_fan": sm.scale_fan,
        "seed": cfg.train.seed,
        "world_size": world,
        "device": str(device),
        "hardware": describe_hardware(device, world),
        "ran_on": ran_on(history),
        "precision": precision_name(autocast),
        "channels_last": channels_last,
        "deterministic": cfg.train.deterministic,
        "method_defaults": cfg.method_defaults,
        "ignored_settings": cfg.ignored_settings,
        "torch": torch.__version__,
        "config": cfg.to_dict(),
    }


def environment(device: torch.device, world: int, autocast: bool, channels_last: bool) -> dict[str, Any]:
    return {
        "world_size": world,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "bf16": autocast,
        "channels_last": channels_last,
        "hardware": describe_hardware(device, world),
    }


def check_same_precision(
    cfg: RunConfig,
    run_dir: Path,
    state: dict[str, Any],
    history: list[dict[str, Any]],
    bf16: bool,
    device: torch.device,
) -> None:
    """A run resumes in the precision its epochs ran in (train.bf16=auto may resolve differently on
    another machine, and runs before bf16 on CPUs read train.bf16=true as CUDA only: a checkpoint from
    before epochs recorded their precision ran bf16 exactly when its setting was true on CUDA)."""
    ran = [row["bf16"] for row in history if isinstance(row.get("bf16"), bool)]
    if not ran and history:
        saved = state.get("config", {}).get("train", {}).get("bf16") if isinstance(state.get("config"), dict) else None
        ran = [saved is True and device.type == "cuda"]
    if ran and ran[-1] != bf16:
        was, now = precision_name(ran[-1]), precision_name(bf16)
        raise TrainingError(
            f"{run_dir} trained epochs 1-{len(history)} in {was}; train.bf16={show_bf16(cfg.train.bf16)} "
            f"would continue it in {now} here. Set train.bf16={str(ran[-1]).lower()} to resume it as it ran, "
            "or start it again (train.resume=false train.overwrite=true)"
        )


def show_bf16(setting: bool | str) -> str:
    return setting if isinstance(setting, str) else str(setting).lower()


def ran_on(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each stretch of epochs that ran on one environment: [{"epochs": [first, last], ...}]."""
    keys = ("world_size", "threads", "device", "bf16", "channels_last", "hardware")
    out: list[dict[str, Any]] = []
    for row in history:
        env = {k: row.get(k) for k in keys}
        if out and all(out[-1][k] == env[k] for k in keys):
            out[-1]["epochs"][1] = row["epoch"]
        else:
            out.append({"epochs": [row["epoch"], row["epoch"]], **env})
    return out


def describe_hardware(device: torch.device, world: int = 1) -> str:
    """What a run ran on, for reports: "2 x NVIDIA H100 80GB HBM3" or "AMD EPYC CPU, 2 threads"."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), name)
        except OSError:
            pass
        name = f"{name} CPU, {torch.get_num_threads()} threads"
    return f"{world} x {name}" if world > 1 else name
