"""How a run computes: its precision, ``train.bf16`` = ``auto`` | ``true`` | ``false``, and its memory
layout, ``train.channels_last`` = ``auto`` | ``true`` | ``false``.

bf16 autocast covers the convolutions and matrix products only. Scores, masks, the selection, the
loss and the optimiser stay fp32 (autocast leaves ``topk``, ``sort``, elementwise products and
``cross_entropy`` of a ``.float()`` input in fp32). ``auto`` turns it on where the hardware computes
bf16 natively: CUDA GPUs that support it, and CPUs with AVX-512 BF16 or AMX (x86) or the BF16
extension (Arm); elsewhere it would be emulated and slower, so ``auto`` leaves it off and ``true`` is
an error.

Channels-last memory (NHWC) is a layout, not a precision: it changes rounding as a thread count does.
``auto`` turns it on for CPU runs, where oneDNN's convolutions are faster in it (Conv4 training step on
a 2-core AVX-512 BF16 CPU: 1.31x faster in fp32, 1.22x in bf16; CIFAR ResNet-18 1.20x and 1.07x; see
docs/BENCHMARKS.md), and off on GPUs, where the small models' steps are launch-bound and were measured
slower with it. It acts on 4-D parameters and image batches only: other models and inputs are unchanged.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from typing import Any

import torch

from supermask.errors import SupermaskConfigError

BF16_CHOICES = ("auto", "true", "false")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16, AMX, or Arm's BF16 extension)."""
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:  # a private probe that changed: fall back to the OS's view below
            pass
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        try:
            with open("/proc/cpuinfo") as f:
                return any(line.startswith("Features") and " bf16" in f" {line.split(':', 1)[-1]}" for line in f)
        except OSError:
            pass
        try:  # macOS
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True)
            return out.stdout.strip() == "1"
        except OSError:
            return False
    return False


def device_has_native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # an older PyTorch without the argument
            return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def describe_device(device: torch.device) -> str:
    return "this GPU" if device.type == "cuda" else "this CPU" if device.type == "cpu" else f"device {device}"


def use_bf16(
    setting: bool | str, device: torch.device, asked: str = "train.bf16=true", instead: str = "train.bf16=auto or false"
) -> bool:
    """The ``train.bf16`` setting resolved on ``device``: whether the run uses bf16 autocast.
    ``true`` where the device has no native bf16 is a :class:`SupermaskConfigError` (naming ``asked`` and
    suggesting ``instead``)."""
    if setting == "auto":
        return device_has_native_bf16(device)
    if setting is True:
        if not device_has_native_bf16(device):
            what = (
                "AVX-512 BF16, AMX or Arm BF16"
                if device.type == "cpu"
                else "bf16 support (compute capability 8.0 or newer)"
            )
            raise SupermaskConfigError(
                f"{asked} but {describe_device(device)} has no {what}: bf16 would be emulated and slower; use {instead}"
            )
        return True
    return False


def coerce_bf16(key: str, value: Any) -> bool | str:
    """A ``true`` | ``false`` | ``auto`` setting (``train.bf16``, ``train.channels_last``)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in BF16_CHOICES:
        word = value.strip().lower()
        return "auto" if word == "auto" else word == "true"
    raise SupermaskConfigError(f"{key}={value!r} is not valid; choose one of: {', '.join(BF16_CHOICES)}")


def use_channels_last(setting: bool | str, device: torch.device) -> bool:
    """The ``train.channels_last`` setting resolved on ``device`` (``auto``: on for CPUs)."""
    return device.type == "cpu" if setting == "auto" else bool(setting)


def precision_name(bf16: bool) -> str:
    return "bf16" if bf16 else "fp32"


def configured_device(name: str) -> torch.device:
    """The device a ``train.device`` setting means on this machine (``auto``: CUDA when present)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run_precision(cfg: Any) -> str:
    """``bf16`` or ``fp32``: what a run config (:class:`~supermask.runconfig.RunConfig`) computes in on
    this machine."""
    return precision_name(use_bf16(cfg.train.bf16, configured_device(cfg.train.device)))


def recorded_precision(result: dict[str, Any], config: dict[str, Any] | None = None) -> str | None:
    """What a finished run (its ``result.json``, and its resolved ``config`` when the result lacks one)
    computed in: ``bf16``, ``fp32``, ``mixed``, or None when it does not say. Results record it per
    epoch in ``ran_on``; older ones ran bf16 exactly when ``train.bf16`` was true on CUDA."""
    ran_on = result.get("ran_on")
    if isinstance(ran_on, list) and ran_on and all(isinstance(r, dict) and "bf16" in r for r in ran_on):
        used = {bool(r["bf16"]) for r in ran_on}
        return precision_name(used.pop()) if len(used) == 1 else "mixed"
    config = result.get("config", config)
    device = result.get("device")
    if isinstance(config, dict) and isinstance(device, str):
        setting = config.get("train", {}).get("bf16")
        return precision_name(setting is True and device.startswith("cuda"))
    return None
