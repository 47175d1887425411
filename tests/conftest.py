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


# The end-to-end tests that take a second or more on 2 cores (`pytest --durations=60`, 2026-12-03:
# together about three quarters of the suite's 4 minutes). `make test-fast` leaves them out
# (`-m "not slow"`); `make test` and CI run everything.
SLOW = {
    "test_committed_results.py": ["test_"],
    "test_train.py": [
        "test_killed_run_resumes_to_identical_metrics",
        "test_default_run_reaches_90_percent_and_cli_round_trip",
        "test_sweep_resumes_and_report_writes_png",
        "test_two_process_ddp_matches_one_process",
        "test_report_names_unfinished_runs_it_leaves_out",
        "test_compiled_model_is_one_graph_and_steps_like_eager",
        "test_compile_matches_eager",
    ],
    "test_runs.py": ["test_concurrent_sweeps_never_train_a_run_twice", "test_a_second_writer_is_refused_at_once"],
    "test_own_model_and_data.py": ["test_a_broken_image_folder_is_one_clear_line"],
    "test_precision.py": ["test_masking_the_cached_cast_is_bit_identical_to_casting_the_masked_weight"],
    "test_init.py": ["test_weights_identical_across_processes_and_global_rng"],
    "test_preemption.py": ["test_a_signal_writes_the_state_and_exits_resumable", "test_a_run_stopped_mid_epoch"],
    "test_methods.py": ["test_compile_equals_eager"],
    "test_data.py": ["test_cifar10_jpeg75_from_shared", "test_unpacked_rebuild_is_never_taken_for_cifar10"],
    "test_convert.py": ["test_conversion_does_not_import_transformers"],
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.name.startswith(prefix) for prefix in SLOW.get(item.path.name, [])):
            item.add_marker(pytest.mark.slow)
