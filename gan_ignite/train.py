"""Command line: ``python -m gan_ignite.train --config FILE [key.sub=value ...]``.

Runs as a single process (CPU or GPU), under ``torchrun`` (one or several nodes) or with
``dist.nproc_per_node`` processes that it starts itself (:mod:`gan_ignite.launch`); the run on
every rank is :func:`gan_ignite.training.run`. Input errors are found before any process starts
or any file is written, and end with one paragraph on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch
from omegaconf import DictConfig

from gan_ignite import data as data_module
from gan_ignite.config import load_config, save_config
from gan_ignite.errors import INPUT_ERRORS, ConfigError
from gan_ignite.evaluation import reference_file_statistics
from gan_ignite.launch import env_rank, input_error_exit, launch
from gan_ignite.metrics.factory import check_network_supports
from gan_ignite.metrics.features import load_feature_network
from gan_ignite.training import load_checkpoint, prepare_output_dir, resolve_resume, restore, run, setup_models


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gan_ignite.train",
        description="Train a DCGAN with PyTorch-Ignite and score it with FID / IS (KID, precision/recall).")
    parser.add_argument("--config", help="YAML config file (see configs/)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for input errors")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_epochs=5 data.root=/data")
    return parser.parse_args(argv)


def preflight(config: DictConfig) -> Path:
    """Every check that can fail on user input, before any process is spawned or file written:
    a failure here leaves an existing run directory exactly as it was."""
    resume = resolve_resume(config)
    processes, gpus = config.dist.nproc_per_node or 1, torch.cuda.device_count()
    if gpus and processes > gpus:
        raise ConfigError(f"dist.nproc_per_node={processes} but only {gpus} GPU(s) are visible: each process needs a "
                          f"GPU of its own. Lower dist.nproc_per_node, or train on CPU processes with "
                          f"CUDA_VISIBLE_DEVICES='' and dist.backend=gloo.")
    if config.log.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("log.tensorboard=true needs the tensorboard package, which is not installed. Install it "
                          "with: pip install -e \".[tb]\" (or pip install tensorboard), or set log.tensorboard=false.")
    data_module.load_dataset(config.data)
    if resume is not None:  # the models of the checkpoint must fit the config
        generator, discriminator = setup_models(config, torch.device("cpu"))
        restore({"generator": generator, "discriminator": discriminator}, load_checkpoint(resume), resume)
    evaluation = config.eval
    random_inception = evaluation.feature_network == "inception" and evaluation.inception_weights == "random"
    if evaluation.every_epochs > 0 and (not random_inception or evaluation.reference_stats):
        # a missing, corrupt or wrong file, or a failed download, fails here; a download lands in
        # the torch hub cache once, before any worker process starts
        network = load_feature_network(evaluation.feature_network, "cpu",
                                       inception_weights=evaluation.inception_weights, protocol=evaluation.protocol)
        check_network_supports(evaluation.metrics, network)
        if evaluation.reference_stats:
            reference_file_statistics(evaluation, network)
    return prepare_output_dir(config, resume)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s", force=True)
    try:
        config = load_config(args.config, args.overrides)
        if env_rank() == 0:  # torchrun's other ranks wait for rank 0 in the process group's rendezvous
            output_dir = preflight(config)
            save_config(config, output_dir / "config.yaml")
    except INPUT_ERRORS as error:
        return input_error_exit(error, args.debug)
    return launch(run, config, args.debug)


if __name__ == "__main__":
    sys.exit(main())
