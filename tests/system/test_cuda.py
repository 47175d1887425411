"""The CUDA paths against the CPU ones. Skipped without a GPU (CI has none); run on a lent GPU with
``pytest tests/system/test_cuda.py`` (docs/BENCHMARKS.md records when they last ran there)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

import supermask
from supermask.core.masks import topk_mask
from supermask.runconfig import load_run_config
from supermask.train import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _model() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 8 * 8, 10)
    )
    return supermask.to_supermask(net, supermask.SupermaskConfig(k=0.3))


@pytest.mark.parametrize("n,kept", [(1000, 1), (1000, 300), (4096, 4095), (2_359_296, 707_788)])
def test_topk_mask_on_the_gpu_equals_the_host(n: int, kept: int) -> None:
    g = torch.Generator().manual_seed(n + kept)
    a = torch.randint(0, 50, (n,), generator=g).float()  # many ties: the tie rule must match too
    host = topk_mask(a, kept, sync_free=False)
    gpu = topk_mask(a.cuda(), kept)
    assert int(gpu.sum()) == kept
    assert torch.equal(gpu.cpu(), host)


def test_step_on_the_gpu_matches_the_cpu() -> None:
    cpu, gpu = _model(), _model().cuda()
    gpu.load_state_dict(cpu.state_dict())
    x, y = torch.randn(32, 3, 8, 8), torch.randint(0, 10, (32,))
    for model, dev in ((cpu, "cpu"), (gpu, "cuda")):
        loss = nn.functional.cross_entropy(model(x.to(dev)), y.to(dev))
        loss.backward()
    for (name, p), q in zip(cpu.named_parameters(), gpu.parameters(), strict=True):
        if p.grad is not None:
            torch.testing.assert_close(q.grad.cpu(), p.grad, rtol=1e-4, atol=1e-5, msg=name)
    for (_, a), (_, b) in zip(supermask.supermask_layers(cpu), supermask.supermask_layers(gpu), strict=True):
        assert torch.equal(a.mask(), b.mask().cpu())


@pytest.mark.parametrize("compile_", [False, True])
def test_training_on_the_gpu_with_bf16_channels_last(tmp_path: Path, compile_: bool) -> None:
    cfg = load_run_config(
        None,
        [
            "model.name=conv2",
            "model.width=0.25",
            "data.name=digits",
            "train.epochs=3",
            "train.device=cuda",
            "train.bf16=true",
            "train.channels_last=true",
            f"train.compile={str(compile_).lower()}",
            f"train.out_dir={tmp_path}",
            "train.progress=none",
        ],
    )
    result = train(cfg, log=lambda *a: None)
    assert result["device"].startswith("cuda")
    assert result["accuracy"] > 0.5
    assert (Path(result["run_dir"]) / "supermask").is_dir()


def test_compiled_model_on_the_gpu_is_one_graph() -> None:
    """On accelerators the selection is traced: torch.compile sees one graph, no break per layer."""
    model = _model().cuda()
    explained = torch._dynamo.explain(model)(torch.randn(4, 3, 8, 8, device="cuda"))
    assert explained.graph_break_count == 0, [r.reason for r in explained.break_reasons]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("method", ["edge-popup", "biprop", "iterand"])
def test_segmented_selection_on_the_gpu_equals_the_host(method: str) -> None:
    """On the GPU every layer's mask comes from one segmented selection; it must equal the per-layer
    host selection (ties included)."""
    import supermask
    from supermask.models import create

    cpu = supermask.to_supermask(create("conv4", width=0.25), supermask.SupermaskConfig(k=0.3, method=method))
    with torch.no_grad():
        for _, layer in supermask.supermask_layers(cpu):
            layer.scores.copy_(torch.randint(-3, 4, layer.scores.shape).float())  # many ties
    gpu = copy.deepcopy(cpu).cuda().eval()
    cpu.eval()
    for (_, a), (_, b) in zip(supermask.supermask_layers(cpu), supermask.supermask_layers(gpu)):
        assert torch.equal(a.mask(), b.mask().cpu())
