"""Lightning: ``Trainer(callbacks=[SupermaskCheckpoint()])`` keeps Lightning's own checkpointing
(``ModelCheckpoint``, ``trainer.save_checkpoint``, ``ckpt_path=`` to resume) and makes its checkpoints
compact: the frozen random weights of every converted layer are left out (they are made again from the
seed when the model is converted), the scores, learned parameters, k and optimiser state stay, so a
resumed run continues exactly. Loading onto a model converted with another seed or init raises."""

from __future__ import annotations

from typing import Any

import lightning as L  # the ``lightning`` extra
from torch import nn

from supermask.core.checkpoint import regenerable_weight_keys
from supermask.core.layers import supermask_layers
from supermask.errors import SupermaskError


class SupermaskCheckpoint(L.Callback):
    """Store Lightning checkpoints of a LightningModule holding supermask-converted models without
    their regenerable frozen weights; ``checkpoint["supermask"]`` records each converted model's config."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        skip = regenerable_weight_keys(pl_module)
        if not skip and not supermask_layers(pl_module):
            raise SupermaskError(
                "SupermaskCheckpoint: the LightningModule holds no supermask-converted layer; convert its model "
                "with supermask.to_supermask first"
            )
        state = checkpoint["state_dict"]
        checkpoint["state_dict"] = {k: v for k, v in state.items() if k not in skip}
        checkpoint["supermask"] = {
            "left_out": len(state) - len(checkpoint["state_dict"]),
            "configs": _configs(pl_module),
        }


def _configs(module: nn.Module) -> dict[str, Any]:
    return {
        name or "(root)": m.supermask_config.to_dict()
        for name, m in module.named_modules()
        if hasattr(m, "supermask_config") and hasattr(m.supermask_config, "to_dict")
    }
