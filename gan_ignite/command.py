"""The one runner of every command line.

A command is a module with ``add_arguments(parser)`` and ``run(args) -> int``, and optionally
``INTERRUPTED`` (the line printed for a Ctrl-C), ``LOG_LEVEL`` and ``INTERMIXED`` (options may
come between its positional arguments). :func:`execute` sets up logging,
runs it and maps what it raises to an exit code (:func:`outcome`): a
:class:`~gan_ignite.errors.UserError` is one paragraph on stderr and exit code 2 (``--debug``: the
traceback), a :class:`~gan_ignite.errors.RunStopped` its own code and message, Ctrl-C 130; anything
else is a bug and stays a traceback. ``gan-ignite SUBCOMMAND`` (:mod:`gan_ignite.cli`),
``python -m gan_ignite.MODULE`` and the ``gan-ignite-SUBCOMMAND`` scripts all end here.

Only the standard library is imported here: the command modules import torch inside ``run``, so
``--help`` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
from types import ModuleType
from typing import Callable, Optional, Sequence

from gan_ignite.errors import RunStopped, UserError

# subcommand of gan-ignite -> (module, one line for the help)
COMMANDS = {
    "train": ("gan_ignite.train", "train a GAN from a YAML config and dotted overrides, evaluating as it goes"),
    "evaluate": ("gan_ignite.evaluate", "score a saved checkpoint, reproducing its training-time record"),
    "metrics": ("gan_ignite.metrics.cli", "FID, IS, KID, PRDC, ... of two image folders or .npz statistics"),
    "sample": ("gan_ignite.sample", "write images, a grid or a latent-walk GIF from a checkpoint"),
    "sweep": ("gan_ignite.sweep", "train several seeds and report means with 95% confidence intervals"),
    "train-classifier": ("gan_ignite.train_classifier", "train the domain classifier, an offline feature network"),
}
INTERRUPTED = "Interrupted by Ctrl-C."
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


def plain(docstring: Optional[str]) -> str:
    """A docstring as the help prints it: reST markup (``code``, :func:`~a.b.name`) as plain text."""
    text = re.sub(r":\w+:`~?(?:[\w.]+\.)?([\w]+)`", r"\1", docstring or "")
    return text.replace("``", "")


def formatter(prog: str) -> argparse.HelpFormatter:
    """Help at a width of 100 columns whatever the terminal, descriptions as written."""
    return argparse.RawDescriptionHelpFormatter(prog, width=100, max_help_position=30)


def build_parser(module: ModuleType, prog: str, parser: Optional[argparse.ArgumentParser] = None
                 ) -> argparse.ArgumentParser:
    """``module``'s arguments, its docstring as the description, and ``--debug``."""
    if parser is None:
        parser = argparse.ArgumentParser(prog=prog, description=plain(module.__doc__), formatter_class=formatter)
    module.add_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="show tracebacks for input errors")
    return parser


def outcome(work: Callable[[], Optional[int]], debug: bool = False,
            interrupted: str = INTERRUPTED) -> tuple[int, str]:
    """Run ``work``; ``(exit code, what to print on stderr)``."""
    try:
        return int(work() or 0), ""
    except UserError as error:
        if debug:
            raise
        return 2, "error: " + clean_message(str(error))
    except RunStopped as stopped:
        return stopped.exit_code, ("error: " if stopped.is_error else "") + stopped.message
    except KeyboardInterrupt:
        return 130, interrupted


def clean_message(message: str) -> str:
    """An error raised in a DataLoader worker comes back with the worker's traceback in its message;
    keep only the error's own text."""
    marker = "Original Traceback (most recent call last):"
    if marker in message:
        message = message.strip().splitlines()[-1].split(": ", 1)[-1]
    return message


def report(text: str) -> None:
    if text:
        print(text, file=sys.stderr, flush=True)


def execute(module: ModuleType, args: argparse.Namespace) -> int:
    """Run the command ``module`` with parsed ``args``; its exit code."""
    logging.basicConfig(level=getattr(module, "LOG_LEVEL", logging.INFO), format=LOG_FORMAT, force=True)
    code, text = outcome(lambda: module.run(args), args.debug, getattr(module, "INTERRUPTED", INTERRUPTED))
    report(text)
    return code


def prog_name(module_name: str) -> str:
    """What the user typed: ``gan-ignite-train`` for the script, else ``python -m gan_ignite.train``
    (run that way, the module is ``__main__`` and its spec holds the name)."""
    typed = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if typed and not typed.endswith(".py") and typed not in ("-c", "-m"):
        return typed
    if module_name == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module_name = spec.name if spec is not None else module_name
    return f"python -m {module_name.removesuffix('.cli')}"


def parse(module: ModuleType, parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> argparse.Namespace:
    if getattr(module, "INTERMIXED", False):
        return parser.parse_intermixed_args(argv)
    return parser.parse_args(argv)


def main_for(module_name: str) -> Callable[[Optional[Sequence[str]]], int]:
    """The ``main(argv)`` of a command module (``python -m`` and its script)."""

    def main(argv: Optional[Sequence[str]] = None) -> int:
        module = importlib.import_module(module_name)
        return execute(module, parse(module, build_parser(module, prog_name(module_name)), argv))

    return main
