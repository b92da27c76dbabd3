"""Vendi score (Friedman & Dieng 2023, "The Vendi Score: A Diversity Evaluation Metric for Machine
Learning"), as dgm-eval (Stein et al. 2023) computes it on generated features: the exponential of
the Shannon entropy of the eigenvalues of ``K / n``, with the cosine kernel ``K = X X^T`` of the
L2-normalised features ``X`` [n, d]. It lies in [1, min(n, d)]: the "effective number" of distinct
samples.

``X X^T / n`` and ``X^T X / n`` have the same nonzero eigenvalues, so the smaller of the two is
decomposed: d x d when n > d (the vendi-score package's ``score_dual``), which keeps 50,000
samples of 2048-d features cheap (one 2048 x 2048 eigenproblem).
"""

from __future__ import annotations

import torch

__all__ = ["vendi_score"]


def vendi_score(features: torch.Tensor) -> float:
    """Vendi score (order q = 1, cosine kernel) of ``features`` [n, d], float64."""
    rows = torch.nn.functional.normalize(features.detach().double(), dim=1)
    n, d = rows.shape
    gram = rows.T @ rows if n > d else rows @ rows.T
    eigenvalues = torch.linalg.eigvalsh(gram / n)
    positive = eigenvalues[eigenvalues > 0]  # round-off leaves tiny negative ones; 0 log 0 = 0
    return float(torch.exp(-(positive * positive.log()).sum()))
