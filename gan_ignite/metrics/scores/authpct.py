"""Authenticity percentage, as dgm-eval (Stein et al. 2023) computes it after Alaa et al. 2022
("How Faithful is your Synthetic Data?"): a generated sample is *authentic* when the distance to
its nearest reference sample is larger than that reference sample's distance to its own nearest
other reference sample (else it sits closer to a training image than the training data itself
does: a sign of copying). AuthPct is the percentage of authentic generated samples, in [0, 100].

Nearest neighbours are found in chunks (memory O(chunk x n)), in float64; dgm-eval uses float32
``torch.cdist`` on full matrices, which can only differ on near-ties.
"""

from __future__ import annotations

import torch

from gan_ignite.metrics.scores.prdc import knn_radii, nearest_neighbours

__all__ = ["authenticity_percentage"]


def authenticity_percentage(fake: torch.Tensor, real: torch.Tensor,
                            real_nearest: torch.Tensor | None = None) -> float:
    """AuthPct of ``fake`` [N_f, D] against ``real`` [N_r, D]. ``real_nearest`` (``knn_radii(real, 1)``,
    each reference sample's distance to its nearest other one) may be passed to skip its computation."""
    if real.shape[0] < 2:
        raise ValueError(f"AuthPct needs at least 2 reference samples, got {real.shape[0]}.")
    real_nearest = knn_radii(real, 1) if real_nearest is None else real_nearest
    distance, index = nearest_neighbours(fake, real)
    authentic = real_nearest.to(distance.device, torch.float64)[index] < distance
    return 100.0 * float(authentic.double().mean())
