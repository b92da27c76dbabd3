"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel
``k(x, y) = (x.y / d + 1)^3``, averaged over random subsets drawn as torch-fidelity draws them, so with
the same seed it equals ``torch_fidelity.metric_kid.kid_features_to_metric`` up to round-off.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from gan_ignite.metrics.options import DEFAULT_SEED

# Above this many kernel entries the full kernel matrices would cost too much memory (float64).
_FULL_KERNEL_MAX_ENTRIES = 48 * 1024 * 1024


def kernel_inception_distance(fake: torch.Tensor, real: torch.Tensor, num_subsets: int = 100,
                              subset_size: int = 1000, seed: int = DEFAULT_SEED) -> tuple[float, float]:
    """(mean, std) of KID between ``fake`` [N_f, D] and ``real`` [N_r, D] features. ``subset_size``
    larger than a set is clipped to it, with a warning (torch-fidelity refuses)."""
    num_fake, num_real = fake.shape[0], real.shape[0]
    if min(num_fake, num_real) < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {num_fake} generated and {num_real} real.")
    size = min(subset_size, num_fake, num_real)
    if subset_size > size:
        warnings.warn(f"KID subset size {subset_size} is larger than the sets ({num_fake} generated, {num_real} "
                      f"real): using {size}; no standard deviation is reported for it.", stacklevel=2)
    fake, real = fake.detach().double(), real.detach().to(fake.device, torch.float64)
    rng = np.random.RandomState(seed)
    subsets = [(torch.from_numpy(rng.choice(num_fake, size, replace=False)).to(fake.device),
                torch.from_numpy(rng.choice(num_real, size, replace=False)).to(fake.device))
               for _ in range(num_subsets)]
    if num_fake**2 + num_real**2 + num_fake * num_real <= min(_FULL_KERNEL_MAX_ENTRIES, 3 * num_subsets * size**2):
        # cheaper to compute each kernel entry once for all subsets
        k_ff, k_rr, k_fr = _kernel(fake, fake), _kernel(real, real), _kernel(fake, real)
        mmds = [_unbiased_mmd2(k_ff[f][:, f], k_rr[r][:, r], k_fr[f][:, r]) for f, r in subsets]
    else:
        mmds = [_unbiased_mmd2(_kernel(fake[f], fake[f]), _kernel(real[r], real[r]), _kernel(fake[f], real[r]))
                for f, r in subsets]
    return float(np.mean(mmds)), float(np.std(mmds))


def kid_record(fake: torch.Tensor, real: torch.Tensor, num_subsets: int = 100, subset_size: int = 1000,
               seed: int = DEFAULT_SEED) -> dict[str, float | int]:
    """``{"kid", "kid_subset_size"}`` and, unless the subsets were clipped, ``"kid_std"``: subsets of
    a clipped size overlap almost entirely, so their spread says nothing about the uncertainty."""
    mean, std = kernel_inception_distance(fake, real, num_subsets, subset_size, seed)
    size = min(subset_size, fake.shape[0], real.shape[0])
    return {"kid": mean, "kid_subset_size": size, **({"kid_std": std} if size == subset_size else {})}


def _kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x @ y.T * (1.0 / x.shape[1]) + 1) ** 3


def _unbiased_mmd2(k_xx: torch.Tensor, k_yy: torch.Tensor, k_xy: torch.Tensor) -> float:
    m = k_xx.shape[0]
    within = (k_xx.sum() - k_xx.diagonal().sum()) + (k_yy.sum() - k_yy.diagonal().sum())
    return float(within / (m * (m - 1)) - 2 * k_xy.sum() / (m * m))
