"""Every latent vector a run draws, each from a stream that depends only on seeds and counters, so
resumed runs, evaluations and samples are reproducible by construction: the training step's
(:class:`LatentNoise`), the evaluations' (:func:`evaluation_latents`) and the sample command's.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch

EVAL_NOISE_OFFSET = 1_000_003  # evaluation latents: their own stream, apart from the training seed's
MAX_DRAW = 1 << 22  # candidates drawn at once when redrawing truncated components


class LatentNoise:
    """The training step's latent vectors, drawn on the device by a generator seeded from ``(seed,
    rank, iteration)`` before each draw: no host work in the step, and a run resumed from any
    checkpoint, even mid-epoch, draws exactly what the uninterrupted run drew.
    """

    def __init__(self, latent_dim: int, device: torch.device, seed: int = 0, rank: int = 0):
        self.latent_dim, self.device = latent_dim, torch.device(device)
        self.base = (int(seed) % 2**31 * 65_537 + int(rank) % 65_537) * 2**31
        self.generator = torch.Generator(device=self.device)

    def __call__(self, batch_size: int, iteration: int) -> torch.Tensor:
        self.generator.manual_seed((self.base + int(iteration)) % 2**63)  # host-side: no synchronisation
        return torch.randn(batch_size, self.latent_dim, generator=self.generator, device=self.device)


def evaluation_latents(config: Any, num_samples: int) -> torch.Tensor:
    """All latent vectors of an evaluation from one seeded stream: sample ``i`` always gets vector ``i``."""
    noise = torch.Generator().manual_seed(config.seed + EVAL_NOISE_OFFSET)
    return torch.randn(num_samples, config.model.latent_dim, generator=noise)


def sample_latents(num: int, latent_dim: int, seed: int = 0, truncation: Optional[float] = None) -> torch.Tensor:
    """``num`` latent vectors from one seeded stream; with ``truncation`` T, redrawn within ``[-T, T]``."""
    stream = torch.Generator().manual_seed(seed)
    latents = torch.randn(num, latent_dim, generator=stream)
    if truncation is not None:
        truncate_(latents, truncation, stream)
    return latents


def truncate_(latents: torch.Tensor, threshold: float, stream: torch.Generator) -> torch.Tensor:
    """Redraw, in place, every component with ``|z| > threshold`` until it lies within: the same as one
    by one in order, but in chunks sized by the acceptance probability (a small threshold stays fast)."""
    flat = latents.view(-1)
    outside = (flat.abs() > threshold).nonzero().squeeze(1)
    acceptance = math.erf(threshold / math.sqrt(2))  # P(|z| <= T) for z ~ N(0, 1)
    while len(outside):
        draw = min(MAX_DRAW, math.ceil(len(outside) / acceptance * 1.1) + 16)
        candidates = torch.randn(draw, generator=stream)
        accepted = candidates[candidates.abs() <= threshold][:len(outside)]
        flat[outside[:len(accepted)]] = accepted
        outside = outside[len(accepted):]
    return latents


def slerp(start: torch.Tensor, end: torch.Tensor, fraction: float) -> torch.Tensor:
    """Spherical interpolation between two latent vectors (linear when they are parallel)."""
    cosine = torch.dot(start.flatten(), end.flatten()) / (start.norm() * end.norm())
    omega = torch.arccos(cosine.clamp(-1.0, 1.0))
    if torch.sin(omega).abs() < 1e-6:
        return (1 - fraction) * start + fraction * end
    return (torch.sin((1 - fraction) * omega) * start + torch.sin(fraction * omega) * end) / torch.sin(omega)


def walk_latents(keys: torch.Tensor, steps: int) -> torch.Tensor:
    """``len(keys) * steps`` latents: slerp from each key to the next, the last back to the first."""
    frames = [slerp(keys[index], keys[(index + 1) % len(keys)], step / steps)
              for index in range(len(keys)) for step in range(steps)]
    return torch.stack(frames)
