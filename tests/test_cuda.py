"""The GPU path end to end: skipped without a CUDA device (``scripts/gpu_check.py`` runs the suite on
one). Everything else in the suite also runs on the GPU there: ``idist.device()`` picks CUDA."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from conftest import TRAIN_ONLY, assert_same_losses, tiny_overrides, train_records
from gan_ignite.train import main

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("switches", [["train.amp=true"], ["train.channels_last=true"],
                                      ["train.amp=true", "train.channels_last=true", "train.compile=true"]])
def test_speed_switches_train_and_evaluate_on_cuda(switches, tmp_path, image_folder, stats_cache):
    run_dir = tmp_path / "switched"
    assert main(tiny_overrides(run_dir, image_folder, stats_cache) + switches) == 0
    records = train_records(run_dir)
    evaluations = [line for line in (run_dir / "history.jsonl").read_text().splitlines() if '"kind": "eval"' in line]
    assert len(records) == 6 and all(abs(record["Loss_G"]) < 100 for record in records)
    assert len(evaluations) == 2


def test_deterministic_cuda_run_resumes_to_the_uninterrupted_losses(tmp_path, image_folder, stats_cache):
    deterministic = {**TRAIN_ONLY, "train.deterministic": "true", "train.max_epochs": 4}
    reference = tmp_path / "reference"
    assert main(tiny_overrides(reference, image_folder, stats_cache, **deterministic)) == 0
    resumed = tmp_path / "resumed"
    assert main(tiny_overrides(resumed, image_folder, stats_cache, **{**deterministic, "train.max_epochs": 2})) == 0
    assert main(tiny_overrides(resumed, image_folder, stats_cache,
                               **{**deterministic, "train.resume_from": "auto"})) == 0
    assert_same_losses(train_records(resumed), train_records(reference))


def test_every_switch_set_trains_and_resumes_on_cuda(tmp_path, image_folder, stats_cache):
    switches = {**TRAIN_ONLY, "train.amp": "true", "train.channels_last": "true", "train.compile": "true"}
    run_dir = tmp_path / "all_switches"
    assert main(tiny_overrides(run_dir, image_folder, stats_cache, **{**switches, "train.max_epochs": 2})) == 0
    assert main(tiny_overrides(run_dir, image_folder, stats_cache,
                               **{**switches, "train.max_epochs": 3, "train.resume_from": "auto"})) == 0
    records = train_records(run_dir)
    assert [record["iteration"] for record in records] == list(range(1, len(records) + 1)) and len(records) > 3
    assert all(abs(record["Loss_G"]) < 100 for record in records)


@pytest.mark.parametrize("protocol", ["tutorial", "pytorch-fid", "torch-fidelity", "clean-fid"])
def test_each_protocol_on_cuda_equals_its_cpu_value(protocol, random_inception):
    from gan_ignite.metrics.networks.features import InceptionFeatures
    from gan_ignite.metrics.networks.preprocess import prepare_for_inception

    images = torch.randint(0, 256, (6, 3, 64, 64), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    on_cpu = prepare_for_inception(images, protocol)
    on_cuda = prepare_for_inception(images.cuda(), protocol, torch.device("cuda"))
    assert on_cuda.is_cuda and torch.allclose(on_cuda.cpu(), on_cpu, atol=1e-5)
    cpu_features = InceptionFeatures(random_inception, protocol, "random")(on_cpu)[0]
    cuda_network = InceptionFeatures(copy.deepcopy(random_inception).cuda(), protocol, "random", "fp32")
    cuda_features = cuda_network(cuda_network.prepare(images.cuda()))[0].cpu()
    assert torch.allclose(cuda_features, cpu_features, rtol=1e-4, atol=1e-4 * float(cpu_features.abs().max()))


@pytest.mark.parametrize("protocol", ["pytorch-fid", "torch-fidelity"])
def test_generated_images_never_leave_the_gpu_in_the_tensor_protocols(protocol, random_inception, monkeypatch):
    from gan_ignite.metrics.networks.features import InceptionFeatures, prepare_images

    network = InceptionFeatures(copy.deepcopy(random_inception).cuda(), protocol, "random")
    assert network.host_work is False  # no producer thread: every stage is a kernel on the GPU
    fake_images = torch.rand(4, 3, 32, 32, device="cuda") * 2 - 1

    def no_copies(*_args, **_kwargs):
        raise AssertionError("a generated image was copied to the host")

    monkeypatch.setattr(torch.Tensor, "cpu", no_copies)
    prepared = prepare_images(fake_images, network)
    assert prepared.is_cuda and prepared.shape == (4, 3, 299, 299)


def test_tf32_is_recorded_and_its_statistics_are_cached_apart(tmp_path, image_folder):
    cache = tmp_path / "cache"
    for precision in ("fp32", "tf32"):
        run_dir = tmp_path / precision
        assert main(tiny_overrides(run_dir, image_folder, cache, **{"train.max_epochs": 1,
                                                                    "eval.precision": precision})) == 0
        records = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
        evaluation = [record for record in records if record["kind"] == "eval"][-1]
        assert evaluation["inception_precision"] == precision
        assert {"generate", "prepare", "network", "metrics", "total"} <= set(evaluation["seconds"])
    assert len(list(cache.glob("real_stats_*.npz"))) == 2  # the tf32 run did not reuse the fp32 statistics
