"""Your own model (model.name=package.module:callable) and your own images (data.name=folder) from the
CLI, with clear errors when the import or the folder is wrong (issue 14, item 4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from supermask import cli
from tests.helpers.data import write_images

OWN = """
from torch import nn

def small(num_classes, image_size=8, in_channels=1):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, 32), nn.ReLU(), nn.Linear(32, num_classes))

def broken():
    return "not a module"

def fails(num_classes):
    raise ValueError("no weights file here")

def wrong_head(num_classes, image_size=8, in_channels=1):  # ignores num_classes
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, 3))

def wide_head(num_classes, image_size=8, in_channels=1):  # 1000 outputs, as an ImageNet head
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, 1000))

def image_out(num_classes, image_size=8, in_channels=1):  # a feature map, not logits
    return nn.Sequential(nn.Conv2d(in_channels, num_classes, 3, padding=1))

class Output:  # as transformers' ModelOutput: the logits an attribute of the output
    def __init__(self, logits):
        self.logits = logits

class HubNet(nn.Module):
    def __init__(self, n_out):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, n_out))

    def forward(self, x):
        return Output(self.body(x))

def hub(model_name, **kwargs):  # as timm.create_model or from_pretrained: **kwargs go on to the model
    assert model_name == "tiny"
    return HubNet(**kwargs)

CONSTANT = 3
"""


@pytest.fixture
def own_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "my_models_for_test.py").write_text(OWN)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_models_for_test"


def test_a_model_of_your_own_trains_and_evaluates(own_module: str, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    runs = tmp_path / "runs"
    assert cli.main(["train", f"model.name={own_module}:small", f"train.out_dir={runs}", "train.epochs=5"]) == 0
    run_dir = next(runs.iterdir())
    assert run_dir.name == f"{own_module}_small-digits-edge-popup-k0.5-s0"  # one portable folder name, no ':'
    assert json.loads((run_dir / "result.json").read_text())["accuracy"] > 0.8
    capsys.readouterr()
    # the factory is called again to rebuild it: named on the command line (a file never imports code)
    assert cli.main(["eval", str(run_dir), "--json", "--model", f"{own_module}:small"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] > 0.8


def test_a_hub_style_factory_gets_only_its_kwargs_and_its_logits_are_read(
    own_module: str, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    """A factory taking **kwargs (timm's create_model, transformers' from_pretrained) is offered none of
    num_classes/in_channels/image_size/width (it would pass them to a model that takes none: a failure, as
    timm:create_model did); an output holding .logits (transformers) is read as its logits."""
    runs = tmp_path / "runs"
    args = [f"model.name={own_module}:hub", "model.kwargs={model_name: tiny, n_out: 10}", f"train.out_dir={runs}"]
    assert cli.main(["train", *args, "train.epochs=5"]) == 0
    run_dir = next(runs.iterdir())
    assert json.loads((run_dir / "result.json").read_text())["accuracy"] > 0.8
    capsys.readouterr()
    assert cli.main(["eval", str(run_dir), "--json", "--model", f"{own_module}:hub"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] > 0.8
    # a head of the wrong size says where the class count goes for such a factory
    assert cli.main(["train", *args[:1], "model.kwargs={model_name: tiny, n_out: 4}", f"train.out_dir={runs}2"]) == 2
    assert "model.kwargs={num_classes: 10} for timm, {num_labels: 10} for transformers" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no_such_module_xyz:make", "cannot import 'no_such_module_xyz'"),
        ("{mod}:nope", "has no attribute 'nope'"),
        ("{mod}:CONSTANT", "'CONSTANT' is not callable"),
        ("{mod}:broken", "returned str, not a torch.nn.Module"),
        ("{mod}:", "is written package.module:callable"),
        ("{mod}:fails", "failed: ValueError: no weights file here"),  # was a traceback
        # a head of another size: an IndexError traceback (fewer outputs) or a run without a word (more)
        ("{mod}:wrong_head", "gives a tensor of shape (64, 3) for a batch, and the data has 10 classes"),
        ("{mod}:wide_head", "gives a tensor of shape (64, 1000) for a batch, and the data has 10 classes"),
        ("{mod}:image_out", "gives a tensor of shape (64, 10, 8, 8) for a batch"),
    ],
)
def test_a_wrong_model_factory_is_one_clear_line(
    own_module: str, name: str, message: str, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    code = cli.main(
        ["train", f"model.name={name.format(mod=own_module)}", f"train.out_dir={tmp_path}", "train.epochs=1"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_a_folder_of_your_own_images_trains(tmp_path: Path) -> None:
    write_images(tmp_path / "img", splits=("train", "test"))  # test/ stands in for val/
    common = ["data.name=folder", f"data.root={tmp_path / 'img'}", "data.image_size=8", "data.workers=0",
              "data.batch_size=8", "model.name=mlp", "train.epochs=4", f"train.out_dir={tmp_path / 'runs'}"]  # fmt: skip
    assert cli.main(["train", *common]) == 0
    result = json.loads(next((tmp_path / "runs").rglob("result.json")).read_text())
    assert result["accuracy"] >= 0.75 and result["dataset"] == "folder"


@pytest.mark.parametrize("case", ["no root", "no held-out split", "other classes"])
def test_a_wrong_folder_is_one_clear_line(case: str, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "img"
    items = ["data.name=folder", "data.workers=0", "model.name=mlp", f"train.out_dir={tmp_path / 'runs'}"]
    if case != "no root":
        items.append(f"data.root={root}")
    if case == "no held-out split":
        write_images(root, splits=("train",))
    if case == "other classes":
        write_images(root, splits=("train",))
        write_images(root, splits=("val",), classes=("red", "green"))
    assert cli.main(["train", *items]) == 2
    err = capsys.readouterr().err
    expected = {"no root": "needs data.root=DIR", "no held-out split": "val does not exist",
                "other classes": "must have the same class folders"}[case]  # fmt: skip
    assert err.count("\n") == 1 and expected in err, err


def test_class_subsets_and_starting_from_a_trained_run(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Issue 14's transfer set-up on digits: dense on classes 0-4, then a threshold mask over those trained
    weights (a learned head) on classes 5-9."""
    import torch

    from supermask.runconfig import load_run_config
    from supermask.train import build_model, load_run, train

    out = f"train.out_dir={tmp_path}"
    first = train(load_run_config(None, [out, "train.run_name=base", "data.classes=[0, 1, 2, 3, 4]",
                                         "supermask.method=dense", "train.epochs=5"]), log=lambda *_: None)  # fmt: skip
    assert first["accuracy"] > 0.9
    second_items = [out, "train.run_name=transfer", "data.classes=[5, 6, 7, 8, 9]", f"model.init_from={tmp_path / 'base'}",
                    "supermask.method=threshold", "supermask.weight_init=pretrained", "supermask.bias=frozen",
                    "supermask.last_layer_dense=true", "train.epochs=5", "optim.lr=0.01"]  # fmt: skip
    cfg = load_run_config(None, second_items)
    model = build_model(cfg, 5, 1, 8)
    base, _, _ = load_run(tmp_path / "base")
    assert torch.equal(model.net[1].base_layer.weight, base.net[1].base_layer.weight)  # masks over the trained weights
    second = train(cfg, log=lambda *_: None)
    assert second["accuracy"] > 0.8  # classes 5-9, relabelled 0-4
    capsys.readouterr()
    bad = [out, "train.run_name=bad", f"model.init_from={tmp_path / 'base'}", "train.epochs=1"]  # 10 classes
    assert cli.main(["train", *bad]) == 2
    err = capsys.readouterr().err
    assert "model.init_from=" in err and "does not fit this model" in err and err.count("\n") == 1
    assert cli.main(["train", "data.classes=[3, 3]"]) == 2
    assert "must be distinct classes of digits" in capsys.readouterr().err
    assert cli.main(["train", "data.classes=[12]"]) == 2
    capsys.readouterr()
    torch.save(base.state_dict(), tmp_path / "weights.pt")  # a plain state dict: not what init_from takes
    for where in (tmp_path / "nowhere", tmp_path / "weights.pt"):
        assert cli.main(["train", f"model.init_from={where}", out]) == 2
        err = capsys.readouterr().err
        assert f"model.init_from={where}: " in err and "package.module:callable" in err and err.count("\n") == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "workers"),
    [("empty class", 0), ("corrupt image", 0), ("corrupt image", 2), ("fewer images than a batch", 0)],
)
def test_a_broken_image_folder_is_one_clear_line(case: str, workers: int, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "img"
    write_images(root)
    batch = 8
    if case == "empty class":
        (root / "train" / "green").mkdir()
        (root / "val" / "green").mkdir()
        (root / "train" / "green" / "notes.txt").write_text("not an image")
    if case == "corrupt image":
        (root / "train" / "red" / "99.png").write_bytes(b"not a png")
    if case == "fewer images than a batch":
        batch = 64  # 24 training images, and the last partial batch is dropped: no step at all
    items = ["data.name=folder", f"data.root={root}", "data.image_size=8", f"data.workers={workers}",
             f"data.batch_size={batch}", "model.name=mlp", "train.epochs=1", f"train.out_dir={tmp_path / 'runs'}"]  # fmt: skip
    assert cli.main(["train", *items]) == 2
    err = capsys.readouterr().err
    expected = {
        "empty class": "class folder(s) ['green'] hold no images",
        "corrupt image": "cannot read image",
        "fewer images than a batch": "gives no full batch: 24 examples with data.batch_size=64",
    }[case]
    assert err.count("\n") == 1 and expected in err and "Traceback" not in err, err
