"""Vendi score (Friedman & Dieng 2023) as dgm-eval computes it: exp of the entropy of the eigenvalues of
the cosine kernel of the generated features, from the smaller of ``X X^T / n`` and ``X^T X / n``."""

from __future__ import annotations

import torch


def vendi_score(features: torch.Tensor) -> float:
    """Vendi score (order q = 1, cosine kernel) of ``features`` [n, d], float64."""
    rows = torch.nn.functional.normalize(features.detach().double(), dim=1)
    n, d = rows.shape
    gram = rows.T @ rows if n > d else rows @ rows.T
    eigenvalues = torch.linalg.eigvalsh(gram / n)
    positive = eigenvalues[eigenvalues > 0]  # round-off leaves tiny negative ones; 0 log 0 = 0
    return float(torch.exp(-(positive * positive.log()).sum()))
