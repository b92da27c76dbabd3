"""``python -m gan_ignite.metrics PATH_A PATH_B``: see :mod:`gan_ignite.metrics.cli`."""

import sys

from gan_ignite.metrics.cli import main

if __name__ == "__main__":
    sys.exit(main())
