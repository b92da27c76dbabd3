"""Precision / recall (Kynkäänniemi et al. 2019) and density / coverage (Naeem et al. 2020) as
``prdc.compute_prdc``, distances in float64 and in chunks of rows (memory O(chunk x N))."""

from __future__ import annotations

import torch

PRDC_KEYS = ("precision", "recall", "density", "coverage")
CHUNK = 1024


def precision_recall_density_coverage(real: torch.Tensor, fake: torch.Tensor, nearest_k: int = 5,
                                      real_radii: torch.Tensor | None = None) -> dict[str, float]:
    """PRDC of ``fake`` [N_f, D] against ``real`` [N_r, D] (``real_radii``: :func:`knn_radii` of ``real``)."""
    real, fake = real.detach().double(), fake.detach().to(real.device, torch.float64)
    if min(real.shape[0], fake.shape[0]) <= nearest_k:
        raise ValueError(f"PRDC with nearest_k={nearest_k} needs more than {nearest_k} samples per set, got "
                         f"{real.shape[0]} real and {fake.shape[0]} generated.")
    real_radii = knn_radii(real, nearest_k) if real_radii is None else real_radii.to(real.device, torch.float64)
    fake_radii = knn_radii(fake, nearest_k)
    fake_hits = torch.zeros(fake.shape[0], dtype=torch.float64, device=real.device)
    recalled, covered = [], []
    for start in range(0, real.shape[0], CHUNK):
        distances = _distances(real[start : start + CHUNK], fake)
        inside_real_ball = distances < real_radii[start : start + CHUNK, None]
        fake_hits += inside_real_ball.sum(dim=0)
        recalled.append((distances < fake_radii[None, :]).any(dim=1))
        covered.append(distances.min(dim=1).values < real_radii[start : start + CHUNK])
    return {"precision": float((fake_hits > 0).double().mean()), "recall": float(torch.cat(recalled).double().mean()),
            "density": float(fake_hits.mean() / nearest_k), "coverage": float(torch.cat(covered).double().mean())}


def squared_distances(rows: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """``|row - other|^2`` [len(rows), len(others)] (clipped at 0 against round-off)."""
    squared = (rows * rows).sum(1, keepdim=True) + (others * others).sum(1) - 2 * rows @ others.T
    return squared.clamp_(min=0)


def _distances(rows: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    return squared_distances(rows, others).sqrt_()


def nearest_neighbours(rows: torch.Tensor, others: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance, index) of the nearest row of ``others`` for each row of ``rows``, float64, in chunks."""
    rows, others = rows.detach().double(), others.detach().to(rows.device, torch.float64)
    nearest = [_distances(rows[start : start + CHUNK], others).min(dim=1) for start in range(0, rows.shape[0], CHUNK)]
    return torch.cat([found.values for found in nearest]), torch.cat([found.indices for found in nearest])


def knn_radii(features: torch.Tensor, nearest_k: int) -> torch.Tensor:
    """Distance of each row to its k-th nearest other row (the row itself is the 0-th), float64."""
    features = features.detach().double()
    radii = [_distances(features[start : start + CHUNK], features).kthvalue(nearest_k + 1, dim=1).values
             for start in range(0, features.shape[0], CHUNK)]
    return torch.cat(radii)
