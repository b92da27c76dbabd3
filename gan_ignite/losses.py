"""GAN losses as functions of the discriminator's logits, in a registry.

A loss is a pair: the discriminator's loss of (real logits, fake logits) and the generator's loss
of the fake logits. Adding one is two small functions and one line in :data:`LOSSES`; config
validation and the training step read the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class GANLoss:
    discriminator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (real_logits, fake_logits) -> loss
    generator: Callable[[torch.Tensor], torch.Tensor]  # fake_logits -> loss


def _bce_to(logits: torch.Tensor, target: float) -> torch.Tensor:
    # exactly the tutorial baseline's nn.Sigmoid + nn.BCELoss (log clamped at -100), so its losses stay
    # bit-identical. binary_cross_entropy rejects NaN (a device-side assert on CUDA); nan_to_num changes
    # nothing else, and the training step marks a diverged step from the logits, without a sync.
    probabilities = torch.sigmoid(logits).nan_to_num(nan=0.5)
    return F.binary_cross_entropy(probabilities, torch.full_like(logits, target))


def bce_discriminator(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return _bce_to(real_logits, 1.0) + _bce_to(fake_logits, 0.0)


def bce_generator(fake_logits: torch.Tensor) -> torch.Tensor:
    return _bce_to(fake_logits, 1.0)


def non_saturating_discriminator(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-log(sigmoid(real)) - log(1 - sigmoid(fake)), computed without overflow or clamping."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def non_saturating_generator(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_logits).mean()


def hinge_discriminator(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def hinge_generator(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


LOSSES: dict[str, GANLoss] = {
    "bce": GANLoss(bce_discriminator, bce_generator),
    "non_saturating": GANLoss(non_saturating_discriminator, non_saturating_generator),
    "hinge": GANLoss(hinge_discriminator, hinge_generator),
}


def get_loss(name: str) -> GANLoss:
    if name not in LOSSES:
        raise ValueError(f"Unknown GAN loss '{name}'; choose one of {', '.join(LOSSES)}")
    return LOSSES[name]
