"""Errors a user can act on.

Every failure that bad input can cause is raised as a `LoomError` subclass whose message names
the file, line or key at fault and says how to fix it. The CLI prints that message without a
traceback (unless `--debug`) and exits non-zero.
"""


class LoomError(Exception):
    """Base class: the message is shown to the user as is."""


class ConfigError(LoomError):
    """A config file or `--set` override is invalid."""


class DataError(LoomError):
    """Input data, shards or a tokenizer file are missing or inconsistent."""


class CheckpointError(LoomError):
    """A checkpoint or run directory is missing, partial or corrupt."""


class TrainingError(LoomError):
    """Training cannot go on (e.g. non-finite losses that rollbacks do not cure)."""
