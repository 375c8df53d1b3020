"""Errors that the command-line scripts turn into one clear line (no traceback).

Raise these for problems a user can fix (a missing or corrupt file, an incompatible checkpoint, a full disk); the
scripts catch `PerceiverError`, print `error: <message>` to stderr and exit with code 1. Messages name the file and
the fix. `UsageError` is the exception: a flag that is refused once the run, checkpoint or data it names has been
read; train.py reports it like a bad flag (``train.py: error: ...``, exit code 2).
"""
import argparse


class PerceiverError(RuntimeError):
    """Base class: a user-facing failure with a one-line message."""


class DataError(PerceiverError):
    """A dataset is missing, cannot be downloaded, or a data file is corrupt."""


class CheckpointError(PerceiverError):
    """A checkpoint is missing, corrupt, or belongs to a different model."""


class RunDirError(PerceiverError):
    """A run directory is missing, incomplete, or would be overwritten."""


class UsageError(PerceiverError):
    """A flag that does not fit the run, checkpoint or data it names (known only once they are read): reported like
    a bad flag, with exit code 2, before anything is written."""


class InputError(PerceiverError, ValueError):
    """An input to classify (an image or point-cloud file or array) cannot be read or does not fit the model."""


class WriteError(PerceiverError):
    """A file could not be written (disk full, no permission, read-only file system); its previous version is
    intact and no partial file is left."""


class DamagedFileError(RunDirError):
    """A run-directory file exists but cannot be read (truncated, overwritten); readers that only draw skip it."""

    def __init__(self, path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag prints one line (no page of usage) and exits with code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")
