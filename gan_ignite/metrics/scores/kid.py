"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD^2 with the cubic polynomial
kernel ``k(x, y) = (x.y / d + 1)^3``, averaged over random subsets.

Subsets are drawn exactly as torch-fidelity draws them (``np.random.RandomState(seed)``, per
subset ``choice(n_fake, m, replace=False)`` then ``choice(n_real, m, replace=False)``), so with
the same seed and float64 features our value equals
``torch_fidelity.metric_kid.kid_features_to_metric(fake, real)`` up to round-off.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import numpy as np
import torch

from gan_ignite.metrics._base import FEATURES_KEY, StoredRowsMetric
from gan_ignite.metrics.options import DEFAULT_SEED

__all__ = ["KID", "effective_subset_size", "kernel_inception_distance", "kid_record"]

# Above this many kernel entries the full kernel matrices would cost too much memory (float64).
_FULL_KERNEL_MAX_ENTRIES = 48 * 1024 * 1024


def kernel_inception_distance(fake: torch.Tensor, real: torch.Tensor, num_subsets: int = 100,
                              subset_size: int = 1000, seed: int = DEFAULT_SEED) -> tuple[float, float]:
    """(mean, std) of KID between ``fake`` [N_f, D] and ``real`` [N_r, D] features.

    ``subset_size`` larger than either set is clipped to the smaller set (with a warning;
    torch-fidelity refuses instead); the std of clipped subsets is meaningless (they overlap).
    """
    subset_size = _clip_subset_size(subset_size, fake.shape[0], real.shape[0])
    fake, real = fake.detach().double(), real.detach().to(fake.device, torch.float64)
    subsets = _draw_subsets(fake.shape[0], real.shape[0], num_subsets, subset_size, seed)
    mmd_of = _full_kernel_mmd if _full_kernel_is_cheaper(fake, real, num_subsets, subset_size) else _subset_mmd
    mmds = np.array(mmd_of(fake, real, subsets))
    return float(mmds.mean()), float(mmds.std())


def kid_record(fake: torch.Tensor, real: torch.Tensor, num_subsets: int = 100, subset_size: int = 1000,
               seed: int = DEFAULT_SEED) -> dict[str, float | int]:
    """``{"kid", "kid_subset_size"}`` and, unless the subsets were clipped, ``"kid_std"``: subsets of
    a clipped size overlap almost entirely, so their spread says nothing about the uncertainty."""
    mean, std = kernel_inception_distance(fake, real, num_subsets, subset_size, seed)
    size = effective_subset_size(subset_size, fake.shape[0], real.shape[0])
    return {"kid": mean, "kid_subset_size": size, **({"kid_std": std} if size == subset_size else {})}


def effective_subset_size(subset_size: int, num_fake: int, num_real: int) -> int:
    """The subset size KID uses: ``subset_size`` clipped to the smaller set."""
    return min(subset_size, num_fake, num_real)


def _clip_subset_size(subset_size: int, num_fake: int, num_real: int) -> int:
    smallest = min(num_fake, num_real)
    if smallest < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {num_fake} generated and {num_real} real.")
    if subset_size > smallest:
        warnings.warn(f"KID subset size {subset_size} is larger than the sets ({num_fake} generated, {num_real} "
                      f"real): using {smallest}; no standard deviation is reported for it.", stacklevel=3)
    return effective_subset_size(subset_size, num_fake, num_real)


def _draw_subsets(num_fake: int, num_real: int, num_subsets: int, size: int, seed: int) -> list[tuple]:
    rng = np.random.RandomState(seed)
    draws = []
    for _ in range(num_subsets):
        fake_index = rng.choice(num_fake, size, replace=False)
        real_index = rng.choice(num_real, size, replace=False)
        draws.append((torch.from_numpy(fake_index), torch.from_numpy(real_index)))
    return draws


def _kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x @ y.T * (1.0 / x.shape[1]) + 1) ** 3


def _unbiased_mmd2(k_xx: torch.Tensor, k_yy: torch.Tensor, k_xy: torch.Tensor) -> float:
    m = k_xx.shape[0]
    within = (k_xx.sum() - k_xx.diagonal().sum()) + (k_yy.sum() - k_yy.diagonal().sum())
    return float(within / (m * (m - 1)) - 2 * k_xy.sum() / (m * m))


def _subset_mmd(fake: torch.Tensor, real: torch.Tensor, subsets: list[tuple]) -> list[float]:
    mmds = []
    for fake_index, real_index in subsets:
        x, y = fake[fake_index.to(fake.device)], real[real_index.to(fake.device)]
        mmds.append(_unbiased_mmd2(_kernel(x, x), _kernel(y, y), _kernel(x, y)))
    return mmds


def _full_kernel_is_cheaper(fake: torch.Tensor, real: torch.Tensor, num_subsets: int, size: int) -> bool:
    entries = fake.shape[0] ** 2 + real.shape[0] ** 2 + fake.shape[0] * real.shape[0]
    return entries <= min(_FULL_KERNEL_MAX_ENTRIES, 3 * num_subsets * size * size)


def _full_kernel_mmd(fake: torch.Tensor, real: torch.Tensor, subsets: list[tuple]) -> list[float]:
    """Same values as :func:`_subset_mmd`, but each kernel entry is computed once for all subsets."""
    k_ff, k_rr, k_fr = _kernel(fake, fake), _kernel(real, real), _kernel(fake, real)
    mmds = []
    for fake_index, real_index in subsets:
        fi, ri = fake_index.to(fake.device), real_index.to(fake.device)
        mmds.append(_unbiased_mmd2(k_ff[fi][:, fi], k_rr[ri][:, ri], k_fr[fi][:, ri]))
    return mmds


class KID(StoredRowsMetric):
    """KID of the generated images (evaluator output ``{"features": [B, 2048], ...}``) against
    the stored real features. Attached as ``"kid"`` it writes ``"kid"`` and ``"kid_std"``."""

    def __init__(self, real_features: torch.Tensor | np.ndarray, num_subsets: int = 100, subset_size: int = 1000,
                 seed: int = DEFAULT_SEED, output_transform: Callable | None = None,
                 device: str | torch.device = "cpu") -> None:
        if num_subsets < 1 or subset_size < 2:
            raise ValueError(f"KID needs num_subsets >= 1 and subset_size >= 2, got {num_subsets}, {subset_size}.")
        self._real = torch.as_tensor(real_features, dtype=torch.float32)
        self._num_subsets, self._subset_size, self._seed = num_subsets, subset_size, seed
        super().__init__(FEATURES_KEY, output_transform, device)

    def compute_from_rows(self, rows: torch.Tensor) -> dict[str, float | int]:
        return kid_record(rows, self._real.to(rows.device), self._num_subsets, self._subset_size, self._seed)

    def result_names(self, name: str, result: Mapping[str, float]) -> dict[str, float]:
        return {name + key[len("kid"):]: value for key, value in result.items()}
