"""One command, ``gan-ignite <subcommand> ...``, in front of the command modules.

An argparse parser with one subparser per command (:data:`gan_ignite.command.COMMANDS`), each
filled by the module's own ``add_arguments``; the chosen command then runs through the one runner
(:func:`gan_ignite.command.execute`), so ``gan-ignite train ARGS`` is ``python -m gan_ignite.train
ARGS`` and the ``gan-ignite-train`` script, with the same exit codes.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from gan_ignite import __version__
from gan_ignite.command import COMMANDS, build_parser, execute, formatter, parse, plain

PROG = "gan-ignite"


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Lists the subcommands one per line, without argparse's ``{train,evaluate,...}`` line."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=100, max_help_position=30)

    def _format_action(self, action: argparse.Action) -> str:
        if isinstance(action, argparse._SubParsersAction):
            return "".join(self._format_action(choice) for choice in action._get_subactions())
        return super()._format_action(action)


def build_dispatcher() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, usage=f"{PROG} <subcommand> [arguments ...]", formatter_class=_Formatter,
        description="Train GANs with PyTorch-Ignite and measure them with standard FID, IS, KID and more.",
        epilog=f"'{PROG} <subcommand> --help' lists the arguments of each.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(dest="command", title="subcommands", metavar="<subcommand>")
    for name, (module_name, summary) in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(name, prog=f"{PROG} {name}", help=summary.replace("%", "%%"),
                                    description=plain(module.__doc__), formatter_class=formatter)
        build_parser(module, f"{PROG} {name}", sub)
        sub.set_defaults(module=module)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    first = arguments[0] if arguments else None
    if first is None or (not first.startswith("-") and first not in COMMANDS):
        if first is None:
            print(build_dispatcher().format_help(), file=sys.stderr)
        else:
            print(f"error: '{first}' is not a {PROG} subcommand; the subcommands are {', '.join(COMMANDS)} (e.g. "
                  f"'{PROG} train --config configs/fashion_mnist.yaml'; '{PROG} --help' says what each does).",
                  file=sys.stderr)
        return 2
    if first in COMMANDS and getattr(module := importlib.import_module(COMMANDS[first][0]), "INTERMIXED", False):
        # options between positional arguments: argparse parses those apart from its subparsers
        return execute(module, parse(module, build_parser(module, f"{PROG} {first}"), arguments[1:]))
    args = build_dispatcher().parse_args(arguments)
    if args.command is None:
        print(build_dispatcher().format_help(), file=sys.stderr)
        return 2
    return execute(args.module, args)


if __name__ == "__main__":
    sys.exit(main())
