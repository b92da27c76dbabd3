"""A training run, the same on every process: one start-up path, then the trainer.

:func:`run` is the worker of every rank (:func:`gan_ignite.launch.launch`), in this order:

1. where the run starts (:func:`gan_ignite.checkpoints.plan_start`: ``train.resume_from`` resolved
   once, on rank 0, its checkpoint read once per process);
2. everything that can fail on the user's input (data, models, the restored checkpoint, the
   feature network, the reference statistics), every error shared by all ranks;
3. only then rank 0 writes (:func:`start_writing`): ``config.yaml``, the history trimmed to the
   resumed iteration, the real-image grid. A start that fails earlier leaves the directory as it was;
4. the handlers, from one ordered list (:func:`attach_handlers`), and the trainer.

``scripts/benchmark.py`` builds on :func:`build_training` and :func:`attach_handlers`.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import ignite.distributed as idist
import torch
from ignite.engine import Engine
from ignite.handlers import Checkpoint
from ignite.utils import manual_seed, setup_logger
from omegaconf import DictConfig, OmegaConf
from torch import nn, optim
from torch.utils.data import DataLoader, Dataset

from gan_ignite import data as data_module
from gan_ignite.checkpoints import (OPTIONAL_STATE, NetworkPaths, RunIdentity, Start, attach_best_checkpoint,
                                    attach_checkpoints, best_checkpoint, periodic_checkpoint, plan_start,
                                    refuse_other_data, restore, restore_savers)
from gan_ignite.engines import (LOSS_KEYS, LatentNoise, TrainingRecipe, attach_sampler_epochs, broadcast_buffers,
                                create_trainer, make_resumable)
from gan_ignite.errors import ConfigError, RunStopped
from gan_ignite.io import first_line, require_memory
from gan_ignite.evaluation import Evaluation, ScoredGenerator, setup_evaluation, warn_if_random
from gan_ignite.handlers import (PerRankRngStates, TensorState, TrainingLog, attach_evaluation, attach_image_grids,
                                 attach_progress, attach_skipped_images_log, attach_tensorboard, save_real_grid)
from gan_ignite.metrics._base import broadcast_from_rank0, on_every_rank
from gan_ignite.networks import build_models, check_contract
from gan_ignite.run_dir import TENSORBOARD, HistoryWriter, RunDir
from gan_ignite.signals import GracefulStop

logger = logging.getLogger("gan_ignite")


# ----------------------------------------------------------------------------- models
def setup_models(config: DictConfig, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """The config's generator and discriminator on ``device``, in the memory layout the run asks for."""
    generator, discriminator = (model.to(device) for model in build_models(config))
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


def print_summaries(generator: nn.Module, discriminator: nn.Module, config: DictConfig) -> None:
    """torchsummary tables, run on copies (its forward pass would move BatchNorm's running statistics);
    the parameter counts where a network's forward is beyond torchsummary."""
    from torchsummary import summary

    device = "cuda" if next(generator.parameters()).is_cuda else "cpu"
    size = config.data.image_size
    for model, shape in ((generator, (config.model.latent_dim,)), (discriminator, (config.data.channels, size, size))):
        try:
            summary(copy.deepcopy(model), shape, device=device)
        except Exception as error:  # torchsummary's hooks do not follow every module
            logger.info("%s: %s parameters (torchsummary: %s)", type(model).__name__,
                        f"{sum(parameter.numel() for parameter in model.parameters()):,}", first_line(error))


def discriminator_lr(train_cfg: DictConfig) -> float:
    """``train.lr_d`` (two time-scale update rule, Heusel et al. 2017), or ``train.lr`` when null."""
    return train_cfg.lr if train_cfg.lr_d is None else train_cfg.lr_d


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

    def sync_for_saving(self, engine: Engine) -> bool:
        """Before a checkpoint or an evaluation (on every rank): the history on disk reaches this
        iteration (the NaN guard runs there) and every rank holds rank 0's BatchNorm buffers, which
        are the ones checkpointed, so every rank scores and saves exactly the same model. False when
        the NaN guard stopped the run: its models are neither saved nor scored."""
        self.log.flush(engine)
        if self.log.diverged is not None:
            return False
        if self.writer is not None:
            self.writer.sync()
        broadcast_buffers(self.generator, self.discriminator)
        return True


def build_training(config: DictConfig, dataset: Dataset, device: torch.device, output_dir: Path) -> Training:
    """Models, optimizers, the training recipe and the trainer (handlers: :func:`attach_handlers`)."""
    rank, train_cfg = idist.get_rank(), config.train
    loader = make_resumable(data_module.train_loader(dataset, config.data, train_cfg.batch_size,
                                                     data_module.cache_dir(config), config.seed + rank))
    generator, discriminator = setup_models(config, device)
    on_every_rank(lambda: check_contract(generator, discriminator, config, device))
    if rank == 0:
        print_summaries(generator, discriminator, config)
    # the fixed noise comes from its own seeded generator: the same grid latents in every run and resume
    fixed_noise = torch.randn(64, config.model.latent_dim,
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
               "networks": NetworkPaths(config.model),
               **recipe.checkpoint_objects()}
    writer = RunDir(output_dir).history if rank == 0 else None
    scored = ScoredGenerator(config, generator, recipe.ema.ema_model if recipe.ema else None, device)
    return Training(config, trainer, loader, generator, discriminator, recipe, to_save, scored,
                    TrainingLog(writer, config.log.every), fixed_noise, writer)


def resume(training: Training, start: Start) -> bool:
    """Restore the start's checkpoint into ``training``; False if that run is already complete."""
    config, trainer, train_cfg = training.config, training.trainer, training.config.train
    checkpoint, path = start.checkpoint, start.resume
    restore({key: value for key, value in training.to_save.items() if key in checkpoint or key not in OPTIONAL_STATE},
            checkpoint, path)
    if training.recipe.ema is not None and "ema_generator" not in checkpoint:  # EMA switched on for this resume
        training.recipe.ema.ema_model.load_state_dict(training.generator.state_dict())
    betas = (train_cfg.beta1, train_cfg.beta2)
    for name, lr in (("optimizer_G", train_cfg.lr), ("optimizer_D", discriminator_lr(train_cfg))):
        for group in training.to_save[name].param_groups:  # the config, not the checkpoint, sets lr and betas
            group.update(lr=lr, betas=betas)
    saved_length = trainer.state.epoch_length
    if train_cfg.epoch_length and saved_length and train_cfg.epoch_length != saved_length:
        raise ConfigError(f"Invalid value for config key 'train.epoch_length': {train_cfg.epoch_length}, but "
                          f"checkpoint '{path}' was trained with epochs of {saved_length} iterations, and a run keeps "
                          f"its epoch length. Resume with train.epoch_length={saved_length} (or null), or start a "
                          f"new run.")
    epoch_length = train_cfg.epoch_length or saved_length or len(training.loader)
    # the epoch from the iteration: ignite's state.epoch of a mid-epoch checkpoint counts the running one as over
    done, into = divmod(trainer.state.iteration, epoch_length)
    logger.info("Resumed from %s at iteration %d: %d epoch(s) complete, continuing in epoch %d%s", path,
                trainer.state.iteration, done, done + 1, f" at its iteration {into + 1}" if into else "")
    if trainer.state.iteration >= train_cfg.max_epochs * epoch_length:
        # ignite would restart a finished engine from iteration 0 and duplicate the history
        logger.info("The run is already complete (train.max_epochs=%d); raise train.max_epochs to train on.",
                    config.train.max_epochs)
        return False
    return True


# ----------------------------------------------------------------------------- the start-up path
def agree_on_start(config: DictConfig) -> Start:
    """Rank 0's :func:`plan_start`, shared with every rank (each reads the checkpoint itself)."""
    rank0 = idist.get_rank() == 0
    start = on_every_rank(lambda: plan_start(config), run_here=rank0)
    shared = broadcast_from_rank0(start.shared() if rank0 else None)
    others = on_every_rank(lambda: Start.from_shared(shared), run_here=not rank0)
    return start if rank0 else others


def model_bytes(config: DictConfig) -> int:
    """What the models hold in memory as they train, from their parameter count (built on the meta
    device: nothing allocated): weights, gradients and Adam's two moments, plus an EMA copy of G."""
    try:
        with torch.device("meta"):
            generator, discriminator = setup_models(config, torch.device("meta"))
    except ConfigError:
        raise
    except Exception:  # a network of one's own that cannot be built without memory: no estimate
        return 0
    counts = [sum(parameter.numel() for parameter in model.parameters()) for model in (generator, discriminator)]
    return 4 * (4 * sum(counts) + (counts[0] if config.train.ema_decay is not None else 0))


def check_inputs(config: DictConfig, dataset: Dataset, start: Start) -> str:
    """Rank 0's checks of what the set-up does not already try: a resumed run finds the files it was
    trained on, the models fit in memory, the batch against the images, TensorBoard installed when
    asked for. Returns the training data's fingerprint (recorded as ``run.data_fingerprint``)."""
    fingerprint = data_module.dataset_fingerprint(dataset, range(len(dataset)), times=False)
    recorded = start.run.get("data_fingerprint")
    if recorded and not start.forked and recorded != fingerprint:
        refuse_other_data("data.root", f"{config.data.root} holding files {recorded}",
                          f"files {fingerprint} (other names or sizes)", start.resume)
    require_memory(model_bytes(config), f"The generator and discriminator (model.latent_dim={config.model.latent_dim}, "
                   f"model.g_features={config.model.g_features}, model.d_features={config.model.d_features})",
                   "Lower model.g_features / model.d_features (or model.latent_dim).")
    images = len(data_module.training_set(dataset, config.data))  # the loader drops the last incomplete batch
    if images < config.train.batch_size:
        raise ConfigError(f"Invalid value for config key 'train.batch_size': {config.train.batch_size} is more than "
                          f"the {images} training images (data.root='{config.data.root}', data.max_train_size="
                          f"{config.data.max_train_size}), so no batch would be left. Lower train.batch_size or use "
                          f"more images.")
    if config.log.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("log.tensorboard=true needs the tensorboard package, which is not installed. Install it "
                          "with: pip install -e \".[tb]\" (or pip install tensorboard), or set log.tensorboard=false.")
    return fingerprint


def start_writing(run_dir: RunDir, config: DictConfig, dataset: Dataset, start: Start, iteration: int) -> None:
    """Rank 0, once the start has passed every check: the temporary files of an interrupted write
    removed, config.yaml (with the run's id), the history trimmed to ``iteration`` (records of a
    resumed run's lost future, unreadable lines, or all of a failed earlier start's), the grids and
    checkpoints of later iterations removed, the real-image grid."""
    removed = run_dir.remove_orphans()
    if removed:
        logger.info("Removed %d temporary file(s) left by an interrupted write: %s", len(removed),
                    ", ".join(path.name for path in removed))
    if start.resume is None and run_dir.config_path.exists():
        logger.info("output_dir '%s' holds the files of a start that never reached a checkpoint; starting over",
                    run_dir.path)
    if start.forked:
        logger.info("Forking run %s from %s into the new run %s in %s", start.run["parent_id"] or "(without an id)",
                    start.resume, start.run["id"], run_dir.path)
    run_dir.write_config(config)
    dropped, lines = run_dir.history.truncate_after(iteration)
    if lines.bad_lines:
        logger.warning("%s They are left out of the rewritten file.", lines.report())
    if dropped:
        logger.info("Dropped %d history records newer than iteration %d", dropped, iteration)
    run_dir.remove_after(iteration)
    save_real_grid(data_module.sample_images(dataset, 64, config.eval.real_subset_seed),
                   run_dir.images_dir / "real_samples.png")


def with_run_fields(config: DictConfig, fields: dict[str, Any]) -> DictConfig:
    """``config`` (read-only) with its ``run`` section replaced by ``fields``."""
    updated = OmegaConf.merge(config, {"run": dict(fields)})
    OmegaConf.set_readonly(updated, True)
    return updated


# ----------------------------------------------------------------------------- the handlers, in order
def attach_handlers(training: Training, run_dir: RunDir, evaluation: Optional[Evaluation] = None,
                    start: Optional[Start] = None) -> tuple[Callable[[Engine], None], GracefulStop]:
    """Every handler of the trainer, in the order they run at the end of an iteration or epoch
    (ADA's controller, the EMA update and the sampler's epoch come first, from the trainer itself).
    Returns the checkpoint's save function and the graceful stop (install it when training starts)."""
    trainer, config, rank0 = training.trainer, training.config, idist.get_rank() == 0
    # 1. history + NaN guard: first, so a diverged run stops before anything else sees its models
    training.log.attach(trainer)
    attach_skipped_images_log(trainer)
    # 2. progress and grids (rank 0): they read the running averages the history flush computes
    if rank0:
        attach_progress(trainer, config.log.every, config.log.every_seconds, config.train.batch_size)
        attach_image_grids(trainer, training.scored.refresh, training.fixed_noise, run_dir.images_dir,
                           config.train.image_every, training.grid_listeners)
    # 3. evaluation, and the best checkpoint it decides: before the periodic checkpoint of the same epoch
    #    end, so a run killed during an evaluation resumes from the previous checkpoint and evaluates again
    savers: dict[str, Checkpoint] = {}
    if evaluation is not None:

        def before_evaluation(engine: Engine) -> bool:
            if not training.sync_for_saving(engine):
                return False
            training.scored.refresh()
            warn_if_random(evaluation.record_fields)
            return True

        attach_evaluation(trainer, evaluation.run, config.eval.every_epochs, training.writer, before_evaluation)
        if "fid" in config.eval.metrics:
            savers["best_checkpointer"] = best_checkpoint(training.to_save, run_dir, evaluation.evaluator, trainer)
            training.to_save["best_checkpointer"] = savers["best_checkpointer"]
            attach_best_checkpoint(evaluation.evaluator, savers["best_checkpointer"])
    # 4. periodic checkpoints, carrying both lists of saved files
    savers["checkpointer"] = periodic_checkpoint(training.to_save, run_dir, config.train.n_saved)
    save = attach_checkpoints(trainer, savers["checkpointer"], config.train.checkpoint_every,
                              config.train.checkpoint_every_iters, training.sync_for_saving)
    if start is not None and start.checkpoint is not None and not start.forked:
        restore_savers(savers, start.checkpoint, run_dir, config.train.n_saved)
    # 5. the graceful stop: last, so a stop checkpoints an iteration every other handler has finished
    stop = GracefulStop(config.dist.requeue_on, config.dist.requeue_exit_code)
    stop.attach(trainer, save, idist.get_world_size())
    return save, stop


# ----------------------------------------------------------------------------- the run on every rank
def run(local_rank: int, config: DictConfig) -> None:
    """One training run on this rank (the worker function of :func:`gan_ignite.launch.launch`)."""
    rank, device = idist.get_rank(), idist.device()
    manual_seed(config.seed + rank)
    setup_logger("gan_ignite", level=logging.INFO if rank == 0 else logging.WARNING)
    run_dir = RunDir(config.output_dir)
    start = agree_on_start(config)
    config = with_run_fields(config, start.run)
    dataset = data_module.load_dataset_everywhere(config.data)
    fingerprint = on_every_rank(lambda: check_inputs(config, dataset, start), run_here=rank == 0)
    config = with_run_fields(config, {**start.run, "data_fingerprint": fingerprint})
    training = build_training(config, dataset, device, run_dir.path)
    continuing = start.checkpoint is None or on_every_rank(lambda: resume(training, start))
    evaluation = None
    if config.eval.every_epochs > 0:  # checked also for a complete run: bad input is refused either way
        scored = training.scored
        evaluation = setup_evaluation(config, dataset, scored.module, device, model=scored.name)
    if not continuing:
        return
    trainer = training.trainer
    on_every_rank(lambda: start_writing(run_dir, config, dataset, start, trainer.state.iteration), run_here=rank == 0)
    _, stop = attach_handlers(training, run_dir, evaluation, start)
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
    report_outcome(training.log, stop, run_dir)


def latest_words(run_dir: RunDir) -> str:
    latest = run_dir.latest_checkpoint()
    return f"the latest checkpoint, {latest}, is intact." if latest else "no checkpoint had been written yet."


def report_outcome(log: TrainingLog, stop: GracefulStop, run_dir: RunDir) -> None:
    """Turn a diverged or interrupted run into :class:`RunStopped` (message + exit code)."""
    diverged = log.diverged
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
                                         f"{run_dir.latest_checkpoint()}.{requeue}", is_error=False)
