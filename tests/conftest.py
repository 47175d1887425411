from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"real data not found at {SHARED} (the ../shared folder beside the checkout)")
    return SHARED


# The user-defined mask method of the registry's tests, registered before any test module computes
# its list of methods: every run of any subset of the tests sees the same methods.
import tests.helpers.methods  # noqa: E402, F401
