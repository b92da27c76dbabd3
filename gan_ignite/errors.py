"""Errors caused by the user's input (config, data, weights, paths), and how they reach every rank.

The command-line entry points catch :data:`INPUT_ERRORS` and print the message as one paragraph
on stderr with exit code 2, instead of a traceback (``--debug`` shows the traceback).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

from gan_ignite.metrics._base import first_error_on_any_rank
from gan_ignite.metrics.features import FeatureNetworkError
from gan_ignite.metrics.inception import InceptionWeightsError
from gan_ignite.metrics.real_stats import RealStatisticsError

T = TypeVar("T")


class UserError(Exception):
    """Bad input that the user can fix; the message says what and how."""


class ConfigError(UserError):
    """An unknown key, a wrong type or an invalid value in the configuration."""


class DataError(UserError):
    """A dataset root that is missing, empty or holds unreadable images."""


class RunDirError(UserError):
    """An output directory that cannot be used, or a checkpoint that does not fit the config."""


def require_writable(folder: Path, problem: str, fix: str) -> None:
    """Create ``folder`` if needed and write a probe file there; on failure a :class:`RunDirError`
    reading "<problem> (<reason>). <fix>"."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".gan_ignite_write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise RunDirError(f"{problem} ({error.strerror or error}). {fix}") from None


class RunStopped(Exception):
    """A run that ended early (diverged or signalled): the process exit code and a message."""

    def __init__(self, exit_code: int, message: str):
        super().__init__(message)
        self.exit_code, self.message = exit_code, message


INPUT_ERRORS = (UserError, InceptionWeightsError, RealStatisticsError, FeatureNetworkError)


def on_every_rank(work: Callable[[], T], run_here: bool = True) -> T | None:
    """Run ``work`` (where ``run_here``) and share its input error with every rank: if it failed
    anywhere, every rank raises (the failed rank its own error, the others a :class:`UserError`
    with the same words). A collective: every rank must call it, so none is left waiting in a
    later collective while another has given up."""
    result, error = None, None
    if run_here:
        try:
            result = work()
        except INPUT_ERRORS as exc:
            error = exc
    message = first_error_on_any_rank(str(error) if error is not None else "")
    if error is not None:
        raise error
    if message:
        raise UserError(message)
    return result
