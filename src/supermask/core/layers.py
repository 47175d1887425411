"""Supermask layers: wrappers around an ordinary ``base_layer`` (Linear or Conv1d/2d/3d).

The base layer keeps its options (stride, padding, dilation, groups, padding_mode). Its weight is
replaced by a frozen random weight (``requires_grad=False``: not trained, not a DDP buffer), and a
``scores`` parameter of the same shape is trained. The forward pass uses ``weight * mask(scores)``.
``layer.weight`` returns that effective weight, so code that reads ``.weight`` directly (PyTorch's
fused transformer and attention paths) sees the masked network, never the unmasked one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from supermask.core.config import check_k
from supermask.core.init import checksum
from supermask.core.masks import kept_count, new_hint, version_key
from supermask.errors import SupermaskError

if TYPE_CHECKING:
    from supermask.core.methods.base import MaskMethod


class SupermaskLayer(nn.Module):
    """Base class of the wrappers; ``method`` is the model's :class:`~supermask.core.methods.MaskMethod`."""

    base_layer: Any  # nn.Linear or nn.ConvNd (typed loosely: torch types module attributes as Tensor | Module)

    def __init__(
        self,
        base_layer: nn.Module,
        name: str,
        method: MaskMethod,
        k: float,
        scores: Tensor | None,
        task_scores: list[Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.layer_name = name
        self.method = method
        self.k = k
        self.task = 0
        if task_scores is None:
            self.scores: nn.Parameter | None = nn.Parameter(scores) if scores is not None else None
        else:  # a bank of task masks: one Parameter per task; ``scores`` is the active one (not registered twice)
            self.scores_bank = nn.ParameterList([nn.Parameter(s) for s in task_scores])
            self.use_task(0)
        self._superposition: Tensor | None = None
        self._hint = new_hint()
        self._mask_key: tuple[Any, ...] | None = None
        self._mask: Tensor | None = None
        self._eval_key: tuple[Any, ...] | None = None
        self._eval_weight: Tensor | None = None
        self.register_load_state_dict_post_hook(_check_compact_state)

    # --- state_dict: what defines the network beyond the tensors (issue 24) ---------------------
    def get_extra_state(self) -> Tensor:
        """k travels with ``state_dict()`` (as ``<layer>._extra_state``, a float64 tensor, so that every
        format that stores tensors stores it), so that ``load_state_dict`` gives the network it was
        saved with: after ``set_k(model, 0.3)`` a trainer's checkpoint resumes at 0.3, not at the k the
        model was converted with. With it, a fingerprint of the frozen weight (64 bits of its checksum as
        two exact 32-bit halves), so that a compact state dict without the weight
        (:func:`supermask.compact_state_dict`) loads only onto a model whose weight is that very one."""
        if not self.method.has_scores:  # learned weights: they are in the state dict themselves
            return torch.tensor([self.k], dtype=torch.float64)
        high, low = self.weight_fingerprint()
        return torch.tensor([self.k, high, low], dtype=torch.float64)

    def weight_fingerprint(self) -> tuple[int, int]:
        """The frozen weight's checksum as two 32-bit integers (cached until the weight changes)."""
        weight = self.base_layer.weight
        key = (id(weight), version_key(weight), weight.data_ptr())
        cached = self.__dict__.get("_fingerprint")
        if cached is None or cached[0] != key:
            digest = int(checksum(weight), 16)
            cached = (key, (digest >> 32, digest & 0xFFFFFFFF))
            self.__dict__["_fingerprint"] = cached
        return cached[1]

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, Tensor) or state.numel() not in (1, 3):
            raise SupermaskError(
                f"layer {self.layer_name!r}: its state_dict entry _extra_state must be a tensor holding k (and the "
                f"frozen weight's fingerprint), not {type(state).__name__}"
            )
        values = state.detach().to(torch.float64).reshape(-1).tolist()
        check_k(values[0])
        self.k = values[0]
        self.__dict__["_loaded_fingerprint"] = (int(values[1]), int(values[2])) if len(values) == 3 else None

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        key = prefix + "_extra_state"
        weight_key = prefix + "base_layer.weight"
        had, had_weight = key in state_dict, weight_key in state_dict
        self.__dict__["_loaded_fingerprint"] = None
        super()._load_from_state_dict(state_dict, prefix, *args)
        missing = args[2]  # (local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        if not had and key in missing:  # a state dict from before k travelled with it: k stays as it is
            missing.remove(key)
        # the weight is its child's key: checked after the children loaded (_check_compact_state)
        self.__dict__["_compact_load"] = (weight_key, not had_weight)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_layer":
                raise
            return getattr(self.base_layer, name)

    # --- tasks (a bank of masks) ---------------------------------------------------------------
    @property
    def tasks(self) -> int:
        """Number of task masks (1 without a bank)."""
        bank: Any = self._modules.get("scores_bank")
        return len(bank) if bank is not None else 1

    def score_parameters(self) -> list[nn.Parameter]:
        """Every task's scores (the one ``scores`` without a bank; none for a method without scores)."""
        bank: Any = self._modules.get("scores_bank")
        if bank is not None:
            return list(bank)
        return [self.scores] if self.scores is not None else []

    def use_task(self, task: int) -> None:
        """Make task ``task``'s scores the ones the forward pass uses and the only ones that train."""
        bank: Any = self._modules.get("scores_bank")
        if bank is None:
            return
        for i, p in enumerate(bank):
            p.requires_grad_(i == task)
        self.__dict__["scores"] = bank[task]  # an alias of the registered bank entry
        self.task = task

    # --- the mask -----------------------------------------------------------------------------
    def _scores_key(self) -> tuple[Any, ...]:
        s = self.scores
        assert s is not None
        return (id(s), version_key(s), s.device, self.k)

    def fan_shape(self) -> tuple[int, ...]:
        """The weight's shape in PyTorch's (out, in, *kernel) layout, from which fans are computed."""
        return tuple(self.base_layer.weight.shape)

    def kept(self) -> int:
        """Number of weights kept at the present k (per-layer rule of :func:`kept_count`)."""
        return kept_count(self.k, self.base_layer.weight.numel())

    @torch.compiler.disable  # data-dependent selection and a Python-side cache: kept out of compiled graphs
    def mask(self) -> Tensor:
        """The mask used now (cached until the scores, k or the method's state change)."""
        return self._current_mask()

    def _current_mask(self) -> Tensor:
        # Caches are set through __dict__: nn.Module.__setattr__ costs microseconds per call, per step.
        method = self.method
        if not method.has_scores:
            return torch.ones_like(self.base_layer.weight, dtype=torch.bool)
        if method.stochastic and self.training:
            return self._checked(method.sample(self), "sample")
        key = (*self._scores_key(), *method.cache_key(self))
        if self._mask is not None and key == self._mask_key:
            return self._mask
        mask = self._checked(method.select(self), "select")
        self.__dict__.update(_mask_key=key, _mask=mask)
        return mask

    def _checked(self, mask: Any, hook: str) -> Tensor:
        """``mask`` from the method's ``hook``, refused unless it is a bool or float tensor of the weight's
        shape (a smaller one would broadcast into another network without a word)."""
        weight = self.base_layer.weight
        if (
            not isinstance(mask, Tensor)
            or mask.shape != weight.shape
            or not (mask.dtype == torch.bool or mask.is_floating_point())
        ):
            got = (
                f"a {mask.dtype} tensor of shape {tuple(mask.shape)}"
                if isinstance(mask, Tensor)
                else type(mask).__name__
            )
            raise SupermaskError(
                f"method {self.method.name!r}: {hook}() gave {got} for layer {self.layer_name!r}; a mask must be "
                f"a bool or float tensor of the weight's shape {tuple(weight.shape)}"
            )
        return mask

    def effective_weight(self) -> Tensor:
        """What the forward pass uses (``weight * mask`` for most methods), differentiable with respect to
        the scores (straight-through)."""
        if not self.method.has_scores:
            return self.base_layer.weight
        if self._superposition is not None:  # infer_task: every task's mask, weighted by alphas
            weight = self.base_layer.weight
            return self.method.weight_transform(self, weight, self._superposition != 0) * self._superposition
        if torch.compiler.is_compiling() and self.traces_selection():
            return self._traced_effective_weight()
        return self._eager_effective_weight()

    def autocast_weight(self) -> Tensor | None:
        """The frozen fp32 weight cast to autocast's dtype, cached until the weight changes; None when
        autocast is off for its device (or inside ``torch.compile``, which fuses the cast itself)."""
        weight = self.base_layer.weight
        device = weight.device.type
        if torch.compiler.is_compiling() or weight.dtype != torch.float32 or not torch.is_autocast_enabled(device):
            return None
        dtype = torch.get_autocast_dtype(device)
        key = (id(weight), version_key(weight), weight.data_ptr(), weight.device, dtype)  # .to() keeps id and version
        if self.__dict__.get("_autocast_key") != key:
            self.__dict__.update(_autocast_key=key, _autocast_weight=weight.detach().to(dtype))
        return self.__dict__["_autocast_weight"]

    def traces_selection(self) -> bool:
        """Whether ``torch.compile`` traces this layer's selection into its graph: where the method has a
        sync-free selection, off the CPU. On the CPU the eager NumPy selection, warm-started from the
        previous step, is faster than any traced one (LeNet-300-100: 4.2 ms eager against 32.6 ms traced
        per step), so there each layer stays a graph break."""
        scores = self.scores
        if scores is None or scores.device.type == "cpu":
            return False
        return self.method.traceable(self)

    def _traced_effective_weight(self) -> Tensor:
        """Inside a ``torch.compile`` graph: the sync-free selection is traced into the graph and runs on
        every call (no Python-side cache, no graph break per layer, so whole steps can be one graph)."""
        scores = self.scores
        assert scores is not None
        mask = self.method.traced_mask(self)
        return self.method.effective_weight(self, self.base_layer.weight, scores, mask)

    # The eager path reads and writes Python-side caches (and on the CPU selects in NumPy): never traced.
    @torch.compiler.disable
    def _eager_effective_weight(self) -> Tensor:
        weight = self.base_layer.weight
        assert self.scores is not None
        grad_on = torch.is_grad_enabled()
        if not grad_on and not self.training:
            autocast = torch.is_autocast_enabled(weight.device.type) and torch.get_autocast_dtype(weight.device.type)
            key = (id(weight), version_key(weight), autocast, *self._scores_key(), *self.method.cache_key(self))
            if self._eval_weight is not None and key == self._eval_key:
                return self._eval_weight
        out = self.method.effective_weight(self, weight, self.scores, self._current_mask())
        if not grad_on and not self.training:
            self.__dict__.update(_eval_key=key, _eval_weight=out)
        return out

    @property
    def weight(self) -> Tensor:  # type: ignore[override]
        """The masked weight the forward pass uses (so fused paths that read ``.weight`` see the subnetwork)."""
        return self.effective_weight()

    @property
    def bias(self) -> Tensor | None:  # type: ignore[override]
        """The wrapped layer's bias (zero, frozen or learned, as the config's ``bias`` says)."""
        return self.base_layer.bias

    def extra_repr(self) -> str:
        return f"method={self.method.name}, k={self.k}"

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError


def _check_compact_state(layer: nn.Module, incompatible: Any) -> None:
    """After ``load_state_dict`` (and its children's): a state without the frozen weight
    (:func:`supermask.compact_state_dict`) is accepted only when this layer's weight is the one it was saved
    with; the key is then not missing (strict loads pass)."""
    weight_key, absent = layer.__dict__.pop("_compact_load", (None, False))
    loaded = layer.__dict__.pop("_loaded_fingerprint", None)
    if not absent or loaded is None or not layer.method.has_scores:  # type: ignore[union-attr]
        return
    if loaded != layer.weight_fingerprint():  # type: ignore[operator]
        raise SupermaskError(
            f"layer {layer.layer_name!r}: this state dict was saved from a model whose frozen weights differ from "
            "this model's (another seed, init or base model); convert the model with the config it was trained with"
        )
    if weight_key in incompatible.missing_keys:
        incompatible.missing_keys.remove(weight_key)  # made again from the seed, and checked


class SupermaskLinear(SupermaskLayer):
    """Supermask wrapper of ``nn.Linear``."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.effective_weight(), self.base_layer.bias)


class SupermaskConv(SupermaskLayer):
    """Supermask wrapper of ``nn.Conv1d``, ``nn.Conv2d`` and ``nn.Conv3d`` (every option)."""

    def forward(self, x: Tensor) -> Tensor:
        return self.base_layer._conv_forward(x, self.effective_weight(), self.base_layer.bias)


class SupermaskConv1D(SupermaskLayer):
    """Supermask wrapper of transformers' ``Conv1D`` (GPT-2's attention and MLP projections): a Linear
    whose weight is stored transposed, (in, out), applied as ``x @ weight + bias``."""

    def fan_shape(self) -> tuple[int, ...]:
        fan_in, fan_out = self.base_layer.weight.shape
        return (fan_out, fan_in)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.effective_weight()
        flat = x.reshape(-1, x.shape[-1])
        bias = self.base_layer.bias
        out = torch.addmm(bias, flat, weight) if bias is not None else flat @ weight
        return out.view(*x.shape[:-1], weight.shape[-1])


class FrozenWeight(nn.Module):
    """Holds the frozen weight of a parameter masked in place (:class:`SupermaskParameter`'s ``base_layer``)."""

    def __init__(self, weight: nn.Parameter) -> None:
        super().__init__()
        self.weight = weight
        self.bias = None


class SupermaskParameter(SupermaskLayer):
    """A mask on one parameter of a module that reads it in its own forward (``nn.MultiheadAttention``'s
    ``in_proj_weight``, a transposed convolution, a Linear or Conv subclass with its own forward such as
    timm's ``StdConv2d``, a raw expert tensor named in ``target_parameters``). It is registered in the owner
    as ``supermask_<parameter>``, and the owner's class is swapped for a subclass whose ``<parameter>`` is a
    property returning this layer's effective weight, so the owner's forward runs unchanged on the masked
    weight. ``layer_name`` is the parameter's qualified name (``encoder.0.self_attn.in_proj_weight``)."""

    def __init__(
        self,
        base_layer: nn.Module,
        name: str,
        method: MaskMethod,
        k: float,
        scores: Tensor | None,
        task_scores: list[Tensor] | None = None,
        *,
        owner_type: str,
        fan: tuple[int, ...],
    ) -> None:
        super().__init__(base_layer, name, method, k, scores, task_scores)
        self.owner_type = owner_type
        self.parameter = name.rpartition(".")[2]
        self._fan = fan

    def fan_shape(self) -> tuple[int, ...]:
        return self._fan

    def extra_repr(self) -> str:
        return f"{self.owner_type}.{self.parameter}, method={self.method.name}, k={self.k}"

    def forward(self, x: Tensor) -> Tensor:
        raise SupermaskError(
            f"{self.layer_name!r} is a masked parameter, read by its module's own forward; it is not called"
        )


#: the prefix of a masked parameter's layer in its owner module
MASKED_PREFIX = "supermask_"
_MASKED_CLASSES: dict[tuple[type, tuple[str, ...]], type] = {}


def original_class(module: nn.Module) -> type | None:
    """The class a module had before some of its parameters were masked in place (None: none were)."""
    return vars(type(module)).get("_supermask_original_class")


def _masked_property(name: str) -> property:
    child = MASKED_PREFIX + name

    def read(self: nn.Module) -> Tensor:
        layer: Any = self._modules[child]
        return layer.effective_weight()

    return property(read, doc=f"The masked {name} (see supermask.core.layers.SupermaskParameter).")


def mask_parameters_in_place(module: nn.Module, names: list[str]) -> None:
    """Swap ``module``'s class for a subclass whose parameters ``names`` are properties reading the
    effective weight of the ``supermask_<name>`` child (already registered); removes the raw entries."""
    base = original_class(module) or type(module)
    masked = tuple(sorted({*names, *getattr(type(module), "_supermask_parameters", ())}))
    cls = _masked_class(base, masked)
    for name in names:
        module._parameters.pop(name, None)
    module.__class__ = cls


def _masked_class(base: type, masked: tuple[str, ...]) -> type:
    """The generated subclass of ``base`` whose parameters ``masked`` are masked (one per pair)."""
    cls = _MASKED_CLASSES.get((base, masked))
    if cls is None:
        namespace: dict[str, Any] = {
            "_supermask_original_class": base,
            "_supermask_parameters": masked,
            "__module__": __name__,
            "__reduce_ex__": _reduce_masked,  # pickled as (its base class, the masked names), not by name
        }
        for name in masked:
            namespace[name] = _masked_property(name)
        cls = type(f"Supermasked{base.__name__}", (base,), namespace)
        _MASKED_CLASSES[(base, masked)] = cls
    return cls


def _reduce_masked(self: nn.Module, protocol: Any) -> tuple[Any, ...]:
    """Pickle support of a module masked in place (``torch.save(model)``, ``copy.deepcopy``): the generated
    class is rebuilt from its base class, which pickle finds by reference as it would the unmasked module."""
    cls = type(self)
    return (_rebuild_masked, (cls._supermask_original_class, cls._supermask_parameters), self.__getstate__())  # type: ignore[attr-defined]


def _rebuild_masked(base: type, masked: tuple[str, ...]) -> nn.Module:
    cls: Any = _masked_class(base, tuple(masked))
    return cls.__new__(cls)


def unmask_parameters(module: nn.Module) -> None:
    """The inverse of :func:`mask_parameters_in_place` (``merge``): the original class back; the caller
    registers the merged parameters and removes the children."""
    base = original_class(module)
    if base is not None:
        module.__class__ = base


def supermask_layers(model: nn.Module) -> list[tuple[str, Any]]:
    """(qualified name in the unconverted model, layer) for every converted layer."""
    return [(m.layer_name, m) for m in model.modules() if isinstance(m, SupermaskLayer)]
