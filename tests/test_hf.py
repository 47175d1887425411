"""Hugging Face models: BERT, GPT-2 (its Conv1D) and ViT converted, trained with the HF Trainer, saved and
loaded bit-exactly; merge + save_pretrained / from_pretrained identical; save_pretrained on an unmerged
model refused (issue 14, item 3). Needs the `hf` extra (installed by `make`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainingArguments,
    ViTConfig,
    ViTForImageClassification,
)

import supermask


def bert() -> nn.Module:
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                     max_position_embeddings=16, num_labels=3)  # fmt: skip
    return BertForSequenceClassification(cfg)


def gpt2() -> nn.Module:
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50, n_positions=16, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg)


def vit() -> nn.Module:
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=8, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=1,
                    num_attention_heads=2, intermediate_size=32, num_labels=3)  # fmt: skip
    return ViTForImageClassification(cfg)


def text_batch(i: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(i)
    return {"input_ids": torch.randint(0, 50, (8,), generator=g), "labels": torch.tensor(i % 3)}


def lm_batch(i: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, 50, (8,), generator=torch.Generator().manual_seed(i))
    return {"input_ids": ids, "labels": ids}


def image_batch(i: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(i)
    return {"pixel_values": torch.randn(3, 8, 8, generator=g), "labels": torch.tensor(i % 3)}


CASES: dict[str, tuple[Callable[[], nn.Module], Callable[[int], dict[str, torch.Tensor]]]] = {
    "bert": (bert, text_batch),
    "gpt2": (gpt2, lm_batch),
    "vit": (vit, image_batch),
}


def outputs(model: nn.Module, make: Callable[[int], dict[str, torch.Tensor]]) -> torch.Tensor:
    batch = {k: torch.stack([make(i)[k] for i in range(4)]) for k in make(0) if k != "labels"}
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("name", sorted(CASES))
def test_hf_trainer_then_save_load_merge_and_save_pretrained(name: str, tmp_path: Path) -> None:
    build, make = CASES[name]
    model = supermask.to_supermask(build(), supermask.SupermaskConfig(k=0.5))
    assert model.supermask_report.trainable_parameters == model.supermask_report.score_parameters
    scores_before = [layer.scores.detach().clone() for _, layer in supermask.supermask_layers(model)]
    args = TrainingArguments(output_dir=str(tmp_path / "hf"), per_device_train_batch_size=4, max_steps=3,
                             learning_rate=0.5, save_strategy="no", report_to=[], use_cpu=True,
                             logging_strategy="no", disable_tqdm=True)  # fmt: skip
    data: Any = [make(i) for i in range(12)]
    Trainer(model=model, args=args, train_dataset=data).train()
    scores_after = [layer.scores.detach() for _, layer in supermask.supermask_layers(model)]
    assert any(not torch.equal(a, b) for a, b in zip(scores_before, scores_after))  # the Trainer trained the scores
    out = outputs(model, make)

    supermask.save(model, tmp_path / "ck")
    assert torch.equal(outputs(supermask.load(tmp_path / "ck", build()), make), out)

    with pytest.raises(supermask.SupermaskError, match="save_pretrained on a converted, unmerged model"):
        model.save_pretrained(tmp_path / "unmerged")
    assert not (tmp_path / "unmerged").exists() or not any((tmp_path / "unmerged").iterdir())

    merged = supermask.merge(model)
    merged.save_pretrained(tmp_path / "merged")
    again = type(merged).from_pretrained(tmp_path / "merged")
    assert torch.equal(outputs(again, make), out)


def test_a_transformers_image_model_trains_from_the_command_line(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """model.name=transformers:ViTForImageClassification.from_pretrained with model.kwargs: the factory gets
    only the kwargs given (num_classes etc. would reach ViT's constructor), its ModelOutput is read as logits."""
    import json

    from supermask import cli

    config = ViTConfig(
        image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=10,
    )  # fmt: skip
    ViTForImageClassification(config).save_pretrained(tmp_path / "vit")
    name = "model.name=transformers:ViTForImageClassification.from_pretrained"
    kwargs = f"model.kwargs={{pretrained_model_name_or_path: {tmp_path / 'vit'}}}"
    assert cli.main(["train", name, kwargs, f"train.out_dir={tmp_path / 'runs'}", "train.epochs=2"]) == 0
    run_dir = next((tmp_path / "runs").iterdir())
    accuracy = json.loads((run_dir / "result.json").read_text())["accuracy"]
    assert accuracy > 0.2  # above chance (10 classes) after 2 epochs
    capsys.readouterr()
    assert cli.main(["eval", str(run_dir), "--json", "--trust-model-code"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == accuracy
