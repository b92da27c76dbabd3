"""Standard GAN metrics as ignite Metrics: FID, IS, KID, precision/recall/density/coverage.

One Inception pass per generated image feeds every metric: the evaluator returns
``extract_inception_outputs(fake_images, extractor)`` = ``{"features": [B, 2048], "logits":
[B, 1008]}`` and the metrics from :func:`create_metrics` pick their key. Real-set statistics are
computed once (:func:`cached_real_statistics`). ``python -m gan_ignite.metrics A B`` compares
two image folders or ``.npz`` statistics files.
"""

from gan_ignite.metrics.factory import METRIC_NAMES, create_metrics
from gan_ignite.metrics.fid import FID, frechet_distance
from gan_ignite.metrics.inception import (
    FIDInception,
    InceptionWeightsError,
    load_fid_inception,
    weights_tag,
)
from gan_ignite.metrics.inception_score import InceptionScore, inception_score
from gan_ignite.metrics.kid import KID, kernel_inception_distance
from gan_ignite.metrics.prdc import PRDC, precision_recall_density_coverage
from gan_ignite.metrics.preprocess import load_image_rgb, resize_for_inception, to_uint8
from gan_ignite.metrics.real_stats import (
    RealStatistics,
    RealStatisticsError,
    cache_key,
    cached_real_statistics,
    compute_real_statistics,
    extract_inception_outputs,
)

__all__ = [
    "FID",
    "KID",
    "METRIC_NAMES",
    "PRDC",
    "FIDInception",
    "InceptionScore",
    "InceptionWeightsError",
    "RealStatistics",
    "RealStatisticsError",
    "cache_key",
    "cached_real_statistics",
    "compute_real_statistics",
    "create_metrics",
    "extract_inception_outputs",
    "frechet_distance",
    "inception_score",
    "kernel_inception_distance",
    "load_fid_inception",
    "load_image_rgb",
    "precision_recall_density_coverage",
    "resize_for_inception",
    "to_uint8",
    "weights_tag",
]
