"""CMMD (Jayasumana et al. 2024): the authors' biased V-statistic of the squared MMD with a Gaussian
kernel (sigma 10, times 1000), the kernel matrices taken in row chunks (docs/metrics.md)."""

from __future__ import annotations

import torch

from gan_ignite.metrics.scores.prdc import CHUNK, squared_distances


CMMD_SIGMA = 10.0
CMMD_SCALE = 1000.0


def cmmd(fake: torch.Tensor, real: torch.Tensor, chunk: int = CHUNK) -> float:
    """CMMD between ``fake`` [N_f, D] and ``real`` [N_r, D] features (float64)."""
    fake, real = fake.detach().double(), real.detach().to(fake.device, torch.float64)
    gamma = 1.0 / (2.0 * CMMD_SIGMA**2)
    return CMMD_SCALE * (_mean_kernel(fake, fake, gamma, chunk) + _mean_kernel(real, real, gamma, chunk)
                    - 2.0 * _mean_kernel(fake, real, gamma, chunk))


def _mean_kernel(rows: torch.Tensor, others: torch.Tensor, gamma: float, chunk: int) -> float:
    total = sum(float(torch.exp(-gamma * squared_distances(rows[start : start + chunk], others)).sum())
                for start in range(0, rows.shape[0], chunk))
    return total / (rows.shape[0] * others.shape[0])
