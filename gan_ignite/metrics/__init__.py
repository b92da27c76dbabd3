"""Standard GAN metrics as ignite Metrics: FID, IS, KID, precision/recall/density/coverage, and
FD in any feature space, CMMD, Vendi, AuthPct, FID_inf (the registry: :data:`METRICS`).

One feature-network pass per generated image feeds every metric: the evaluator returns
``extract_features(fake_images, network)`` = ``{"features": [B, F], "logits": [B, K]}`` and the
metrics from :func:`create_metrics` pick their key. Real-set statistics are computed once
(:func:`cached_real_statistics`). ``python -m gan_ignite.metrics A B`` compares two image
folders or ``.npz`` statistics files. This package imports nothing from the rest of gan_ignite.

Layout: :mod:`~gan_ignite.metrics.networks` holds the feature networks, their preprocessing, image
reading and network files; :mod:`~gan_ignite.metrics.scores` the scores, their registry and the
reference statistics; ``_base``, ``timing`` and ``safe_files`` at the top are shared. Imports go one
way, scores -> networks -> shared (tests/test_metrics_layout.py checks it, and that there is no circle).
"""

import sys as _sys

from gan_ignite.metrics.networks import (classifier, clip, dinov2, features, folder, images, inception,
                                         preprocess)
from gan_ignite.metrics.networks.features import (
    FEATURE_NETWORKS,
    InceptionFeatures,
    extract_features,
    load_feature_network,
)
from gan_ignite.metrics.networks.images import load_image_rgb
from gan_ignite.metrics.networks.inception import (
    FIDInception,
    InceptionWeightsError,
    load_fid_inception,
    weights_tag,
)
from gan_ignite.metrics.networks.preprocess import DEFAULT_PROTOCOL, PROTOCOLS, prepare_for_inception, to_uint8
from gan_ignite.metrics.scores import (authpct, cmmd as _cmmd_module, factory, fd_infinity as _fd_infinity_module,
                                       fid, inception_score as _inception_score_module, kid, prdc, real_stats, vendi)
from gan_ignite.metrics.scores.authpct import authenticity_percentage
from gan_ignite.metrics.scores.cmmd import cmmd
from gan_ignite.metrics.scores.factory import (METRIC_NAMES, METRICS, MetricSpec, compute_from_sets, create_metrics,
                                               record_keys)
from gan_ignite.metrics.scores.fd_infinity import fd_infinity
from gan_ignite.metrics.scores.fid import FID, frechet_distance
from gan_ignite.metrics.scores.inception_score import InceptionScore, inception_score
from gan_ignite.metrics.scores.kid import KID, kernel_inception_distance
from gan_ignite.metrics.scores.prdc import PRDC, precision_recall_density_coverage
from gan_ignite.metrics.scores.real_stats import (
    RealStatistics,
    RealStatisticsError,
    cache_key,
    cached_real_statistics,
    compute_real_statistics,
)
from gan_ignite.metrics.scores.vendi import vendi_score

# The modules' paths before the split into networks/ and scores/ (gan_ignite.metrics.fid, ...) stay
# importable: each old name is the very module object of the new path in sys.modules, no copy, so
# importing or monkeypatching either path is the same thing. As before the split, the package
# attributes cmmd, fd_infinity and inception_score are the functions, not the modules.
MOVED_MODULES = {
    "networks": (classifier, clip, dinov2, features, folder, images, inception, preprocess),
    "scores": (authpct, _cmmd_module, factory, _fd_infinity_module, fid, _inception_score_module, kid, prdc,
               real_stats, vendi),
}
for _modules in MOVED_MODULES.values():
    for _module in _modules:
        _sys.modules.setdefault(f"{__name__}.{_module.__name__.rpartition('.')[2]}", _module)
del _modules, _module

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
