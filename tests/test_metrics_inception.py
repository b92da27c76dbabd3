"""The FID Inception network: weights loading, errors, input contract, outputs."""

from __future__ import annotations

import urllib.error
import warnings

import pytest
import torch

from gan_ignite.metrics.networks import inception
from gan_ignite.metrics.scores.factory import check_network_supports
from gan_ignite.metrics.networks.features import FeatureNetworkError, InceptionFeatures
from gan_ignite.metrics.networks.inception import (
    FID_WEIGHTS_URL,
    InceptionWeightsError,
    load_fid_inception,
    weights_tag,
)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_random_weights_are_deterministic_warned_and_leave_global_rng_alone(random_inception):
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    with pytest.warns(UserWarning, match="meaningless"):
        model = load_fid_inception("random")
    assert torch.equal(torch.rand(3), expected_next)
    assert _same_weights(model, random_inception)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert weights_tag("random") == "random" and weights_tag(None) == weights_tag("") == "pt_inception-2015-12-05"


def _inputs(count: int) -> torch.Tensor:
    """What the first convolution sees: 299x299 images scaled to [-1, 1]."""
    return torch.randint(0, 256, (count, 3, 299, 299), generator=torch.Generator().manual_seed(count)) / 127.5 - 1


def test_outputs_are_pool3_features_and_unbiased_logits(random_inception):
    images = _inputs(2)
    features, logits = random_inception(images)
    assert features.shape == (2, 2048) and logits.shape == (2, 1008)
    assert features.dtype == logits.dtype == torch.float32
    assert features.std() > 0.1  # the random init does not collapse the features
    torch.testing.assert_close(logits, features @ random_inception.fc.weight.T)


@pytest.mark.parametrize("images, error", [
    (torch.zeros(1, 3, 299, 299, dtype=torch.uint8), TypeError),
    (torch.zeros(1, 3, 64, 64), ValueError),
    (torch.zeros(1, 1, 299, 299), ValueError),
])
def test_input_contract_is_enforced(random_inception, images, error):
    with pytest.raises(error, match="float tensor N x 3 x 299 .*prepare_for_inception"):
        random_inception(images)


def test_weights_file_round_trip_and_tag(random_inception, random_inception_weights):
    model = load_fid_inception(str(random_inception_weights))
    assert _same_weights(model, random_inception)
    assert weights_tag(str(random_inception_weights)).startswith("sha256-")


def test_missing_corrupt_and_foreign_weight_files_name_the_path(tmp_path):
    missing = tmp_path / "nope.pth"
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    foreign = tmp_path / "foreign.pth"
    torch.save(torch.nn.Linear(3, 4).state_dict(), foreign)
    for path, expected in ((missing, "cannot be read"), (corrupt, "cannot be read .*damaged"), (foreign, "does not fit")):
        with pytest.raises(InceptionWeightsError, match=expected) as info:
            load_fid_inception(str(path))
        assert str(path) in str(info.value) and "pt_inception-2015-12-05-6726825d.pth" in str(info.value)
        assert "inception-2015-12-05.pt" in str(info.value)


def test_download_failure_says_how_to_fix_it(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(InceptionWeightsError) as info:
        load_fid_inception(None)
    message = str(info.value)
    assert FID_WEIGHTS_URL in message and "eval.inception_weights=" in message and "--inception-weights" in message
    assert "eval.inception_weights=random" in message  # the offline way to try the app
    assert str(tmp_path / "hub" / "checkpoints") in message


def test_download_path_loads_the_hub_state_dict(monkeypatch, random_inception):
    calls = []

    def fake_download(url, **kwargs):
        calls.append(url)
        return random_inception.state_dict()

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # real weights: no "random" warning
        model = load_fid_inception("")
    assert calls == [FID_WEIGHTS_URL] and _same_weights(model, random_inception)
    assert inception.FIDInception is type(model)


def test_channels_last_layout_keeps_the_features_of_the_standard_layout(random_inception):
    """The fast NHWC forward (the default) against the NCHW one pytorch-fid runs: within 1e-5."""
    import copy

    images = _inputs(3)
    assert random_inception.memory_format == torch.channels_last
    standard = copy.deepcopy(random_inception).use_memory_format(torch.contiguous_format)
    fast_features, fast_logits = random_inception(images)
    features, logits = standard(images)
    assert (fast_features - features).abs().max() <= 1e-5 * features.abs().max()
    assert (fast_logits - logits).abs().max() <= 1e-5 * logits.abs().max()


def test_nvidia_torchscript_is_recognised_and_gives_its_own_pool3_and_probabilities(nvidia_torchscripts):
    full_path, _, _ = nvidia_torchscripts
    images = torch.randint(0, 256, (2, 3, 299, 299), generator=torch.Generator().manual_seed(3)).float()
    script = torch.jit.load(str(full_path))
    with torch.no_grad():
        pool3, probabilities = script(images, return_features=True), script(images, no_output_bias=True)
    model = load_fid_inception(str(full_path))  # recognised by content, not by name
    features, logits = model((images - 128) / 128)  # NVIDIA's scaling, as the torch-fidelity protocol gives it
    assert model.has_logits and pool3.std() > 0.1
    assert (features - pool3).abs().max() <= 1e-5 * pool3.abs().max()
    assert (logits.softmax(1) - probabilities).abs().max() <= 1e-5 * probabilities.max()
    assert weights_tag(str(full_path)).startswith("sha256-")


def test_pool3_only_torchscript_loads_and_refuses_the_inception_score(nvidia_torchscripts, tmp_path):
    full_path, pool3_path, _ = nvidia_torchscripts
    full, pool3_only = load_fid_inception(str(full_path)), load_fid_inception(str(pool3_path))
    images = _inputs(1)
    assert not pool3_only.has_logits and pool3_only(images)[1].shape == (1, 0)
    assert torch.equal(pool3_only(images)[0], full(images)[0])
    network = InceptionFeatures(pool3_only, "torch-fidelity", "nvidia")
    check_network_supports(["fid", "kid"], network)
    with pytest.raises(FeatureNetworkError, match="IS need.* class logits.* drop is"):
        check_network_supports(["fid", "is"], network)
    foreign = tmp_path / "other.pt"
    torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))), str(foreign))
    with pytest.raises(InceptionWeightsError, match="not NVIDIA's FID Inception") as info:
        load_fid_inception(str(foreign))
    assert str(foreign) in str(info.value)
