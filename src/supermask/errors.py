"""The library's one error family.

Every error raised for a user's mistake (a bad config value, a wrong or corrupt checkpoint, a data
folder that is not the named data set, a run directory in use, a diverged run, a full disk) derives
from :class:`SupermaskError`. The command line turns exactly this family into a one-line message and
exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class SupermaskError(Exception):
    """A user's mistake or a condition the user can fix; the message says what and how."""


class SupermaskConfigError(SupermaskError, ValueError):
    """A configuration value is invalid; the message names the key and the allowed values."""


class CheckpointError(SupermaskError):
    """A checkpoint is missing, corrupt, edited, of another format, or does not fit the model."""


class DataError(SupermaskError):
    """A data set cannot be read or downloaded, or a folder is not the data set it is named as."""


class TrainingError(SupermaskError):
    """Training cannot go on (a NaN, a run directory that holds another run); the message says what to do."""


class RunBusyError(TrainingError):
    """Another process is writing to the same run directory."""


class RunInterrupted(TrainingError):
    """A run stopped on request (``train.time_limit``, SIGTERM or SIGUSR1) after writing its whole state,
    mid-epoch included: the same command resumes it at the step it stopped at. The command line exits
    with :data:`EXIT_RESUMABLE`."""


#: the exit code of a run (or sweep) that stopped on request with its state written: rerun to resume
EXIT_RESUMABLE = 3


class NonFiniteScoresError(SupermaskError, ValueError):
    """The scores hold NaN, so no mask can be selected (training diverged)."""


class StorageError(SupermaskError):
    """A file could not be written or read (disk full, read-only folder); the message names the path."""


__all__ = [
    "CheckpointError",
    "DataError",
    "NonFiniteScoresError",
    "RunBusyError",
    "RunInterrupted",
    "StorageError",
    "SupermaskConfigError",
    "SupermaskError",
    "TrainingError",
]
