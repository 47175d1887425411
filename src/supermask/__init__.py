"""supermask: find the subnetworks hidden in randomly weighted neural networks (edge-popup)."""

__version__ = "0.1.0"

from supermask.core.checkpoint import compact_state_dict, load, read_checkpoint, save  # noqa: E402
from supermask.core.config import SupermaskConfig  # noqa: E402
from supermask.core.convert import apply_conversion, to_supermask  # noqa: E402
from supermask.core.inspection import get_config, merge, set_eval_draw, set_k, silent_outputs, sparsity_report  # noqa: E402
from supermask.core.layers import SupermaskConv, SupermaskLayer, SupermaskLinear, supermask_layers  # noqa: E402
from supermask.core.masks import kept_count  # noqa: E402
from supermask.core.targets import ConversionPlan, ConversionReport, plan_conversion  # noqa: E402
from supermask.core.tasks import current_task, infer_task, set_task  # noqa: E402
from supermask.errors import (  # noqa: E402
    CheckpointError,
    DataError,
    NonFiniteScoresError,
    RunBusyError,
    StorageError,
    SupermaskConfigError,
    SupermaskError,
    TrainingError,
)

__all__ = [
    "CheckpointError",
    "DataError",
    "NonFiniteScoresError",
    "RunBusyError",
    "StorageError",
    "TrainingError",
    "ConversionReport",
    "SupermaskConfig",
    "SupermaskConfigError",
    "SupermaskConv",
    "SupermaskError",
    "SupermaskLayer",
    "SupermaskLinear",
    "__version__",
    "current_task",
    "get_config",
    "infer_task",
    "kept_count",
    "load",
    "merge",
    "read_checkpoint",
    "save",
    "set_eval_draw",
    "set_k",
    "set_task",
    "silent_outputs",
    "sparsity_report",
    "supermask_layers",
    "to_supermask",
    "plan_conversion",
    "apply_conversion",
    "compact_state_dict",
    "ConversionPlan",
]
