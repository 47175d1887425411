"""Tests of supermask.engine.epoch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from supermask import cli
from supermask.errors import TrainingError
from supermask.runconfig import load_run_config
from supermask.train import train
from tests.helpers.runs import QUIET, cfg_for


@pytest.mark.parametrize("method", ["edge-popup", "dense"])
def test_a_nan_made_by_the_last_step_of_an_epoch_stops_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    real = torch.optim.SGD.step
    calls = {"n": 0}
    steps_per_epoch = -(-1437 // 64)  # digits: 1437 training images, batch 64

    def poisoned(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        out = real(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2 * steps_per_epoch:  # the very last step of epoch 2: its loss was still finite
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("nan"))
        return out

    monkeypatch.setattr(torch.optim.SGD, "step", poisoned)
    cfg = cfg_for(tmp_path, "train.epochs=3", f"supermask.method={method}")
    with pytest.raises(TrainingError, match=r"non-finite in epoch 2; stopped.*after epoch 1"):
        train(cfg, **QUIET)
    assert torch.load(tmp_path / "r" / "train_state.pt", weights_only=True)["epoch"] == 1


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import supermask.engine.epoch as engine  # the one epoch loop

    real = engine.F.cross_entropy
    calls = {"n": 0}

    def poisoned(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        out = real(*args, **kwargs)
        return out * float("nan") if calls["n"] > 2 * 23 + 5 else out  # NaN in epoch 3

    monkeypatch.setattr(engine.F, "cross_entropy", poisoned)
    cfg = load_run_config(None, [f"train.out_dir={tmp_path}", "train.epochs=5", "train.run_name=r"])
    with pytest.raises(TrainingError, match=r"became nan in epoch 3.*after epoch 2"):
        train(cfg, log=lambda *_: None)
    state = torch.load(tmp_path / "r" / "train_state.pt", weights_only=True)
    assert state["epoch"] == 2
    # the unfinished run can still be evaluated from its last good checkpoint
    assert cli.main(["eval", str(tmp_path / "r"), "--json"]) == 0


def test_nan_in_first_epoch_says_no_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import supermask.engine.epoch as engine  # the one epoch loop

    real = engine.F.cross_entropy
    monkeypatch.setattr(engine.F, "cross_entropy", lambda *a, **k: real(*a, **k) * float("nan"))
    cfg = load_run_config(None, [f"train.out_dir={tmp_path}", "train.epochs=2", "train.run_name=r"])
    with pytest.raises(TrainingError, match="No epoch had completed"):
        train(cfg, log=lambda *_: None)
    assert not (tmp_path / "r" / "train_state.pt").exists()


def test_channels_last_acts_on_image_batches_only(tmp_path: Path) -> None:
    from supermask.train import channels_last_input

    images = torch.randn(2, 3, 4, 4)
    assert channels_last_input(images).is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(channels_last_input(images), images)
    tokens = torch.arange(6).view(2, 3)  # features or token ids: not an error, unchanged
    assert channels_last_input(tokens) is tokens
    cfg = load_run_config(
        None, ["train.channels_last=true", "train.epochs=1", "train.max_steps=3", f"train.out_dir={tmp_path}"]
    )
    assert 0.0 <= train(cfg)["accuracy"] <= 1.0


def test_the_clipped_probabilities_loss_is_kerass_and_gives_no_gradient_beyond_the_clip() -> None:
    from supermask.engine.epoch import KERAS_EPSILON, training_loss

    logits = torch.tensor([[2.0, 0.5, -1.0], [40.0, 0.0, 0.0], [0.0, 0.0, 40.0]], requires_grad=True)
    y = torch.tensor([0, 0, 0])  # the second is predicted right beyond 1 - 1e-7, the third wrong beyond 1e-7
    loss = training_loss(logits, y, "clipped_probabilities")
    p = torch.softmax(logits.detach().double(), 1)[:, 0]
    keras = -torch.log(p.clamp(KERAS_EPSILON, 1 - KERAS_EPSILON)).mean()  # tf.keras categorical_crossentropy
    assert abs(float(loss.detach()) - float(keras)) < 1e-6
    loss.backward()
    assert torch.count_nonzero(logits.grad[1:]) == 0  # both saturated examples: no gradient at all
    plain = torch.autograd.grad(torch.nn.functional.cross_entropy(logits[:1], y[:1]) / 3, logits)[0]
    assert torch.allclose(logits.grad[0], plain[0], atol=1e-6)  # unclipped: the cross-entropy's gradient
    assert torch.equal(training_loss(logits, y, "cross_entropy"), torch.nn.functional.cross_entropy(logits, y))
