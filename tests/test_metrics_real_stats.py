"""Real statistics: computation, the .npz format (pytorch-fid readable), the cache."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from pytorch_fid.fid_score import compute_statistics_of_path

from gan_ignite.metrics.networks.features import InceptionFeatures, extract_features
from gan_ignite.metrics.scores.real_stats import (
    RealStatistics,
    RealStatisticsError,
    cache_key,
    cached_real_statistics,
    compute_real_statistics,
)


class _PixelExtractor(torch.nn.Module):
    """A cheap stand-in for Inception: 8 per-image pixel statistics of the float 299x299 input."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.inputs: list[torch.Tensor] = []

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.inputs.append(images)
        x = images.float()
        features = torch.stack([x.mean((1, 2, 3)), x.std((1, 2, 3)), *x.mean((2, 3)).T,
                                x[:, :, :150].mean((1, 2, 3)), x[:, :, :, :150].mean((1, 2, 3)),
                                x.amax((1, 2, 3))], dim=1)
        return features, features[:, :4]


def _stats(count: int = 30, dim: int = 8) -> RealStatistics:
    features = np.random.default_rng(0).random((count, dim), dtype=np.float32)
    return RealStatistics.from_features(features, {"dataset": "test"})


def test_compute_real_statistics_preprocesses_like_the_evaluator():
    extractor = _PixelExtractor()
    images = torch.rand(10, 1, 28, 28) * 2 - 1
    batches = [(images[:6], torch.zeros(6)), (images[6:], torch.zeros(4))]  # (images, labels) tuples
    stats = compute_real_statistics(batches, extractor, protocol="clean-fid", max_samples=9)
    assert stats.num == 9 and stats.features.shape == (9, 8) and stats.features.dtype == np.float32
    assert all(batch.shape[1:] == (3, 299, 299) and batch.dtype == torch.float32 for batch in extractor.inputs)
    direct = extract_features(images[:9], InceptionFeatures(_PixelExtractor(), "clean-fid"))["features"]
    np.testing.assert_allclose(stats.features, direct.numpy())
    np.testing.assert_allclose(stats.mu, direct.double().mean(0).numpy(), rtol=1e-12)
    np.testing.assert_allclose(stats.sigma, np.cov(direct.double().numpy(), rowvar=False), rtol=1e-10, atol=1e-12)


def test_save_load_round_trip_is_atomic_and_pytorch_fid_readable(tmp_path):
    stats = _stats()
    path = stats.save(tmp_path / "sub" / "stats.npz")
    assert sorted(p.name for p in path.parent.iterdir()) == ["stats.npz"]  # no temp file left behind
    loaded = RealStatistics.load(path)
    np.testing.assert_array_equal(loaded.features, stats.features)
    np.testing.assert_array_equal(loaded.sigma, stats.sigma)
    assert loaded.num == 30 and loaded.meta == {"dataset": "test"}
    mu, sigma = compute_statistics_of_path(str(path), None, 1, 8, "cpu")
    np.testing.assert_array_equal(mu, stats.mu)
    np.testing.assert_array_equal(sigma, stats.sigma)


def test_load_reads_pytorch_fid_files_and_names_bad_ones(tmp_path):
    np.savez(tmp_path / "fid.npz", mu=np.zeros(4), sigma=np.eye(4))
    loaded = RealStatistics.load(tmp_path / "fid.npz")
    assert loaded.features is None and loaded.sigma.shape == (4, 4)
    np.savez(tmp_path / "other.npz", mean=np.zeros(4))
    (tmp_path / "broken.npz").write_bytes(b"garbage")
    for name, expected in (("other.npz", "lacks \\['mu', 'sigma'\\]"), ("broken.npz", "Cannot read"),
                           ("missing.npz", "Cannot read")):
        with pytest.raises(RealStatisticsError, match=expected) as info:
            RealStatistics.load(tmp_path / name)
        assert name in str(info.value)


def test_cache_computes_once_then_hits(tmp_path, caplog):
    calls = []

    def compute() -> RealStatistics:
        calls.append(1)
        return _stats()

    key = {"dataset": "cifar10", "image_size": 32, "protocol": "tutorial", "weights": "random", "num": 30}
    with caplog.at_level(logging.INFO, logger="gan_ignite.metrics.scores.real_stats"):
        first = cached_real_statistics(tmp_path, key, compute)
        second = cached_real_statistics(tmp_path, dict(reversed(list(key.items()))), compute)
    assert len(calls) == 1 and "cache miss" in caplog.text and "cache hit" in caplog.text
    np.testing.assert_array_equal(first.sigma, second.sigma)
    assert second.meta["key_parts"] == key
    cached_real_statistics(tmp_path, {**key, "protocol": "clean-fid"}, compute)
    assert len(calls) == 2 and len(list(tmp_path.glob("real_stats_*.npz"))) == 2


def test_unreadable_cache_file_is_recomputed(tmp_path, caplog):
    key = {"dataset": "x"}
    (tmp_path / f"real_stats_{cache_key(key)}.npz").write_bytes(b"truncated")
    stats = cached_real_statistics(tmp_path, key, _stats)
    assert stats.num == 30 and "Ignoring unreadable" in caplog.text
    assert RealStatistics.load(tmp_path / f"real_stats_{cache_key(key)}.npz").num == 30
