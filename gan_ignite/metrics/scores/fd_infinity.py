"""FID_infinity (Chong & Forsyth 2020): FD of random subsets at several sizes N, a least-squares line
against 1/N, its value at 1/N = 0; as the authors' ``score_infinity.py``, but the sizes run from
``min_fraction * n`` to ``n`` and the permutations are seeded (docs/metrics.md).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import numpy as np
import torch

from gan_ignite.metrics.scores.fid import ROUND_OFF, _frechet, covariance_sqrt_factor, mean_and_covariance

logger = logging.getLogger(__name__)


def fd_infinity_sizes(num_samples: int, points: int = 15, min_fraction: float = 0.1) -> np.ndarray:
    """The subset sizes N of the fit, as the authors space them (truncated to integers)."""
    return np.linspace(int(min_fraction * num_samples), num_samples, points).astype(np.int64)


def min_samples_for_fit(points: int, min_fraction: float) -> int:
    """The fewest samples with a smallest subset of 2 and ``points`` different sizes."""
    smallest_total = 2 / min_fraction  # inf for a subnormal fraction such as 1e-320: no count is enough
    return max(points, int(np.ceil(smallest_total)) + 1 if np.isfinite(smallest_total) else sys.maxsize)


class FDInfinity:
    """The fit's result: ``value`` (FD at 1/N = 0), ``slope`` (of FD against 1/N) and the sizes."""

    def __init__(self, value: float, slope: float, sizes: np.ndarray) -> None:
        self.value, self.slope, self.sizes = value, slope, sizes

    def record(self, key: str) -> dict[str, Any]:
        """The record's values; a value below 0 (beyond round-off) is no distance and recorded as null."""
        value = self.value
        if value < 0:
            logger.warning("%s is undefined here: the line through FD at N = %d to %d extrapolates to %.4g at 1/N = 0, "
                           "below any distance (too few samples, or an FD that barely depends on N); recorded as "
                           "null. Report FID / FD instead, or use more samples.", key, self.sizes.min(),
                           self.sizes.max(), value)
            value = None
        return {key: value, f"{key}_min_n": int(self.sizes.min()), f"{key}_max_n": int(self.sizes.max())}


def fd_infinity(fake: torch.Tensor, real_mu: Any, real_sigma: Any, points: int = 15,
                min_fraction: float = 0.1, seed: int = 0,
                real_factor: torch.Tensor | None = None) -> FDInfinity:
    """FD_infinity of ``fake`` [n, D] against the reference N(``real_mu``, ``real_sigma``)."""
    if points < 2 or not 0 < min_fraction < 1:
        raise ValueError(f"FD_infinity needs at least 2 points and 0 < min_fraction < 1, got {points} and "
                         f"{min_fraction}.")
    num = fake.shape[0]
    if num < min_samples_for_fit(points, min_fraction):
        raise ValueError(f"FD_infinity with {points} sizes from {min_fraction:g} x n needs at least "
                         f"{min_samples_for_fit(points, min_fraction)} generated samples, got {num}.")
    mu, sigma = (torch.as_tensor(np.asarray(a, dtype=np.float64)) for a in (real_mu, real_sigma))
    factor = covariance_sqrt_factor(sigma) if real_factor is None else real_factor
    sizes = fd_infinity_sizes(num, points, min_fraction)
    rng = np.random.RandomState(seed)
    fake = fake.detach().cpu()
    distances = []
    for size in sizes:
        subset = fake[torch.from_numpy(rng.permutation(num)[:size])]
        fake_mu, fake_sigma = mean_and_covariance(subset)
        distances.append(_frechet(mu, sigma, factor, fake_mu, fake_sigma))
    slope, intercept = np.polyfit(1.0 / sizes, np.array(distances), deg=1)
    scale = max(max(distances), 1.0)
    return FDInfinity(0.0 if -ROUND_OFF * scale <= intercept < 0 else float(intercept), float(slope), sizes)
