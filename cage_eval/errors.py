"""One exception hierarchy for user-facing errors.

The CLI converts every :class:`CageEvalError` into ``Error: <message>`` on stderr and exit code 1.
Messages name the file, row, field or value at fault and say what to do. Programmer errors stay
``ValueError`` / ``TypeError`` and are not caught.
"""

from __future__ import annotations


class CageEvalError(Exception):
    """A user-facing error: printed as ``Error: <message>``, exit code 1."""


class ConfigError(CageEvalError):
    """An experiment or command option has an invalid value."""


class InputFileError(CageEvalError):
    """A user-supplied file is missing, unreadable or malformed."""


class UserCodeError(ConfigError):
    """The user's own code (a generator, its factory, a classifier or an encoder named in the
    config) raised an exception or returned the wrong thing. The message names the config key,
    the callable and the exception; ``cage-eval --debug`` prints the traceback too (kept as
    ``__cause__``)."""


class RunDirError(CageEvalError):
    """A run directory is missing, incomplete, or inconsistent with the request."""


class DistributedError(CageEvalError):
    """Another process of a multi-process run failed, disagreed, or did not answer in time."""


class BackendError(CageEvalError):
    """A crowd backend (MTurk, S3, Turkle) refused a request or is unreachable."""


class SpendingRefused(CageEvalError):
    """A publish would spend more than allowed, or spending was not confirmed."""


class CageEvalWarning(UserWarning):
    """Something the user should know that did not stop the command; shown as ``Warning: ...``."""


class CacheWarning(CageEvalWarning):
    """A cache file could not be used (truncated, tampered, stale) and is rebuilt."""


class CheckpointWarning(CageEvalWarning):
    """Checkpoints of a run were not used (another run's, unreadable) or discarded (a unit does
    not hold what computing it gives); the work is done again."""


class CacheError(CageEvalError):
    """A cache directory or entry that another user owns or could write: refused, never read."""
