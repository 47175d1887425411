"""Trainers' own checkpointing (issue 24, item 4): Lightning's and the transformers Trainer's default
checkpoints of a supermask model are compact (no frozen random weights), resume exactly, and refuse a
model converted with another seed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import supermask


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 3))


def scores(model: nn.Module) -> list[torch.Tensor]:
    return [layer.scores.detach().clone() for _, layer in supermask.supermask_layers(model)]


def test_compact_state_dict_loads_strictly_and_checks_the_weights() -> None:
    model = supermask.to_supermask(mlp(), supermask.SupermaskConfig(k=0.5, seed=3))
    state = supermask.compact_state_dict(model)
    assert not any(k.endswith("base_layer.weight") for k in state)
    same = supermask.to_supermask(mlp(1), supermask.SupermaskConfig(k=0.5, seed=3))
    assert not same.load_state_dict(state).missing_keys  # strict: the weights were made again, and checked
    other = supermask.to_supermask(mlp(), supermask.SupermaskConfig(k=0.5, seed=4))
    with pytest.raises(supermask.SupermaskError, match="frozen weights differ"):
        other.load_state_dict(state)


# --- Lightning -------------------------------------------------------------------------------------

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


# --- transformers ----------------------------------------------------------------------------------

transformers = pytest.importorskip("transformers")


def bert() -> nn.Module:
    return supermask.to_supermask(_plain_bert(), supermask.SupermaskConfig(k=0.5))


def batches() -> list[dict[str, torch.Tensor]]:
    out = []
    for i in range(16):
        g = torch.Generator().manual_seed(i)
        out.append({"input_ids": torch.randint(0, 50, (8,), generator=g), "labels": torch.tensor(i % 3)})
    return out


def hf_train(model: nn.Module, out: Path, steps: int, resume: str | None = None) -> None:
    from supermask.integrations.hf import SupermaskTrainerCallback

    args = transformers.TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=4, max_steps=steps, learning_rate=0.5, save_steps=2,
        report_to=[], use_cpu=True, logging_strategy="no", disable_tqdm=True, seed=0, lr_scheduler_type="constant",
    )  # fmt: skip
    trainer = transformers.Trainer(model=model, args=args, train_dataset=batches(),
                                   callbacks=[SupermaskTrainerCallback()])  # fmt: skip
    trainer.train(resume_from_checkpoint=resume)


def test_the_hf_trainer_saves_by_default_and_resumes_exactly(tmp_path: Path) -> None:
    straight = bert()
    hf_train(straight, tmp_path / "a", 4)
    first = bert()
    hf_train(first, tmp_path / "b", 2)  # the Trainer's default save at step 2 (it crashed before)
    folder = tmp_path / "b" / "checkpoint-2"
    assert (folder / "model.safetensors").is_file() and (folder / "supermask" / "supermask.json").is_file()
    assert not (folder / "config.json").exists()  # from_pretrained cannot build random weights from it
    resumed = bert()
    hf_train(resumed, tmp_path / "b", 4, resume=str(folder))
    assert all(torch.equal(a, b) for a, b in zip(scores(resumed), scores(straight)))
    final = tmp_path / "a" / "checkpoint-4"
    loaded = supermask.load(final / "supermask", _plain_bert())
    x = torch.randint(0, 50, (2, 8))
    straight.eval()
    with torch.no_grad():
        assert torch.equal(loaded.eval()(input_ids=x).logits, straight(input_ids=x).logits)
    assert os.path.getsize(folder / "model.safetensors") < _full_size(straight, tmp_path)


def _plain_bert() -> nn.Module:
    """Without dropout, and trained at a constant learning rate below: the plain Trainer's own resume is
    then exact (measured), so any difference is ours."""
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=16, num_labels=3,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # fmt: skip
    return transformers.BertForSequenceClassification(cfg)


def _full_size(model: nn.Module, tmp_path: Path) -> int:
    from safetensors.torch import save_file

    save_file({k: v.contiguous().clone() for k, v in model.state_dict().items()}, str(tmp_path / "full.safetensors"))
    return os.path.getsize(tmp_path / "full.safetensors")
