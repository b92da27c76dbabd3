"""An exponential moving average (EMA) of the generator's weights, and BatchNorm recalibration.

The EMA is ignite's :class:`~ignite.handlers.EMAHandler` (momentum = 1 - decay, buffers copied).
Its momentum is a function of the iteration counter (1, a plain copy, up to ``ema_start``), which
the trainer checkpoints, so ``handler.ema_model.state_dict()`` is all an exact resume needs.
"""

from __future__ import annotations

import torch
from ignite.engine import Engine, Events
from ignite.handlers import EMAHandler
from torch import nn

EMA_MOMENTUM = "ema_momentum"  # the engine.state attribute EMAHandler reads


def create_ema(generator: nn.Module, decay: float) -> EMAHandler:
    """The EMA of ``generator`` (unwrapped from DDP) as ``handler.ema_model``, in eval mode."""
    return EMAHandler(generator, momentum=1.0 - decay, handle_buffers="copy")


def attach_ema(trainer: Engine, handler: EMAHandler, start: int = 0) -> None:
    """Update ``handler.ema_model`` after every iteration: a copy up to iteration ``start``, an average after."""

    @trainer.on(Events.ITERATION_COMPLETED)
    def _set_momentum(engine: Engine) -> None:  # registered first, so it runs before the update
        setattr(engine.state, EMA_MOMENTUM, 1.0 if engine.state.iteration <= start else handler.momentum)

    handler.attach(trainer, name=EMA_MOMENTUM, warn_if_exists=False)


def recalibrate_batchnorm(generator: nn.Module, latent_dim: int, num_batches: int, batch_size: int, seed: int,
                          device: torch.device | str) -> nn.Module:
    """Recompute ``generator``'s BatchNorm statistics (an EMA copy's averaged weights do not fit the live
    ones) as the plain average over ``num_batches`` batches of seeded latents; return it in eval mode."""
    norms = [module for module in generator.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    if not norms:  # nothing to recalibrate
        return generator.eval()
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        # new tensors rather than reset_running_stats(): EMAHandler's "copy" makes an EMA model share
        # its buffers with the live generator, whose statistics must not change here
        norm.running_mean = torch.zeros_like(norm.running_mean)
        norm.running_var = torch.ones_like(norm.running_var)
        norm.num_batches_tracked = torch.zeros_like(norm.num_batches_tracked)
        norm.momentum = None  # cumulative average
    noise = torch.Generator().manual_seed(seed)
    generator.train()
    with torch.no_grad():
        for _ in range(num_batches):
            generator(torch.randn(batch_size, latent_dim, generator=noise).to(device))
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    return generator.eval()
