"""End-to-end runs of the CLI: tiny 32x32 runs with a random-init Inception on a few dozen images."""

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import PYTHON, ROOT, SHARED_DATASETS, cli_env, tiny_overrides
from gan_ignite.evaluate import main as evaluate_main
from gan_ignite.train import main


def read_history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def plot(run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, str(ROOT / "scripts" / "plot_curves.py"), str(run_dir)], capture_output=True,
                          text=True, env=cli_env(), timeout=120)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, image_folder, stats_cache) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(tiny_overrides(run_dir, image_folder, stats_cache)) == 0
    return run_dir


@pytest.mark.slow
def test_run_writes_config_history_checkpoints_and_images(finished_run):
    config_text = (finished_run / "config.yaml").read_text()
    assert "inception_weights: random" in config_text and "epoch_length: 3" in config_text
    records = read_history(finished_run)
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["iteration"] for r in train] == list(range(1, 7))
    for record in train:
        assert {"epoch", "Loss_G", "Loss_D", "D_x", "D_G_z1", "D_G_z2"} <= set(record)
        assert all(math.isfinite(record[key]) for key in ("Loss_G", "Loss_D"))
        assert 0 <= record["D_x"] <= 1
    assert [r["epoch"] for r in evals] == [1, 2]
    for record in evals:
        assert math.isfinite(record["fid"]) and record["fid"] >= 0
        assert record["is"] >= 1 and record["is_std"] >= 0
        assert record["inception_weights"] == "random" and record["num_samples"] == 24
    checkpoints = sorted(p.name for p in (finished_run / "checkpoints").glob("checkpoint_*.pt"))
    assert checkpoints == ["checkpoint_3.pt", "checkpoint_6.pt"]
    assert len(list((finished_run / "checkpoints").glob("best_checkpoint_*neg_fid*.pt"))) == 1
    checkpoint = torch.load(finished_run / "checkpoints" / "checkpoint_6.pt", weights_only=False)
    assert {"generator", "discriminator", "optimizer_G", "optimizer_D", "trainer"} <= set(checkpoint)
    grids = sorted(p.name for p in (finished_run / "images").glob("fixed_noise_iter_*.png"))
    assert grids == ["fixed_noise_iter_0000002.png", "fixed_noise_iter_0000004.png", "fixed_noise_iter_0000006.png"]
    assert (finished_run / "images" / "real_samples.png").is_file()


@pytest.mark.slow
def test_plot_curves_writes_three_pngs(finished_run):
    result = plot(finished_run)
    assert result.returncode == 0, result.stderr
    for name in ("loss_curves.png", "metrics.png", "real_vs_fake.png"):
        path = finished_run / "plots" / name
        assert path.is_file() and path.stat().st_size > 10_000, name


def test_existing_run_dir_is_not_overwritten(finished_run, image_folder, stats_cache, capsys):
    before = (finished_run / "history.jsonl").read_bytes()
    assert main(tiny_overrides(finished_run, image_folder, stats_cache)) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (finished_run / "history.jsonl").read_bytes() == before


@pytest.mark.slow
def test_resume_continues_counters_without_duplicates(tmp_path, image_folder, stats_cache):
    run_dir = tmp_path / "resumed"
    assert main(tiny_overrides(run_dir, image_folder, stats_cache, **{"eval.every_epochs": 2})) == 0
    assert main(tiny_overrides(run_dir, image_folder, stats_cache, **{
        "train.max_epochs": 3, "train.resume_from": "auto", "eval.every_epochs": 2})) == 0
    records = read_history(run_dir)
    assert [r["iteration"] for r in records if r["kind"] == "train"] == list(range(1, 10))
    assert [r["epoch"] for r in records if r["kind"] == "eval"] == [2]
    assert (run_dir / "checkpoints" / "checkpoint_9.pt").is_file()
    checkpoint = torch.load(run_dir / "checkpoints" / "checkpoint_9.pt", weights_only=False)
    assert checkpoint["trainer"]["iteration"] == 9 and checkpoint["trainer"]["max_epochs"] == 3
    # resuming a finished run (a job script that always passes auto) trains nothing and keeps the history
    before = (run_dir / "history.jsonl").read_bytes()
    assert main(tiny_overrides(run_dir, image_folder, stats_cache, **{
        "train.max_epochs": 3, "train.resume_from": "auto", "eval.every_epochs": 2})) == 0
    assert (run_dir / "history.jsonl").read_bytes() == before


def test_resume_from_checkpoint_of_another_shape_fails_clearly(finished_run, tmp_path, image_folder, stats_cache,
                                                               capsys):
    overrides = tiny_overrides(tmp_path / "other", image_folder, stats_cache, **{
        "model.g_features": 16, "train.resume_from": finished_run / "checkpoints" / "checkpoint_6.pt"})
    assert main(overrides) == 2
    assert "does not fit this config" in capsys.readouterr().err


@pytest.mark.slow
def test_two_process_gloo_run_completes(tmp_path, image_folder, stats_cache):
    run_dir = tmp_path / "ddp"
    overrides = tiny_overrides(run_dir, image_folder, stats_cache, **{
        "dist.nproc_per_node": 2, "dist.backend": "gloo", "train.max_epochs": 1, "eval.num_samples": 20})
    env = {**cli_env(), "CUDA_VISIBLE_DEVICES": ""}  # two CPU processes, also on a machine with one GPU
    result = subprocess.run([PYTHON, "-m", "gan_ignite.train", *overrides], capture_output=True, text=True,
                            env=env, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_history(run_dir)
    assert [r["iteration"] for r in records if r["kind"] == "train"] == [1, 2, 3]
    evals = [r for r in records if r["kind"] == "eval"]
    assert len(evals) == 1 and math.isfinite(evals[0]["fid"]) and evals[0]["num_samples"] == 20
    assert (run_dir / "checkpoints" / "checkpoint_3.pt").is_file()


@pytest.mark.skipif(not (SHARED_DATASETS / "FashionMNIST" / "raw").is_dir(), reason="real Fashion-MNIST not here")
@pytest.mark.slow
def test_trains_on_real_fashion_mnist(tmp_path, stats_cache):
    run_dir = tmp_path / "fmnist"
    overrides = [f"output_dir={run_dir}", f"data.root={SHARED_DATASETS}", "data.download=false",
                 "data.num_workers=0", "train.max_epochs=1", "train.epoch_length=40", "train.batch_size=32",
                 "train.image_every=20", "eval.num_samples=24", "eval.batch_size=12", "eval.every_epochs=1",
                 "eval.inception_weights=random", "eval.is_splits=2", f"eval.stats_cache_dir={stats_cache}"]
    assert main(["--config", str(ROOT / "configs" / "fashion_mnist.yaml"), *overrides]) == 0
    train = [r for r in read_history(run_dir) if r["kind"] == "train"]
    assert len(train) == 40
    # the discriminator learns to tell real from fake within a few dozen steps on real data
    assert sum(r["D_x"] for r in train[-10:]) / 10 > sum(r["D_x"] for r in train[:3]) / 3


@pytest.mark.slow
def test_evaluate_cli_scores_a_saved_generator(finished_run, capsys):
    checkpoint = finished_run / "checkpoints" / "checkpoint_6.pt"
    code = evaluate_main(["--checkpoint", str(checkpoint), "--num-samples", "24", "eval.metrics=[fid,is,kid,prdc]",
                          "eval.kid_subsets=5", "eval.kid_subset_size=12"])
    assert code == 0
    printed = capsys.readouterr().out
    for name in ("fid", "is", "kid", "precision", "recall", "density", "coverage"):
        assert f"{name}:" in printed
    record = json.loads((finished_run / "evaluations.jsonl").read_text().splitlines()[-1])
    assert (record["epoch"], record["iteration"]) == (2, 6)
    assert record["num_samples"] == 24 and record["inception_weights"] == "random"
    assert math.isfinite(record["fid"]) and record["fid"] >= 0 and record["is"] >= 1
    assert 0 <= record["precision"] <= 1 and 0 <= record["coverage"] <= 1


@pytest.mark.slow
def test_evaluate_protocol_overrides_the_runs_own(finished_run, tmp_path, capsys):
    run_dir = tmp_path / "copy"
    shutil.copytree(finished_run, run_dir)
    checkpoint = str(run_dir / "checkpoints" / "checkpoint_6.pt")
    assert evaluate_main(["--checkpoint", checkpoint, "--num-samples", "24", "--protocol", "clean-fid"]) == 0
    assert evaluate_main(["--checkpoint", checkpoint, "--num-samples", "24"]) == 0
    first, second = [json.loads(line) for line in (run_dir / "evaluations.jsonl").read_text().splitlines()[-2:]]
    assert (first["protocol"], second["protocol"]) == ("clean-fid", "torch-fidelity")
    assert first["fid"] != second["fid"]


def test_evaluate_cli_missing_checkpoint(tmp_path, capsys):
    assert evaluate_main(["--checkpoint", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt" in capsys.readouterr().err


RECIPE = {"train.ema_decay": 0.9, "train.augment": "ada", "train.ada_speed_images": 64, "train.ada_interval": 1,
          "train.loss": "hinge", "model.spectral_norm": "true", "train.checkpoint_every_iters": 4}


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory, image_folder, stats_cache) -> Path:
    """The tiny run with an EMA generator, ADA, the hinge loss and a spectrally normalised D."""
    run_dir = tmp_path_factory.mktemp("runs") / "recipe"
    assert main(tiny_overrides(run_dir, image_folder, stats_cache, **RECIPE)) == 0
    return run_dir


@pytest.mark.slow
def test_recipe_run_records_ada_p_and_scores_the_ema_generator(recipe_run, capsys):
    records = read_history(recipe_run)
    p_values = [r["ada_p"] for r in records if r["kind"] == "train"]
    assert len(p_values) == 6 and all(0 <= p <= 1 for p in p_values) and len(set(p_values)) > 1
    assert [r["model"] for r in records if r["kind"] == "eval"] == ["ema", "ema"]
    checkpoint = torch.load(recipe_run / "checkpoints" / "checkpoint_6.pt", weights_only=False)
    assert {"ema_generator", "ada"} <= set(checkpoint) and 0 < checkpoint["ada"]["p"] <= 1
    # the evaluate CLI scores the EMA generator by default and reproduces the record; the live one differs
    checkpoint_path = str(recipe_run / "checkpoints" / "checkpoint_6.pt")
    assert evaluate_main(["--checkpoint", checkpoint_path]) == 0
    assert "reproduces the history.jsonl record of iteration 6" in capsys.readouterr().out
    assert evaluate_main(["--checkpoint", checkpoint_path, "--model", "generator"]) == 0
    ema_record, live_record = [json.loads(line) for line in (recipe_run / "evaluations.jsonl").read_text().splitlines()]
    assert (ema_record["model"], live_record["model"]) == ("ema", "generator")
    assert ema_record["fid"] != pytest.approx(live_record["fid"], rel=1e-6)
    assert plot(recipe_run).returncode == 0 and (recipe_run / "plots" / "loss_curves.png").is_file()


@pytest.mark.slow
def test_recipe_state_resumes_mid_epoch_exactly(recipe_run, tmp_path, image_folder, stats_cache):
    resumed_dir = tmp_path / "resumed"
    start_from = recipe_run / "checkpoints" / "checkpoint_4.pt"  # mid-epoch: 3 iterations per epoch
    assert main(tiny_overrides(resumed_dir, image_folder, stats_cache, **RECIPE,
                               **{"train.resume_from": start_from})) == 0
    resumed = torch.load(resumed_dir / "checkpoints" / "checkpoint_6.pt", weights_only=False)
    uninterrupted = torch.load(recipe_run / "checkpoints" / "checkpoint_6.pt", weights_only=False)
    assert resumed["ada"] == uninterrupted["ada"]
    for key in ("generator", "ema_generator", "discriminator"):
        for name, tensor in uninterrupted[key].items():
            assert torch.equal(resumed[key][name], tensor), (key, name)
