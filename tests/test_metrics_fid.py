"""FID math against pytorch-fid and ignite, and the accumulating FID Metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import pytorch_fid_frechet_distance as calculate_frechet_distance
from ignite.metrics import FID as IgniteFID

from gan_ignite.metrics.scores.fid import FID, frechet_distance
from gan_ignite.metrics.scores.real_stats import RealStatistics

DIM = 64


def _feature_sets(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(DIM, DIM)) / np.sqrt(DIM)
    real = np.abs(rng.normal(size=(count, DIM)) @ mixing)  # correlated, non-negative like pool3
    fake = np.abs(rng.normal(loc=0.1, size=(count, DIM)) @ mixing * 1.2)
    return real, fake


def _moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _ignite_fid(real: np.ndarray, fake: np.ndarray) -> float:
    metric = IgniteFID(num_features=DIM, feature_extractor=torch.nn.Identity())
    metric.update((torch.from_numpy(real), torch.from_numpy(fake)))
    return metric.compute()


@pytest.mark.parametrize("count", [300, 40], ids=["n>d", "n<d"])
def test_frechet_distance_equals_pytorch_fid_and_ignite(count):
    real, fake = _feature_sets(count)
    ours = frechet_distance(*_moments(real), *_moments(fake))
    assert ours > 1.0
    assert ours == pytest.approx(calculate_frechet_distance(*_moments(real), *_moments(fake)), rel=1e-6)
    assert ours == pytest.approx(_ignite_fid(real, fake), rel=1e-6)


def test_frechet_distance_of_identical_sets_is_zero():
    real, _ = _feature_sets(300)
    assert abs(frechet_distance(*_moments(real), *_moments(real))) < 1e-8


@pytest.mark.parametrize("count", [300, 40], ids=["n>d", "n<d"])
def test_fid_metric_accumulates_batches_like_the_full_computation(count):
    real, fake = _feature_sets(count)
    fake = fake.astype(np.float32)
    metric = FID(RealStatistics.from_features(real.astype(np.float32)))
    for batch in np.array_split(fake, 7):
        metric.update(torch.from_numpy(batch))
    expected = calculate_frechet_distance(*_moments(real.astype(np.float32).astype(np.float64)),
                                          *_moments(fake.astype(np.float64)))
    if count < DIM:
        with pytest.warns(UserWarning, match="singular"):
            value = metric.compute()
    else:
        value = metric.compute()
    assert value == pytest.approx(expected, rel=1e-6)


def test_fid_metric_stays_accurate_for_features_far_from_zero():
    real, fake = _feature_sets(300)
    real, fake = real + 1e3, fake + 1e3  # one-pass sums without the shift would lose ~6 digits here
    metric = FID(RealStatistics.from_features(real))
    metric.update(torch.from_numpy(fake))
    assert metric.compute() == pytest.approx(calculate_frechet_distance(*_moments(real), *_moments(fake)), rel=1e-6)


def test_fid_metric_rejects_wrong_feature_width():
    real, _ = _feature_sets(300)
    metric = FID(RealStatistics.from_features(real))
    with pytest.raises(ValueError, match=f"features \\[B, {DIM}\\]"):
        metric.update(torch.zeros(4, DIM + 1))
