"""Standard GAN metrics as ignite Metrics: FID, IS, KID, precision/recall/density/coverage, and
FD in any feature space, CMMD, Vendi, AuthPct, FID_inf (the registry: :data:`METRICS`).

One feature-network pass per generated image feeds every metric: the evaluator returns
``extract_features(fake_images, network)`` = ``{"features": [B, F], "logits": [B, K]}`` and the
metrics from :func:`create_metrics` pick their key. Real-set statistics are computed once
(:func:`cached_real_statistics`). ``python -m gan_ignite.metrics A B`` compares two image
folders or ``.npz`` statistics files. This package imports nothing from the rest of gan_ignite.
"""

from gan_ignite.metrics.authpct import authenticity_percentage
from gan_ignite.metrics.cmmd import cmmd
from gan_ignite.metrics.factory import METRIC_NAMES, METRICS, MetricSpec, compute_from_sets, create_metrics, record_keys
from gan_ignite.metrics.fd_infinity import fd_infinity
from gan_ignite.metrics.features import (
    FEATURE_NETWORKS,
    InceptionFeatures,
    extract_features,
    load_feature_network,
)
from gan_ignite.metrics.fid import FID, frechet_distance
from gan_ignite.metrics.images import load_image_rgb
from gan_ignite.metrics.inception import (
    FIDInception,
    InceptionWeightsError,
    load_fid_inception,
    weights_tag,
)
from gan_ignite.metrics.inception_score import InceptionScore, inception_score
from gan_ignite.metrics.kid import KID, kernel_inception_distance
from gan_ignite.metrics.prdc import PRDC, precision_recall_density_coverage
from gan_ignite.metrics.preprocess import DEFAULT_PROTOCOL, PROTOCOLS, prepare_for_inception, to_uint8
from gan_ignite.metrics.real_stats import (
    RealStatistics,
    RealStatisticsError,
    cache_key,
    cached_real_statistics,
    compute_real_statistics,
)
from gan_ignite.metrics.vendi import vendi_score


__all__ = [
    "DEFAULT_PROTOCOL",
    "PROTOCOLS",
    "FEATURE_NETWORKS",
    "FID",
    "KID",
    "METRICS",
    "METRIC_NAMES",
    "PRDC",
    "FIDInception",
    "InceptionFeatures",
    "InceptionScore",
    "InceptionWeightsError",
    "MetricSpec",
    "RealStatistics",
    "RealStatisticsError",
    "authenticity_percentage",
    "cache_key",
    "cached_real_statistics",
    "cmmd",
    "compute_from_sets",
    "compute_real_statistics",
    "create_metrics",
    "extract_features",
    "fd_infinity",
    "frechet_distance",
    "inception_score",
    "kernel_inception_distance",
    "load_feature_network",
    "load_fid_inception",
    "load_image_rgb",
    "precision_recall_density_coverage",
    "prepare_for_inception",
    "record_keys",
    "to_uint8",
    "vendi_score",
    "weights_tag",
]
