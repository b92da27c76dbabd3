"""An exponential moving average (EMA) of the generator's weights, and BatchNorm recalibration.

The EMA is ignite's :class:`~ignite.handlers.EMAHandler` (momentum = 1 - decay, buffers copied
from the live generator). ``ema_start`` is honoured by setting the handler's momentum in
``engine.state`` before each update: 1 (a plain copy) up to iteration ``ema_start``, 1 - decay
after. That momentum is a function of the iteration counter, which the trainer checkpoints, so
``handler.ema_model.state_dict()`` is all an exact resume needs.
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
    """Update ``handler.ema_model`` after every iteration; up to iteration ``start`` it follows the
    live weights exactly, after it averages with the handler's momentum (1 - decay)."""

    @trainer.on(Events.ITERATION_COMPLETED)
    def _set_momentum(engine: Engine) -> None:  # registered first, so it runs before the update
        setattr(engine.state, EMA_MOMENTUM, 1.0 if engine.state.iteration <= start else handler.momentum)

    handler.attach(trainer, name=EMA_MOMENTUM, warn_if_exists=False)


def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]


def recalibrate_batchnorm(generator: nn.Module, latent_dim: int, num_batches: int, batch_size: int, seed: int,
                          device: torch.device | str) -> nn.Module:
    """Recompute the BatchNorm running statistics of ``generator`` (an EMA copy, say: averaged
    weights do not fit the live generator's statistics) as the plain average over ``num_batches``
    batches of seeded latents, in train mode without gradients; return it in eval mode with its
    momenta restored. The same seed gives the same statistics."""
    norms = _batch_norms(generator)
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
            generator(torch.randn(batch_size, latent_dim, 1, 1, generator=noise).to(device))
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    return generator.eval()
