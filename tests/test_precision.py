"""train.bf16 = auto | true | false: bf16 autocast where the device has it natively (issue 15)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from supermask import SupermaskConfig, cli, to_supermask
from supermask.core.layers import supermask_layers
from supermask.errors import SupermaskConfigError, TrainingError
from supermask.models import create
from supermask.precision import use_bf16
from supermask.runconfig import experiment_key, load_run_config
from supermask.train import train
from tests.helpers.runs import QUIET, cfg_for, set_native_bf16, stop_after_first_epoch

CPU = torch.device("cpu")


def test_the_setting_is_auto_true_or_false(tmp_path: Path) -> None:
    assert load_run_config(None, []).train.bf16 == "auto"
    assert load_run_config(None, ["train.bf16=false"]).train.bf16 is False
    assert load_run_config(None, ["train.bf16=AUTO"]).train.bf16 == "auto"
    for bad in ("yes", "on", "1", "bf16"):
        with pytest.raises(SupermaskConfigError, match="train.bf16=.* is not valid; choose one of: auto, true, false"):
            load_run_config(None, [f"train.bf16={bad}", "train.device=cpu"])
    path = tmp_path / "c.yaml"
    path.write_text("train: {bf16: off}\n")  # YAML 1.2: a string, not false
    with pytest.raises(SupermaskConfigError, match="not valid"):
        load_run_config(str(path), [])


def test_auto_follows_the_hardware_and_true_without_it_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    set_native_bf16(monkeypatch, False)
    assert use_bf16("auto", CPU) is False and use_bf16(False, CPU) is False
    with pytest.raises(SupermaskConfigError, match="train.bf16=true but this CPU has no AVX-512 BF16, AMX or Arm"):
        use_bf16(True, CPU)
    with pytest.raises(SupermaskConfigError, match="no AVX-512 BF16"):
        load_run_config(None, ["train.bf16=true", "train.device=cpu"])
    set_native_bf16(monkeypatch, True)
    assert use_bf16("auto", CPU) is True and use_bf16(True, CPU) is True and use_bf16(False, CPU) is False


def test_true_without_native_bf16_is_one_line_from_the_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    set_native_bf16(monkeypatch, False)
    assert cli.main(["train", "train.bf16=true", "train.device=cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "use train.bf16=auto or false" in err


def test_under_autocast_only_the_products_are_bf16() -> None:
    torch.manual_seed(0)
    model = to_supermask(create("conv2", num_classes=10, in_channels=3, image_size=32), SupermaskConfig(k=0.3))
    x = torch.randn(4, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16  # the products ran in bf16 ...
    out.float().sum().backward()
    for name, p in model.named_parameters():  # ... scores, their gradients (and so the optimiser) stay fp32
        assert p.dtype == torch.float32, name
        assert p.grad is None or p.grad.dtype == torch.float32, name
    for _, layer in supermask_layers(model):
        assert layer.mask().dtype == torch.bool and layer.scores.dtype == torch.float32


def test_a_bf16_run_records_it_and_eval_repeats_its_accuracy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    set_native_bf16(monkeypatch, True)
    result = train(cfg_for(tmp_path, "train.bf16=auto"), **QUIET)
    assert result["precision"] == "bf16" and all(r["bf16"] for r in result["ran_on"])
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["bf16"] for r in rows] == [True, True]
    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["train"]["bf16"] == "auto"
    assert cli.main(["eval", str(tmp_path / "r"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["precision"] == "bf16" and out["accuracy"] == result["accuracy"]
    assert cli.main(["eval", str(tmp_path / "r"), "--json", "--precision", "fp32"]) == 0
    assert json.loads(capsys.readouterr().out)["precision"] == "fp32"
    set_native_bf16(monkeypatch, False)  # evaluated where bf16 is not native: fp32, said so
    assert cli.main(["eval", str(tmp_path / "r"), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["precision"] == "fp32" and "evaluating in fp32" in captured.err
    assert cli.main(["eval", str(tmp_path / "r"), "--precision", "bf16"]) == 2  # asked for, not native here
    assert "--precision bf16 but" in capsys.readouterr().err
    for device, message in (("banana", "--device='banana' is not valid"), ("cuda:99", "--device='cuda:99' but")):
        assert cli.main(["eval", str(tmp_path / "r"), "--device", device]) == 2  # one line, not a traceback
        assert message in capsys.readouterr().err


def test_fp32_and_bf16_runs_of_one_config_differ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    set_native_bf16(monkeypatch, True)
    a = train(cfg_for(tmp_path, "train.bf16=false", "train.run_name=fp32"), **QUIET)
    b = train(cfg_for(tmp_path, "train.bf16=true", "train.run_name=bf16"), **QUIET)
    assert a["precision"] == "fp32" and b["precision"] == "bf16"
    fp32 = torch.load(tmp_path / "fp32" / "train_state.pt", weights_only=True)["model"]
    bf16 = torch.load(tmp_path / "bf16" / "train_state.pt", weights_only=True)["model"]
    assert any(not torch.equal(fp32[k], bf16[k]) for k in fp32 if k.endswith("scores"))  # bf16 really ran


def test_a_resume_continues_in_the_precision_it_ran_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    set_native_bf16(monkeypatch, False)  # auto: fp32 here
    with pytest.raises(KeyboardInterrupt):
        train(cfg_for(tmp_path, "train.epochs=3"), log=stop_after_first_epoch)
    set_native_bf16(monkeypatch, True)  # the same run on a machine with bf16: auto would switch precision
    with pytest.raises(TrainingError, match=r"trained epochs 1-1 in fp32; train.bf16=auto would continue it in bf16"):
        train(cfg_for(tmp_path, "train.epochs=3"), **QUIET)
    assert len((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()) == 1  # nothing changed
    result = train(cfg_for(tmp_path, "train.epochs=3", "train.bf16=false"), **QUIET)  # as the message says
    assert result["precision"] == "fp32" and result["epochs"] == 3


def test_a_multi_task_run_uses_and_records_the_precision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    set_native_bf16(monkeypatch, True)
    items = ["data.split_tasks=5", "train.epochs=1", f"train.out_dir={tmp_path}"]
    bf16 = train(load_run_config(None, [*items, "train.run_name=b"]), **QUIET)
    fp32 = train(load_run_config(None, [*items, "train.run_name=f", "train.bf16=false"]), **QUIET)
    assert (bf16["precision"], fp32["precision"]) == ("bf16", "fp32")
    rows = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and all(r["bf16"] for r in rows)
    other = [json.loads(x) for x in (tmp_path / "f" / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_loss"] for r in rows] != [r["train_loss"] for r in other]  # bf16 really ran


@pytest.mark.slow
@pytest.mark.parametrize("method", ["edge-popup", "threshold", "signed-supermask", "bernoulli"])
@pytest.mark.parametrize("model_name", ["conv2", "fc"])
def test_masking_the_cached_cast_is_bit_identical_to_casting_the_masked_weight(
    model_name: str, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under autocast the layer masks a cached bf16 copy of its frozen weight (the fused edge-popup-style
    rule, the threshold rules' plain straight-through with -1/0/1 masks, Bernoulli's sampled mask); training
    must be exactly as when autocast casts the fp32 masked weight (the path without the cache)."""
    from supermask.core.layers import SupermaskLayer

    def run(cached: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if not cached:
            monkeypatch.setattr(SupermaskLayer, "autocast_weight", lambda self: None)
        torch.manual_seed(0)
        shape = {"conv2": (3, 32), "fc": (1, 28)}[model_name]
        model = to_supermask(
            create(model_name, num_classes=10, in_channels=shape[0], image_size=shape[1]),
            SupermaskConfig(k=0.3, method=method),
        )
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
        g = torch.Generator().manual_seed(1)
        x, y = torch.randn(16, shape[0], shape[1], shape[1], generator=g), torch.randint(0, 10, (16,), generator=g)
        for _ in range(4):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(x)
            loss = torch.nn.functional.cross_entropy(out.float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
        with torch.no_grad():  # the eval cache must not hand the bf16 weight to an fp32 forward
            assert model(x).dtype == torch.float32
        monkeypatch.undo()
        used = [("_autocast_weight" in layer.__dict__) for _, layer in supermask_layers(model)]
        assert all(used) if cached else not any(used)
        return low, [layer.scores.detach().clone() for _, layer in supermask_layers(model)]

    out_a, scores_a = run(cached=True)
    out_b, scores_b = run(cached=False)
    assert torch.equal(out_a, out_b)
    assert all(torch.equal(a, b) for a, b in zip(scores_a, scores_b))


def test_a_checkpoint_from_before_precision_was_recorded_resumes_as_it_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Epochs that did not record their precision ran bf16 exactly when train.bf16 was true on CUDA: a CPU
    run saved with bf16: true ran fp32, and auto on a bf16 CPU must not continue it in bf16."""
    set_native_bf16(monkeypatch, False)
    with pytest.raises(KeyboardInterrupt):
        train(cfg_for(tmp_path, "train.epochs=3", "train.bf16=false"), log=stop_after_first_epoch)
    path = tmp_path / "r" / "train_state.pt"
    state = torch.load(path, weights_only=True)
    for row in state["metrics"]:
        del row["bf16"]
    state["config"]["train"]["bf16"] = True  # the old default, which meant "on CUDA"
    torch.save(state, path)
    set_native_bf16(monkeypatch, True)
    with pytest.raises(TrainingError, match="trained epochs 1-1 in fp32"):
        train(cfg_for(tmp_path, "train.epochs=3"), **QUIET)
    assert train(cfg_for(tmp_path, "train.epochs=3", "train.bf16=false"), **QUIET)["epochs"] == 3


def test_channels_last_is_auto_on_cpus_and_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from supermask.precision import use_channels_last

    assert load_run_config(None, []).train.channels_last == "auto"
    assert use_channels_last("auto", CPU) and not use_channels_last("auto", torch.device("cuda"))
    assert use_channels_last(True, torch.device("cuda")) and not use_channels_last(False, CPU)
    with pytest.raises(SupermaskConfigError, match="train.channels_last='on' is not valid; choose one of"):
        load_run_config(None, ["train.channels_last=on"])
    seen: dict[str, list[bool]] = {}
    for setting in ("auto", "false"):
        out = tmp_path / setting
        result = train(cfg_for(out, "model.name=conv2", "train.max_steps=4", f"train.channels_last={setting}"), **QUIET)
        rows = [json.loads(x) for x in (out / "r" / "metrics.jsonl").read_text().splitlines()]
        seen[setting] = [r["channels_last"] for r in rows] + [
            result["channels_last"],
            result["ran_on"][0]["channels_last"],
        ]
        # eval repeats the run in its layout (NHWC and NCHW round differently), from the run folder or an export
        capsys.readouterr()
        assert cli.main(["export", str(out / "r"), str(out / "exported")]) == 0
        for where in (out / "r", out / "exported"):
            capsys.readouterr()
            assert cli.main(["eval", str(where), "--json"]) == 0
            evaluated = json.loads(capsys.readouterr().out)
            assert evaluated["channels_last"] is (setting == "auto") and evaluated["accuracy"] == result["accuracy"]
    assert seen == {"auto": [True] * 4, "false": [False] * 4}
    # a layout, not an experiment: both settings are one experiment for report and sweep
    assert experiment_key(load_run_config(None, ["train.channels_last=false"]).to_dict()) == experiment_key(
        load_run_config(None, []).to_dict()
    )


def test_eval_draws_average_random_eval_masks_from_the_runs_scores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    set_native_bf16(monkeypatch, True)  # the run's precision is repeated for every draw
    result = train(cfg_for(tmp_path, "supermask.method=bernoulli", "train.bf16=auto"), **QUIET)
    assert cli.main(["eval", str(tmp_path / "r"), "--json", "--draws", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["precision"] == "bf16" and out["checkpoint"].endswith("train_state.pt")
    assert out["draws"][0] == result["accuracy"]  # draw 0 is the mask the run evaluated and exported
    assert len(set(out["draws"])) > 1  # other draws are other masks
    assert out["accuracy"] == pytest.approx(sum(out["draws"]) / 4)
    assert out["accuracy_std"] > 0
    assert cli.main(["eval", str(tmp_path / "r"), "--draws", "2"]) == 0
    assert "mean ± std of 2 draws of the mask; draw 0, the run's own" in capsys.readouterr().out
    assert cli.main(["eval", str(tmp_path / "r" / "supermask"), "--draws", "2"]) == 2  # masks only
    assert "every draw is the same mask" in capsys.readouterr().err
    assert cli.main(["eval", str(tmp_path / "r"), "--draws", "0"]) == 2
    assert "--draws 0: give a number of mask draws >= 1" in capsys.readouterr().err
    train(cfg_for(tmp_path, "train.run_name=e"), **QUIET)  # edge-popup: one deterministic mask
    assert cli.main(["eval", str(tmp_path / "e"), "--draws", "3"]) == 2
    assert "has one deterministic eval mask" in capsys.readouterr().err
