"""Hugging Face models: BERT, GPT-2 (its Conv1D) and ViT converted, trained with the HF Trainer, saved and
loaded bit-exactly; merge + save_pretrained / from_pretrained identical; save_pretrained on an unmerged
model refused (issue 14, item 3). Needs the `hf` extra (installed by `make`)."""

from __future__ import annotations

import os
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
from tests.helpers.models import scores


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


transformers = pytest.importorskip("transformers")


def masked_bert() -> nn.Module:
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


def test_the_hf_trainer_saves_by_default_and_resumes_exactly(tmp_path: Path) -> None:
    straight = masked_bert()
    hf_train(straight, tmp_path / "a", 4)
    first = masked_bert()
    hf_train(first, tmp_path / "b", 2)  # the Trainer's default save at step 2 (it crashed before)
    folder = tmp_path / "b" / "checkpoint-2"
    assert (folder / "model.safetensors").is_file() and (folder / "supermask" / "supermask.json").is_file()
    assert not (folder / "config.json").exists()  # from_pretrained cannot build random weights from it
    resumed = masked_bert()
    hf_train(resumed, tmp_path / "b", 4, resume=str(folder))
    assert all(torch.equal(a, b) for a, b in zip(scores(resumed), scores(straight)))
    final = tmp_path / "a" / "checkpoint-4"
    loaded = supermask.load(final / "supermask", _plain_bert())
    x = torch.randint(0, 50, (2, 8))
    straight.eval()
    with torch.no_grad():
        assert torch.equal(loaded.eval()(input_ids=x).logits, straight(input_ids=x).logits)
    assert os.path.getsize(folder / "model.safetensors") < _full_size(straight, tmp_path)
