"""Command line and launch: ``python -m gan_ignite.train --config FILE [key.sub=value ...]``.

Runs as a single process (CPU or GPU), under ``torchrun --nproc_per_node=N`` or spawned with
``dist.nproc_per_node``; :func:`run` executes on every rank and wires data, models, engines and
handlers together. Rank 0 alone writes files.
"""

from __future__ import annotations

import argparse
import copy
import logging
import signal
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import ignite.distributed as idist
import torch
from ignite.engine import Engine
from ignite.handlers import Checkpoint, ProgressBar
from ignite.utils import manual_seed, setup_logger
from omegaconf import DictConfig
from torch import optim

from gan_ignite import data as data_module
from gan_ignite.config import load_config, save_config
from gan_ignite.engines import (LOSS_KEYS, TrainingRecipe, attach_sampler_epochs, broadcast_buffers,
                                create_trainer, make_resumable)
from gan_ignite.errors import INPUT_ERRORS, ConfigError, RunDirError, RunStopped
from gan_ignite.evaluation import ScoredGenerator, setup_evaluation, warn_if_random
from gan_ignite.handlers import (GracefulStop, HistoryWriter, PerRankRngStates, TensorState, attach_best_checkpoint,
                                 attach_checkpoints, attach_evaluation, attach_image_grids, attach_nan_guard,
                                 attach_skipped_images_log, attach_train_history, latest_checkpoint, save_real_grid)
from gan_ignite.launch import clean_message, env_rank, launch, report
from gan_ignite.metrics.features import load_feature_network
from gan_ignite.models import Discriminator, Generator

logger = logging.getLogger("gan_ignite")
RUN_FILES = ("history.jsonl", "checkpoints")
# checkpoint entries that older checkpoints, or runs with another recipe, may lack
OPTIONAL_STATE = ("rng_states_per_rank", "ema_generator", "ada")


# ----------------------------------------------------------------------------- run directory
def resolve_resume(config: DictConfig) -> Optional[Path]:
    """The checkpoint to resume from: ``auto`` = latest in output_dir (None if there is none)."""
    resume = config.train.resume_from
    if not resume:
        return None
    if resume == "auto":
        return latest_checkpoint(Path(config.output_dir) / "checkpoints")
    path = Path(resume)
    if not path.is_file():
        raise RunDirError(f"train.resume_from='{resume}' is not a checkpoint file. Pass a checkpoint_<iteration>.pt "
                          f"from a run's checkpoints/ folder, or 'auto' for the latest one in output_dir.")
    return path


def prepare_output_dir(config: DictConfig, resume: Optional[Path]) -> Path:
    """Create (or reuse, when resuming) the run directory; never mix two runs in one directory."""
    output_dir = Path(config.output_dir)
    existing = [name for name in RUN_FILES if (output_dir / name).exists()]
    if existing and resume is None and config.train.resume_from != "auto":
        raise RunDirError(f"output_dir '{output_dir}' already holds a run ({', '.join(existing)}). Continue it with "
                          f"train.resume_from=auto, or choose another output_dir=...; nothing was changed.")
    try:
        (output_dir / "images").mkdir(parents=True, exist_ok=True)
        probe = output_dir / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise RunDirError(f"output_dir '{output_dir}' cannot be written ({error.strerror or error}). Choose a "
                          f"writable folder with output_dir=...") from None
    return output_dir


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise RunDirError(f"Checkpoint '{path}' cannot be read ({error}). It may be incomplete or not a gan_ignite "
                          f"checkpoint; pass another file to train.resume_from.") from None


def restore(to_load: dict[str, Any], checkpoint: dict, path: Path) -> None:
    try:
        Checkpoint.load_objects(to_load=to_load, checkpoint=checkpoint)
    except (RuntimeError, KeyError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0]
        raise RunDirError(f"Checkpoint '{path}' does not fit this config: {first_line}. Resume with the config the "
                          f"run was started with (its output_dir/config.yaml), or start a new run.") from None


# ----------------------------------------------------------------------------- setup pieces
def setup_models(config: DictConfig, device: torch.device) -> tuple[Generator, Discriminator]:
    model, data = config.model, config.data
    generator = Generator(model.latent_dim, data.channels, data.image_size, model.g_features).to(device)
    discriminator = Discriminator(data.channels, data.image_size, model.d_features, model.spectral_norm).to(device)
    return generator, discriminator


def print_summaries(generator: Generator, discriminator: Discriminator, config: DictConfig) -> None:
    """torchsummary tables, run on copies: its forward pass would move the BatchNorm running stats."""
    from torchsummary import summary

    device = "cuda" if next(generator.parameters()).is_cuda else "cpu"
    size = config.data.image_size
    summary(copy.deepcopy(generator), (config.model.latent_dim, 1, 1), device=device)
    summary(copy.deepcopy(discriminator), (config.data.channels, size, size), device=device)


# ----------------------------------------------------------------------------- the run on every rank
def run(local_rank: int, config: DictConfig) -> None:
    rank, device = idist.get_rank(), idist.device()
    manual_seed(config.seed + rank)
    setup_logger("gan_ignite", level=logging.INFO if rank == 0 else logging.WARNING)
    output_dir = Path(config.output_dir)
    resume = resolve_resume(config)
    writer = HistoryWriter(output_dir / "history.jsonl") if rank == 0 else None

    dataset = data_module.load_dataset_everywhere(config.data)
    loader = make_resumable(data_module.train_loader(dataset, config.data, config.train.batch_size))

    generator, discriminator = setup_models(config, device)
    if rank == 0:
        print_summaries(generator, discriminator, config)
    # the fixed noise comes from its own seeded generator: the same grid latents in every run and resume
    fixed_noise = torch.randn(64, config.model.latent_dim, 1, 1,
                              generator=torch.Generator().manual_seed(config.seed)).to(device)
    train_cfg = config.train
    betas = (train_cfg.beta1, train_cfg.beta2)
    model_g, model_d = idist.auto_model(generator), idist.auto_model(discriminator)
    optimizer_g = idist.auto_optim(optim.Adam(model_g.parameters(), lr=train_cfg.lr, betas=betas))
    optimizer_d = idist.auto_optim(optim.Adam(model_d.parameters(), lr=train_cfg.lr, betas=betas))

    recipe = TrainingRecipe.from_config(train_cfg, generator)
    trainer = create_trainer(model_g, model_d, optimizer_g, optimizer_d, config.model.latent_dim, device, recipe)
    attach_sampler_epochs(trainer, loader)
    # the per-rank RNG states come after the trainer: loaded last, they replace its rank-0 states
    to_save = {"generator": generator, "discriminator": discriminator, "optimizer_G": optimizer_g,
               "optimizer_D": optimizer_d, "trainer": trainer, "rng_states_per_rank": PerRankRngStates(trainer),
               "fixed_noise": TensorState(fixed_noise), **recipe.checkpoint_objects()}
    if resume is not None:
        checkpoint = load_checkpoint(resume)
        restore({key: value for key, value in to_save.items() if key in checkpoint or key not in OPTIONAL_STATE},
                checkpoint, resume)
        if recipe.ema is not None and "ema_generator" not in checkpoint:  # EMA switched on for this resume
            recipe.ema.ema_model.load_state_dict(generator.state_dict())
        for optimizer in (optimizer_g, optimizer_d):  # the config, not the checkpoint, sets lr and betas
            for group in optimizer.param_groups:
                group.update(lr=train_cfg.lr, betas=betas)
        logger.info("Resumed from %s at epoch %d, iteration %d", resume, trainer.state.epoch,
                    trainer.state.iteration)
        epoch_length = train_cfg.epoch_length or trainer.state.epoch_length or len(loader)
        if trainer.state.iteration >= train_cfg.max_epochs * epoch_length:
            # ignite would restart a finished engine from iteration 0 and duplicate the history
            logger.info("The run is already complete (train.max_epochs=%d); raise train.max_epochs to train on.",
                        train_cfg.max_epochs)
            return
    if writer is not None:  # drop records written after the checkpoint (all of them on a fresh start)
        dropped = writer.truncate_after(trainer.state.iteration)
        if dropped:
            logger.info("Dropped %d history records newer than iteration %d", dropped, trainer.state.iteration)

    attach_train_history(trainer, writer)
    attach_nan_guard(trainer)
    attach_skipped_images_log(trainer)
    scored = ScoredGenerator(config, generator, recipe.ema.ema_model if recipe.ema else None, device)
    if rank == 0:
        ProgressBar(persist=True).attach(trainer, metric_names=["Loss_G", "Loss_D"])
        attach_image_grids(trainer, scored.refresh, fixed_noise, output_dir / "images", train_cfg.image_every)
        save_real_grid(data_module.sample_images(dataset, 64, config.eval.real_subset_seed),
                       output_dir / "images" / "real_samples.png")

    def rank0_buffers() -> None:  # every rank scores and saves exactly what rank 0 checkpoints
        broadcast_buffers(generator, discriminator)

    if config.eval.every_epochs > 0:
        evaluation = setup_evaluation(config, dataset, scored.module, device, model=scored.name)

        def before_evaluation() -> None:
            rank0_buffers()
            scored.refresh()
            warn_if_random(evaluation.record_fields)

        attach_evaluation(trainer, evaluation.run, config.eval.every_epochs, writer, before_run=before_evaluation)
        if "fid" in config.eval.metrics:
            attach_best_checkpoint(evaluation.evaluator, trainer, to_save, output_dir / "checkpoints")
    save_checkpoint = attach_checkpoints(trainer, to_save, output_dir / "checkpoints", train_cfg.checkpoint_every,
                                         train_cfg.checkpoint_every_iters, train_cfg.n_saved,
                                         before_save=rank0_buffers)
    stop = GracefulStop()
    stop.attach(trainer, save_checkpoint)

    # Re-seed so the trainer's RNG stream does not depend on what the setup consumed (e.g. a cache
    # hit or miss of the real statistics): the same config and seed give the same losses.
    manual_seed(config.seed + rank)
    stop.install()
    try:
        trainer.run(loader, max_epochs=train_cfg.max_epochs, epoch_length=train_cfg.epoch_length)
    finally:
        stop.uninstall()
    report_outcome(trainer, stop, output_dir)


def report_outcome(trainer: Engine, stop: GracefulStop, output_dir: Path) -> None:
    """Turn a diverged or interrupted run into :class:`RunStopped` (message + exit code)."""
    diverged = getattr(trainer.state, "diverged", None)
    if diverged is not None:
        latest = latest_checkpoint(output_dir / "checkpoints")
        values = ", ".join(f"{key}={diverged[key]:.4g}" for key in LOSS_KEYS)
        kept = (f"The last good checkpoint, {latest}, is kept; resume from it with train.resume_from=auto"
                if latest else "No checkpoint had been written yet")
        raise RunStopped(1, f"Training stopped at iteration {diverged['iteration']} (epoch {diverged['epoch']}): a "
                            f"non-finite loss ({values}). {kept}. Try a lower train.lr (e.g. half), check the "
                            f"data for broken images or constant batches, or change the seed.")
    if stop.exit_code is not None:
        latest = latest_checkpoint(output_dir / "checkpoints")
        raise RunStopped(stop.exit_code, f"Stopped by {signal.Signals(stop.received).name} after iteration "
                                         f"{trainer.state.iteration}; checkpoint saved as {latest}. Continue with "
                                         f"train.resume_from=auto.")


# ----------------------------------------------------------------------------- command line
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
    data_module.load_dataset(config.data)
    if resume is not None:  # the models of the checkpoint must fit the config
        generator, discriminator = setup_models(config, torch.device("cpu"))
        restore({"generator": generator, "discriminator": discriminator}, load_checkpoint(resume), resume)
    evaluation = config.eval
    random_inception = evaluation.feature_network == "inception" and evaluation.inception_weights == "random"
    if evaluation.every_epochs > 0 and not random_inception:
        # a missing, corrupt or wrong file, or a failed download, fails here; a download lands in
        # the torch hub cache once, before any worker process starts
        load_feature_network(evaluation.feature_network, "cpu", inception_weights=evaluation.inception_weights,
                             resize=evaluation.resize)
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
        if args.debug:
            raise
        report(2, clean_message(str(error)))
        return 2
    return launch(run, config, args.debug)


if __name__ == "__main__":
    sys.exit(main())
