"""What the GPU path changed, checked on the CPU: the protocols' two stages, the precision choice and
where it is recorded, the fastest layout per device, folders of mixed image sizes, and the time of
an evaluation's parts. The same on a GPU: tests/test_cuda.py (skipped without one)."""

from __future__ import annotations

import json
import time
import warnings

import numpy as np
import pytest
import torch

from conftest import make_shape_images
from gan_ignite import data as data_module
from gan_ignite.config import load_config
from gan_ignite.errors import ConfigError
from gan_ignite.evaluation import reference_file_statistics, setup_evaluation
from gan_ignite.metrics.cli import main as metrics_main
from gan_ignite.metrics.networks.features import InceptionFeatures, finish_staged, load_feature_network
from gan_ignite.metrics.networks.folder import folder_features
from gan_ignite.metrics.networks.inception import effective_precision, fastest_layout
from gan_ignite.metrics.networks.preprocess import (PROTOCOLS, finish_for_inception, prepare_for_inception,
                                                    stage_one_for_inception)
from gan_ignite.metrics.scores.real_stats import RealStatistics
from gan_ignite.networks import build


def random_images(count: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (count, channels, size, size), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 64), (3, 299)])
def test_the_two_stages_of_a_protocol_give_its_whole_result(protocol, channels, size):
    images = random_images(3, channels, size)
    whole = prepare_for_inception(images, protocol)
    staged = torch.stack([stage_one_for_inception(image, protocol) for image in images])
    assert torch.equal(finish_for_inception(staged, protocol), whole)
    # the CPU stage is the PIL resize alone: the tensor protocols leave the uint8 image to the device
    if PROTOCOLS[protocol].on_host is None:
        assert torch.equal(staged, images)
    else:
        assert staged.shape[-2:] == (299, 299) and (staged.dtype == torch.uint8) == (protocol == "tutorial")


def test_precision_is_fp32_or_tf32_and_a_cpu_computes_fp32():
    assert effective_precision("tf32", "cuda") == "tf32" and effective_precision("tf32", "cpu") == "fp32"
    assert effective_precision("fp32", "cuda:1") == "fp32"
    with pytest.raises(ValueError, match="bf16"):
        effective_precision("bf16", "cuda")
    # the fastest measured layouts: channels-last on the CPU, NCHW for fp32 and NHWC for TF32 on an H200
    assert fastest_layout("cpu", "tf32") == torch.channels_last
    assert fastest_layout("cuda", "fp32") == torch.contiguous_format
    assert fastest_layout("cuda", "tf32") == torch.channels_last


def test_a_cpu_asked_for_tf32_computes_and_records_fp32(random_inception):
    fp32 = InceptionFeatures(random_inception, "torch-fidelity", "random", "fp32")
    asked_tf32 = InceptionFeatures(random_inception, "torch-fidelity", "random", "tf32")
    assert asked_tf32.precision == "fp32" and asked_tf32.tag == fp32.tag == "inception-random-torch-fidelity"
    assert random_inception.allow_tf32 is False


def test_tf32_is_only_for_the_inception():
    with pytest.raises(ConfigError, match="eval.precision.*applies to the FID Inception only"):
        load_config(None, ["eval.precision=tf32", "eval.feature_network=classifier:/some/classifier.pt"])
    with pytest.raises(ConfigError, match="eval.precision.*'bf16' is not one of fp32, tf32"):
        load_config(None, ["eval.precision=bf16"])


def test_a_statistics_file_of_the_other_precision_is_refused(tmp_path):
    features = np.random.default_rng(0).random((20, 2048)).astype(np.float32)
    meta = {"protocol": "torch-fidelity", "inception_precision": "tf32", "feature_network": "inception-random-torch-fidelity"}
    path = RealStatistics.from_features(features, meta).save(tmp_path / "tf32.npz")
    config = load_config(None, [f"eval.reference_stats={path}", "eval.protocol=torch-fidelity",
                                "eval.inception_weights=random"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        network = load_feature_network("inception", "cpu", inception_weights="random", protocol="torch-fidelity")
    with pytest.raises(ConfigError, match="computed at precision tf32, this evaluation computes fp32.*"
                                          "eval.precision=tf32"):
        reference_file_statistics(config.eval, network)


def test_the_metrics_cli_refuses_sets_of_two_precisions(tmp_path, capsys):
    features = np.random.default_rng(0).random((20, 8)).astype(np.float32)
    paths = []
    for precision in ("fp32", "tf32"):
        meta = {"protocol": "torch-fidelity", "inception_precision": precision, "feature_network": "inception-x"}
        paths.append(str(RealStatistics.from_features(features + len(paths), meta).save(tmp_path / f"{precision}.npz")))
    assert metrics_main([*paths, "--metrics", "fid"]) == 2
    assert "different precisions" in capsys.readouterr().err
    same = str(RealStatistics.from_features(features + 1, {"protocol": "torch-fidelity", "inception_precision": "fp32",
                                                           "feature_network": "inception-x"}).save(tmp_path / "b.npz"))
    assert metrics_main([paths[0], same, "--metrics", "fid", "--json", str(tmp_path / "out.json")]) == 0
    assert json.loads((tmp_path / "out.json").read_text())["fid"] > 0


def test_folder_statistics_record_the_precision(tmp_path, random_inception_weights):
    make_shape_images(tmp_path / "a", 4, size=32)
    out = tmp_path / "a.npz"
    assert metrics_main([str(tmp_path / "a"), "--save-stats", str(out), "--inception-weights",
                         str(random_inception_weights), "--device", "cpu", "--precision", "tf32"]) == 0
    assert RealStatistics.load(out).meta["inception_precision"] == "fp32"  # what a CPU computed, whatever was asked


@pytest.mark.parametrize("protocol", ["torch-fidelity", "clean-fid"])
def test_a_folder_of_mixed_image_sizes_gives_each_images_own_features(protocol, tmp_path, random_inception):
    make_shape_images(tmp_path / "mixed" / "small", 3, size=28, seed=1)
    make_shape_images(tmp_path / "mixed" / "large", 2, size=40, seed=2)
    network = InceptionFeatures(random_inception, protocol, "random")
    features, _ = folder_features(tmp_path / "mixed", network, batch_size=5)
    files = sorted((tmp_path / "mixed").rglob("*.png"))
    from gan_ignite.metrics.networks.images import load_image_rgb

    one_by_one = torch.cat([network(finish_staged(network.prepare_one(load_image_rgb(path)).unsqueeze(0), network))[0]
                            for path in files])
    assert torch.allclose(features, one_by_one, rtol=1e-5, atol=1e-5 * float(one_by_one.abs().max()))


def test_reference_images_reach_the_network_as_uint8(tmp_path):
    make_shape_images(tmp_path / "images", 6, size=32)
    config = load_config(None, ["data.name=imagefolder", f"data.root={tmp_path / 'images'}", "data.channels=3",
                                "data.num_workers=0"])
    dataset = data_module.load_dataset(config.data)
    images, skipped = next(iter(data_module.eval_loader(dataset, list(range(6)), 6, 0)))
    assert images.dtype == torch.uint8 and skipped == 0
    decoded = torch.stack([dataset[index] for index in range(6)])
    assert torch.equal(data_module.to_uint8(decoded), images)  # exact: no pixel changes on the way


class SlowNetwork(torch.nn.Module):
    """A cheap stand-in for Inception that takes ``delay`` seconds per forward pass."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.anchor, self.delay = torch.nn.Parameter(torch.zeros(1)), delay

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        time.sleep(self.delay)
        features = torch.cat([images.mean((2, 3)), images.std((2, 3))], dim=1)
        return features, features


def test_an_evaluations_record_says_which_part_took_the_time(tmp_path, monkeypatch):
    make_shape_images(tmp_path / "images", 12, size=32)
    config = load_config(None, ["data.name=imagefolder", f"data.root={tmp_path / 'images'}", "data.channels=3",
                                "data.num_workers=0", "eval.num_samples=12", "eval.batch_size=4",
                                "eval.metrics=[fid]", f"eval.stats_cache_dir={tmp_path / 'cache'}"])
    dataset = data_module.load_dataset(config.data)
    from gan_ignite import evaluation as evaluation_module

    monkeypatch.setattr(evaluation_module, "load_feature_network",
                        lambda *args, **kwargs: InceptionFeatures(SlowNetwork(0.2), "pytorch-fid", "slow"))
    generator = build(config, "generator").eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        record = setup_evaluation(config, dataset, generator, torch.device("cpu")).run()
    seconds = record["seconds"]
    assert set(seconds) == {"generate", "prepare", "network", "metrics", "total"}  # one process: no gather
    assert seconds["network"] >= 3 * 0.2  # three batches of four
    assert seconds["network"] > max(seconds["generate"], seconds["prepare"], seconds["metrics"])
    assert seconds["total"] >= seconds["network"]
