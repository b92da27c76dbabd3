"""Train a GAN with PyTorch-Ignite and score it with FID / IS (KID, precision/recall, ...).

``python -m gan_ignite.train --config FILE [key.sub=value ...]`` runs as one process (CPU or GPU),
under ``torchrun`` (one or several nodes), as the tasks of ``srun``, or with ``dist.nproc_per_node``
processes that it starts itself. Every check of the input comes before anything is written; an
input error ends with one paragraph on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from gan_ignite.command import main_for

INTERRUPTED = "Interrupted by Ctrl-C before training started; output_dir was left as it was. Run the same command again."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file (see configs/)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_epochs=5 data.root=/data")


def run(args: argparse.Namespace) -> int:
    from gan_ignite import cluster
    from gan_ignite.config import load_config
    from gan_ignite.launch import launch
    from gan_ignite.run_dir import RunDir
    from gan_ignite.training import run as train_on_every_rank

    config = load_config(args.config, args.overrides)
    with contextlib.ExitStack() as held:
        lock = None
        if cluster.env_rank() == 0:  # torchrun's other ranks wait for rank 0 in the process group's rendezvous
            lock = held.enter_context(RunDir(config.output_dir).lock())
        launch(train_on_every_rank, config, args.debug, keep_alive=lock, interrupted=INTERRUPTED)
    return 0


main = main_for(__name__)

if __name__ == "__main__":
    sys.exit(main())
