"""The one configuration object of a supermask conversion."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from supermask.core.fields import check_value
from supermask.core.registry import method_class, method_names
from supermask.core.values import show
from supermask.errors import SupermaskConfigError

WEIGHT_INITS = (
    "signed_constant",
    "unsigned_constant",
    "kaiming_normal",
    "kaiming_uniform",
    "xavier_normal",
    "pretrained",
)
SCORE_INITS = ("kaiming_uniform", "kaiming_normal", "uniform", "constant")
FAN_MODES = ("fan_in", "fan_out", "fan_avg")
NONLINEARITIES = ("relu", "linear", "tanh", "sigmoid", "leaky_relu", "gelu", "elus")
BIAS_MODES = ("zero", "frozen", "learned", "auto")
BATCHNORM_MODES = ("non_affine", "learned")
UNSUPPORTED_MODES = ("report", "raise")
UNCONVERTED_MODES = ("freeze", "learn")
BERNOULLI_EVAL_MODES = ("sample", "threshold")


def _choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise SupermaskConfigError(f"{name}={show(value)} is not valid; choose one of: {', '.join(allowed)}")


@dataclass
class SupermaskConfig:
    """How to turn a model into a hidden-network search.

    k: fraction of each converted layer's weights that is KEPT (0 < k <= 1). Used by the
        edge-popup methods; ignored by ``bernoulli`` (its density emerges) and ``dense``.
    method: a registered mask method (:func:`supermask.core.methods.method_names`): ``edge-popup``
        (per-layer top-k of |score|), ``edge-popup-global`` (one top-k over all converted layers, every
        layer keeps at least one weight), ``bernoulli`` (Zhou et al. 2019), ``dense`` (weights are
        learned, no mask: the baseline through the same code path), and the others in the README.
    options: the method's own options (a mapping; each method lists and checks its own).
    weight_init: how the frozen random weights are drawn (see :mod:`supermask.core.init`), or
        ``pretrained``: each converted module keeps its own weights (frozen; masks over a trained model,
        as Piggyback). Checkpoints then hold the masks, what the base model does not (trained heads,
        norms, statistics) and fingerprints of the base weights: loading onto another base is refused.
    fan_mode / nonlinearity: the fan and gain used by ``weight_init`` (``fan_avg``: (fan_in + fan_out) / 2,
        Glorot's; with ``nonlinearity=linear`` a Glorot-normal standard deviation).
    scale_fan: scale the fan by k, so the kept subnetwork has the variance the init aims for.
    score_init / score_init_value: how scores start; ``score_init_value`` is the value of
        ``constant`` and the half-width of ``uniform``.
    seed: with the layer's qualified name and shape, fully determines weights and initial scores.
    target_modules: module types (``nn.Linear``), names (exact or dotted suffix) or one regex
        string (full match). ``None``: every Linear and Conv1d/2d/3d.
    exclude_modules: same forms, removed from the targets; excluding a module excludes its children.
    target_parameters: parameters masked in place besides the targeted modules (peft's name), by
        qualified name (exact or dotted suffix, e.g. ``experts.w1``) or one regex string (full match):
        raw ``nn.Parameter``s such as stacked expert weights, float tensors of 2 or more dimensions. A
        name that matches nothing is an error. The modules whose forward reads their own weights
        (``nn.MultiheadAttention``'s in-projection, transposed convolutions, Linear/Conv subclasses with
        their own forward) are masked in place as targeted modules already.
    first_layer_dense / last_layer_dense: leave the first / last targeted layer (in module
        registration order) as an ordinary learned layer, as the paper's option.
    bias: ``zero`` (the paper's bias-free network; a bias is set to 0 and frozen), ``frozen``
        (the module's present bias is kept and frozen), ``learned`` (trained as usual), or ``auto``
        (the default: ``frozen`` over pretrained weights, which keep their trained biases, ``zero``
        otherwise; the config holds the resolved value).
    batchnorm: ``non_affine`` (the paper: BatchNorm keeps only its running statistics), ``learned``
        (affine parameters, where the model has them, train as usual).
    bernoulli_eval: the deterministic eval mask of ``bernoulli``: ``sample`` (one fixed draw,
        mask = u < sigmoid(score) with u a counter-based uniform fixed by seed and layer name: distributed
        like the training masks) or ``threshold`` (sigmoid(score) > 0.5).
    unsupported: what to do with modules holding weights that cannot be masked (embeddings, RNNs,
        MultiheadAttention's packed in-projection, weights tied to another module): ``report`` them in
        the conversion report and leave them unchanged, or ``raise``.
    tasks: the number of task masks over one backbone (SupSup): each converted layer keeps one set of
        scores per task, :func:`supermask.set_task` chooses the one the forward pass uses and trains.
    extra: free-form notes kept with the config (not read by supermask).
    unconverted: what happens to every parameter that is not converted and not governed by ``bias``,
        ``batchnorm`` or ``first/last_layer_dense`` (LayerNorms, embeddings, raw ``nn.Parameter``s,
        excluded or unsupported modules): ``freeze`` (default: the search trains only scores, as in the
        paper) or ``learn`` (they train alongside the scores). The conversion report lists each one.
    """

    k: float = 0.5
    method: str = "edge-popup"
    weight_init: str = "signed_constant"
    fan_mode: str = "fan_in"
    nonlinearity: str = "relu"
    scale_fan: bool = False
    score_init: str = "kaiming_uniform"
    score_init_value: float = 1.0
    seed: int = 0
    target_modules: Any = None
    exclude_modules: Any = None
    target_parameters: Any = None
    first_layer_dense: bool = False
    last_layer_dense: bool = False
    bias: str = "auto"
    batchnorm: str = "non_affine"
    unsupported: str = "report"
    bernoulli_eval: str = "sample"
    unconverted: str = "freeze"
    tasks: int = 1
    options: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.bias == "auto":  # the biases follow the weights: a trained model keeps its own
            self.bias = "frozen" if self.weight_init == "pretrained" else "zero"
        self.validate()

    def validate(self) -> None:
        """Raise :class:`SupermaskConfigError` naming the first invalid field."""
        _check_types(self)
        check_k(self.k)
        method = method_class(self.method)
        _choice("weight_init", self.weight_init, WEIGHT_INITS)
        _choice("fan_mode", self.fan_mode, FAN_MODES)
        _choice("nonlinearity", self.nonlinearity, NONLINEARITIES)
        _choice("score_init", self.score_init, SCORE_INITS)
        _choice("bias", self.bias, BIAS_MODES)
        _choice("batchnorm", self.batchnorm, BATCHNORM_MODES)
        _choice("unsupported", self.unsupported, UNSUPPORTED_MODES)
        _choice("bernoulli_eval", self.bernoulli_eval, BERNOULLI_EVAL_MODES)
        _choice("unconverted", self.unconverted, UNCONVERTED_MODES)
        _check_spec(self.target_modules, "target_modules")
        _check_spec(self.exclude_modules, "exclude_modules")
        names = self.target_parameters
        if (
            names is not None
            and not isinstance(names, str)
            and not (isinstance(names, (list, tuple)) and all(isinstance(i, str) for i in names))
        ):
            raise SupermaskConfigError(
                f"target_parameters must be None, a list of parameter names or one regex string; got {show(names)}"
            )
        _check_spec(names, "target_parameters")
        method(self)  # the method's own options, checked
        if not 1 <= self.tasks <= MAX_TASKS:
            raise SupermaskConfigError(
                f"tasks={self.tasks} must be in [1, {MAX_TASKS}] (the number of task masks; each holds a score per weight)"
            )
        if self.tasks > 1 and not method.has_scores:
            raise SupermaskConfigError(
                f"tasks={self.tasks}: method {show(self.method)} has no masks to keep one per task"
            )
        if self.tasks > 1 and not _keeps_tasks_apart(method):
            usable = [n for n in method_names() if _keeps_tasks_apart(method_class(n))]
            raise SupermaskConfigError(
                f"tasks={self.tasks}: method {show(self.method)} changes the shared weights or keeps per-layer state "
                "beyond its scores, so training one task would change the others' networks; choose one of: "
                f"{', '.join(usable)}"
            )
        if not 0 <= self.seed < 2**63:
            raise SupermaskConfigError(f"seed={show(self.seed)} must be a non-negative 64-bit integer")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; module types in targets are written as their qualified names."""
        out = dataclasses.asdict(self)
        for key in ("target_modules", "exclude_modules", "target_parameters"):
            out[key] = _targets_to_json(out[key])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SupermaskConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        if not isinstance(data, dict):
            raise SupermaskConfigError(f"a supermask config must be a mapping, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(map(str, data)) - names)
        if unknown:
            raise SupermaskConfigError(f"unknown config keys {unknown}; valid keys: {sorted(names)}")
        return cls(**data)

    def experiment_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` without the seed, with every option that does not change this method's
        network or training set to its default: two configs of the same experiment compare equal
        (``dense`` at k = 0.3 and at k = 0.5 is one experiment, unless ``scale_fan`` makes the
        weights depend on k)."""
        out = self.to_dict()
        out.pop("seed")
        defaults = SupermaskConfig().to_dict()
        for key in self.ignored_fields():
            out[key] = defaults[key]
        return out

    def ignored_fields(self) -> set[str]:
        """The fields that do not change this config's network or training: those its method ignores,
        and under ``weight_init="pretrained"`` those that only draw weights (the weights are the model's own)."""
        ignored = method_class(self.method)(self).ignored_fields()
        if self.weight_init == "pretrained":
            ignored |= {"fan_mode", "nonlinearity", "scale_fan"}
        return ignored


#: the most task masks one model may keep (SupSup's own experiments went to 2,500)
MAX_TASKS = 10_000


def _keeps_tasks_apart(method: Any) -> bool:
    return bool(method.has_scores and method.supports_tasks and not method.own_buffers)


def _check_types(cfg: SupermaskConfig) -> None:
    """Every field has its declared type: a bool is True or False (never "n"), a number is finite."""
    for f in dataclasses.fields(cfg):
        check_value(f.name, getattr(cfg, f.name), str(f.type))


def _check_spec(spec: Any, field_name: str) -> None:
    """None, a valid regex string, or a list of module types and names."""
    if spec is None or isinstance(spec, str):
        if isinstance(spec, str):
            try:
                re.compile(spec)
            except re.error as exc:
                raise SupermaskConfigError(
                    f"{field_name}={show(spec)} is not a valid regular expression: {exc}"
                ) from exc
        return
    if not isinstance(spec, (list, tuple, set)) or not all(isinstance(i, (str, type)) for i in spec):
        raise SupermaskConfigError(
            f"{field_name} must be None, a regex string, or a list of module types and names; got {show(spec)}"
        )


def check_k(k: float) -> None:
    """k is the fraction of weights KEPT; it must lie in (0, 1]."""
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not (0.0 < float(k) <= 1.0):
        raise SupermaskConfigError(
            f"k={show(k)} is invalid: k is the fraction of weights KEPT and must satisfy 0 < k <= 1 "
            "(k=0.3 keeps 30% of each layer's weights)"
        )


def _targets_to_json(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    out = []
    for item in value:
        if isinstance(item, type):
            out.append(f"type:{item.__module__}.{item.__qualname__}")
        else:
            out.append(item)
    return out
