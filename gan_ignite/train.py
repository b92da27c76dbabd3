"""Command line: ``python -m gan_ignite.train --config FILE [key.sub=value ...]``.

Runs as a single process (CPU or GPU), under ``torchrun`` (one or several nodes) or with
``dist.nproc_per_node`` processes that it starts itself (:mod:`gan_ignite.launch`); the run on
every rank is :func:`gan_ignite.training.run`. Input errors are found before any process starts
or any file is written, and end with one paragraph on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import ignite.distributed as idist
import torch
from omegaconf import DictConfig
from torch.utils.data import Dataset

from gan_ignite import data as data_module
from gan_ignite.config import load_config
from gan_ignite.errors import INPUT_ERRORS, ConfigError, RunDirError
from gan_ignite.evaluation import reference_file_statistics
from gan_ignite.launch import env_rank, input_error_exit, interrupted_exit, launch
from gan_ignite.metrics.scores.factory import check_network_supports
from gan_ignite.metrics.networks.features import load_feature_network
from gan_ignite.run_dir import RunDir, identify_run, read_checkpoint, resolve_resume, with_run_fields
from gan_ignite.training import RESUME_FIX, restore, run, setup_models

logger = logging.getLogger("gan_ignite")
INTERRUPTED = ("Interrupted by Ctrl-C before training started; output_dir was left as it was. Run the same command "
               "again.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gan_ignite.train",
        description="Train a DCGAN with PyTorch-Ignite and score it with FID / IS (KID, precision/recall).")
    parser.add_argument("--config", help="YAML config file (see configs/)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for input errors")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_epochs=5 data.root=/data")
    return parser


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def preflight(config: DictConfig) -> DictConfig:
    """Every check that can fail on user input, before any process is spawned or any file of the
    run written (call it holding the run directory's lock): a failure here leaves the directory
    exactly as it was. Returns the config with the run's identity (``run.*``)."""
    run_dir = RunDir(config.output_dir)
    resume, holds_a_run = resolve_resume(config), run_dir.holds_a_run()
    if resume is None and holds_a_run:
        raise RunDirError(f"output_dir '{run_dir.path}' already holds a run (checkpoints in "
                          f"{run_dir.checkpoint_dir}). Continue it with train.resume_from=auto, or choose another "
                          f"output_dir=...; nothing was changed.")
    checkpoint = read_resumed_checkpoint(run_dir, resume, config.train.resume_from == "auto") if resume else None
    run_fields = identify_run(run_dir, resume, checkpoint)
    processes, gpus = config.dist.nproc_per_node or 1, torch.cuda.device_count()
    if gpus and processes > gpus:
        raise ConfigError(f"dist.nproc_per_node={processes} but only {gpus} GPU(s) are visible: each process needs a "
                          f"GPU of its own. Lower dist.nproc_per_node, or train on CPU processes with "
                          f"CUDA_VISIBLE_DEVICES='' and dist.backend=gloo.")
    if config.log.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("log.tensorboard=true needs the tensorboard package, which is not installed. Install it "
                          "with: pip install -e \".[tb]\" (or pip install tensorboard), or set log.tensorboard=false.")
    check_batch_fits(config, data_module.load_dataset(config.data))
    if checkpoint is not None:  # the models and the epoch length of the checkpoint must fit the config
        generator, discriminator = setup_models(config, torch.device("cpu"))
        restore({"generator": generator, "discriminator": discriminator}, checkpoint, resume)
        check_epoch_length(config, checkpoint, resume)
    evaluation = config.eval
    random_inception = evaluation.feature_network == "inception" and evaluation.inception_weights == "random"
    if evaluation.every_epochs > 0 and (not random_inception or evaluation.reference_stats):
        # a missing, corrupt or wrong file, or a failed download, fails here; a download lands in
        # the torch hub cache once, before any worker process starts
        network = load_feature_network(evaluation.feature_network, "cpu",
                                       inception_weights=evaluation.inception_weights, protocol=evaluation.protocol,
                                       precision=evaluation.precision)
        check_network_supports(evaluation.metrics, network)
        if evaluation.reference_stats:  # checked against the precision the run's device will compute
            reference_file_statistics(evaluation, network, idist.device())
    removed = run_dir.remove_orphans()  # holding the lock, no other process writes here
    if removed:
        logger.info("Removed %d temporary file(s) left by an interrupted write: %s", len(removed),
                    ", ".join(path.name for path in removed))
    describe_start(run_dir, resume, run_fields, forked=resume is not None and not holds_a_run)
    return with_run_fields(config, run_fields)


def read_resumed_checkpoint(run_dir: RunDir, resume: Path, auto: bool) -> dict:
    """The checkpoint to resume; when ``auto`` picked one that cannot be read, the message names the
    checkpoint before it."""
    older = [path for _, path in run_dir.checkpoints() if path != resume] if auto else []
    fix = (f"Resume from the checkpoint before it with train.resume_from={older[-1]}, or start a new run."
           if older else RESUME_FIX)
    return read_checkpoint(resume, fix)


def check_batch_fits(config: DictConfig, dataset: Dataset) -> None:
    """The loader drops the last incomplete batch: a batch larger than the training set leaves none."""
    images = len(data_module.training_set(dataset, config.data))  # type: ignore[arg-type]
    if images < config.train.batch_size:
        raise ConfigError(f"Invalid value for config key 'train.batch_size': {config.train.batch_size} is more than "
                          f"the {images} training images (data.root='{config.data.root}', data.max_train_size="
                          f"{config.data.max_train_size}), so no batch would be left. Lower train.batch_size or use "
                          f"more images.")


def check_epoch_length(config: DictConfig, checkpoint: dict, path: Any) -> None:
    saved = checkpoint.get("trainer", {}).get("epoch_length")
    wanted = config.train.epoch_length
    if wanted and saved and wanted != saved:
        raise ConfigError(f"Invalid value for config key 'train.epoch_length': {wanted}, but checkpoint '{path}' was "
                          f"trained with epochs of {saved} iterations, and a run keeps its epoch length. Resume with "
                          f"train.epoch_length={saved} (or null), or start a new run.")


def describe_start(run_dir: RunDir, resume: Any, run_fields: dict, forked: bool) -> None:
    if resume is None and run_dir.config_path.exists():
        logger.info("output_dir '%s' holds the files of a start that never reached a checkpoint; starting over",
                    run_dir.path)
    if forked:
        logger.info("Forking run %s from %s into the new run %s in %s", run_fields["parent_id"] or "(without an id)",
                    resume, run_fields["id"], run_dir.path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s", force=True)
    with contextlib.ExitStack() as held:
        lock = None
        try:
            config = load_config(args.config, args.overrides)
            if env_rank() == 0:  # torchrun's other ranks wait for rank 0 in the process group's rendezvous
                lock = held.enter_context(RunDir(config.output_dir).lock())
                config = preflight(config)
        except INPUT_ERRORS as error:
            return input_error_exit(error, args.debug)
        except KeyboardInterrupt:
            return interrupted_exit(INTERRUPTED)
        return launch(run, config, args.debug, keep_alive=lock, interrupted=INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
