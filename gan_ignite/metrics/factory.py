"""Build the evaluator's metrics by name."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from ignite.metrics import Metric

from gan_ignite.metrics.fid import FID
from gan_ignite.metrics.inception_score import DEFAULT_SEED, InceptionScore
from gan_ignite.metrics.kid import KID
from gan_ignite.metrics.prdc import PRDC
from gan_ignite.metrics.real_stats import RealStatistics

__all__ = ["METRIC_NAMES", "create_metrics"]

METRIC_NAMES = ("fid", "is", "kid", "prdc")
_NEEDS_REAL = {"fid": "mu/sigma", "kid": "features", "prdc": "features"}


def create_metrics(names: Iterable[str], real_stats: RealStatistics | None, is_splits: int = 10,
                   kid_subsets: int = 100, kid_subset_size: int = 1000, nearest_k: int = 5,
                   device: str | torch.device = "cpu", seed: int = DEFAULT_SEED) -> dict[str, Metric]:
    """``{name: Metric}`` for ``names`` in {"fid", "is", "kid", "prdc"}; attach each under its name.

    Every metric reads the evaluator output ``{"features", "logits"}`` of the generated images.
    "is" adds "is_std", "kid" adds "kid_std", "prdc" writes "precision", "recall", "density",
    "coverage" to ``engine.state.metrics``.
    """
    names = list(dict.fromkeys(names))
    unknown = [name for name in names if name not in METRIC_NAMES]
    if unknown:
        raise ValueError(f"Unknown metric name(s) {unknown}; choose from {list(METRIC_NAMES)}.")
    _check_real_stats(names, real_stats)
    builders = {
        "fid": lambda: FID(real_stats, device=device),
        "is": lambda: InceptionScore(splits=is_splits, seed=seed, device=device),
        "kid": lambda: KID(real_stats.features, kid_subsets, kid_subset_size, seed=seed, device=device),
        "prdc": lambda: PRDC(real_stats.features, nearest_k=nearest_k, device=device),
    }
    return {name: builders[name]() for name in names}


def _check_real_stats(names: list[str], real_stats: RealStatistics | None) -> None:
    for name in names:
        if name not in _NEEDS_REAL:
            continue
        if real_stats is None or (_NEEDS_REAL[name] == "features" and real_stats.features is None):
            raise ValueError(f"Metric '{name}' needs real statistics with {_NEEDS_REAL[name]}; "
                             f"{'none were given' if real_stats is None else 'the given ones have no features'} "
                             "(compute them with compute_real_statistics, which keeps the features).")
