"""Runs are never mixed, overwritten or lost; config errors are one line; sweeps scale out (issue 12)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
import yaml

import supermask
from supermask import cli
from supermask.core.config import SupermaskConfig
from supermask.errors import SupermaskConfigError
from supermask.runconfig import experiment_key, from_dict, load_run_config, set_key
from supermask.train import train
from tests.helpers.runs import QUIET, cfg_for


@pytest.mark.parametrize(
    ("key", "meant"),
    [
        ("k", "supermask.k"),
        ("lr", "optim.lr"),
        ("train.lr", "optim.lr"),
        ("epochs", "train.epochs"),
        ("optim.lrr", "optim.lr"),
    ],
)
def test_a_key_in_the_wrong_section_suggests_the_right_one(key: str, meant: str) -> None:
    with pytest.raises(Exception, match=f"did you mean '{meant}'"):
        load_run_config(None, [f"{key}=0.3"])


def test_a_saved_global_run_with_scale_fan_still_reads(tmp_path: Path) -> None:
    """The scale_fan check refuses new runs only: runs saved before it still resolve for report and eval."""
    raw = load_run_config(None, ["supermask.method=edge-popup-global"]).to_dict()
    raw["supermask"]["scale_fan"] = True
    assert from_dict(raw).supermask_config().scale_fan is True
    with pytest.raises(SupermaskConfigError, match="selects over all layers at once"):
        load_run_config(None, ["supermask.method=edge-popup-global", "supermask.scale_fan=true"])
    assert load_run_config(None, ["supermask.method=biprop", "supermask.scale_fan=true"]).supermask_config().scale_fan


def test_cuda_on_a_cpu_only_build_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert cli.main(["train", "train.device=cuda"]) == 2
    assert "train.device='cuda' but" in capsys.readouterr().err


def test_yaml_numbers_and_bools_follow_yaml_1_2(tmp_path: Path) -> None:
    cfg = load_run_config(None, ["optim.lr=1e-3", "optim.weight_decay=1.0e38", "supermask.scale_fan=true"])
    assert cfg.optim.lr == 0.001 and cfg.optim.weight_decay == 1e38 and cfg.supermask.scale_fan is True
    assert load_run_config(None, ["train.seed=010"]).train.seed == 10  # decimal, not YAML 1.1's octal
    assert load_run_config(None, ["train.run_name=0.10"]).train.run_name == "0.10"  # a name stays as typed
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 5e-2\nsupermask:\n  scale_fan: True\n")
    assert load_run_config(path, []).optim.lr == 0.05
    path.write_text("optim:\n  lr: [1, 2\n")
    with pytest.raises(SupermaskConfigError, match=r"is not valid YAML \(line 3"):
        load_run_config(path, [])
    path.write_text("- 1\n- 2\n")
    with pytest.raises(SupermaskConfigError, match="must hold a mapping of sections"):
        load_run_config(path, [])
    path.write_text("supermask:\n  scale_fan: no\n")
    with pytest.raises(SupermaskConfigError, match="must be true or false"):
        load_run_config(path, [])


def test_a_key_given_twice_is_an_error_not_the_last_one_silently(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("supermask:\n  k: 0.3\n  method: edge-popup\n  k: 0.5\n")
    with pytest.raises(SupermaskConfigError, match=r"\(line 4, column 3\): duplicate key 'k'"):
        load_run_config(path, [])
    path.write_text("train: {epochs: 1}\ntrain: {seed: 2}\n")
    with pytest.raises(SupermaskConfigError, match="duplicate key 'train'"):
        load_run_config(path, [])
    with pytest.raises(SupermaskConfigError, match="duplicate key 'tau'"):
        load_run_config(None, ["supermask.options={tau: 0.4, tau: 0.5}"])
    with pytest.raises(SupermaskConfigError, match="is a directory, not a YAML file"):
        load_run_config(tmp_path, [])


def test_one_method_option_is_set_by_its_dotted_key(tmp_path: Path) -> None:
    cfg = load_run_config(None, ["supermask.method=biprop", "supermask.options.scope=global"])
    assert cfg.supermask_config().options == {"scope": "global"}
    both = load_run_config(
        None,
        ["supermask.method=signed-supermask", "supermask.options={threshold: 0.3}", "supermask.options.threshold=0.2"],
    )
    assert both.supermask_config().options == {"threshold": 0.2}  # the later setting wins, as for any key
    for items, message in [
        (["supermask.method=biprop", "supermask.options.scope=globl"], "choose one of: layer, global"),
        (["supermask.method=biprop", "supermask.options.sope=global"], "has no option(s) ['sope']; its options: scope"),
        (["supermask.method=edge-popup", "supermask.options.scope=global"], "its options: none"),
    ]:
        with pytest.raises(SupermaskConfigError, match=re.escape(message)):
            load_run_config(None, items)
    runs, _ = cli._sweep_runs(None, ["supermask.method=biprop", "supermask.options.scope=layer,global"], tmp_path)
    assert [r.cfg.supermask_config().options["scope"] for r in runs] == ["layer", "global"]


def test_config_yaml_holds_the_full_resolved_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import dataclasses

    train(cfg_for(tmp_path, "train.epochs=1"), **QUIET)
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    fields = {f.name for f in dataclasses.fields(SupermaskConfig)} - {"seed"}
    assert set(saved["supermask"]) == fields
    assert from_dict(saved).to_dict() == saved
    assert cli.main(["train", "--print-config", "supermask.k=0.3", "train.epochs=1"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["supermask"]["k"] == 0.3 and set(printed["supermask"]) == fields
    assert not (Path.cwd() / "runs" / "mlp-digits-edge-popup-k0.3-s0").exists()  # printed, not run


def test_the_run_config_holds_its_supermask_section_checked(tmp_path: Path) -> None:
    cfg = load_run_config(None, ["supermask.options.scope=global", "supermask.method=biprop", "train.seed=7"])
    assert isinstance(cfg.supermask, SupermaskConfig)  # checked when set, not a mapping checked later
    assert (cfg.supermask.method, cfg.supermask.options) == ("biprop", {"scope": "global"})  # options before method
    assert cfg.supermask_config().seed == 7 and cfg.supermask.seed == 0  # the seed is train.seed's
    path = tmp_path / "options_first.yaml"
    path.write_text("supermask: {options: {scope: global}, method: biprop, k: 2.0}\n")
    assert load_run_config(path, ["supermask.k=0.3"]).supermask.k == 0.3  # file and overrides checked together
    with pytest.raises(SupermaskConfigError, match="k=2"):
        load_run_config(path, [])
    # a key left unset follows the others: bias=auto resolves by the weight_init set after it
    assert load_run_config(None, ["supermask.weight_init=pretrained"]).supermask.bias == "frozen"
    before = copy.deepcopy(cfg)
    with pytest.raises(SupermaskConfigError, match="choose one of"):
        set_key(cfg, "supermask.options.scope", "nowhere")
    assert cfg == before and cfg.supermask_settings == before.supermask_settings  # a refused key changes nothing


def test_the_data_options_of_a_paper_pipeline_are_checked_and_part_of_the_experiment(tmp_path: Path) -> None:
    cfg = load_run_config(
        None, ["data.standardize=per_image", "data.shuffle=false", "data.train_examples=1000", "data.augment=false"]
    )
    assert (cfg.data.standardize, cfg.data.shuffle, cfg.data.train_examples) == ("per_image", False, 1000)
    assert cfg.data.augment is False and load_run_config(None, []).data.augment is None
    saved = load_run_config(None, []).to_dict()
    for key in ("standardize", "shuffle", "train_examples", "augment"):
        del saved["data"][key]  # a run saved before these keys existed is the same experiment as their defaults
    assert experiment_key(saved) == experiment_key(load_run_config(None, []).to_dict())
    assert experiment_key(cfg.to_dict()) != experiment_key(load_run_config(None, []).to_dict())
    for item, message in [
        (
            "data.standardize=whitened",
            "data.standardize='whitened' is not valid; choose one of: dataset, per_image, unit",
        ),
        ("data.train_examples=0", "data.train_examples"),
        ("data.shuffle=no", "data.shuffle"),
        ("data.augment=maybe", "data.augment"),
    ]:
        with pytest.raises(SupermaskConfigError, match=re.escape(message)):
            load_run_config(None, [item])
    with pytest.raises(SupermaskConfigError, match="needs a data set held as tensors, not data.name=folder"):
        load_run_config(None, ["data.name=folder", f"data.root={tmp_path}", "data.shuffle=false"])


def test_the_run_config_checks_its_supermask_section_once(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_run_config(None, ["supermask.k=0.3"])
    calls = []
    real = supermask.SupermaskConfig.validate
    monkeypatch.setattr(supermask.SupermaskConfig, "validate", lambda self: calls.append(1) or real(self))
    assert cfg.supermask_config().k == 0.3 and cfg.supermask_config().k == 0.3
    assert calls == []  # checked when the config was loaded
    given = cfg.supermask_config()
    given.k = 0.9  # a model's set_k changes its own copy, never the run config's
    assert cfg.supermask_config().k == 0.3
    set_key(cfg, "supermask.k", 0.7)
    assert cfg.supermask_config().k == 0.7 and len(calls) == 1  # a changed setting is checked again
    with pytest.raises(supermask.SupermaskConfigError, match="k=2"):
        set_key(cfg, "supermask.k", 2.0)
        cfg.supermask_config()


def test_the_training_loss_is_a_checked_choice() -> None:
    assert load_run_config(None, []).optim.loss == "cross_entropy"
    assert load_run_config(None, ["optim.loss=clipped_probabilities"]).optim.loss == "clipped_probabilities"
    with pytest.raises(SupermaskConfigError, match="optim.loss='softmax' is not valid"):
        load_run_config(None, ["optim.loss=softmax"])
