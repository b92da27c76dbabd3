"""Authenticity percentage (Alaa et al. 2022) as dgm-eval computes it, nearest neighbours in float64 and
in chunks (docs/metrics.md)."""

from __future__ import annotations

import torch

from gan_ignite.metrics.scores.prdc import knn_radii, nearest_neighbours


def authenticity_percentage(fake: torch.Tensor, real: torch.Tensor, real_nearest: torch.Tensor | None = None) -> float:
    """AuthPct of ``fake`` [N_f, D] against ``real`` [N_r, D], in [0, 100]; ``real_nearest``: ``knn_radii(real, 1)``."""
    if real.shape[0] < 2:
        raise ValueError(f"AuthPct needs at least 2 reference samples, got {real.shape[0]}.")
    real_nearest = knn_radii(real, 1) if real_nearest is None else real_nearest
    distance, index = nearest_neighbours(fake, real)
    authentic = real_nearest.to(distance.device, torch.float64)[index] < distance
    return 100.0 * float(authentic.double().mean())
