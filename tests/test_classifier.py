"""The domain classifier: training with Ignite, saving, preprocessing, and FID in its feature space
(offline) for training, the evaluate CLI and the folder CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SHARED_DATASETS, make_shape_images
from gan_ignite import data as data_module
from gan_ignite.config import load_config
from gan_ignite.evaluate import main as evaluate_main
from gan_ignite.metrics.cli import main as metrics_main
from gan_ignite.metrics.networks.classifier import (DomainClassifier, load_classifier, load_classifier_features,
                                                    prepare_for_classifier, save_classifier)
from gan_ignite.metrics.networks.features import FeatureNetworkError, extract_features, load_feature_network
from gan_ignite.metrics.scores.fid import frechet_distance
from gan_ignite.metrics.scores.real_stats import RealStatistics
from gan_ignite.train import main as train_main
from gan_ignite.train_classifier import main as train_classifier_main

needs_fashion_mnist = pytest.mark.skipif(not (SHARED_DATASETS / "FashionMNIST" / "raw").is_dir(),
                                         reason="real Fashion-MNIST not here")
FASHION = ["--config", "configs/fashion_mnist.yaml", f"data.root={SHARED_DATASETS}", "data.download=false",
           "data.num_workers=0"]


@pytest.fixture(scope="module")
def trained_classifier(tmp_path_factory) -> Path:
    """One epoch on 3,000 real Fashion-MNIST images (about 15 s here)."""
    if not (SHARED_DATASETS / "FashionMNIST" / "raw").is_dir():
        pytest.skip("real Fashion-MNIST not here")
    out = tmp_path_factory.mktemp("classifier") / "fmnist.pt"
    assert train_classifier_main([*FASHION, "--out", str(out), "--epochs", "1", "--max-train-size", "3000",
                                  "--max-test-size", "1000"]) == 0
    return out


@needs_fashion_mnist
@pytest.mark.slow
def test_the_classifier_learns_the_classes_and_saves_its_accuracy(trained_classifier):
    _, metadata = load_classifier(trained_classifier)
    assert metadata["dataset"] == "fashion_mnist" and len(metadata["classes"]) == 10
    assert metadata["test_accuracy"] >= 0.6 and metadata["test_images"] == 1000 and metadata["train_images"] == 3000
    config = load_config(ROOT_CONFIG, FASHION_OVERRIDES)
    test_set = data_module.load_labelled_dataset(config.data, train=False)
    images = torch.stack([test_set[i][0] for i in range(200)])
    labels = torch.tensor([test_set[i][1] for i in range(200)])
    features = load_classifier_features(trained_classifier)
    _, logits = features(features.prepare(((images + 1) * 127.5).round().to(torch.uint8)))
    assert (logits.argmax(1) == labels).float().mean() >= 0.6  # the saved file classifies as trained


@needs_fashion_mnist
def test_classifier_fid_tells_real_from_noise(trained_classifier):
    config = load_config(ROOT_CONFIG, FASHION_OVERRIDES)
    dataset = data_module.load_dataset(config.data)
    network = load_feature_network(f"classifier:{trained_classifier}")
    first = torch.stack([dataset[i] for i in range(0, 300)])
    second = torch.stack([dataset[i] for i in range(300, 600)])
    noise = torch.rand(300, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    stats = [RealStatistics.from_features(extract_features(images, network)["features"])
             for images in (first, second, noise)]
    real_vs_real = frechet_distance(stats[0].mu, stats[0].sigma, stats[1].mu, stats[1].sigma)
    real_vs_noise = frechet_distance(stats[0].mu, stats[0].sigma, stats[2].mu, stats[2].sigma)
    assert 0 <= real_vs_real < real_vs_noise / 10


def test_save_load_round_trip_and_clear_errors(tmp_path):
    network = DomainClassifier(3, 4)
    path = save_classifier(tmp_path / "net.pt", network, classes=["a", "b", "c", "d"], test_accuracy=0.5)
    loaded, metadata = load_classifier(path)
    assert metadata == {"classes": ["a", "b", "c", "d"], "test_accuracy": 0.5}
    for name, tensor in network.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)
    tag = load_classifier_features(path).tag
    assert tag.startswith("classifier-sha256-") and tag == load_feature_network(f"classifier:{path}").tag
    (tmp_path / "corrupt.pt").write_bytes(b"not a classifier")
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    for name, words in (("missing.pt", "does not exist"), ("corrupt.pt", "cannot be read"),
                        ("foreign.pt", "not a gan_ignite classifier")):
        with pytest.raises(FeatureNetworkError, match=words) as caught:
            load_classifier(tmp_path / name)
        assert name in str(caught.value) and "train_classifier" in str(caught.value)
    with pytest.raises(FeatureNetworkError, match="needs the classifier's file"):
        load_feature_network("classifier")


def test_preparation_converts_channels_and_sizes():
    rgb = torch.zeros(2, 3, 28, 28, dtype=torch.uint8)
    rgb[:, 0] = 255  # pure red: luma 0.299 * 255
    gray = prepare_for_classifier(rgb, channels=1, size=32)
    assert gray.shape == (2, 1, 32, 32)
    torch.testing.assert_close(gray, torch.full_like(gray, 0.299 * 2 - 1), atol=1e-5, rtol=0)
    colour = prepare_for_classifier(torch.full((1, 1, 32, 32), 255, dtype=torch.uint8), channels=3, size=32)
    assert colour.shape == (1, 3, 32, 32) and torch.all(colour == 1)
    with pytest.raises(ValueError, match="uint8"):
        prepare_for_classifier(torch.zeros(1, 1, 32, 32), channels=1, size=32)


@needs_fashion_mnist
def test_folder_cli_scores_two_folders_with_the_classifier(trained_classifier, tmp_path):
    config = load_config(ROOT_CONFIG, FASHION_OVERRIDES)
    dataset = data_module.load_dataset(config.data)
    for folder, start in (("a", 0), ("b", 100)):
        (tmp_path / folder).mkdir()
        for index in range(start, start + 40):
            image = ((dataset[index][0][0] + 1) * 127.5).round().to(torch.uint8).numpy()
            Image.fromarray(image).save(tmp_path / folder / f"{index}.png")
    make_shape_images(tmp_path / "shapes", 40, seed=5, mode="L")
    scores = {}
    for other in ("b", "shapes"):
        out = tmp_path / f"{other}.json"
        assert metrics_main([str(tmp_path / "a"), str(tmp_path / other), "--feature-network",
                             f"classifier:{trained_classifier}", "--metrics", "fid,is,kid", "--is-splits", "2",
                             "--kid-subset-size", "20", "--num-workers", "0", "--json", str(out)]) == 0
        scores[other] = json.loads(out.read_text())
    assert scores["b"]["fid"] < scores["shapes"]["fid"]
    assert 1 <= scores["b"]["is"] <= 10  # at most the number of classes


@needs_fashion_mnist
def test_training_and_evaluate_cli_score_with_the_classifier(trained_classifier, tmp_path, stats_cache):
    run_dir = tmp_path / "run"
    overrides = [*FASHION[2:], f"output_dir={run_dir}", "train.max_epochs=1", "train.epoch_length=4",
                 "eval.every_epochs=1", "train.batch_size=16", "model.g_features=8", "model.d_features=8",
                 "eval.num_samples=40", "eval.batch_size=20", "eval.is_splits=2", f"eval.stats_cache_dir={stats_cache}",
                 f"eval.feature_network=classifier:{trained_classifier}", "eval.metrics=[fid,is]"]
    assert train_main(["--config", "configs/fashion_mnist.yaml", *overrides]) == 0
    records = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    evaluation = [r for r in records if r["kind"] == "eval"][-1]
    assert evaluation["feature_network"] == f"classifier:{trained_classifier}" and np.isfinite(evaluation["fid"])
    cached = list(stats_cache.glob("real_stats_*.npz"))
    assert any("classifier-sha256-" in str(RealStatistics.load(path).meta) for path in cached)
    assert evaluate_main(["--checkpoint", str(run_dir / "checkpoints" / "checkpoint_4.pt")]) == 0
    assert json.loads((run_dir / "evaluations.jsonl").read_text())["fid"] == pytest.approx(evaluation["fid"],
                                                                                         rel=1e-6)


def test_classifier_cli_rejects_unlabelled_data_and_unwritable_output(tmp_path, image_folder, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert train_classifier_main(["data.name=imagefolder", f"data.root={image_folder}", "data.channels=3",
                                  "--out", str(tmp_path / "x.pt")]) == 2
    assert "has no class labels" in capsys.readouterr().err
    assert train_classifier_main([*FASHION, "--out", str(blocker / "x.pt")]) == 2
    message = capsys.readouterr().err
    assert "cannot be written" in message and "Traceback" not in message


ROOT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "fashion_mnist.yaml"
FASHION_OVERRIDES = [f"data.root={SHARED_DATASETS}", "data.download=false"]
