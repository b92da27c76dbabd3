"""Crashes, signals, divergence, reproducibility and memory: what a long GAN run must survive."""

import errno
import random
import signal
import time
from pathlib import Path

import psutil
import pytest
import torch

from conftest import (TRAIN_ONLY, assert_same_losses, make_shape_images, start, stderr_of, tiny_overrides,
                      train_records, wait_for_iteration)
from gan_ignite.train import main

@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, image_folder, stats_cache) -> Path:
    """An uninterrupted 102-iteration run (17 epochs of 6 iterations)."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    assert main(tiny_overrides(run_dir, image_folder, stats_cache, **TRAIN_ONLY, **{"train.max_epochs": 17})) == 0
    return run_dir


def test_same_seed_gives_identical_losses_for_100_iterations(reference_run, tmp_path, image_folder, stats_cache):
    run_dir = tmp_path / "again"
    assert main(tiny_overrides(run_dir, image_folder, stats_cache, **TRAIN_ONLY, **{"train.max_epochs": 17})) == 0
    records, reference = train_records(run_dir), train_records(reference_run)
    assert len(reference) == 102
    for got, expected in zip(records, reference):
        assert (got["Loss_G"], got["Loss_D"]) == (expected["Loss_G"], expected["Loss_D"])


@pytest.mark.slow
def test_resume_after_repeated_kill_9_loses_nothing_and_duplicates_nothing(reference_run, tmp_path, image_folder,
                                                                           stats_cache):
    run_dir = tmp_path / "killed"
    overrides = tiny_overrides(run_dir, image_folder, stats_cache, **TRAIN_ONLY, **{
        "train.max_epochs": 17, "train.checkpoint_every_iters": 4, "train.resume_from": "auto"})
    rng = random.Random(1234)
    kills, reached = 0, 0
    while kills < 3:
        process = start(overrides)
        target = reached + rng.randint(3, 25)
        if not wait_for_iteration(process, run_dir, target):
            break  # finished before the kill point
        time.sleep(rng.uniform(0, 0.3))  # kill at an arbitrary moment, maybe during a checkpoint write
        process.kill()
        process.wait()
        kills += 1
        reached = train_records(run_dir)[-1]["iteration"]
    final = start(overrides)
    assert final.wait(timeout=300) == 0, stderr_of(final)[-2000:]
    assert kills == 3
    assert_same_losses(train_records(run_dir), train_records(reference_run))
    for checkpoint in (run_dir / "checkpoints").glob("checkpoint_*.pt"):  # a kill mid-write never leaves a torn file
        assert torch.load(checkpoint, weights_only=False)["trainer"]["iteration"] > 0
    assert (run_dir / "checkpoints" / "checkpoint_102.pt").is_file()


@pytest.mark.parametrize("signum, exit_code", [(signal.SIGTERM, 0), (signal.SIGINT, 130), (signal.SIGUSR1, 75)])
@pytest.mark.slow
def test_signal_saves_a_checkpoint_and_resume_continues(signum, exit_code, reference_run, tmp_path, image_folder,
                                                        stats_cache):
    run_dir = tmp_path / "signalled"
    overrides = tiny_overrides(run_dir, image_folder, stats_cache, **TRAIN_ONLY, **{"train.max_epochs": 17})
    process = start(overrides)
    assert wait_for_iteration(process, run_dir, 20)
    process.send_signal(signum)
    assert process.wait(timeout=120) == exit_code
    stderr = stderr_of(process)
    assert signal.Signals(signum).name in stderr and "resume_from=auto" in stderr
    last = train_records(run_dir)[-1]["iteration"]
    assert last < 102 and (run_dir / "checkpoints" / f"checkpoint_{last}.pt").is_file()
    assert main(overrides + ["train.resume_from=auto"]) == 0
    assert_same_losses(train_records(run_dir), train_records(reference_run))


DIVERGING = """
from gan_ignite.networks.dcgan import Discriminator


class Diverging(Discriminator):
    \"\"\"The built-in discriminator (same weights) whose training-mode logits are infinite: a run that blows up.\"\"\"

    def __init__(self, channels, image_size):
        super().__init__(channels, image_size, features=8)

    def forward(self, images):
        logits = super().forward(images)
        return logits * float("inf") if self.training else logits
"""


def test_non_finite_loss_stops_keeps_last_good_checkpoint(tmp_path, image_folder, stats_cache, capsys, monkeypatch):
    run_dir = tmp_path / "diverging"
    overrides = tiny_overrides(run_dir, image_folder, stats_cache, **TRAIN_ONLY, **{"train.max_epochs": 1})
    assert main(overrides) == 0
    good = (run_dir / "checkpoints" / "checkpoint_6.pt").read_bytes()
    # the run continues with a discriminator that blows up at the first step (a learning rate that would,
    # such as 1e30, is refused by the config's bounds)
    (tmp_path / "diverging_nets.py").write_text(DIVERGING)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(overrides + ["train.max_epochs=3", "train.resume_from=auto",
                             "model.discriminator=diverging_nets:Diverging"]) == 1
    message = capsys.readouterr().err
    assert "non-finite loss" in message and "checkpoint_6.pt" in message and "train.lr" in message
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("checkpoint_*.pt")) == ["checkpoint_6.pt"]
    assert (run_dir / "checkpoints" / "checkpoint_6.pt").read_bytes() == good
    assert [r["iteration"] for r in train_records(run_dir)] == list(range(1, 7))


@pytest.mark.slow
def test_memory_stays_flat_over_hundreds_of_iterations(tmp_path, image_folder, stats_cache):
    run_dir = tmp_path / "long"
    # a grid every iteration: keeping grids in memory as the seed did would grow ~0.8 MB per iteration
    overrides = tiny_overrides(run_dir, image_folder, stats_cache, **{
        **TRAIN_ONLY, "train.max_epochs": 60, "train.image_every": 1, "train.checkpoint_every_iters": 50})
    process = start(overrides)
    watched = psutil.Process(process.pid)
    assert wait_for_iteration(process, run_dir, 100)
    early = watched.memory_info().rss
    assert wait_for_iteration(process, run_dir, 340)
    late = watched.memory_info().rss
    assert process.wait(timeout=300) == 0
    assert late - early < 30 * 2**20, f"RSS grew by {(late - early) / 2**20:.1f} MiB over 240 iterations"


def test_full_disk_during_a_checkpoint_write_keeps_the_previous_one(tmp_path, image_folder, stats_cache, monkeypatch,
                                                                    capsys):
    run_dir = tmp_path / "full_disk"
    overrides = tiny_overrides(run_dir, image_folder, stats_cache, **{**TRAIN_ONLY, "train.max_epochs": 2})
    real_save = torch.save
    calls = {"count": 0}

    def save_until_disk_full(obj, target, *args, **kwargs):
        calls["count"] += 1
        if calls["count"] >= 2:  # the second checkpoint: write part of it, then run out of space
            target.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, target, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_disk_full)
    assert main(overrides) == 2
    message = capsys.readouterr().err
    assert "No space left on device" in message and "intact" in message
    checkpoints = run_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint_6.pt"]
    assert torch.load(checkpoints / "checkpoint_6.pt", weights_only=False)["trainer"]["iteration"] == 6


def test_bad_inputs_exit_2_and_leave_an_existing_run_untouched(tmp_path, image_folder, stats_cache, capsys):
    run_dir = tmp_path / "precious"
    overrides = tiny_overrides(run_dir, image_folder, stats_cache, **{**TRAIN_ONLY, "train.max_epochs": 1})
    assert main(overrides) == 0
    snapshot = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    garbage = tmp_path / "pt_inception.pth"
    garbage.write_bytes(b"this is not a state dict")
    bad_runs = {
        "Inception weights": ["train.resume_from=auto", "eval.every_epochs=1", f"eval.inception_weights={garbage}"],
        "does not fit this config": ["train.resume_from=auto", "model.g_features=16"],
        "already holds a run": [],
        "not divisible": ["train.batch_size=9", "dist.nproc_per_node=2"],
    }
    for words, extra in bad_runs.items():
        assert main(overrides + extra) == 2, words
        assert words in capsys.readouterr().err
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == snapshot


def test_unwritable_output_dir_is_reported(tmp_path, image_folder, stats_cache, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(tiny_overrides(blocker / "run", image_folder, stats_cache, **TRAIN_ONLY)) == 2
    assert "cannot be written" in capsys.readouterr().err


@pytest.mark.parametrize("num_workers", [0, 1])
def test_corrupt_training_image_is_counted_or_named(num_workers, tmp_path, stats_cache, capsys):
    folder = tmp_path / "images"
    make_shape_images(folder / "a", 16)
    (folder / "a" / "img_0005.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    overrides = tiny_overrides(tmp_path / "run", folder, stats_cache, **{
        **TRAIN_ONLY, "train.max_epochs": 1, "data.num_workers": num_workers})
    assert main(overrides) == 0
    assert "skipped 1 unreadable image" in capsys.readouterr().err
    assert len(train_records(tmp_path / "run")) == 2
    strict = tiny_overrides(tmp_path / "strict", folder, stats_cache, **{
        **TRAIN_ONLY, "train.max_epochs": 1, "data.num_workers": num_workers, "data.skip_bad_images": "false"})
    assert main(strict) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("error: Cannot read image file") and "img_0005.png" in message
    assert "Traceback" not in message
