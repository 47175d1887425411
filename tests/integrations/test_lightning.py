"""Trainers' own checkpointing (issue 24, item 4): Lightning's and the transformers Trainer's default
checkpoints of a supermask model are compact (no frozen random weights), resume exactly, and refuse a
model converted with another seed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import supermask
from tests.helpers.models import mlp, scores

L = pytest.importorskip("lightning")


class Module(L.LightningModule):  # type: ignore[misc,name-defined]
    def __init__(self, seed: int = 3) -> None:
        super().__init__()
        self.net = supermask.to_supermask(mlp(), supermask.SupermaskConfig(k=0.5, seed=seed))

    def training_step(self, batch: Any, index: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.1, momentum=0.9)


def loader() -> Any:
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(64, 12, generator=g), torch.randint(0, 3, (64,), generator=g))
    return torch.utils.data.DataLoader(data, batch_size=16)


def fit(module: Any, epochs: int, root: Path, ckpt_path: str | None = None) -> Any:
    from supermask.integrations.lightning import SupermaskCheckpoint

    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=str(root), callbacks=[SupermaskCheckpoint()],
    )  # fmt: skip
    trainer.fit(module, loader(), ckpt_path=ckpt_path)
    return trainer


def test_lightning_checkpoints_are_compact_and_resume_exactly(tmp_path: Path) -> None:
    straight = Module()
    fit(straight, 3, tmp_path / "a")
    first = Module()
    trainer = fit(first, 2, tmp_path / "b")
    ckpt = next((tmp_path / "b").rglob("*.ckpt"))
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert not any(k.endswith("base_layer.weight") for k in saved["state_dict"])
    assert saved["supermask"]["left_out"] == 2 and saved["supermask"]["configs"]["net"]["seed"] == 3
    resumed = Module()
    fit(resumed, 3, tmp_path / "b", ckpt_path=str(ckpt))
    assert all(torch.equal(a, b) for a, b in zip(scores(resumed.net), scores(straight.net)))
    assert trainer.current_epoch == 2
    with pytest.raises(supermask.SupermaskError, match="frozen weights differ"):
        Module(seed=4).load_state_dict(saved["state_dict"])
