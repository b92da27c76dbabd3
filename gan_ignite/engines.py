"""The trainer and evaluator engines and their step functions (no file I/O here)."""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional

import ignite.distributed as idist
import torch
from ignite.engine import DeterministicEngine, Engine, Events
from ignite.engine.deterministic import ReproducibleBatchSampler, update_dataloader
from ignite.handlers import EMAHandler
from ignite.metrics import Metric
from torch import nn, optim
from torch.utils.data import DataLoader, RandomSampler

from gan_ignite.augment import AdaAugment, AdaController, build_augment
from gan_ignite.ema import attach_ema, create_ema
from gan_ignite.latents import LatentNoise
from gan_ignite.losses import get_loss
from gan_ignite.metrics.networks.features import FeatureNetwork, Prefetch, prepare_images
from gan_ignite.metrics.networks.preprocess import to_uint8
from gan_ignite.metrics.timing import PartTimer

LOSS_KEYS = ("Loss_G", "Loss_D", "D_x", "D_G_z1", "D_G_z2")


@dataclass
class TrainingRecipe:
    """What the training step does beyond the tutorial baseline's DCGAN step (the default: ``bce`` loss,
    no augmentation, no EMA), and the state that adds to a checkpoint. ``augment`` applies to every image
    D sees; ``ada`` tunes its ``p`` from the step's ``real_sign``; ``ema`` averages the generator (its
    ``ema_model``), a plain copy for the first ``ema_start`` iterations; ``amp`` is bf16 autocast,
    ``channels_last`` NHWC images, ``deterministic`` deterministic CUDA algorithms.
    """

    loss: str = "bce"
    augment: Callable[[torch.Tensor], torch.Tensor] = field(default_factory=nn.Identity)
    ada: Optional[AdaController] = None
    ema: Optional[EMAHandler] = None
    ema_start: int = 0
    amp: bool = False
    channels_last: bool = False
    deterministic: bool = False

    @classmethod
    def from_config(cls, train: Any, generator: nn.Module) -> TrainingRecipe:
        """From the config's ``train`` section; ``generator`` is the live one the EMA follows."""
        augment = build_augment(train.augment)
        ada = None
        if isinstance(augment, AdaAugment):
            augment.p = float(train.ada_p)  # a resumed run's checkpoint then restores the p it had reached
            ada = AdaController(augment, train.ada_target, train.ada_speed_images, train.ada_interval)
        ema = create_ema(generator, train.ema_decay) if train.ema_decay is not None else None
        return cls(train.loss, augment, ada, ema, train.ema_start, train.amp, train.channels_last, train.deterministic)

    def checkpoint_objects(self) -> dict[str, Any]:
        """The recipe's objects to add to the checkpoint's ``to_save``."""
        objects = {"ada": self.ada, "ema_generator": self.ema.ema_model if self.ema is not None else None}
        return {name: state for name, state in objects.items() if state is not None}


def make_training_step(generator: nn.Module, discriminator: nn.Module, optimizer_g: optim.Optimizer,
                       optimizer_d: optim.Optimizer, latent_dim: int, device: torch.device, loss: str = "bce",
                       augment: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, amp: bool = False,
                       channels_last: bool = False, noise: Optional[LatentNoise] = None) -> Callable:
    """The DCGAN step: D on augmented reals and augmented ``fake.detach()``, then G through a fresh
    augmentation of the same fakes; its output (:func:`_step_output`) stays on ``device``. Called without
    an engine (``step(None, batch)``), the step counts its own iterations from 1.
    """
    gan_loss = get_loss(loss)
    augment = augment if augment is not None else nn.Identity()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    nan = torch.tensor(math.nan, device=device)
    noise = noise if noise is not None else LatentNoise(latent_dim, device)
    calls = {"count": 0}
    autocast = functools.partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16, enabled=amp)

    def discriminate(images: torch.Tensor) -> torch.Tensor:
        with autocast():  # a generator that stays NCHW (see training.generator_stays_contiguous) is converted here
            logits = discriminator(augment(images.contiguous(memory_format=memory_format))).view(-1)
        return logits.float()

    def training_step(engine: Engine, batch) -> dict[str, Any]:
        generator.train()
        discriminator.train()
        real_images = batch[0].to(device, non_blocking=True).contiguous(memory_format=memory_format)
        calls["count"] += 1
        iteration = engine.state.iteration if engine is not None else calls["count"]

        discriminator.zero_grad(set_to_none=True)
        real_logits = discriminate(real_images)
        latent = noise(real_images.size(0), iteration)
        with autocast():
            fake_images = generator(latent)
        fake_logits = discriminate(fake_images.detach())
        loss_d = gan_loss.discriminator(real_logits, fake_logits)
        loss_d.backward()
        optimizer_d.step()

        generator.zero_grad(set_to_none=True)
        fake_logits_g = discriminate(fake_images)
        loss_g = gan_loss.generator(fake_logits_g)
        loss_g.backward()
        optimizer_g.step()
        return _step_output(real_logits, fake_logits, fake_logits_g, loss_d, loss_g, augment, nan)

    return training_step


def _step_output(real_logits: torch.Tensor, fake_logits: torch.Tensor, fake_logits_g: torch.Tensor,
                 loss_d: torch.Tensor, loss_g: torch.Tensor, augment: Callable, nan: torch.Tensor) -> dict[str, Any]:
    """:data:`LOSS_KEYS` as 0-d tensors (``D_*``: mean probabilities whatever the loss), all NaN when anything
    of the step was not finite; with ADA also ``real_sign`` (ADA's r_t) and ``ada_p``."""
    with torch.no_grad():
        finite = torch.isfinite(torch.stack([real_logits.sum(), fake_logits.sum(), fake_logits_g.sum(),
                                             loss_d, loss_g])).all()
        values = {"Loss_G": loss_g, "Loss_D": loss_d, "D_x": torch.sigmoid(real_logits).mean(),
                  "D_G_z1": torch.sigmoid(fake_logits).mean(), "D_G_z2": torch.sigmoid(fake_logits_g).mean()}
        if isinstance(augment, AdaAugment):
            values["real_sign"] = torch.sign(real_logits).mean()
        output: dict[str, Any] = {key: torch.where(finite, value.detach(), nan) for key, value in values.items()}
    if isinstance(augment, AdaAugment):
        output["ada_p"] = augment.p
    return output


def create_trainer(generator: nn.Module, discriminator: nn.Module, optimizer_g: optim.Optimizer,
                   optimizer_d: optim.Optimizer, latent_dim: int, device: torch.device,
                   recipe: Optional[TrainingRecipe] = None, noise: Optional[LatentNoise] = None) -> Engine:
    """A :class:`DeterministicEngine` (data order and RNG follow the iteration counter, so a resumed run
    continues exactly as the uninterrupted one) with ``recipe``'s ADA controller and EMA attached."""
    recipe = recipe if recipe is not None else TrainingRecipe()
    step = make_training_step(generator, discriminator, optimizer_g, optimizer_d, latent_dim, device, recipe.loss,
                              recipe.augment, recipe.amp, recipe.channels_last, noise)
    trainer = DeterministicEngine(step)
    trainer.add_event_handler(Events.STARTED, _choose_cuda_algorithms, recipe.deterministic)
    # no RunningAverage (a host synchronisation per iteration): handlers.TrainingLog averages the flushed records
    if recipe.ada is not None:
        recipe.ada.attach(trainer)
    if recipe.ema is not None:
        attach_ema(trainer, recipe.ema, recipe.ema_start)
    return trainer


def _choose_cuda_algorithms(_: Engine, deterministic: bool) -> None:
    """Undo DeterministicEngine's deterministic CUDA algorithms (this runs after it) unless
    ``train.deterministic``: cuDNN picks the fastest ones; data order and random numbers stay seeded."""
    if not torch.cuda.is_available():
        return
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


ORDER_SEED_OFFSET = 1 << 40  # the epoch's order and the step's latents come from different seeds


class EagerReproducibleBatchSampler(ReproducibleBatchSampler):
    """An epoch's order that depends only on the seed DeterministicEngine set for the epoch
    (``torch.initial_seed()``), drawn when the iterator is created: ignite's ReproducibleBatchSampler
    draws from the global RNG at the first batch, which comes after a mid-epoch resume restored the RNG,
    and a new multi-worker iterator (which a resume creates; persistent workers reuse theirs) asks for
    the order twice (the second time gets the first answer). A shuffling sampler gets a generator of its
    own for it, so the draw does not shift the training step's random numbers either. Resumes, with or
    without workers, continue exactly."""

    drawn_for: Optional[int] = None  # the epoch seed ``batch_indices`` were drawn for

    def __iter__(self) -> Iterator[list[int]]:  # type: ignore[override]
        seed = torch.initial_seed()
        if seed != self.drawn_for:
            sampler = getattr(self.batch_sampler, "sampler", None)
            if isinstance(sampler, RandomSampler):
                sampler.generator = torch.Generator().manual_seed(seed + ORDER_SEED_OFFSET)
            self.setup_batch_indices()
            self.drawn_for = seed
        return iter(self.batch_indices)


def make_resumable(loader: DataLoader) -> DataLoader:
    """The training loader with an :class:`EagerReproducibleBatchSampler` for the trainer."""
    return update_dataloader(loader, EagerReproducibleBatchSampler(loader.batch_sampler))


def create_evaluator(generator: nn.Module, network: FeatureNetwork, metrics: Mapping[str, Metric]) -> Engine:
    """Each step runs the feature network on a batch from :func:`generated_batches`, giving
    ``{"features", "logits"}`` to the metrics. ``generator`` is in eval mode while it runs (an image
    depends only on its latent); a :class:`PartTimer` in ``evaluator.timer`` times network and metrics.
    """

    def evaluation_step(engine: Engine, prepared: torch.Tensor) -> dict[str, torch.Tensor]:
        with _part(engine.timer, "network"):
            features, logits = network(prepared)
        return {"features": features, "logits": logits}

    evaluator = Engine(evaluation_step)
    evaluator.timer = None
    mode = {"training": True}
    opened: dict[str, Any] = {}

    @evaluator.on(Events.STARTED)
    def _prepare(_: Engine) -> None:
        mode["training"] = generator.training
        generator.eval()

    @evaluator.on(Events.COMPLETED)
    def _restore(_: Engine) -> None:
        generator.train(mode["training"])

    def _open(engine: Engine, host: bool) -> None:
        if engine.timer is not None:
            opened["metrics"] = engine.timer.begin("metrics", host)

    def _close(engine: Engine) -> None:
        if engine.timer is not None and "metrics" in opened:
            engine.timer.end(opened.pop("metrics"))

    # the metrics' handlers (updates per batch, results at the end) run between these
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, _open, False)
    evaluator.add_event_handler(Events.EPOCH_COMPLETED, _open, True)
    for name, metric in metrics.items():
        metric.attach(evaluator, name)
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, _close)
    evaluator.add_event_handler(Events.EPOCH_COMPLETED, _close)
    return evaluator


def _part(timer: Optional[PartTimer], name: str, on_device: bool = True):
    if timer is None:
        return contextlib.nullcontext()
    return timer.device_part(name) if on_device else timer.host_part(name)


def generated_images(generator: nn.Module, latents: Iterable[torch.Tensor], device: torch.device | str,
                     timer: Optional[PartTimer] = None, on_device: bool = True) -> Iterator[torch.Tensor]:
    """``generator(latent)`` as uint8 images on ``device``, batch by batch: every generated image scored
    or written is converted here."""
    for latent in latents:
        with _part(timer, "generate", on_device), torch.no_grad():  # grad mode is per thread
            images = to_uint8(generator(latent.to(device, non_blocking=True)))
        yield images


def generated_batches(generator: nn.Module, network: FeatureNetwork, latents: list[torch.Tensor],
                      device: torch.device, timer: Optional[PartTimer] = None) -> Iterable[torch.Tensor]:
    """The evaluator's data: :func:`generated_images` prepared for ``network``. Where preparing is host
    work (on a CPU; a PIL protocol) it runs a batch ahead in a background thread, timed by its wall
    clock; else every stage is a kernel queued from this thread, timed with CUDA events."""
    on_device = not getattr(network, "host_work", True)

    def batches() -> Iterator[torch.Tensor]:
        for images in generated_images(generator, latents, device, timer, on_device):
            with _part(timer, "prepare", on_device):
                prepared = prepare_images(images, network)
            yield prepared

    return batches() if on_device else Prefetch(batches())


def broadcast_buffers(*modules: nn.Module) -> None:
    """Give every rank rank 0's buffers of ``modules``: each rank's forward pass updates its own BatchNorm
    statistics, and rank 0's are the ones checkpointed, so every rank then scores the checkpoint."""
    if idist.get_world_size() == 1:
        return
    for module in modules:
        for buffer in module.buffers():
            buffer.copy_(idist.broadcast(buffer, src=0))


def attach_sampler_epochs(trainer: Engine, loader: DataLoader) -> None:
    """Set a DistributedSampler's epoch to the data-pass index (from the iteration counter, so a resumed
    run draws the same order) before each pass: nothing else calls ``set_epoch``."""
    sampler = getattr(loader.batch_sampler, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        trainer.add_event_handler(Events.STARTED | Events.DATALOADER_STOP_ITERATION,
                                  lambda engine: sampler.set_epoch(engine.state.iteration // len(loader)))
