"""Training, set up the same way for every process: models, optimizers, the trainer and its
handlers, resume, and the run itself. ``python -m gan_ignite.train`` (the command line) and
``scripts/benchmark.py`` build on :func:`build_training` and :func:`attach_saving`.

Handler order matters: the history flush (NaN guard) comes first, evaluation before the
checkpoints of the same epoch end (a run killed during an evaluation resumes from the previous
checkpoint and evaluates again), the graceful stop last.

A run writes nothing into its directory until everything that can fail on its input has passed
(data, models, the restored checkpoint, the feature network, the reference statistics): then
rank 0 writes ``config.yaml``, trims the history to the resumed iteration and trains
(:func:`start_writing`). A start that fails earlier leaves the directory as it was.
"""

from __future__ import annotations

import copy
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import ignite.distributed as idist
import torch
from ignite.engine import Engine
from ignite.handlers import Checkpoint
from ignite.utils import manual_seed, setup_logger
from omegaconf import DictConfig
from torch import nn, optim
from torch.utils.data import DataLoader, Dataset

from gan_ignite import data as data_module
from gan_ignite.engines import (LOSS_KEYS, LatentNoise, TrainingRecipe, attach_sampler_epochs, broadcast_buffers,
                                create_trainer, make_resumable)
from gan_ignite.errors import RunDirError, RunStopped, on_every_rank
from gan_ignite.evaluation import ScoredGenerator, setup_evaluation, warn_if_random
from gan_ignite.handlers import (GracefulStop, PerRankRngStates, TensorState, TrainingLog, attach_best_checkpoint,
                                 attach_checkpoints, attach_evaluation, attach_image_grids, attach_progress,
                                 attach_skipped_images_log, attach_tensorboard, save_real_grid)
from gan_ignite.models import Discriminator, Generator, generator_from_config
from gan_ignite.run_dir import (TENSORBOARD, HistoryWriter, RunDir, RunIdentity, read_checkpoint,
                                resolve_resume)

logger = logging.getLogger("gan_ignite")
# checkpoint entries that older checkpoints, or runs with another recipe, may lack
OPTIONAL_STATE = ("rng_states_per_rank", "ema_generator", "ada", "run")
RESUME_FIX = "Pass another file to train.resume_from (e.g. the run's previous checkpoint), or start a new run."


# ----------------------------------------------------------------------------- restoring a checkpoint
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
    generator = generator_from_config(config).to(device)
    discriminator = Discriminator(data.channels, data.image_size, model.d_features, model.spectral_norm).to(device)
    if config.train.channels_last:
        discriminator = discriminator.to(memory_format=torch.channels_last)
        if not generator_stays_contiguous(config, device):
            generator = generator.to(memory_format=torch.channels_last)
    return generator, discriminator


def generator_stays_contiguous(config: DictConfig, device: torch.device) -> bool:
    """With ``train.channels_last`` and ``train.compile`` on a GPU the generator stays NCHW (the
    discriminator still gets NHWC images): inductor's meta kernel of convolution_backward predicts
    NCHW strides for the NHWC gradients a chain of channels-last ConvTranspose2d layers gets on
    CUDA, and the compiled backward fails its stride check (pytorch/pytorch issue 171622; the CPU
    is not affected)."""
    return bool(config.train.compile) and torch.device(device).type == "cuda"


def print_summaries(generator: Generator, discriminator: Discriminator, config: DictConfig) -> None:
    """torchsummary tables, run on copies: its forward pass would move the BatchNorm running stats."""
    from torchsummary import summary

    device = "cuda" if next(generator.parameters()).is_cuda else "cpu"
    size = config.data.image_size
    summary(copy.deepcopy(generator), (config.model.latent_dim, 1, 1), device=device)
    summary(copy.deepcopy(discriminator), (config.data.channels, size, size), device=device)


# ----------------------------------------------------------------------------- the pieces of a run
@dataclass
class Training:
    """Everything a run trains with; :func:`build_training` makes it on every rank."""

    config: DictConfig
    trainer: Engine
    loader: DataLoader
    generator: nn.Module  # the modules checkpoints hold (not wrapped by DDP or torch.compile)
    discriminator: nn.Module
    recipe: TrainingRecipe
    to_save: dict[str, Any]
    scored: ScoredGenerator
    log: TrainingLog
    fixed_noise: torch.Tensor
    writer: Optional[HistoryWriter]
    grid_listeners: list = field(default_factory=list)  # called with each fixed-noise grid (rank 0)

    def sync_for_saving(self, engine: Engine) -> None:
        """Before a checkpoint or an evaluation: the history on disk reaches this iteration (the
        NaN guard runs there) and every rank holds rank 0's BatchNorm buffers, which are the ones
        checkpointed, so every rank scores and saves exactly the same model."""
        self.log.flush(engine)
        if self.writer is not None:
            self.writer.sync()
        broadcast_buffers(self.generator, self.discriminator)


def discriminator_lr(train_cfg: DictConfig) -> float:
    """``train.lr_d`` (two time-scale update rule, Heusel et al. 2017), or ``train.lr`` when null."""
    return train_cfg.lr if train_cfg.lr_d is None else train_cfg.lr_d


def build_training(config: DictConfig, dataset: Dataset, device: torch.device, output_dir: Path) -> Training:
    """Models, optimizers, the training recipe, the trainer with its history, NaN guard, progress
    and image-grid handlers. Evaluation, checkpoints and the graceful stop come after
    (:func:`attach_saving`)."""
    rank, train_cfg = idist.get_rank(), config.train
    loader = make_resumable(data_module.train_loader(dataset, config.data, train_cfg.batch_size,
                                                     data_module.cache_dir(config)))
    generator, discriminator = setup_models(config, device)
    if rank == 0:
        print_summaries(generator, discriminator, config)
    # the fixed noise comes from its own seeded generator: the same grid latents in every run and resume
    fixed_noise = torch.randn(64, config.model.latent_dim, 1, 1,
                              generator=torch.Generator().manual_seed(config.seed)).to(device)
    model_g, model_d = idist.auto_model(generator), idist.auto_model(discriminator)
    betas = (train_cfg.beta1, train_cfg.beta2)
    optimizer_g = idist.auto_optim(optim.Adam(model_g.parameters(), lr=train_cfg.lr, betas=betas))
    optimizer_d = idist.auto_optim(optim.Adam(model_d.parameters(), lr=discriminator_lr(train_cfg), betas=betas))
    if train_cfg.compile:  # the step runs the compiled modules; checkpoints keep the plain ones
        model_g, model_d = torch.compile(model_g), torch.compile(model_d)

    recipe = TrainingRecipe.from_config(train_cfg, generator)
    noise = LatentNoise(config.model.latent_dim, device, config.seed, rank)
    trainer = create_trainer(model_g, model_d, optimizer_g, optimizer_d, config.model.latent_dim, device, recipe,
                             noise)
    attach_sampler_epochs(trainer, loader)
    # the per-rank RNG states come after the trainer: loaded last, they replace its rank-0 states
    to_save = {"generator": generator, "discriminator": discriminator, "optimizer_G": optimizer_g,
               "optimizer_D": optimizer_d, "trainer": trainer, "rng_states_per_rank": PerRankRngStates(trainer),
               "fixed_noise": TensorState(fixed_noise), "run": RunIdentity(config.run),
               **recipe.checkpoint_objects()}
    run_dir = RunDir(output_dir)
    writer = run_dir.history if rank == 0 else None
    log = TrainingLog(writer, config.log.every)
    log.attach(trainer)
    attach_skipped_images_log(trainer)
    scored = ScoredGenerator(config, generator, recipe.ema.ema_model if recipe.ema else None, device)
    training = Training(config, trainer, loader, generator, discriminator, recipe, to_save, scored, log, fixed_noise,
                        writer)
    if rank == 0:
        attach_progress(trainer, config.log.every, config.log.every_seconds, train_cfg.batch_size)
        attach_image_grids(trainer, scored.refresh, fixed_noise, run_dir.images_dir, train_cfg.image_every,
                           training.grid_listeners)
    return training


def attach_saving(training: Training, output_dir: Path) -> tuple[Any, GracefulStop]:
    """Periodic checkpoints and the graceful stop on SIGTERM / SIGINT (attach after evaluation)."""
    train_cfg = training.config.train
    save_checkpoint = attach_checkpoints(training.trainer, training.to_save, RunDir(output_dir),
                                         train_cfg.checkpoint_every, train_cfg.checkpoint_every_iters,
                                         train_cfg.n_saved, before_save=training.sync_for_saving)
    dist_cfg = training.config.dist
    stop = GracefulStop(dist_cfg.requeue_on, dist_cfg.requeue_exit_code)
    stop.attach(training.trainer, save_checkpoint)
    return save_checkpoint, stop


def resume_training(training: Training, resume: Path) -> bool:
    """Restore a checkpoint into ``training``; False if that run is already complete."""
    config, trainer, train_cfg = training.config, training.trainer, training.config.train
    checkpoint = read_checkpoint(resume, RESUME_FIX)
    restore({key: value for key, value in training.to_save.items() if key in checkpoint or key not in OPTIONAL_STATE},
            checkpoint, resume)
    if training.recipe.ema is not None and "ema_generator" not in checkpoint:  # EMA switched on for this resume
        training.recipe.ema.ema_model.load_state_dict(training.generator.state_dict())
    betas = (train_cfg.beta1, train_cfg.beta2)
    for name, lr in (("optimizer_G", train_cfg.lr), ("optimizer_D", discriminator_lr(train_cfg))):
        for group in training.to_save[name].param_groups:  # the config, not the checkpoint, sets lr and betas
            group.update(lr=lr, betas=betas)
    epoch_length = train_cfg.epoch_length or trainer.state.epoch_length or len(training.loader)
    # the epoch from the iteration: ignite's state.epoch of a mid-epoch checkpoint counts the epoch
    # that was running as if it were over
    done, into = divmod(trainer.state.iteration, epoch_length)
    logger.info("Resumed from %s at iteration %d: %d epoch(s) complete, continuing in epoch %d%s", resume,
                trainer.state.iteration, done, done + 1, f" at its iteration {into + 1}" if into else "")
    if trainer.state.iteration >= train_cfg.max_epochs * epoch_length:
        # ignite would restart a finished engine from iteration 0 and duplicate the history
        logger.info("The run is already complete (train.max_epochs=%d); raise train.max_epochs to train on.",
                    config.train.max_epochs)
        return False
    return True


# ----------------------------------------------------------------------------- the run on every rank
def run(local_rank: int, config: DictConfig) -> None:
    """One training run on this rank (the worker function of :func:`gan_ignite.launch.launch`)."""
    rank, device = idist.get_rank(), idist.device()
    manual_seed(config.seed + rank)
    setup_logger("gan_ignite", level=logging.INFO if rank == 0 else logging.WARNING)
    run_dir = RunDir(config.output_dir)
    resume = resolve_resume(config)
    dataset = data_module.load_dataset_everywhere(config.data)
    training = build_training(config, dataset, device, run_dir.path)
    if resume is not None and not resume_training(training, resume):
        return
    trainer = training.trainer
    if config.eval.every_epochs > 0:
        scored = training.scored
        evaluation = setup_evaluation(config, dataset, scored.module, device, model=scored.name)

        def before_evaluation() -> None:
            training.sync_for_saving(trainer)
            scored.refresh()
            warn_if_random(evaluation.record_fields)

        attach_evaluation(trainer, evaluation.run, config.eval.every_epochs, training.writer,
                          before_run=before_evaluation)
        if "fid" in config.eval.metrics:
            attach_best_checkpoint(evaluation.evaluator, trainer, training.to_save, run_dir)
    _, stop = attach_saving(training, run_dir.path)
    on_every_rank(lambda: start_writing(run_dir, config, dataset, trainer.state.iteration), run_here=rank == 0)
    tensorboard = None
    if config.log.tensorboard and training.writer is not None:
        optimizers = {"generator": training.to_save["optimizer_G"], "discriminator": training.to_save["optimizer_D"]}
        tensorboard = attach_tensorboard(trainer, run_dir.path / TENSORBOARD, training.writer, optimizers,
                                         training.grid_listeners, config.log.every)

    # Re-seed so the trainer's RNG stream does not depend on what the setup consumed (e.g. a cache
    # hit or miss of the real statistics): the same config and seed give the same losses.
    manual_seed(config.seed + rank)
    stop.install()
    try:
        trainer.run(training.loader, max_epochs=config.train.max_epochs, epoch_length=config.train.epoch_length)
        stop.finish()  # the last stop vote in flight (several processes)
    except KeyboardInterrupt:  # a second Ctrl-C: no checkpoint of this iteration
        raise RunStopped(130, f"Aborted by a second Ctrl-C at iteration {trainer.state.iteration}; "
                              f"{latest_words(run_dir)} Continue with train.resume_from=auto.") from None
    finally:
        stop.uninstall()
        data_module.shutdown_workers(training.loader)  # no loader worker outlives the run
        if tensorboard is not None:
            tensorboard.close()
    report_outcome(trainer, stop, run_dir)


def start_writing(run_dir: RunDir, config: DictConfig, dataset: Dataset, iteration: int) -> None:
    """Rank 0, once the start has passed every check: config.yaml (with the run's id), the history
    trimmed to ``iteration`` (records of a resumed run's lost future, unreadable lines, or all of
    a failed earlier start's), the grids of those iterations removed and the real-image grid."""
    run_dir.write_config(config)
    dropped, lines = run_dir.history.truncate_after(iteration)
    if lines.bad_lines:
        logger.warning("%s They are left out of the rewritten file.", lines.report())
    if dropped:
        logger.info("Dropped %d history records newer than iteration %d", dropped, iteration)
    run_dir.remove_grids_after(iteration)
    save_real_grid(data_module.sample_images(dataset, 64, config.eval.real_subset_seed),
                   run_dir.images_dir / "real_samples.png")


def latest_words(run_dir: RunDir) -> str:
    latest = run_dir.latest_checkpoint()
    return f"the latest checkpoint, {latest}, is intact." if latest else "no checkpoint had been written yet."


def report_outcome(trainer: Engine, stop: GracefulStop, run_dir: RunDir) -> None:
    """Turn a diverged or interrupted run into :class:`RunStopped` (message + exit code)."""
    diverged = getattr(trainer.state, "diverged", None)
    if diverged is not None:
        latest = run_dir.latest_checkpoint()
        values = ", ".join(f"{key}={diverged[key]:.4g}" for key in LOSS_KEYS)
        kept = (f"The last good checkpoint, {latest}, is kept; resume from it with train.resume_from=auto"
                if latest else "No checkpoint had been written yet")
        raise RunStopped(1, f"Training stopped at iteration {diverged['iteration']} (epoch {diverged['epoch']}): a "
                            f"non-finite loss ({values}). {kept}. Try a lower train.lr (e.g. half), check the "
                            f"data for broken images or constant batches, or change the seed.")
    if stop.exit_code is not None:
        requeue = (f" Exit code {stop.exit_code} (dist.requeue_exit_code) asks for the job to be requeued; the next "
                   f"start continues with train.resume_from=auto." if stop.requeue else
                   " Continue with train.resume_from=auto.")
        raise RunStopped(stop.exit_code, f"Stopped by {signal.Signals(stop.received).name} after iteration "
                                         f"{stop.stopped_at}; checkpoint saved as "
                                         f"{run_dir.latest_checkpoint()}.{requeue}")
