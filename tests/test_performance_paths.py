"""The fast paths give the same results as the plain ones: data cache, prefetching, cached PRDC
radii, the GPU switches (run on the CPU here), and the benchmark keeps working."""

from __future__ import annotations

import json
import subprocess
import threading

import pytest
import torch
from ignite.engine import Engine
from PIL import Image

from conftest import PYTHON, ROOT, TRAIN_ONLY, cli_env, make_shape_images, tiny_overrides, train_records
from gan_ignite import data as data_module
from gan_ignite.config import load_config
from gan_ignite.metrics.scores import prdc as prdc_module
from gan_ignite.metrics.scores import factory as factory_module
from gan_ignite.metrics.scores.factory import create_metrics
from gan_ignite.metrics.networks.features import Prefetch
from gan_ignite.metrics.scores.real_stats import RealStatistics
from gan_ignite.train import main


def folder_config(root, cache):
    return load_config(None, ["data.name=imagefolder", f"data.root={root}", "data.channels=3", "data.num_workers=0",
                              "data.cache=true", f"eval.stats_cache_dir={cache}"])


def test_data_cache_serves_exactly_the_decoded_images_and_is_rebuilt_when_a_file_changes(tmp_path):
    root = tmp_path / "images"
    make_shape_images(root / "a", 10)
    make_shape_images(root / "b", 6, seed=3, mode="L")
    config = folder_config(root, tmp_path / "cache")
    dataset = data_module.load_dataset(config.data)
    cached = data_module.cached_images(dataset, config.data, tmp_path / "cache")
    assert len(cached) == len(dataset) == 16
    for index in range(16):
        assert torch.equal(cached[index], dataset[index])  # bit for bit what decoding gives
    built = sorted((tmp_path / "cache").glob("images_*.npy"))
    assert len(built) == 1
    modified = built[0].stat().st_mtime_ns
    data_module.cached_images(dataset, config.data, tmp_path / "cache")  # reused, not rebuilt
    assert built[0].stat().st_mtime_ns == modified
    Image.new("RGB", (32, 32), (0, 255, 0)).save(dataset.files[4])
    again = data_module.cached_images(dataset, config.data, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("images_*.npy"))) == 2
    assert torch.equal(again[4], dataset[4]) and not torch.equal(again[4], cached[4])


def test_training_from_the_data_cache_gives_the_same_losses(tmp_path, image_folder, stats_cache):
    runs = {}
    for cache in ("false", "true"):
        run_dir = tmp_path / f"cache_{cache}"
        assert main(tiny_overrides(run_dir, image_folder, stats_cache, **{
            **TRAIN_ONLY, "train.max_epochs": 2, "data.cache": cache})) == 0
        runs[cache] = [(r["Loss_G"], r["Loss_D"]) for r in train_records(run_dir)]
    assert len(runs["true"]) == 12 and runs["true"] == runs["false"]


@pytest.mark.parametrize("switch", ["train.channels_last=true", "train.amp=true"])
def test_gpu_switches_train_on_the_cpu(switch, tmp_path, image_folder, stats_cache):
    run_dir = tmp_path / "switched"
    assert main(tiny_overrides(run_dir, image_folder, stats_cache, **{**TRAIN_ONLY, "train.max_epochs": 1})
                + [switch]) == 0
    records = train_records(run_dir)
    assert len(records) == 6 and all(abs(r["Loss_G"]) < 100 for r in records)


def test_prefetch_keeps_order_raises_the_producers_error_and_releases_it():
    assert list(Prefetch(range(50), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("broken batch")

    with pytest.raises(ValueError, match="broken batch"):
        list(Prefetch(failing()))
    before = threading.active_count()
    for item in Prefetch(range(1000), depth=2):
        if item == 3:
            break  # the consumer stops early: the producer must not stay blocked
    assert threading.active_count() == before


def test_prdc_computes_the_real_radii_once_per_run(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    real = RealStatistics.from_features(torch.rand(40, 8, generator=generator))
    fake = torch.rand(30, 8, generator=generator)
    sizes = []
    original = prdc_module.knn_radii

    def counting(features, nearest_k):
        sizes.append(features.shape[0])
        return original(features, nearest_k)

    monkeypatch.setattr(prdc_module, "knn_radii", counting)  # the generated set's radii
    monkeypatch.setattr(factory_module, "knn_radii", counting)  # the real set's, cached by the registry's metric
    evaluator = Engine(lambda engine, batch: {"features": batch, "logits": batch})
    create_metrics(["prdc"], real, nearest_k=3)["prdc"].attach(evaluator, "prdc")
    evaluator.run([fake], max_epochs=1)
    first = dict(evaluator.state.metrics)
    evaluator.run([fake], max_epochs=1)
    assert sizes == [40, 30, 30]  # the real radii at the first evaluation only, the fake ones each time
    assert evaluator.state.metrics == first


@pytest.mark.slow
def test_benchmark_runs_with_tiny_settings(tmp_path):
    out = tmp_path / "benchmark.json"
    result = subprocess.run([PYTHON, "scripts/benchmark.py", "--iters", "3", "--warmup", "1", "--eval-samples", "8",
                             "--eval-batch-size", "4", "--image-size", "32", "--width", "8", "--batch-size", "8",
                             "--images", "32", "--repeats", "1", "--num-workers", "0", "--data-cache", "--peers",
                             "--peer-images", "8", "--peer-protocols", "torch-fidelity", "--json", str(out)],
                            capture_output=True, text=True, env=cli_env(), cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    values = json.loads(out.read_text())
    for key in ("train_img_per_s", "plain_img_per_s", "train_ratio_vs_plain", "eval_img_per_s",
                "inception_only_img_per_s", "eval_ratio_vs_inception", "seed_eval_img_per_s", "eval_speedup_vs_seed",
                "peak_rss_mb", "cached_train_img_per_s", "loader_img_per_s", "cached_loader_img_per_s"):
        assert values[key] > 0, key
    assert values["device"].startswith("cpu") and values["cuda_peak_mb"] is None
    assert values["train_ratio_vs_plain"] == pytest.approx(values["train_img_per_s"] / values["plain_img_per_s"])
    # (d) our CLI and torch-fidelity, whole processes on the same two folders: the same FID, a measured ratio.
    # 8 images give a rank-7 covariance of 2048 dimensions: torch-fidelity >= 0.4 takes the trace term from the
    # non-symmetric eigvals of sigma1 @ sigma2, whose ~2041 zero eigenvalues come out as +-1e-13 noise, and their
    # square roots add ~1e-5 (relative) to its FID; the parity tests at full rank hold ours to 1e-6.
    assert values["ours_fid"]["torch-fidelity"] == pytest.approx(values["peer_fid"]["torch-fidelity"], rel=1e-4)
    assert values["peer_speedup_min"] == pytest.approx(
        values["peer_seconds"]["torch-fidelity"] / values["ours_seconds"]["torch-fidelity"])


@pytest.mark.slow
def test_gpu_check_dry_run_writes_every_figure(tmp_path):
    """Every step of the GPU check (two switch sets, one protocol, to stay quick on a CPU) writes its
    figures, phases and verdicts; what a GPU run of it records is what this dry run records."""
    out = tmp_path / "benchmarks"
    result = subprocess.run([PYTHON, "scripts/gpu_check.py", "--device", "cpu", "--quick", "--switches", "plain",
                             "amp", "--protocols", "torch-fidelity", "--out", str(out)],
                            capture_output=True, text=True, env=cli_env(), cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "gpu.json").read_text())
    assert report["environment"]["torch"] == torch.__version__ and report["environment"]["device"] == "cpu"
    for switch in ("plain", "amp"):
        training = report["training"][switch]
        assert training["train_ratio_vs_plain"] > 0 and training["host_overhead_us_per_iteration"] > 0, training
        assert {"setup", "warmup", "timed"} <= set(training["phase_seconds"]), training["phase_seconds"]
    tf = report["evaluation"]["eval_by_protocol"]["torch-fidelity"]
    assert tf["eval_ratio_vs_inception"] > 0 and tf["eval_seconds_parts"]["network"] > 0
    assert report["full_evaluation"]["full_eval_samples"] == 20 and report["full_evaluation"]["full_eval_fid"] > 0
    torchrun = report["torchrun"]
    assert "error" not in torchrun, torchrun
    assert 0 <= torchrun["exit_delay_seconds"] < 30 and torchrun["eval_seconds_parts"]["total"] > 0
    assert set(report["peers"]["peers_by_precision"]) == {"fp32"}  # TF32 is a GPU's: on a CPU, fp32 once
    assert report["tests"]["exit_code"] == 0 and "failed" not in report["tests"]["counts"]
    assert report["check_seconds"] > 0
    assert {"train_ratio_vs_plain[plain]", "train_ratio_vs_plain[amp]", "host_overhead_us_per_iteration[amp]",
            "eval_ratio_vs_inception[torch-fidelity]", "full_eval_time_vs_inception", "exit_delay_seconds",
            "peer_speedup_min[fp32]", "check_seconds"} <= set(report["targets"])
    table = (out / "gpu.md").read_text()
    assert "| plain |" in table and "| amp |" in table and "20 samples, FID + IS" in table
