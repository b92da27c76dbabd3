"""One command, ``gan-ignite <subcommand> ...``, in front of the command-line modules.

Each subcommand forwards the rest of the command line to that module's ``main`` and returns its
exit code, so ``gan-ignite train ARGS`` is ``python -m gan_ignite.train ARGS`` (and the
``gan-ignite-train`` script). The modules are imported only when their subcommand runs: a
command-line module is never imported as a library.
"""

from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

from gan_ignite import __version__

# subcommand -> (module whose main it runs, one line for the help)
COMMANDS = {
    "train": ("gan_ignite.train", "train a GAN from a YAML config and dotted overrides, evaluating as it goes"),
    "evaluate": ("gan_ignite.evaluate", "score a saved checkpoint, reproducing its training-time record"),
    "metrics": ("gan_ignite.metrics.cli", "FID, IS, KID, PRDC, ... of two image folders or .npz statistics"),
    "sample": ("gan_ignite.sample", "write images, a grid or a latent-walk GIF from a checkpoint"),
    "sweep": ("gan_ignite.sweep", "train several seeds and report means with 95% confidence intervals"),
    "train-classifier": ("gan_ignite.train_classifier", "train the domain classifier, an offline feature network"),
}
PROG = "gan-ignite"


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"usage: {PROG} <subcommand> [arguments ...]", "",
             "Train GANs with PyTorch-Ignite and measure them with standard FID, IS, KID and more.", "",
             "subcommands (each takes the arguments of its python -m form; "
             f"'{PROG} <subcommand> --help' lists them):"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "options:", "  -h, --help     show this message and exit",
              "  --version      show the version and exit"]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments:
        print(usage(), file=sys.stderr)
        return 2
    name, rest = arguments[0], arguments[1:]
    if name in ("-h", "--help"):
        print(usage())
        return 0
    if name == "--version":
        print(f"{PROG} {__version__}")
        return 0
    if name not in COMMANDS:
        print(f"error: '{name}' is not a {PROG} subcommand; the subcommands are {', '.join(COMMANDS)} "
              f"(e.g. '{PROG} train --config configs/fashion_mnist.yaml'; '{PROG} --help' says what each "
              f"does).", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    code = module.main(rest)
    return 0 if code is None else int(code)


if __name__ == "__main__":
    sys.exit(main())
