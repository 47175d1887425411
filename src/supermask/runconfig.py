"""The configuration of a training run: YAML files and ``key=value`` overrides, fully checked.

Every value is checked before any work starts, and a wrong one is a one-line
:class:`~supermask.errors.SupermaskConfigError` naming the key and what is allowed. Values are read
as YAML 1.2 scalars: ``true``/``false`` are the only booleans (``n``, ``no`` or ``off`` are not),
``1e-3`` and ``1.0e38`` are numbers, ``010`` is ten.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib.util
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from supermask.core.config import MAX_TASKS, SupermaskConfig
from supermask.core.fields import check_value
from supermask.core.methods import method_class, scale_fan_problem
from supermask.core.values import shorten, show
from supermask.errors import SupermaskConfigError


@dataclass
class ModelSection:
    name: str = "mlp"  # see supermask.models.MODEL_NAMES, or package.module:callable
    width: float = 1.0  # channel / unit multiplier of the built-in models (0.5: half the width)
    init_from: str | None = None  # a finished run (or exported checkpoint) whose trained network starts this one
    # arguments for the model's constructor or factory, e.g. {activation: elu} or, for
    # model.name=timm:create_model, {model_name: resnet50, pretrained: false}
    kwargs: dict[str, Any] = field(default_factory=dict)
    # output units beyond the data set's classes (a task's classes), never a label: SupSup's "superfluous
    # neurons". The loss and the accuracy span them (an extra unit's win is a mistake), as infer_task's entropy
    extra_outputs: int = 0


@dataclass
class DataSection:
    name: str = "digits"  # see supermask.data.DATASET_NAMES
    root: str | None = None  # folder with the data set's files; None: $SUPERMASK_DATA or ~/.cache/supermask/data
    batch_size: int = 64  # per process
    eval_batch_size: int = 1000  # batch size of evaluation (no gradients: larger than training's)
    workers: int = 4  # DataLoader workers for image folders (imagenet)
    image_size: int | None = None  # image folders only (imagenet, folder); default 224
    split_tasks: int = 1  # > 1: the classes cut into this many tasks, one mask each (SupSup); see supermask.multitask
    # > 1: this many tasks, each the whole data set with its pixels in a fixed random order of its own (task t's
    # permutation drawn from (train.seed, t); PermutedMNIST), one mask each; see supermask.multitask
    permuted_tasks: int = 1
    classes: list[int] | None = None  # train and test on these classes only, renumbered 0..n-1 in this order
    train_examples: int | None = None  # train on the first so many examples only (None: all of them)
    # pixels standardised by the data set's mean and std (dataset), each image by its own (per_image,
    # TensorFlow's per_image_standardization), or scaled to [0, 1] (unit); data sets held as tensors
    standardize: str = "dataset"
    shuffle: bool = True  # a new order of the training examples each epoch (false: the files' order, every epoch)
    augment: bool | None = None  # random crop and flip while training; None: the data set's standard (on for CIFAR)

    @property
    def tasks(self) -> int:
        """The number of tasks of a multi-task run (``split_tasks`` or ``permuted_tasks``); 1 for a single task."""
        return max(self.split_tasks, self.permuted_tasks)


@dataclass
class OptimSection:
    name: str = "sgd"  # sgd, sgdw (decoupled weight decay, Loshchilov & Hutter), adam or rmsprop
    lr: float = 0.1  # base learning rate (a method's paper value when none is set: see the run header)
    momentum: float = 0.9  # SGD / SGDW / RMSprop momentum (RMSprop without momentum: 0)
    nesterov: bool = False  # Nesterov momentum (SGD / SGDW)
    weight_decay: float = 1e-4  # L2 penalty (sgd, adam, rmsprop) or decoupled decay scaled by lr / base lr (sgdw)
    no_decay_bn_bias: bool = False  # no weight decay on BatchNorm parameters and biases
    betas: tuple[float, float] = (0.9, 0.999)  # Adam's betas
    schedule: str = "cosine"  # cosine, constant or exponential (lr * decay_rate ** floor(epoch / decay_epochs))
    decay_rate: float = 0.96  # exponential only
    decay_epochs: float = 10.0  # exponential only: epochs between two decays (staircase)
    staircase: bool = True  # exponential only: false decays continuously, lr * decay_rate ** (epoch / decay_epochs)
    warmup_epochs: float = 0.0  # a linear warmup up to optim.lr over this many epochs, then the schedule
    label_smoothing: float = 0.0  # cross-entropy label smoothing, in [0, 1)
    # the training loss: cross_entropy (of the logits), or clipped_probabilities: Keras's categorical
    # cross-entropy of softmax outputs clipped to [1e-7, 1 - 1e-7] (TensorFlow models whose softmax sits in
    # the model): an example predicted beyond the clip gives no gradient
    loss: str = "cross_entropy"


@dataclass
class TrainSection:
    epochs: int = 20  # training epochs
    seed: int = 0  # the run's seed: frozen weights, initial scores, data order (also supermask.seed)
    out_dir: str = "runs"  # the folder that holds the run directories
    run_name: str | None = None  # default: <model>-<data>-<method>-k<k>-s<seed>
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    bf16: bool | str = "auto"  # bf16 autocast: auto (where the device has native bf16), true or false
    channels_last: bool | str = "auto"  # channels-last memory: auto (on for CPUs), true or false
    compile: bool = False  # torch.compile the model (helps on GPUs, not on CPUs)
    progress: str = "auto"  # auto (a bar on a terminal), bar, lines, none
    resume: bool = True  # continue from the run directory's checkpoint when there is one
    overwrite: bool = False  # with resume=false: replace a run already in the run directory
    allow_world_size_change: bool = False  # resume a run with another number of processes, on purpose
    deterministic: bool = False  # deterministic algorithms and a fixed thread count: bit-identical reruns
    threads: int | None = None  # CPU threads (torch.set_num_threads); None: PyTorch's default
    # CPU runs on Linux: the allocator keeps freed memory for the next step instead of returning it to the
    # kernel (fp32 epochs 12% faster; the process's memory stays at its peak): supermask.engine.step.reuse_freed_memory
    reuse_memory: bool = True
    max_steps: int | None = None  # stop an epoch early (for smoke tests); None: whole epochs
    # seconds this process may train: then (or at SIGTERM / SIGUSR1) the run writes its state, mid-epoch
    # included, and exits with code 3 (resumable: the same command continues it at that step)
    time_limit: float | None = None
    # experiment trackers: csv (steps.csv, epochs.csv), tensorboard, wandb, mlflow (see supermask.engine.trackers)
    loggers: list[str] = field(default_factory=lambda: ["csv"])
    log_every: int = 50  # optimiser steps between two logged training losses (averaged over them)


# Keys that say where and how a run is carried out, not what experiment it is: two runs that differ
# only in these (and the seed) are the same experiment, and `report` groups them together.
# train.bf16 is a request whose outcome depends on the device (auto, or true on a GPU before bf16 on
# CPUs existed): what a run computed in is recorded per epoch, and `report`, `sweep` and a resume
# compare that precision (supermask.precision), never the setting.
BOOKKEEPING_KEYS = frozenset(
    {
        "train.bf16",
        "data.root",
        "data.workers",
        "data.eval_batch_size",
        "train.out_dir",
        "train.run_name",
        "train.device",
        "train.channels_last",
        "train.compile",
        "train.progress",
        "train.resume",
        "train.overwrite",
        "train.allow_world_size_change",
        "train.deterministic",
        "train.threads",
        "train.reuse_memory",
        "train.time_limit",
        "train.loggers",
        "train.log_every",
    }
)


@dataclass
class RunConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    # the supermask section, checked (its seed is train.seed: see supermask_config)
    supermask: SupermaskConfig = field(default_factory=SupermaskConfig)
    # optim keys set from the method's recommended settings because the user set none (recorded)
    method_defaults: dict[str, Any] = field(default_factory=dict)
    # supermask keys the user set that the method does not use (``supermask.k`` for a method whose
    # density emerges): the run says so instead of ignoring them without a word
    ignored_settings: dict[str, Any] = field(default_factory=dict)
    # the supermask keys set so far, which ``supermask`` was built from: a key left unset keeps
    # following the others (``bias=auto`` resolves by ``weight_init``)
    supermask_settings: dict[str, Any] = field(default_factory=dict, repr=False)

    def supermask_config(self) -> SupermaskConfig:
        """A copy of the checked supermask section with ``train.seed`` as its seed (so a model converted
        with it, whose ``set_k`` changes its own config, leaves this one alone). Nothing is checked again:
        the section was checked when it was set."""
        sm = copy.deepcopy(self.supermask)
        sm.seed = self.train.seed
        return sm

    def to_dict(self) -> dict[str, Any]:
        """The full resolved config: every section's every key, every ``SupermaskConfig`` field."""
        out = dataclasses.asdict(self)
        for internal in ("method_defaults", "ignored_settings", "supermask_settings"):
            out.pop(internal)
        out["optim"]["betas"] = list(self.optim.betas)
        resolved = self.supermask_config().to_dict()
        resolved.pop("seed")  # it is train.seed
        out["supermask"] = resolved
        return out

    def run_name(self) -> str:
        if self.train.run_name:
            return self.train.run_name
        sm = self.supermask_config()
        k = f"-k{sm.k}" if method_class(sm.method).uses_k else ""
        return safe_name(f"{self.model.name}-{self.data.name}-{sm.method}{k}-s{self.train.seed}")

    def run_dir(self) -> Path:
        return Path(self.train.out_dir) / self.run_name()


def safe_name(text: str) -> str:
    """A generated run name as one portable folder name: every character but letters, digits and
    ``. = + , -`` becomes ``_`` (``pkg.models:net`` -> ``pkg.models_net``; a path value's ``/`` too)."""
    return re.sub(r"[^\w.=+,-]", "_", text)


def experiment_key(config: dict[str, Any]) -> dict[str, Any]:
    """What defines the experiment of a resolved config (:meth:`RunConfig.to_dict`): every key but the
    seed and :data:`BOOKKEEPING_KEYS`, with the supermask options the method ignores set to a fixed
    value, so that two runs of the same experiment compare equal."""
    out: dict[str, Any] = {}
    for section, values in config.items():
        if section == "supermask":
            continue
        # a key added to the library later reads as its default in a config saved before it existed
        defaults = dataclasses.asdict(_SECTIONS[section]()) if section in _SECTIONS else {}
        merged = {**defaults, **values} if isinstance(values, dict) else values
        out[section] = {k: v for k, v in merged.items() if f"{section}.{k}" not in BOOKKEEPING_KEYS and k != "seed"}
    sm = dict(config.get("supermask", {}))
    sm.pop("seed", None)
    try:
        out["supermask"] = SupermaskConfig.from_dict(sm).experiment_dict()
    except SupermaskConfigError:
        out["supermask"] = sm
    return out


_SECTIONS = {"model": ModelSection, "data": DataSection, "optim": OptimSection, "train": TrainSection}
_SUPERMASK_FIELDS = {f.name: f for f in dataclasses.fields(SupermaskConfig) if f.name != "seed"}


def valid_keys() -> list[str]:
    keys = [f"{s}.{f.name}" for s, cls in _SECTIONS.items() for f in dataclasses.fields(cls)]
    return keys + [f"supermask.{k}" for k in sorted(_SUPERMASK_FIELDS)]


def _unknown(what: str, name: str, valid: list[str]) -> SupermaskConfigError:
    """An unknown key, with the closest valid one: the same name in any section first (``k`` or
    ``train.lr`` -> ``supermask.k``, ``optim.lr``), else the closest spelling."""
    leaf = name.rpartition(".")[2]
    same_leaf = [v for v in valid if v.rpartition(".")[2] == leaf and v != name]
    leaves = {v.rpartition(".")[2]: v for v in valid}
    close_leaf = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.75)
    close = same_leaf[:1] or difflib.get_close_matches(name, valid, n=1, cutoff=0.6) or [leaves[c] for c in close_leaf]
    hint = f"did you mean {close[0]!r}? " if close else ""
    return SupermaskConfigError(f"unknown {what} {show(name)}; {hint}valid: {', '.join(valid)}")


# --- YAML 1.2 scalars --------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with the YAML 1.2 core schema's booleans, integers and floats (PyYAML
    follows YAML 1.1, where ``n`` or ``off`` are booleans and ``1e-3`` is a string), and unique keys
    (YAML requires them; PyYAML silently keeps the last of two ``k:`` lines)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (each key once per mapping)", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_OLD_TAGS = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _OLD_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL, list("tTfF"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", _INT, list("-+0123456789"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


#: the largest integer a config value may hold: 64 bits (every integer key is range-checked within it)
MAX_INT = 2**63 - 1


def _construct_int(loader: yaml.SafeLoader, node: Any) -> int:
    text = str(loader.construct_scalar(node))
    if len(text) > 24:  # never convert a number of thousands of digits (Python's int parsing is quadratic)
        value = MAX_INT + 1
    else:
        value = int(text, 0) if text.startswith(("0o", "0x")) else int(text, 10)
    if abs(value) > MAX_INT:
        raise yaml.constructor.ConstructorError(
            None, None, f"the integer {shorten(text)} is beyond 64 bits", node.start_mark
        )
    return value


def _construct_float(loader: yaml.SafeLoader, node: Any) -> float:
    text = str(loader.construct_scalar(node)).lower()
    if text.endswith(".inf"):
        return -math.inf if text.startswith("-") else math.inf
    if text == ".nan":
        return math.nan
    return float(text)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)


#: bounds on what one YAML document may hold: its text, its values once aliases are expanded (a
#: "billion laughs" document of nested aliases is a few hundred bytes and expands to billions of
#: values), how deep they nest, and each string
MAX_YAML_CHARS = 1 << 20
MAX_YAML_VALUES = 10_000
MAX_YAML_DEPTH = 20
MAX_STRING_CHARS = 4096


def _check_bounds(data: Any, where: str) -> None:
    """Refuse a document whose expanded values exceed the bounds above, counting as it walks (it stops
    at the bound: an alias bomb is never expanded)."""
    count = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_YAML_VALUES:
            raise SupermaskConfigError(
                f"{where} holds more than {MAX_YAML_VALUES} values once its aliases are expanded: a run config "
                "is a few dozen keys (nested aliases, '&a [*b, *b]', multiply what a document holds)"
            )
        if depth > MAX_YAML_DEPTH:
            raise SupermaskConfigError(f"{where} nests more than {MAX_YAML_DEPTH} levels deep")
        if isinstance(value, str) and len(value) > MAX_STRING_CHARS:
            raise SupermaskConfigError(
                f"{where} holds a string of {len(value)} characters (at most {MAX_STRING_CHARS})"
            )
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for pair in value.items() for v in pair)
        elif isinstance(value, (list, tuple)):
            stack.extend((v, depth + 1) for v in value)


def parse_yaml(text: str, where: str) -> Any:
    """YAML 1.2 scalars (see module doc), within the bounds above; a syntax error is a one-line config
    error naming ``where``."""
    if len(text) > MAX_YAML_CHARS:
        raise SupermaskConfigError(
            f"{where} is {len(text)} characters long: a run config holds at most {MAX_YAML_CHARS}"
        )
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SupermaskConfigError(f"{where} is not valid YAML{at}: {shorten(str(problem), 200)}") from exc
    except RecursionError:  # a document nested thousands of levels deep
        raise SupermaskConfigError(f"{where} nests more than {MAX_YAML_DEPTH} levels deep") from None
    _check_bounds(data, where)
    return data


def read_yaml_file(path: Path, what: str = "") -> Any:
    """A YAML file that supermask wrote or a stranger may have (a run folder's ``config.yaml``), read
    within the bounds of :func:`parse_yaml`; any problem is a one-line :class:`SupermaskConfigError`."""
    where = what or str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_YAML_CHARS * 4 + 1)  # a character is at most 4 bytes in UTF-8
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SupermaskConfigError(f"cannot read {where}: {getattr(exc, 'strerror', None) or exc}") from exc
    return parse_yaml(text, where)


# --- typed values ------------------------------------------------------------------------------


def _coerce(key: str, value: Any, annotation: str, raw: str | None = None) -> Any:
    """``value`` checked against a field's annotation by the one field checker
    (:func:`supermask.core.fields.check_value`); ``train.bf16`` and ``train.channels_last`` take
    true, false or auto."""
    if annotation.replace(" | None", "").strip() == "bool | str" and value is not None:
        from supermask.precision import coerce_bf16

        return coerce_bf16(key, value)
    return check_value(key, value, annotation, raw)


def _show(value: Any, raw: str | None) -> str:
    """A value for a message, bounded (``value`` is within the document bounds of :func:`parse_yaml`)."""
    return shorten(raw.strip()) if raw is not None else show(value)


def apply(cfg: RunConfig, data: dict[str, Any]) -> RunConfig:
    """Apply a nested dict (from YAML) to ``cfg``; unknown keys and bad types are errors. The supermask
    section is checked as a whole (its ``options`` may come before the ``method`` they belong to)."""
    pending: dict[str, Any] = {}
    _apply_sections(cfg, data, pending)
    set_supermask(cfg, pending)
    return cfg


def _apply_sections(cfg: RunConfig, data: dict[str, Any], pending: dict[str, Any]) -> None:
    for section, values in data.items():
        if section not in (*_SECTIONS, "supermask"):
            raise _unknown("section", str(section), [*_SECTIONS, "supermask"])
        if not isinstance(values, dict):
            raise SupermaskConfigError(f"{section}: must be a mapping of keys to values")
        for key, value in values.items():
            _set(cfg, f"{section}.{key}", value, None, pending)


def set_key(cfg: RunConfig, dotted: str, value: Any, raw: str | None = None) -> None:
    """Set one ``section.key`` to ``value`` (already parsed; ``raw``: the text typed), checking name and
    type; a supermask key is checked with the rest of the section (:func:`set_supermask`)."""
    pending: dict[str, Any] = {}
    _set(cfg, dotted, value, raw, pending)
    set_supermask(cfg, pending)


def set_supermask(cfg: RunConfig, settings: dict[str, Any]) -> None:
    """Rebuild ``cfg.supermask`` from the supermask keys set so far and ``settings`` (which win), as
    one checked :class:`SupermaskConfig`; on an error ``cfg`` is left as it was."""
    if not settings:
        return
    merged = {**cfg.supermask_settings, **settings}
    cfg.supermask = SupermaskConfig.from_dict(merged)  # checked once, here; its seed is train.seed
    cfg.supermask_settings = merged


def _set(cfg: RunConfig, dotted: str, value: Any, raw: str | None, pending: dict[str, Any]) -> None:
    """Set one key of a run section on ``cfg``, or add one supermask key to ``pending`` (checked for its
    name and type here, with the whole section by :func:`set_supermask`)."""
    section, _, key = dotted.partition(".")
    if section == "supermask":
        if key.startswith("options.") and key != "options.":  # one option of the method: supermask.options.NAME=V
            options = pending.get("options", cfg.supermask_settings.get("options")) or {}
            if not isinstance(options, dict):
                raise SupermaskConfigError(f"supermask.options must be a mapping to set {dotted}")
            pending["options"] = {**options, key.partition(".")[2]: value}
            return
        f = _SUPERMASK_FIELDS.get(key)
        if f is None:
            raise _unknown("key", dotted, valid_keys())
        pending[key] = _coerce(dotted, value, str(f.type), raw)
        return
    cls = _SECTIONS.get(section)
    fields = {f.name: f for f in dataclasses.fields(cls)} if cls else {}
    if key not in fields:
        raise _unknown("key", dotted, valid_keys())
    setattr(getattr(cfg, section), key, _coerce(dotted, value, str(fields[key].type), raw))


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with the value parsed as YAML 1.2 (``0.5`` and ``1e-3`` are numbers, ``true`` a bool)."""
    if "=" not in text:
        raise SupermaskConfigError(f"{show(text)} is not key=value (e.g. supermask.k=0.3)")
    key, _, raw = text.partition("=")
    return key.strip(), parse_yaml(raw, f"the value of {key.strip()}") if raw.strip() else None


def load_run_config(path: str | os.PathLike[str] | None, overrides: list[str]) -> RunConfig:
    """The embedded default, then the YAML file, then the overrides, then the method's recommended
    optimiser settings for the optim keys none of them set; every value checked."""
    cfg = RunConfig()
    explicit: set[str] = set()
    pending: dict[str, Any] = {}  # the supermask keys of the file and the overrides, checked together
    if path is not None:
        p = Path(path)
        if not p.is_file():
            hint = " (an override needs '=', e.g. supermask.k=0.3)" if p.suffix not in (".yaml", ".yml") else ""
            what = "is a directory, not a YAML file" if p.is_dir() else "does not exist"
            raise SupermaskConfigError(f"config file {p} {what}{hint}")
        try:
            text = p.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise SupermaskConfigError(f"cannot read config file {p}: {exc}") from exc
        data = parse_yaml(text, f"config file {p}") or {}
        if not isinstance(data, dict):
            raise SupermaskConfigError(f"{p} must hold a mapping of sections (model, data, optim, train, supermask)")
        _apply_sections(cfg, data, pending)
        explicit |= {f"{s}.{k}" for s, values in data.items() if isinstance(values, dict) for k in values}
    for item in overrides:
        key, value = parse_override(item)
        _set(cfg, key, value, item.partition("=")[2], pending)
        explicit.add(key)
    if cfg.data.tasks > 1 and "supermask.tasks" not in explicit:
        pending["tasks"] = cfg.data.tasks  # one mask per task
    set_supermask(cfg, pending)
    check(cfg)
    sm = cfg.supermask
    ignored = sm.ignored_fields()
    for key in sorted(explicit):
        section, _, name = key.partition(".")
        if section == "supermask" and name in ignored:
            cfg.ignored_settings[key] = cfg.supermask_settings.get(name)
    recommended = method_class(sm.method).recommended_optim
    for key, value in recommended.items():
        if f"optim.{key}" not in explicit:
            set_key(cfg, f"optim.{key}", value)
            cfg.method_defaults[f"optim.{key}"] = value
    check(cfg)
    return cfg


#: the largest ``train.seed`` (32 bits): the engine seeds PyTorch with ``seed * 100003 + epoch``, which
#: must stay a 64-bit integer
MAX_SEED = 2**32 - 1
#: upper bounds of the other numeric keys (see :func:`check`)
MAX_THREADS = MAX_WORKERS = 1024
MAX_BATCH = 2**31 - 1
MAX_IMAGE_SIZE = 8192
MAX_EXTRA_OUTPUTS = 100_000
MAX_EPOCHS = 1_000_000
MAX_WIDTH = 64.0


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _in_range(key: str, value: float, low: float, high: float | None, low_open: bool, high_open: bool) -> None:
    ok = (value > low if low_open else value >= low) and (
        high is None or (value < high if high_open else value <= high)
    )
    if not ok:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        if high is None:
            wanted = f"{'>' if low_open else '>='} {_number(low)}"
        else:
            wanted = f"in {left}{_number(low)}, {_number(high)}{right}"
        raise SupermaskConfigError(f"{key}={show(value)} is out of range: it must be {wanted}")


def check(cfg: RunConfig, device: bool = True, import_code: bool = True) -> None:
    """Validate the values and the choices that depend on the registry (model, data set, ...), and with
    ``device`` that this machine has ``train.device``. With ``import_code`` a model of one's own
    (``model.name=package.module:callable``) is imported to check it; a config read from a file that
    supermask wrote (a run folder, a checkpoint) is checked without it (see :func:`from_dict`)."""
    from supermask.data import DATASET_NAMES, DATASETS, STANDARDIZE_MODES
    from supermask.models import MODEL_NAMES

    if ":" in cfg.model.name and import_code:  # a model of your own: its factory must import
        from supermask.models import factory

        factory(cfg.model.name)
    choices = {
        "model.name": (cfg.model.name, MODEL_NAMES if ":" not in cfg.model.name else (cfg.model.name,)),
        "data.name": (cfg.data.name, DATASET_NAMES),
        "data.standardize": (cfg.data.standardize, STANDARDIZE_MODES),
        "optim.name": (cfg.optim.name, ("sgd", "sgdw", "adam", "rmsprop")),
        "optim.schedule": (cfg.optim.schedule, ("cosine", "constant", "exponential")),
        "optim.loss": (cfg.optim.loss, ("cross_entropy", "clipped_probabilities")),
        "train.progress": (cfg.train.progress, ("auto", "bar", "lines", "none")),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            close = difflib.get_close_matches(str(value), list(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SupermaskConfigError(f"{key}={show(value)} is not valid{hint}; choose one of: {', '.join(allowed)}")
    o, d, t = cfg.optim, cfg.data, cfg.train
    if o.nesterov and (o.name not in ("sgd", "sgdw") or o.momentum == 0):
        raise SupermaskConfigError(
            f"optim.nesterov=true needs optim.name=sgd or sgdw with optim.momentum > 0 (here optim.name={o.name}, "
            f"optim.momentum={o.momentum}); set optim.nesterov=false"
        )
    # (key, value, low, high, low is open, high is open)
    ranges: list[tuple[str, float | None, float, float | None, bool, bool]] = [
        ("optim.lr", o.lr, 0.0, None, True, False),
        ("optim.momentum", o.momentum, 0.0, 1.0, False, True),
        ("optim.weight_decay", o.weight_decay, 0.0, None, False, False),
        ("optim.betas[0]", o.betas[0], 0.0, 1.0, False, True),
        ("optim.betas[1]", o.betas[1], 0.0, 1.0, False, True),
        ("optim.warmup_epochs", o.warmup_epochs, 0.0, None, False, False),
        ("optim.label_smoothing", o.label_smoothing, 0.0, 1.0, False, True),
        ("optim.decay_rate", o.decay_rate, 0.0, 1.0, True, False),
        ("optim.decay_epochs", o.decay_epochs, 0.0, MAX_EPOCHS, True, False),
        # Upper bounds far beyond any real run, so that no value reaches a C call that overflows
        # (torch.set_num_threads) or allocates without bound (a width or image size of 1e9) first.
        ("model.width", cfg.model.width, 0.0, MAX_WIDTH, True, False),
        ("data.batch_size", d.batch_size, 1, MAX_BATCH, False, False),
        ("data.eval_batch_size", d.eval_batch_size, 1, MAX_BATCH, False, False),
        ("data.workers", d.workers, 0, MAX_WORKERS, False, False),
        ("data.image_size", d.image_size, 1, MAX_IMAGE_SIZE, False, False),
        ("train.epochs", t.epochs, 1, MAX_EPOCHS, False, False),
        ("train.seed", t.seed, 0, MAX_SEED, False, False),  # torch seeds seed * 100003 + epoch: 64-bit
        ("train.max_steps", t.max_steps, 1, MAX_INT, False, False),
        ("train.threads", t.threads, 1, MAX_THREADS, False, False),
        ("train.time_limit", t.time_limit, 0.0, None, False, False),
        ("train.log_every", t.log_every, 1, MAX_INT, False, False),
        ("model.extra_outputs", cfg.model.extra_outputs, 0, MAX_EXTRA_OUTPUTS, False, False),
        ("data.split_tasks", d.split_tasks, 1, MAX_TASKS, False, False),
        ("data.permuted_tasks", d.permuted_tasks, 1, MAX_TASKS, False, False),
        ("data.train_examples", d.train_examples, 1, MAX_BATCH, False, False),
    ]
    for key, number, low, high, low_open, high_open in ranges:
        if number is not None:
            _in_range(key, number, low, high, low_open, high_open)
    reserved = sorted(set(cfg.model.kwargs) & {"num_classes", "width", "in_channels", "image_size"})
    if reserved:
        raise SupermaskConfigError(
            f"model.kwargs cannot set {', '.join(reserved)}: they come from the data set (and model.width)"
        )
    if DATASETS[d.name].folder and not d.root:
        raise SupermaskConfigError(
            f"data.name={d.name} needs data.root=DIR: a folder with train/ and val/ (or test/), one sub-folder per class"
        )
    if device:
        check_trackers(t.loggers)
        check_device(t.device)
        check_precision(t.bf16, t.device)
    sm = cfg.supermask  # checked when it was set (set_supermask)
    problem = scale_fan_problem(method_class(sm.method)(sm))
    if device and problem:  # a new run only (device=True): saved runs of this combination still read
        raise SupermaskConfigError(problem)
    defaults = DataSection()
    tensor_only = [
        f"data.{k}"
        for k in ("train_examples", "standardize", "shuffle", "augment")
        if getattr(d, k) != getattr(defaults, k)
    ]
    if tensor_only and DATASETS[d.name].folder:
        raise SupermaskConfigError(
            f"{', '.join(tensor_only)} {'needs' if len(tensor_only) == 1 else 'need'} a data set held as tensors, "
            f"not data.name={d.name} (image folders)"
        )
    if d.classes is not None:
        available = DATASETS[d.name].num_classes
        if DATASETS[d.name].folder or d.tasks > 1:
            raise SupermaskConfigError(
                "data.classes needs a data set held as tensors and no data.split_tasks or data.permuted_tasks"
            )
        bad = [c for c in d.classes if not 0 <= c < available]
        if bad or len(set(d.classes)) != len(d.classes):
            raise SupermaskConfigError(
                f"data.classes={d.classes} must be distinct classes of {d.name}, each in 0..{available - 1}"
            )
    if d.split_tasks > 1:
        if DATASETS[d.name].folder:
            raise SupermaskConfigError(f"data.split_tasks needs a data set held as tensors, not data.name={d.name}")
        classes = DATASETS[d.name].num_classes
        if classes % d.split_tasks:
            raise SupermaskConfigError(
                f"data.split_tasks={d.split_tasks} does not divide {d.name}'s {classes} classes evenly"
            )
        if classes // d.split_tasks < 2:  # a one-class task is always right: a meaningless 100%
            raise SupermaskConfigError(
                f"data.split_tasks={d.split_tasks} leaves one class per task ({d.name} has {classes}); "
                f"use at most {classes // 2} tasks"
            )
    if d.permuted_tasks > 1:
        if d.split_tasks > 1:
            raise SupermaskConfigError(
                f"data.split_tasks={d.split_tasks} and data.permuted_tasks={d.permuted_tasks}: a run's tasks are "
                "either its classes cut into groups or its images permuted; set one of them"
            )
        if DATASETS[d.name].folder:
            raise SupermaskConfigError(f"data.permuted_tasks needs a data set held as tensors, not data.name={d.name}")
        augment = DATASETS[d.name].augment if d.augment is None else d.augment
        if augment:  # a crop or flip of permuted pixels moves them to other places of the permutation
            raise SupermaskConfigError(
                f"data.permuted_tasks with augmentation ({'data.augment=true' if d.augment else d.name + ' augments by default'}): "
                "a random crop or flip of permuted pixels is no augmentation of the task's images; set data.augment=false"
            )
    if d.tasks > 1 and sm.tasks != d.tasks:
        what = "data.split_tasks" if d.split_tasks > 1 else "data.permuted_tasks"
        raise SupermaskConfigError(
            f"{what}={d.tasks} needs supermask.tasks={d.tasks} (one mask per task), "
            f"not {sm.tasks}; leave supermask.tasks unset to get it"
        )


#: tracker name -> the module it needs (None: none)
TRACKER_PACKAGES = {"csv": None, "tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def check_trackers(names: list[str]) -> None:
    """Every name known and its package importable (a one-line error naming what to install)."""
    for name in names:
        if name not in TRACKER_PACKAGES:
            raise SupermaskConfigError(
                f"train.loggers: {name!r} is not a tracker; choose from {', '.join(TRACKER_PACKAGES)}"
            )
        module = TRACKER_PACKAGES[name]
        if module is not None and importlib.util.find_spec(module) is None:
            package = "mlflow-skinny" if name == "mlflow" else module
            raise SupermaskConfigError(f"train.loggers: {name} needs the {module} package: pip install {package}")
    if len(set(names)) != len(names):
        raise SupermaskConfigError(f"train.loggers={names} names a tracker twice")


def check_device(name: str, key: str = "train.device") -> None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``, and only a device this PyTorch build and machine have
    (``key``: the setting named in the error)."""
    import torch

    if name in ("auto", "cpu"):
        return
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match is None:
        raise SupermaskConfigError(f"{key}={show(name)} is not valid; choose one of: auto, cpu, cuda, cuda:N")
    if not torch.cuda.is_available():
        why = "this PyTorch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise SupermaskConfigError(f"{key}={show(name)} but {why}; use {key}=cpu or auto")
    if match.group(1) is not None and int(match.group(1)) >= torch.cuda.device_count():
        raise SupermaskConfigError(
            f"{key}={show(name)} but this machine has {torch.cuda.device_count()} GPU(s): cuda:0 .. "
            f"cuda:{torch.cuda.device_count() - 1}"
        )


def check_precision(bf16: bool | str, device: str) -> None:
    """``train.bf16=true`` only where ``train.device`` computes bf16 natively."""
    from supermask.precision import configured_device, use_bf16

    use_bf16(bf16, configured_device(device))


def from_dict(data: dict[str, Any]) -> RunConfig:
    """A RunConfig from :meth:`RunConfig.to_dict` output (a saved run's; its device is not required here).
    Data never runs code: a model of one's own that it names is not imported (see :func:`trust_model`)."""
    if not isinstance(data, dict):
        raise SupermaskConfigError(f"a run config must be a mapping of sections, got {type(data).__name__}")
    cfg = apply(RunConfig(), data)
    check(cfg, device=False, import_code=False)
    return cfg


def trust_model(cfg: RunConfig, where: Path | str, trust_code: bool = False, model: str | None = None) -> None:
    """Refuse to build a model of one's own that a file (``where``: a run folder, a checkpoint) names,
    unless the user said so: ``trust_code`` (``--trust-model-code``) or ``model`` (``--model``), the
    same name given on the command line. Building it would import that module, and a module placed
    beside a stranger's checkpoint would run."""
    if ":" not in cfg.model.name or trust_code or model == cfg.model.name:
        return
    if model is not None:
        raise SupermaskConfigError(
            f"{where} holds a run of model.name={shorten(cfg.model.name)}, not {shorten(model)}: its own model code "
            "is imported only when named exactly (or with --trust-model-code)"
        )
    raise SupermaskConfigError(
        f"{where} names a model of its own, model.name={shorten(cfg.model.name)}: building it imports that module, "
        "and supermask runs no code named by a file. If you trust it, add --trust-model-code (or --model "
        f"{shorten(cfg.model.name)})"
    )


def to_yaml(cfg: RunConfig) -> str:
    """The full resolved config as YAML (what ``config.yaml`` holds and ``--print-config`` prints)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
