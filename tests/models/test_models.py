"""The model registry and factory (supermask.models): every built-in model, model.kwargs, your own."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import supermask as sm
from supermask.models import MODEL_NAMES, create
from supermask.runconfig import experiment_key, load_run_config


def test_every_model_builds_and_gives_logits() -> None:
    for name in MODEL_NAMES:
        if name.startswith(("resnet", "wide_")):  # ImageNet-sized: built elsewhere (test_pinned)
            continue
        size = 28 if name in ("fc", "lenet300100", "mlp") else 32
        channels = 1 if size == 28 else 3
        model = create(name, num_classes=7, in_channels=channels, image_size=size).eval()
        with torch.no_grad():
            assert model(torch.randn(2, channels, size, size)).shape == (2, 7), name


def test_model_kwargs_reach_the_model_and_old_configs_still_resume() -> None:
    elu = create("fc", num_classes=10, in_channels=1, image_size=28, activation="elu")
    assert any(isinstance(m, nn.ELU) for m in elu.modules()) and not any(isinstance(m, nn.ReLU) for m in elu.modules())
    with pytest.raises(sm.SupermaskConfigError, match="cannot take"):
        create("fc", num_classes=10, nope=1)
    with pytest.raises(sm.SupermaskConfigError, match="cannot set num_classes, width"):
        load_run_config(None, ["model.kwargs={width: 2, num_classes: 3}"])
    cfg = load_run_config(None, [])
    saved = cfg.to_dict()
    for section, key in (("model", "kwargs"), ("optim", "decay_rate"), ("optim", "decay_epochs")):
        del saved[section][key]  # a config written before these keys existed
    assert experiment_key(saved) == experiment_key(cfg.to_dict())
