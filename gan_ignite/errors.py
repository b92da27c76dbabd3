"""Errors caused by the user's input (config, data, weights, paths).

The command-line entry points catch :class:`UserError` and print its message as one paragraph
on stderr with exit code 2, instead of a traceback (``--debug`` shows the traceback).
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input that the user can fix; the message says what and how."""


class ConfigError(UserError):
    """An unknown key, a wrong type or an invalid value in the configuration."""


class DataError(UserError):
    """A dataset root that is missing, empty or holds unreadable images."""


class RunDirError(UserError):
    """An output directory that cannot be used, or a checkpoint that does not fit the config."""
