"""Fréchet Inception Distance on 2048-d pool3 features.

    FID = |mu_r - mu_g|^2 + tr(S_r) + tr(S_g) - 2 tr sqrt(S_r S_g)

The fake-set moments are accumulated as float64 running sums (sum x, sum x x^T, one matrix
product per batch, all-reduced across ranks). ``tr sqrt(S_r S_g)`` comes from a symmetric
eigenproblem instead of ``scipy.linalg.sqrtm``: with ``S_r = A A^T`` (``A = V sqrt(L)`` from
``eigh(S_r)``) the eigenvalues of ``S_r S_g`` equal those of the symmetric PSD matrix
``A^T S_g A``, so the trace is ``sum(sqrt(eigvalsh(A^T S_g A)))``. Tiny negative eigenvalues
(round-off of singular covariances) are clipped to 0, which is what taking the real part of
sqrtm's result does in pytorch-fid. ``A`` of the real set is computed once and reused.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
from ignite.exceptions import NotComputableError
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce

from gan_ignite.metrics._base import FEATURES_KEY, SelectKey

ROUND_OFF = 1e-6  # relative to the traces: a distance this close to 0 is 0


ArrayLike = Any  # np.ndarray | torch.Tensor


class GaussianStats(Protocol):
    mu: Any
    sigma: Any
    num: int


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), computed in float64."""
    mu1, sigma1, mu2, sigma2 = (_as_float64(a) for a in (mu1, sigma1, mu2, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.numel(), mu1.numel()):
        raise ValueError(f"Shapes do not match: mu {tuple(mu1.shape)} / {tuple(mu2.shape)}, "
                         f"sigma {tuple(sigma1.shape)} / {tuple(sigma2.shape)}.")
    return _frechet(mu1, sigma1, covariance_sqrt_factor(sigma1), mu2, sigma2)


def covariance_sqrt_factor(sigma: ArrayLike) -> torch.Tensor:
    """``A`` [D, rank] with ``A @ A.T == sigma`` for a symmetric PSD ``sigma``.

    Eigenvalues below round-off level (``D * eps * max``) are dropped: a covariance of N < D
    samples has rank N - 1, and the later eigenproblem shrinks to rank x rank.
    """
    sigma = _as_float64(sigma)
    eigenvalues, eigenvectors = torch.linalg.eigh((sigma + sigma.T) / 2)
    tolerance = sigma.shape[0] * torch.finfo(torch.float64).eps * eigenvalues.abs().max().clamp(min=1e-300)
    keep = eigenvalues > tolerance
    return eigenvectors[:, keep] * eigenvalues[keep].sqrt()


def trace_sqrt_product(sigma1_factor: torch.Tensor, sigma2: ArrayLike) -> float:
    """``tr sqrt(sigma1 @ sigma2)`` given ``covariance_sqrt_factor(sigma1)``."""
    sigma2 = _as_float64(sigma2).to(sigma1_factor.device)
    inner = sigma1_factor.T @ sigma2 @ sigma1_factor
    eigenvalues = torch.linalg.eigvalsh((inner + inner.T) / 2)
    return float(eigenvalues.clamp(min=0).sqrt().sum())


def mean_and_covariance(features: torch.Tensor, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 mean and unbiased covariance (N - 1, like ``np.cov``) of ``features`` [N, D]."""
    if features.shape[0] < 2:
        raise ValueError(f"Need at least 2 samples for a covariance, got {features.shape[0]}.")
    mean = features.double().mean(dim=0)
    scatter = torch.zeros((features.shape[1],) * 2, dtype=torch.float64, device=features.device)
    for start in range(0, features.shape[0], chunk):
        centred = features[start : start + chunk].double() - mean
        scatter.addmm_(centred.T, centred)
    return mean, scatter / (features.shape[0] - 1)


def _frechet(mu1: torch.Tensor, sigma1: torch.Tensor, factor1: torch.Tensor,
             mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    diff = mu1 - mu2.to(mu1.device)
    traces = float(torch.trace(sigma1)) + float(torch.trace(sigma2))
    distance = float(diff @ diff) + traces - 2 * trace_sqrt_product(factor1, sigma2)
    # equal sets give 0 up to round-off (either sign): within it, a distance is 0
    return 0.0 if abs(distance) <= ROUND_OFF * max(traces, 1.0) else distance


def _as_float64(array: ArrayLike) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array.detach().to(torch.float64)
    return torch.from_numpy(np.asarray(array, dtype=np.float64))


class FID(Metric):
    """FID of the generated images against precomputed real statistics.

    Fed the evaluator output ``{"features": [B, 2048], ...}`` of the *generated* images. Only the
    fake side is accumulated; the real side (``real_stats.mu/.sigma``) never changes, so its
    matrix square-root factor is computed once and reused every epoch.
    """

    _state_dict_all_req_keys = ("_sum", "_scatter", "_num")

    def __init__(self, real_stats: GaussianStats, output_transform: Callable | None = None,
                 device: str | torch.device = "cpu") -> None:
        self._real_mu = _as_float64(real_stats.mu)
        self._real_sigma = _as_float64(real_stats.sigma)
        self._real_num = int(real_stats.num)
        self._real_factor: torch.Tensor | None = None
        super().__init__(output_transform=output_transform or SelectKey(FEATURES_KEY), device=device)
        # Sums are taken around the real mean: the fake mean is close to it, so the one-pass
        # covariance formula keeps its precision (and every rank uses the same shift).
        self._shift = self._real_mu.to(self._device)

    @reinit__is_reduced
    def reset(self) -> None:
        dim = self._real_mu.numel()
        self._sum = torch.zeros(dim, dtype=torch.float64, device=self._device)
        self._scatter = torch.zeros((dim, dim), dtype=torch.float64, device=self._device)
        self._num = 0

    @reinit__is_reduced
    def update(self, features: torch.Tensor) -> None:
        if features.dim() != 2 or features.shape[1] != self._real_mu.numel():
            raise ValueError(f"FID expects features [B, {self._real_mu.numel()}], got {tuple(features.shape)}.")
        shifted = features.detach().to(self._device, torch.float64) - self._shift
        self._sum += shifted.sum(dim=0)
        self._scatter.addmm_(shifted.T, shifted)
        self._num += features.shape[0]

    @sync_all_reduce("_sum", "_scatter", "_num")
    def compute(self) -> float:
        if self._num < 2:
            raise NotComputableError("FID needs at least 2 generated samples before it can be computed.")
        self._warn_if_few_samples()
        mean_shift = self._sum / self._num
        fake_sigma = (self._scatter - torch.outer(self._sum, mean_shift)) / (self._num - 1)
        return _frechet(self._real_mu, self._real_sigma, self._factor(), self._shift.cpu() + mean_shift.cpu(),
                        fake_sigma.cpu())

    def _factor(self) -> torch.Tensor:
        if self._real_factor is None:
            self._real_factor = covariance_sqrt_factor(self._real_sigma)
        return self._real_factor

    def _warn_if_few_samples(self) -> None:
        dim = self._real_mu.numel()
        real = self._real_num or dim  # 0: a published statistics file that does not say
        if min(self._num, real) < dim:
            warnings.warn(
                f"FID from {self._num} generated and {self._real_num or 'an unknown number of'} real samples "
                f"(fewer than the {dim} feature dimensions): the covariance is singular and FID is biased upwards; "
                f"papers use 10,000-50,000 images.",
                stacklevel=2,
            )
