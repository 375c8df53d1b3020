"""Errors that the command-line scripts turn into one clear line (no traceback).

Raise these for problems a user can fix (a missing or corrupt file, an incompatible checkpoint); the scripts
catch `PerceiverError`, print `error: <message>` to stderr and exit with code 1. Messages name the file and
the fix.
"""


class PerceiverError(RuntimeError):
    """Base class: a user-facing failure with a one-line message."""


class DataError(PerceiverError):
    """A dataset is missing, cannot be downloaded, or a data file is corrupt."""


class CheckpointError(PerceiverError):
    """A checkpoint is missing, corrupt, or belongs to a different model."""


class RunDirError(PerceiverError):
    """A run directory is missing, incomplete, or would be overwritten."""
