"""Inception Score (Salimans et al. 2016) as torch-fidelity computes it: seeded shuffle, ``splits`` parts,
per part ``exp(mean KL(p(y|x) || p(y)))``, mean and std over the parts."""

from __future__ import annotations

import numpy as np
import torch

from gan_ignite.metrics.options import DEFAULT_SEED


def inception_score(logits: torch.Tensor, splits: int = 10, seed: int = DEFAULT_SEED) -> tuple[float, float]:
    """(mean, std) of the IS of ``logits`` [N, C], as ``torch_fidelity.metric_isc.isc_features_to_metric``."""
    count = logits.shape[0]
    if count < splits:
        raise ValueError(f"Inception Score with {splits} splits needs at least {splits} samples, got {count}.")
    order = torch.from_numpy(np.random.RandomState(seed).permutation(count)).to(logits.device)
    shuffled = logits.detach().double()[order]
    scores = [_split_score(shuffled[i * count // splits : (i + 1) * count // splits]) for i in range(splits)]
    return float(np.mean(scores)), float(np.std(scores))


def _split_score(logits: torch.Tensor) -> float:
    p, log_p = logits.softmax(dim=1), logits.log_softmax(dim=1)
    log_marginal = p.mean(dim=0, keepdim=True).log()
    kl = (p * (log_p - log_marginal)).sum(dim=1)
    return float(kl.mean().exp())
