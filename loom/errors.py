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


def require_positive(section: object, key: str, *names: str) -> None:
    """Raises `ConfigError` for the first of the fields `names` of `section` (the config table
    `key`) that is not positive."""
    for name in names:
        if (value := getattr(section, name)) <= 0:
            raise ConfigError(f"{key}.{name} must be positive, not {value}")


def require_non_negative(section: object, key: str, *names: str) -> None:
    """Likewise for fields that must be zero or more."""
    for name in names:
        if (value := getattr(section, name)) < 0:
            raise ConfigError(f"{key}.{name} must be zero or more, not {value}")
