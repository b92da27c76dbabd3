"""CMMD (Jayasumana et al. 2024, "Rethinking FID: Towards a Better Evaluation Metric for Image
Generation"): the squared maximum mean discrepancy with a Gaussian RBF kernel,

    CMMD = 1000 * (mean K(x, x') + mean K(y, y') - 2 mean K(x, y)),  K(a, b) = exp(-|a - b|^2 / (2 * 10^2)),

the estimator of the authors' reference code (google-research ``cmmd/distance.py``): the biased,
minimum-variance V-statistic of Gretton et al. 2012, Eq. (5), i.e. means over the *full* kernel
matrices, diagonal included. The authors use it on CLIP ViT-L/14@336 embeddings (unit norm); on
other features sigma = 10 is just as fixed, so values from different feature networks differ in
scale. The kernel matrices are never held whole: rows are processed in chunks, so memory is
O(chunk x n).
"""

from __future__ import annotations

import torch

from gan_ignite.metrics.scores.prdc import CHUNK, squared_distances

__all__ = ["CMMD_SCALE", "CMMD_SIGMA", "cmmd"]

CMMD_SIGMA = 10.0
CMMD_SCALE = 1000.0


def cmmd(fake: torch.Tensor, real: torch.Tensor, sigma: float = CMMD_SIGMA, scale: float = CMMD_SCALE,
         chunk: int = CHUNK) -> float:
    """CMMD between ``fake`` [N_f, D] and ``real`` [N_r, D] features (float64)."""
    fake, real = fake.detach().double(), real.detach().to(fake.device, torch.float64)
    gamma = 1.0 / (2.0 * sigma**2)
    within_fake = _mean_kernel(fake, fake, gamma, chunk)
    within_real = _mean_kernel(real, real, gamma, chunk)
    between = _mean_kernel(fake, real, gamma, chunk)
    return scale * (within_fake + within_real - 2.0 * between)


def _mean_kernel(rows: torch.Tensor, others: torch.Tensor, gamma: float, chunk: int) -> float:
    total = sum(float(torch.exp(-gamma * squared_distances(rows[start : start + chunk], others)).sum())
                for start in range(0, rows.shape[0], chunk))
    return total / (rows.shape[0] * others.shape[0])
