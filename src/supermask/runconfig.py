"""The configuration of a training run: YAML files and ``key=value`` overrides, fully checked."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from supermask.core.config import SupermaskConfig, SupermaskConfigError


@dataclass
class ModelSection:
    name: str = "mlp"  # see supermask.models.MODEL_NAMES
    width: float = 1.0


@dataclass
class DataSection:
    name: str = "digits"  # see supermask.data.DATASET_NAMES
    root: str | None = None  # folder with the data set's files; None: $SUPERMASK_DATA or ~/.cache/supermask/data
    batch_size: int = 64  # per process
    eval_batch_size: int = 1000
    workers: int = 4  # DataLoader workers for image folders (imagenet)
    image_size: int | None = None  # imagenet only; default 224


@dataclass
class OptimSection:
    name: str = "sgd"  # sgd or adam
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    no_decay_bn_bias: bool = False  # no weight decay on BatchNorm parameters and biases
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "cosine"  # cosine or constant
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0


@dataclass
class TrainSection:
    epochs: int = 20
    seed: int = 0
    out_dir: str = "runs"
    run_name: str | None = None  # default: <model>-<data>-<method>-k<k>-s<seed>
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    bf16: bool = True  # bf16 autocast on GPU (ignored on CPU)
    channels_last: bool = False
    compile: bool = False
    progress: str = "auto"  # auto (a bar on a terminal), bar, lines, none
    resume: bool = True  # continue from the run directory's checkpoint when there is one
    max_steps: int | None = None  # stop an epoch early (for smoke tests); None: whole epochs


@dataclass
class RunConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    supermask: dict[str, Any] = field(default_factory=lambda: {"k": 0.5, "method": "edge-popup"})

    def supermask_config(self) -> SupermaskConfig:
        return SupermaskConfig.from_dict({"seed": self.train.seed, **self.supermask})

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["optim"]["betas"] = list(self.optim.betas)
        return out

    def run_name(self) -> str:
        if self.train.run_name:
            return self.train.run_name
        sm = self.supermask
        k = f"-k{sm.get('k', 0.5)}" if sm.get("method", "edge-popup").startswith("edge-popup") else ""
        return f"{self.model.name}-{self.data.name}-{sm.get('method', 'edge-popup')}{k}-s{self.train.seed}"

    def run_dir(self) -> Path:
        return Path(self.train.out_dir) / self.run_name()


_SECTIONS = {"model": ModelSection, "data": DataSection, "optim": OptimSection, "train": TrainSection}
_SUPERMASK_KEYS = {f.name for f in dataclasses.fields(SupermaskConfig)} - {"seed"}


def valid_keys() -> list[str]:
    keys = [f"{s}.{f.name}" for s, cls in _SECTIONS.items() for f in dataclasses.fields(cls)]
    return keys + [f"supermask.{k}" for k in sorted(_SUPERMASK_KEYS)]


def _coerce(key: str, value: Any, current: Any, annotation: Any) -> Any:
    text = str(annotation)
    if value is None:
        if "None" in text:
            return None
        raise SupermaskConfigError(f"{key} cannot be null")
    if "bool" in text and not isinstance(value, bool):
        raise SupermaskConfigError(f"{key}={value!r} must be true or false")
    if text.startswith("int") and not (isinstance(value, int) and not isinstance(value, bool)):
        raise SupermaskConfigError(f"{key}={value!r} must be an integer")
    if "float" in text and "tuple" not in text:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SupermaskConfigError(f"{key}={value!r} must be a number")
        return float(value)
    if "tuple" in text:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise SupermaskConfigError(f"{key}={value!r} must be a list of two numbers")
        return tuple(float(v) for v in value)
    if text.startswith("str") and not isinstance(value, str):
        return str(value)
    return value


def apply(cfg: RunConfig, data: dict[str, Any]) -> RunConfig:
    """Apply a nested dict (from YAML) to ``cfg``; unknown keys and bad types are errors."""
    for section, values in data.items():
        if section == "supermask":
            if not isinstance(values, dict):
                raise SupermaskConfigError("supermask: must be a mapping of supermask options")
            for key, value in values.items():
                set_key(cfg, f"supermask.{key}", value)
            continue
        if section not in _SECTIONS:
            raise SupermaskConfigError(f"unknown section {section!r}; valid: {', '.join([*_SECTIONS, 'supermask'])}")
        if not isinstance(values, dict):
            raise SupermaskConfigError(f"{section}: must be a mapping")
        for key, value in values.items():
            set_key(cfg, f"{section}.{key}", value)
    return cfg


def set_key(cfg: RunConfig, dotted: str, value: Any) -> None:
    """Set one ``section.key`` to ``value`` (already parsed), checking name and type."""
    section, _, key = dotted.partition(".")
    if section == "supermask":
        if key not in _SUPERMASK_KEYS:
            raise SupermaskConfigError(f"unknown key {dotted!r}; valid keys: {', '.join(valid_keys())}")
        cfg.supermask[key] = value
        return
    cls = _SECTIONS.get(section)
    fields = {f.name: f for f in dataclasses.fields(cls)} if cls else {}
    if key not in fields:
        raise SupermaskConfigError(f"unknown key {dotted!r}; valid keys: {', '.join(valid_keys())}")
    obj = getattr(cfg, section)
    setattr(obj, key, _coerce(dotted, value, getattr(obj, key), fields[key].type))


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with the value parsed as YAML (``0.5`` is a number, ``true`` a bool)."""
    if "=" not in text:
        raise SupermaskConfigError(f"{text!r} is not key=value (e.g. supermask.k=0.3)")
    key, _, raw = text.partition("=")
    return key.strip(), yaml.safe_load(raw) if raw.strip() else None


def load_run_config(path: str | os.PathLike[str] | None, overrides: list[str]) -> RunConfig:
    """The embedded default, then the YAML file, then the overrides; every value checked."""
    cfg = RunConfig()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise SupermaskConfigError(f"config file {p} does not exist")
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise SupermaskConfigError(f"{p} must hold a mapping of sections")
        apply(cfg, data)
    for item in overrides:
        key, value = parse_override(item)
        set_key(cfg, key, value)
    check(cfg)
    return cfg


def check(cfg: RunConfig) -> None:
    """Validate choices that depend on the registry (model, data set, optimiser, schedule)."""
    from supermask.data import DATASET_NAMES
    from supermask.models import MODEL_NAMES

    choices = {
        "model.name": (cfg.model.name, MODEL_NAMES),
        "data.name": (cfg.data.name, DATASET_NAMES),
        "optim.name": (cfg.optim.name, ("sgd", "adam")),
        "optim.schedule": (cfg.optim.schedule, ("cosine", "constant")),
        "train.progress": (cfg.train.progress, ("auto", "bar", "lines", "none")),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise SupermaskConfigError(f"{key}={value!r} is not valid; choose one of: {', '.join(allowed)}")
    positive: dict[str, float] = {
        "optim.lr": cfg.optim.lr,
        "data.batch_size": cfg.data.batch_size,
        "model.width": cfg.model.width,
    }
    for key, number in positive.items():
        if not number > 0:
            raise SupermaskConfigError(f"{key}={number!r} must be positive")
    if cfg.train.epochs < 1:
        raise SupermaskConfigError(f"train.epochs={cfg.train.epochs} must be at least 1")
    cfg.supermask_config()  # validates every supermask option


def from_dict(data: dict[str, Any]) -> RunConfig:
    """A RunConfig from :meth:`RunConfig.to_dict` output."""
    cfg = apply(RunConfig(), {k: v for k, v in data.items()})
    check(cfg)
    return cfg
