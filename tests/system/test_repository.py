"""What the repository commits: results as data (summaries, never checkpoints) and no path of the
machine a run was made on. Checked over every tracked file, so a new results folder is covered too."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors", ".bin", ".npz")


# the pinned checkpoints the redesign tests load, and the small fixtures of the data tests
ALLOWED_BINARIES = ("tests/fixtures/",)


MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:root|home|work|tmp|Users|mnt|scratch)/\S+")


def tracked_files() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing committed to check")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [name for name in out.decode().split("\0") if name]


def test_no_checkpoint_is_committed() -> None:
    checkpoints = [
        name for name in tracked_files() if name.endswith(CHECKPOINT_SUFFIXES) and not name.startswith(ALLOWED_BINARIES)
    ]
    assert not checkpoints, f"checkpoints are never committed (results/ keeps summaries): {checkpoints[:5]}"


def test_results_and_docs_name_no_path_of_a_machine() -> None:
    found = []
    for name in tracked_files():
        if not name.startswith(("results/", "docs/", "experiments/", "README", "configs/")):
            continue
        path = ROOT / name
        if path.suffix in (".png", ".jpg") or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        found += [f"{name}: {match.group(0)}" for match in MACHINE_PATH.finditer(text)]
    assert not found, f"machine paths committed (write paths relative to the repository): {found[:5]}"


def test_the_path_pattern_catches_what_it_should() -> None:
    assert MACHINE_PATH.search('"run_dir": "/root/runs/x"') and MACHINE_PATH.search("root: /home/me/data")
    assert not MACHINE_PATH.search("../shared/data/cifar10-jpeg75") and not MACHINE_PATH.search("a/work/b")
