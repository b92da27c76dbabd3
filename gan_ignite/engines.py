"""The trainer and evaluator engines and their step functions (no file I/O here)."""

from __future__ import annotations

import math
from typing import Callable, Iterator, Mapping

import ignite.distributed as idist
import torch
from ignite.engine import DeterministicEngine, Engine, Events
from ignite.engine.deterministic import ReproducibleBatchSampler, update_dataloader
from ignite.metrics import Metric, RunningAverage
from torch import nn, optim
from torch.utils.data import DataLoader

from gan_ignite.metrics.features import FeatureNetwork, extract_features

REAL_LABEL, FAKE_LABEL = 1.0, 0.0
LOSS_KEYS = ("Loss_G", "Loss_D", "D_x", "D_G_z1", "D_G_z2")


def make_training_step(generator: nn.Module, discriminator: nn.Module, optimizer_g: optim.Optimizer,
                       optimizer_d: optim.Optimizer, latent_dim: int, device: torch.device) -> Callable:
    """The seed's DCGAN step: D on real, then on ``fake.detach()``; then G against real labels (BCE)."""
    criterion = nn.BCELoss()

    def diverged(*outputs: torch.Tensor) -> bool:
        # BCELoss rejects NaN inputs with an exception (a device-side assert on CUDA), so a
        # discriminator that diverged is detected here and reported as NaN losses instead.
        return not all(bool(torch.isfinite(output).all()) for output in outputs)

    def training_step(engine: Engine, batch) -> dict[str, float]:
        generator.train()
        discriminator.train()
        real_images = batch[0].to(device, non_blocking=True)
        batch_size = real_images.size(0)
        labels = torch.full((batch_size,), REAL_LABEL, device=device)

        discriminator.zero_grad(set_to_none=True)
        output_real = discriminator(real_images).view(-1)
        if diverged(output_real):
            return dict.fromkeys(LOSS_KEYS, math.nan)
        loss_d_real = criterion(output_real, labels)
        loss_d_real.backward()
        # drawn on the CPU: DeterministicEngine checkpoints and restores the CPU RNG, not CUDA's,
        # so CPU latents keep a resumed GPU run identical to the uninterrupted one
        latent = torch.randn(batch_size, latent_dim, 1, 1).to(device, non_blocking=True)
        fake_images = generator(latent)
        labels.fill_(FAKE_LABEL)
        output_fake = discriminator(fake_images.detach()).view(-1)
        if diverged(output_fake):
            return dict.fromkeys(LOSS_KEYS, math.nan)
        loss_d_fake = criterion(output_fake, labels)
        loss_d_fake.backward()
        optimizer_d.step()

        generator.zero_grad(set_to_none=True)
        labels.fill_(REAL_LABEL)  # the generator wants D to call its fakes real
        output_fake_after = discriminator(fake_images).view(-1)
        if diverged(output_fake_after):
            return dict.fromkeys(LOSS_KEYS, math.nan)
        loss_g = criterion(output_fake_after, labels)
        loss_g.backward()
        optimizer_g.step()

        return {
            "Loss_G": loss_g.item(),
            "Loss_D": (loss_d_real + loss_d_fake).item(),
            "D_x": output_real.mean().item(),
            "D_G_z1": output_fake.mean().item(),
            "D_G_z2": output_fake_after.mean().item(),
        }

    return training_step


def create_trainer(generator: nn.Module, discriminator: nn.Module, optimizer_g: optim.Optimizer,
                   optimizer_d: optim.Optimizer, latent_dim: int, device: torch.device) -> Engine:
    """A :class:`DeterministicEngine`: its data order and RNG follow the iteration counter, so a run
    resumed from a checkpoint (even mid-epoch) continues exactly as the uninterrupted run would."""
    step = make_training_step(generator, discriminator, optimizer_g, optimizer_d, latent_dim, device)
    trainer = DeterministicEngine(step)
    for key in ("Loss_G", "Loss_D"):
        RunningAverage(output_transform=lambda output, key=key: output[key]).attach(trainer, key)
    return trainer


class EagerReproducibleBatchSampler(ReproducibleBatchSampler):
    """ignite's ReproducibleBatchSampler draws an epoch's batch order lazily, at the first batch.
    With ``num_workers=0`` that first batch is fetched after DeterministicEngine has restored the
    RNG state of a mid-epoch checkpoint, so a resumed run would draw another order and other
    noise than the uninterrupted one. Drawing the order when the iterator is created (as the
    worker-based loaders do anyway) keeps kill-and-resume runs identical."""

    def __iter__(self) -> Iterator[list[int]]:  # type: ignore[override]
        self.setup_batch_indices()
        return iter(self.batch_indices)


def make_resumable(loader: DataLoader) -> DataLoader:
    """The training loader with an :class:`EagerReproducibleBatchSampler` for the trainer."""
    return update_dataloader(loader, EagerReproducibleBatchSampler(loader.batch_sampler))


def create_evaluator(generator: nn.Module, network: FeatureNetwork, metrics: Mapping[str, Metric],
                     device: torch.device) -> Engine:
    """Each step turns one batch of latent vectors into images and runs the feature network once
    (uint8 conversion, resize, network: :func:`~gan_ignite.metrics.features.extract_features`),
    returning ``{"features", "logits"}`` for every metric. The data is the list of latent batches.

    The generator runs in eval mode (BatchNorm uses its running statistics), so each image depends
    only on its own latent vector, not on which other images share its batch or process.
    """

    def evaluation_step(engine: Engine, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            fake_images = generator(latent.to(device))
        return extract_features(fake_images, network)

    evaluator = Engine(evaluation_step)
    mode = {"training": True}

    @evaluator.on(Events.STARTED)
    def _prepare(_: Engine) -> None:
        mode["training"] = generator.training
        generator.eval()

    @evaluator.on(Events.COMPLETED)
    def _restore(_: Engine) -> None:
        generator.train(mode["training"])

    for name, metric in metrics.items():
        metric.attach(evaluator, name)
    return evaluator


def broadcast_buffers(*modules: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics) of ``modules``.

    DDP keeps parameters equal on all ranks, but each rank's forward pass updates its own running
    statistics after DDP's start-of-forward buffer broadcast, so after a step they differ. Rank 0's
    are the ones checkpointed; evaluating with them on every rank scores exactly the checkpoint.
    """
    if idist.get_world_size() == 1:
        return
    for module in modules:
        for buffer in module.buffers():
            buffer.copy_(idist.broadcast(buffer, src=0))


def attach_sampler_epochs(trainer: Engine, loader: DataLoader) -> None:
    """Set a DistributedSampler's epoch to the data-pass index before each pass is drawn.

    Nothing else calls ``set_epoch``: without this every pass of a multi-process run would visit
    the data in the same order. The pass index follows the iteration counter, so a resumed run
    draws the same order as the uninterrupted one.
    """
    sampler = getattr(loader.batch_sampler, "sampler", None)
    if not hasattr(sampler, "set_epoch"):
        return

    def _set_epoch(engine: Engine) -> None:
        sampler.set_epoch(engine.state.iteration // len(loader))

    trainer.add_event_handler(Events.STARTED | Events.DATALOADER_STOP_ITERATION, _set_epoch)
