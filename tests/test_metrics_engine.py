"""The metrics attached to ignite Engines, alone and in a 2-process (gloo) run."""

from __future__ import annotations

import json
from pathlib import Path

import ignite.distributed as idist
import pytest
import torch
from ignite.engine import Engine

from gan_ignite.metrics.scores.factory import create_metrics
from gan_ignite.metrics.scores.fid import frechet_distance
from gan_ignite.metrics.scores.inception_score import inception_score
from gan_ignite.metrics.scores.kid import kernel_inception_distance
from gan_ignite.metrics.scores.prdc import precision_recall_density_coverage
from gan_ignite.metrics.scores.real_stats import RealStatistics

DIM, CLASSES = 32, 20
OPTIONS = {"is_splits": 3, "kid_subsets": 4, "kid_subset_size": 30, "nearest_k": 3}
EXPECTED_KEYS = {"fid", "is", "is_std", "kid", "kid_std", "kid_subset_size", "precision", "recall", "density",
                 "coverage"}


def _data(seed: int = 0) -> tuple[RealStatistics, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    real = torch.rand(80, DIM, generator=generator)
    fake = torch.rand(60, DIM, generator=generator) * 1.1
    logits = torch.randn(60, CLASSES, generator=generator) * 2
    return RealStatistics.from_features(real), fake, logits


def _expected(real: RealStatistics, fake: torch.Tensor, logits: torch.Tensor) -> dict[str, float]:
    fake_stats = RealStatistics.from_features(fake)
    expected = {"fid": frechet_distance(real.mu, real.sigma, fake_stats.mu, fake_stats.sigma)}
    expected["is"], expected["is_std"] = inception_score(logits, OPTIONS["is_splits"])
    expected["kid"], expected["kid_std"] = kernel_inception_distance(
        fake, torch.from_numpy(real.features), OPTIONS["kid_subsets"], OPTIONS["kid_subset_size"])
    expected["kid_subset_size"] = OPTIONS["kid_subset_size"]
    expected.update(precision_recall_density_coverage(torch.from_numpy(real.features), fake, OPTIONS["nearest_k"]))
    return expected


def _run_evaluator(real: RealStatistics, fake: torch.Tensor, logits: torch.Tensor, epochs: int = 1) -> dict:
    batches = list(zip(fake.split(16), logits.split(16)))
    evaluator = Engine(lambda engine, batch: {"features": batch[0], "logits": batch[1]})
    for name, metric in create_metrics(["fid", "is", "kid", "prdc"], real, **OPTIONS).items():
        metric.attach(evaluator, name)
    evaluator.run(batches, max_epochs=epochs)
    return dict(evaluator.state.metrics)


def test_metrics_on_an_engine_write_the_expected_keys_and_values():
    real, fake, logits = _data()
    metrics = _run_evaluator(real, fake, logits, epochs=2)  # epoch 2 must not see epoch 1's samples
    assert set(metrics) == EXPECTED_KEYS
    assert all(isinstance(value, float) for key, value in metrics.items() if key != "kid_subset_size")
    assert metrics["kid_subset_size"] == OPTIONS["kid_subset_size"]
    assert metrics == pytest.approx(_expected(real, fake, logits), rel=1e-9)


def test_create_metrics_names_unknown_metrics_and_missing_features():
    real, _, _ = _data()
    with pytest.raises(ValueError, match=r"\['lpips'\]"):
        create_metrics(["fid", "lpips"], real)
    without_features = RealStatistics(None, real.mu, real.sigma, real.num)
    assert set(create_metrics(["fid", "is"], without_features)) == {"fid", "is"}
    with pytest.raises(ValueError, match="'kid' needs real statistics with features"):
        create_metrics(["kid"], without_features)
    with pytest.raises(ValueError, match="'fid' needs real statistics"):
        create_metrics(["fid"], None)


def test_prdc_under_another_name_prefixes_its_keys():
    real, fake, logits = _data()
    evaluator = Engine(lambda engine, batch: {"features": batch, "logits": None})
    create_metrics(["prdc"], real, nearest_k=3)["prdc"].attach(evaluator, "prdc_ema")
    evaluator.run([fake])
    assert set(evaluator.state.metrics) == {f"prdc_ema_{key}" for key in ("precision", "recall", "density", "coverage")}


def test_missing_output_key_is_explained():
    real, fake, _ = _data()
    evaluator = Engine(lambda engine, batch: {"images": batch})
    create_metrics(["fid"], real)["fid"].attach(evaluator, "fid")
    with pytest.raises(KeyError, match="'features'"):
        evaluator.run([fake])


def _distributed_worker(local_rank: int, out_dir: str) -> None:
    """Rank r gets a contiguous half of the data, so the gathered rows keep the serial order."""
    real, fake, logits = _data()
    rank, world = idist.get_rank(), idist.get_world_size()
    half = fake.shape[0] // world
    part = slice(rank * half, (rank + 1) * half)
    metrics = _run_evaluator(real, fake[part], logits[part])
    real_part = torch.from_numpy(real.features)[rank * 40 : (rank + 1) * 40]
    from gan_ignite.metrics.scores.real_stats import cached_real_statistics, compute_real_statistics

    stats = cached_real_statistics(Path(out_dir) / "cache", {"test": "dist"}, lambda: compute_real_statistics(
        [real_part.view(-1, 1, 1, DIM)], _RowExtractor()))
    metrics["stats_num"] = stats.num
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(metrics))


class _RowExtractor(torch.nn.Module):
    """A cheap stand-in for Inception: the first DIM pixels of each image's first row."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = images[:, 0, 0, :DIM].float()
        return rows, rows


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.slow
def test_two_gloo_processes_give_the_serial_values(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # else ignite puts rank 1 on cuda:1, which may not exist
    with idist.Parallel(backend="gloo", nproc_per_node=2) as parallel:
        parallel.run(_distributed_worker, str(tmp_path))
    real, fake, logits = _data()
    expected = _expected(real, fake, logits)
    for rank in range(2):
        metrics = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert metrics.pop("stats_num") == 80
        assert metrics == pytest.approx(expected, rel=1e-9)
    assert len(list((tmp_path / "cache").glob("real_stats_*.npz"))) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_metrics_on_cuda_give_the_cpu_values():
    real, fake, logits = _data()
    evaluator = Engine(lambda engine, batch: {"features": batch[0].cuda(), "logits": batch[1].cuda()})
    for name, metric in create_metrics(["fid", "is", "kid", "prdc"], real, device="cuda", **OPTIONS).items():
        metric.attach(evaluator, name)
    evaluator.run(list(zip(fake.split(16), logits.split(16))))
    assert evaluator.state.metrics == pytest.approx(_expected(real, fake, logits), rel=1e-9)
