"""The error hierarchy: errors a user can fix, and stops that carry their own exit code.

The command runner (:mod:`gan_ignite.cli`) prints a :class:`UserError` as one paragraph with exit
code 2 and a :class:`RunStopped` with its exit code; anything else is a bug and stays a traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input that the user can fix (exit code 2); the message says what and how."""


class ConfigError(UserError):
    """An unknown key, a wrong type or an invalid value in the configuration or the arguments."""


class DataError(UserError):
    """A dataset root or image folder that is missing, empty or holds unreadable images."""


class RunDirError(UserError):
    """An output that cannot be written, or a run directory or checkpoint that does not fit."""


class FeatureNetworkError(UserError):
    """A feature network that is unknown, or whose file cannot be used."""


class InceptionWeightsError(FeatureNetworkError):
    """FID Inception weights that are missing, damaged, of another architecture or not downloadable."""


class RealStatisticsError(UserError):
    """Reference statistics that cannot be read, computed or used."""


class RunStopped(Exception):
    """A command that ended early with ``exit_code`` (a diverged or signalled run, a failed seed);
    ``is_error``: whether the message is printed as an error (by default unless the code is 0 or 130)."""

    def __init__(self, exit_code: int, message: str, is_error: bool | None = None):
        super().__init__(message)
        self.exit_code, self.message = exit_code, message
        self.is_error = exit_code not in (0, 130) if is_error is None else is_error
