"""IS, KID and PRDC against independent computations, torch-fidelity and prdc."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from prdc import compute_prdc
from scipy.special import logsumexp, softmax
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric

from gan_ignite.metrics.scores import kid as kid_module
from gan_ignite.metrics.scores.inception_score import inception_score
from gan_ignite.metrics.scores.kid import kernel_inception_distance
from gan_ignite.metrics.scores.prdc import precision_recall_density_coverage

TORCH_FIDELITY_KID = {"kid_kernel": "poly", "kid_kernel_poly_degree": 3, "kid_kernel_poly_gamma": None,
                      "kid_kernel_poly_coef0": 1, "verbose": False}


def _numpy_inception_score(logits: np.ndarray, splits: int, seed: int) -> tuple[float, float]:
    """The published protocol (openai/improved-gan's split bounds) written out in numpy/scipy."""
    count = len(logits)
    logits = logits[np.random.RandomState(seed).permutation(count)]
    scores = []
    for i in range(splits):
        part = slice(i * count // splits, (i + 1) * count // splits)
        p = softmax(logits[part], axis=1)
        log_p = logits[part] - logsumexp(logits[part], axis=1, keepdims=True)
        marginal = p.mean(axis=0)
        scores.append(np.exp(np.mean(np.sum(p * (log_p - np.log(marginal)), axis=1))))
    return float(np.mean(scores)), float(np.std(scores))


@pytest.mark.parametrize("count, splits", [(200, 10), (103, 4)])
def test_inception_score_matches_numpy_and_torch_fidelity(count, splits):
    logits = np.random.default_rng(1).normal(scale=3.0, size=(count, 1008))
    ours = inception_score(torch.from_numpy(logits).float(), splits, seed=7)
    reference = _numpy_inception_score(logits.astype(np.float32).astype(np.float64), splits, seed=7)
    fidelity = isc_features_to_metric(torch.from_numpy(logits).float(), splits, shuffle=True, rng_seed=7)
    assert ours == pytest.approx(reference, rel=1e-9)
    assert ours == pytest.approx((fidelity["inception_score_mean"], fidelity["inception_score_std"]), rel=1e-9)
    assert ours[0] > 1.5 and ours[1] > 0


def test_inception_score_needs_a_sample_per_split():
    with pytest.raises(ValueError, match="at least 10 samples"):
        inception_score(torch.zeros(5, 1008))


def _kid_features(seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    fake = torch.from_numpy(np.abs(rng.normal(size=(150, 32))))
    real = torch.from_numpy(np.abs(rng.normal(size=(180, 32)) * 1.1))
    return fake, real


@pytest.mark.parametrize("full_kernel", [True, False])
def test_kid_equals_torch_fidelity_with_the_same_subsets(monkeypatch, full_kernel):
    monkeypatch.setattr(kid_module, "_FULL_KERNEL_MAX_ENTRIES", 10**9 if full_kernel else 0)
    fake, real = _kid_features()
    ours = kernel_inception_distance(fake, real, num_subsets=20, subset_size=60, seed=11)
    fidelity = kid_features_to_metric(fake, real, kid_subsets=20, kid_subset_size=60, rng_seed=11,
                                      **TORCH_FIDELITY_KID)
    expected = (fidelity["kernel_inception_distance_mean"], fidelity["kernel_inception_distance_std"])
    assert ours == pytest.approx(expected, rel=1e-9)
    assert ours[0] > 1e-4


def test_kid_clips_the_subset_size_with_a_warning():
    fake, real = _kid_features()
    with pytest.warns(UserWarning, match="using 150"):
        clipped = kernel_inception_distance(fake, real, num_subsets=3, subset_size=1000)
    fidelity = kid_features_to_metric(fake, real, kid_subsets=3, kid_subset_size=150, rng_seed=2020,
                                      **TORCH_FIDELITY_KID)
    assert clipped[0] == pytest.approx(fidelity["kernel_inception_distance_mean"], rel=1e-9)


@pytest.mark.parametrize("nearest_k", [1, 5])
def test_prdc_equals_the_prdc_package(nearest_k, capsys):
    rng = np.random.default_rng(3)
    real = rng.normal(size=(1100, 16))  # more rows than one distance chunk
    fake = rng.normal(loc=0.3, scale=1.2, size=(300, 16))
    ours = precision_recall_density_coverage(torch.from_numpy(real), torch.from_numpy(fake), nearest_k)
    expected = compute_prdc(real, fake, nearest_k)
    assert ours == pytest.approx({key: float(value) for key, value in expected.items()}, abs=1e-12)
    assert 0 < ours["precision"] < 1 and 0 < ours["coverage"] < 1
