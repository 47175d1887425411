"""transformers: ``Trainer(..., callbacks=[SupermaskTrainerCallback()])`` keeps the Trainer's own default
checkpointing (``save_steps``, ``save_model``, ``resume_from_checkpoint``) on a supermask-converted model.
Each save writes into the Trainer's folder:

- ``model.safetensors``: :func:`supermask.compact_state_dict` (scores, learned parameters, k; the frozen
  random weights left out), which ``resume_from_checkpoint`` loads to continue exactly (each layer
  checks that its frozen weight is the one the state was saved with);
- ``supermask/``: the network as seed + mask (:func:`supermask.save`), for
  ``supermask.load(folder / "supermask", AutoModel...from_pretrained(base))``.

No ``config.json`` is written, so ``from_pretrained`` refuses the folder instead of building a model of
random weights from it; for a plain Hugging Face model, ``supermask.merge`` it and ``save_pretrained``."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import TrainerCallback

from supermask.core.checkpoint import compact_state_dict, save
from supermask.core.inspection import get_config

#: where the seed + mask form of the network goes, inside each Trainer folder
MASKS = "supermask"


class SupermaskTrainerCallback(TrainerCallback):  # type: ignore[misc]
    """Give the Trainer's model a ``save_pretrained`` that writes the compact training state and the seed +
    mask checkpoint (see the module's docstring); the Trainer's checkpoints and resumes then just work."""

    def on_init_end(self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kwargs: Any) -> None:
        if model is not None:
            install(model)


def install(model: nn.Module) -> nn.Module:
    """Make ``model.save_pretrained`` write what the Trainer needs (the callback does it at the Trainer's start)."""
    get_config(model)  # a converted model, or a clear error
    model.save_pretrained = functools.partial(save_for_trainer, model)  # type: ignore[assignment,unused-ignore]
    return model


def save_for_trainer(
    model: nn.Module, save_directory: str | Path, state_dict: Any = None, is_main_process: bool = True, **_: Any
) -> None:
    """What ``save_pretrained`` writes for the Trainer: ``model.safetensors`` (compact training state) and
    ``supermask/`` (seed + mask). ``state_dict``, given by the Trainer, is ignored: it holds the frozen weights."""
    if not is_main_process:
        return
    out = Path(save_directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in compact_state_dict(model).items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt", "supermask": "compact training state"})
    with torch.no_grad():
        save(model, out / MASKS)
