"""The evaluation's choices: reference subset, statistics cache, preflight limits, best checkpoint, KID size."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import subprocess

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from PIL import Image

from conftest import PYTHON, ROOT, cli_env, make_shape_images
from gan_ignite import data as data_module
from gan_ignite.config import load_config
from gan_ignite.errors import ConfigError
from gan_ignite.checkpoints import attach_best_checkpoint, best_checkpoint
from gan_ignite.evaluation import reference_file_statistics, reference_statistics, setup_evaluation
from gan_ignite.latents import evaluation_latents
from gan_ignite.metrics.scores.factory import create_metrics
from gan_ignite.metrics.networks.features import InceptionFeatures, extract_features
from gan_ignite.metrics.scores.fid import frechet_distance, mean_and_covariance
from gan_ignite.networks import build
from gan_ignite.metrics.scores.real_stats import RealStatistics
from gan_ignite.run_dir import RunDir


class CountingPixelNetwork(torch.nn.Module):
    """A cheap stand-in for Inception (per-channel means and stds of the 299x299 input) that
    counts the images it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.images_seen = 0

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.images_seen += images.shape[0]
        x = images.float()
        features = torch.cat([x.mean((2, 3)), x.std((2, 3))], dim=1)
        return features, features


def class_folder(root, classes=("a_coats", "b_shirts", "c_shoes"), per_class=10):
    for index, name in enumerate(classes):
        make_shape_images(root / name, per_class, seed=index)
    return root


def test_reference_subset_draws_from_every_class(tmp_path):
    dataset = data_module.ImageFiles(class_folder(tmp_path), data_module.build_transform(32, 3))
    for seed in range(5):
        chosen = data_module.reference_indices(len(dataset), 12, seed)
        assert len(set(chosen)) == 12 and chosen == sorted(chosen)
        assert {dataset.files[i].parent.name for i in chosen} == {"a_coats", "b_shirts", "c_shoes"}
    assert data_module.reference_indices(len(dataset), 12, 0) != data_module.reference_indices(len(dataset), 12, 1)
    assert data_module.reference_indices(len(dataset), 100, 0) == list(range(30))  # more than there is: all


def test_training_subset_is_a_seeded_sample_of_every_class(tmp_path):
    dataset = data_module.ImageFiles(class_folder(tmp_path), data_module.build_transform(32, 3))
    subsets = {}
    for seed in (0, 1):
        config = load_config(None, ["data.max_train_size=9", f"data.subset_seed={seed}"])
        subset = data_module.training_set(dataset, config.data)
        assert len(subset) == 9 and len(set(subset.indices)) == 9
        assert {dataset.files[i].parent.name for i in subset.indices} == {"a_coats", "b_shirts", "c_shoes"}
        subsets[seed] = list(subset.indices)
    assert subsets[0] != subsets[1]  # the seed picks the subset; "the first 9" would be class a only
    assert data_module.training_set(dataset, load_config(None, ["data.max_train_size=30"]).data) is dataset


def evaluation_config(root, cache, **extra):
    values = {"data.name": "imagefolder", "data.root": root, "data.channels": 3, "data.num_workers": 0,
              "eval.num_samples": 12, "eval.batch_size": 6, "eval.is_splits": 2, "eval.stats_cache_dir": cache,
              **extra}
    return load_config(None, [f"{key}={value}" for key, value in values.items()])


def test_replacing_one_image_of_the_subset_misses_the_cache(tmp_path, caplog):
    config = evaluation_config(class_folder(tmp_path / "images"), tmp_path / "cache", **{"eval.num_real": "all"})
    dataset = data_module.load_dataset(config.data)
    network = CountingPixelNetwork()
    features = InceptionFeatures(network, "tutorial")
    with caplog.at_level(logging.INFO):
        first = reference_statistics(config, dataset, features, torch.device("cpu"))
        assert network.images_seen == 30 and first.num == 30
        second = reference_statistics(config, dataset, features, torch.device("cpu"))
        assert network.images_seen == 30  # a hit: no image was read again
        np.testing.assert_array_equal(first.mu, second.mu)
        replaced = dataset.files[7]
        Image.new("RGB", (32, 32), (255, 0, 0)).save(replaced)  # same name, new content
        os.utime(replaced, ns=(1, 1))  # even with an old modification time: the size changed
        third = reference_statistics(config, dataset, features, torch.device("cpu"))
    assert network.images_seen == 60 and not np.array_equal(first.mu, third.mu)
    assert caplog.text.count("cache miss") == 2 and caplog.text.count("cache hit") == 1
    key_parts = third.meta["key_parts"]
    assert {"files", "preprocess_version", "pillow", "real_subset_seed", "feature_network"} <= set(key_parts)


def test_another_reference_subset_seed_is_another_cache_entry(tmp_path):
    root = class_folder(tmp_path / "images")
    network = CountingPixelNetwork()
    for seed in (0, 1):
        config = evaluation_config(root, tmp_path / "cache", **{"eval.real_subset_seed": seed})
        stats = reference_statistics(config, data_module.load_dataset(config.data), InceptionFeatures(network),
                                     torch.device("cpu"))
        assert stats.num == 12
    assert network.images_seen == 24 and len(list((tmp_path / "cache").glob("real_stats_*.npz"))) == 2


def test_reference_set_comes_from_the_whole_dataset_not_the_training_subset(tmp_path):
    root = class_folder(tmp_path / "images")
    stats = {}
    for size in ("null", 6):
        config = evaluation_config(root, tmp_path / "cache", **{"eval.num_real": "all", "data.max_train_size": size})
        stats[size] = reference_statistics(config, data_module.load_dataset(config.data),
                                           InceptionFeatures(CountingPixelNetwork()), torch.device("cpu"))
    assert stats[6].num == stats["null"].num == 30  # memorising 6 images must not look like quality
    np.testing.assert_array_equal(stats[6].mu, stats["null"].mu)


@pytest.mark.parametrize("overrides, key, words", [
    (["eval.num_samples=8", "eval.metrics=[fid,is]", "eval.is_splits=10"], "eval.num_samples", "is_splits=10"),
    (["eval.num_samples=5", "eval.metrics=[fid,prdc]", "eval.nearest_k=5"], "eval.num_samples", "nearest_k=5"),
    (["eval.num_samples=20", "eval.num_real=4", "eval.metrics=[prdc]", "eval.nearest_k=5"], "eval.num_real",
     "nearest_k=5"),
    (["eval.num_samples=3", "eval.metrics=[fid]", "dist.nproc_per_node=4", "train.batch_size=8"],
     "eval.num_samples", "one per process (4)"),
    (["eval.num_real=some"], "eval.num_real", "'all'"),
])
@pytest.mark.slow
def test_preflight_rejects_sample_counts_the_metrics_cannot_use(tmp_path, overrides, key, words):
    result = subprocess.run([PYTHON, "-m", "gan_ignite.train", "--config", "configs/fashion_mnist.yaml",
                             f"output_dir={tmp_path / 'run'}", *overrides], capture_output=True, text=True,
                            env=cli_env(), cwd=ROOT, timeout=120)
    assert result.returncode == 2
    assert f"'{key}'" in result.stderr and words in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_best_checkpoint_keeps_the_lowest_fid(tmp_path):
    to_save = {"generator": torch.nn.Linear(2, 2), "discriminator": torch.nn.Linear(2, 1)}
    trainer, evaluator = Engine(lambda *_: None), Engine(lambda *_: None)
    attach_best_checkpoint(evaluator, best_checkpoint(to_save, RunDir(tmp_path), evaluator, trainer))
    for iteration, fid in ((10, 50.0), (20, 30.0), (30, 40.0), (40, 20.0), (50, 25.0)):
        trainer.state.iteration = iteration
        evaluator.state.metrics = {"fid": fid}
        evaluator.fire_event(Events.COMPLETED)
        kept = [path.name for path in (tmp_path / "checkpoints").iterdir()]
        assert len(kept) == 1
    assert kept == ["best_checkpoint_40_neg_fid=-20.0000.pt"]


def test_kid_with_a_clipped_subset_size_records_it_and_no_std():
    generator = torch.Generator().manual_seed(0)
    real = RealStatistics.from_features(torch.rand(40, 8, generator=generator))
    fake = torch.rand(30, 8, generator=generator)
    results = {}
    for size in (10, 100):
        evaluator = Engine(lambda engine, batch: {"features": batch, "logits": batch})
        create_metrics(["kid"], real, kid_subsets=5, kid_subset_size=size)["kid"].attach(evaluator, "kid")
        with pytest.warns(UserWarning, match="using 30") if size == 100 else contextlib.nullcontext():
            evaluator.run([fake])
        results[size] = dict(evaluator.state.metrics)
    assert results[10]["kid_subset_size"] == 10 and results[10]["kid_std"] > 0
    assert results[100]["kid_subset_size"] == 30 and "kid_std" not in results[100]


@pytest.mark.slow
def test_a_published_statistics_file_is_the_reference_set(tmp_path):
    """TTUR / pytorch-fid / clean-fid files hold mu and sigma only: FID is computed against exactly
    them, the record names the file, its hash and the declared protocol; KID is refused."""
    features = np.random.default_rng(0).random((40, 2048))
    published = tmp_path / "fid_stats_published.npz"
    np.savez(published, mu=features.mean(0), sigma=np.cov(features, rowvar=False))
    settings = {"eval.reference_stats": published, "eval.protocol": "clean-fid", "eval.inception_weights": "random",
                "eval.num_samples": 4, "eval.batch_size": 2, "model.g_features": 8}
    config = evaluation_config(class_folder(tmp_path / "images"), tmp_path / "cache", **settings)
    dataset = data_module.load_dataset(config.data)
    torch.manual_seed(0)
    generator = build(config, "generator").eval()
    with pytest.warns(UserWarning):  # the random test network, and FID from 4 samples
        evaluation = setup_evaluation(config, dataset, generator, torch.device("cpu"))
        record = evaluation.run()
    assert not (tmp_path / "cache").exists()  # no reference image was read
    assert record["reference_stats"] == str(published) and record["protocol"] == "clean-fid"
    assert record["reference_stats_sha256"] == hashlib.sha256(published.read_bytes()).hexdigest()[:12]
    assert record["num_real"] is None and record["real_subset_seed"] is None
    with torch.no_grad():
        fake = extract_features(generator(evaluation_latents(config, 4)), evaluation.network)["features"]
    expected = frechet_distance(features.mean(0), np.cov(features, rowvar=False), *mean_and_covariance(fake))
    assert record["fid"] == pytest.approx(expected, rel=1e-6)  # other batches: round-off only
    with_kid = evaluation_config(tmp_path / "images", tmp_path / "cache", **{**settings, "eval.metrics": "[fid,kid]"})
    with pytest.raises(ConfigError, match="only mu and sigma, and KID need.* drop kid from eval.metrics"):
        reference_file_statistics(with_kid.eval, evaluation.network)


def test_evaluate_compares_with_the_record_of_the_same_settings_only(capsys):
    from gan_ignite.evaluate import compare_with_history

    record = {"iteration": 300, "fid": 20.0, "num_samples": 500, "num_real": 500, "real_subset_seed": 0,
              "feature_network": "inception", "protocol": "tutorial", "inception_precision": "fp32",
              "inception_weights": "pt_inception-2015-12-05"}
    compare_with_history(record, dict(record))
    assert "reproduces the history.jsonl record" in capsys.readouterr().out
    compare_with_history({**record, "protocol": "torch-fidelity"}, dict(record))
    assert "other settings (protocol=tutorial)" in capsys.readouterr().out
