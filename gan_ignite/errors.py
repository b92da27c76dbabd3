"""Errors caused by the user's input (config, data, weights, paths), and how they reach every rank.

The command-line entry points catch :data:`INPUT_ERRORS` and print the message as one paragraph
on stderr with exit code 2, instead of a traceback (``--debug`` shows the traceback).

This module imports nothing heavy at import time (the error types of ``gan_ignite.metrics``, which
import torch and ignite, are looked up when :data:`INPUT_ERRORS` is first used), so that
:mod:`gan_ignite.run_dir`, and with it ``scripts/plot_curves.py``, reads a run without ignite.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable, TypeVar

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
    from gan_ignite.metrics.safe_files import create_temporary  # brings torch: only when a folder is probed

    try:
        folder.mkdir(parents=True, exist_ok=True)
        # a new file of our own (O_EXCL | O_NOFOLLOW): a link planted under the probe's name is never written through
        probe, descriptor = create_temporary(folder / ".gan_ignite_write_test")
        os.close(descriptor)
        probe.unlink()
    except OSError as error:
        raise RunDirError(f"{problem} ({error.strerror or error}). {fix}") from None


def physical_memory_bytes() -> int | None:
    """This machine's physical memory (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def require_memory(needed_bytes: float, what: str, fix: str) -> None:
    """Refuse, before any work, what would need more memory than this machine has at all (an
    estimate: a run that passes may still run short; one that fails here could never finish)."""
    available = physical_memory_bytes()
    if available is not None and needed_bytes > available:
        raise UserError(f"{what} would need about {format_bytes(needed_bytes)} of memory, more than this machine's "
                        f"{format_bytes(available)}. {fix}")


def format_bytes(count: float) -> str:
    """``123 B``, ``4.6 MB``, ``25.3 GB``, ... (powers of 1000, as disk sizes are sold)."""
    units, index = ("B", "KB", "MB", "GB", "TB"), 0
    while abs(count) >= 1000 and index < len(units) - 1:
        count, index = count / 1000, index + 1
    return f"{count:.0f} B" if index == 0 else f"{count:.1f} {units[index]}"


class RunStopped(Exception):
    """A run that ended early (diverged or signalled): the process exit code and a message."""

    def __init__(self, exit_code: int, message: str):
        super().__init__(message)
        self.exit_code, self.message = exit_code, message


@functools.cache
def _input_errors() -> tuple[type[Exception], ...]:
    from gan_ignite.metrics._base import DeviceError
    from gan_ignite.metrics.networks.files import FeatureNetworkError
    from gan_ignite.metrics.networks.inception import InceptionWeightsError
    from gan_ignite.metrics.scores.real_stats import RealStatisticsError

    return UserError, InceptionWeightsError, RealStatisticsError, FeatureNetworkError, DeviceError


def __getattr__(name: str) -> Any:
    """``INPUT_ERRORS``: every error type caused by the user's input (resolved on first use)."""
    if name == "INPUT_ERRORS":
        return _input_errors()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def on_every_rank(work: Callable[[], T], run_here: bool = True) -> T | None:
    """Run ``work`` (where ``run_here``) and share its input error with every rank: if it failed
    anywhere, every rank raises (the failed rank its own error, the others a :class:`UserError`
    with the same words). A collective: every rank must call it, so none is left waiting in a
    later collective while another has given up."""
    from gan_ignite.metrics._base import first_error_on_any_rank

    result, error = None, None
    if run_here:
        try:
            result = work()
        except _input_errors() as exc:
            error = exc
    message = first_error_on_any_rank(str(error) if error is not None else "")
    if error is not None:
        raise error
    if message:
        raise UserError(message)
    return result
