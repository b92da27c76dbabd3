"""``python -m gan_ignite <subcommand> ...``: the ``gan-ignite`` command (see gan_ignite/cli.py)."""

import sys

from gan_ignite.cli import main

if __name__ == "__main__":
    sys.exit(main())
