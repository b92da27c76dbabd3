"""Inception Score by the published protocol (Salimans et al. 2016; torch-fidelity's defaults):
softmax of the logits, samples shuffled with a seeded ``np.random.RandomState``, ``splits``
equal parts, per part ``exp(mean KL(p(y|x) || p(y)))``; report mean and std over the parts."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch

from gan_ignite.metrics.options import DEFAULT_SEED
from gan_ignite.metrics._base import LOGITS_KEY, StoredRowsMetric

__all__ = ["InceptionScore", "inception_score"]



def inception_score(logits: torch.Tensor, splits: int = 10, seed: int = DEFAULT_SEED) -> tuple[float, float]:
    """(mean, std) of the Inception Score of ``logits`` [N, C]; same result as
    ``torch_fidelity.metric_isc.isc_features_to_metric`` with the same seed."""
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


class InceptionScore(StoredRowsMetric):
    """IS of the generated images from the evaluator output ``{"logits": [B, 1008], ...}``.

    Attached as ``"is"`` it writes ``engine.state.metrics["is"]`` (mean) and ``["is_std"]``.
    """

    def __init__(self, splits: int = 10, seed: int = DEFAULT_SEED, output_transform: Callable | None = None,
                 device: str | torch.device = "cpu") -> None:
        if splits < 1:
            raise ValueError(f"splits must be >= 1, got {splits}.")
        self._splits = splits
        self._seed = seed
        super().__init__(LOGITS_KEY, output_transform, device)

    def compute_from_rows(self, rows: torch.Tensor) -> dict[str, float]:
        mean, std = inception_score(rows, self._splits, self._seed)
        return {"mean": mean, "std": std}

    def result_names(self, name: str, result: Mapping[str, float]) -> dict[str, float]:
        return {name: result["mean"], f"{name}_std": result["std"]}
