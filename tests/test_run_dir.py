"""The run directory as a clumsy or hostile user meets it: two runs at once, a full disk, another
run's checkpoint, damaged side files, input that can only fail late, files from the wild, Ctrl-C.
Each test states what the user sees: exit codes, one-paragraph messages, files intact."""

from __future__ import annotations

import argparse
import builtins
import errno
import importlib.util
import json
import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import gan_ignite.evaluation as evaluation_module
import gan_ignite.io as safe_files
from gan_ignite.io import append_text
from conftest import (PYTHON, ROOT, TRAIN_ONLY, assert_same_losses, cli_env, make_shape_images, start, stderr_of,
                      tiny_overrides, train_records, wait_for_iteration)
from gan_ignite.data import cached_images
from gan_ignite.evaluate import main as evaluate_main
from gan_ignite.metrics.cli import main as metrics_main
from gan_ignite.metrics.networks.folder import list_images
from gan_ignite.metrics.networks.images import find_image_files
from gan_ignite.metrics.scores.real_stats import RealStatistics, cached_real_statistics
from gan_ignite.run_dir import RunDir, read_jsonl
from gan_ignite.sample import check_outputs, main as sample_main
from gan_ignite.train import main

ONE_EPOCH = {**TRAIN_ONLY, "train.max_epochs": 1}  # 48 images in batches of 8: 6 iterations, checkpoint_6.pt
CONTINUE = ["train.max_epochs=2", "train.resume_from=auto"]


def files_of(run_dir: Path) -> dict[str, bytes]:
    return {str(path.relative_to(run_dir)): path.read_bytes() for path in sorted(run_dir.rglob("*")) if path.is_file()}


def last_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def run_id(run_dir: Path) -> dict:
    return yaml.safe_load((run_dir / "config.yaml").read_text())["run"]


@pytest.fixture(scope="module")
def reference_12(tmp_path_factory, image_folder, stats_cache) -> Path:
    """An uninterrupted run of 12 iterations (2 epochs)."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    assert main(tiny_overrides(run_dir, image_folder, stats_cache, **{**ONE_EPOCH, "train.max_epochs": 2})) == 0
    return run_dir


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory, image_folder, stats_cache) -> Path:
    """3 iterations and one evaluation record (random-init Inception)."""
    run_dir = tmp_path_factory.mktemp("evaluated") / "run"
    assert main(tiny_overrides(run_dir, image_folder, stats_cache, **{"train.max_epochs": 1})) == 0
    return run_dir


# ----------------------------------------------------------------------------- one run per directory
@pytest.mark.slow
def test_two_runs_on_one_directory_the_second_exits_2_at_once_and_a_kill_9_leaves_no_lock(
        tmp_path, image_folder, stats_cache, reference_12):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(run_dir, image_folder, stats_cache, **{
        **ONE_EPOCH, "train.max_epochs": 40, "train.resume_from": "auto"})
    first, second = start(overrides), start(overrides)  # a double submit
    deadline = time.monotonic() + 120
    while first.poll() is None and second.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    loser, winner = (first, second) if first.poll() is not None else (second, first)
    assert loser.returncode == 2 and winner.poll() is None  # the second stopped at once, the first trains on
    message = stderr_of(loser).strip().splitlines()[-1]
    assert "in use by another run" in message and f"pid {winner.pid} on host {socket.gethostname()}" in message
    assert wait_for_iteration(winner, run_dir, 8)
    winner.kill()  # kill -9: the lock dies with its process
    winner.wait()
    assert main([*overrides, "train.max_epochs=2"]) == 0  # (complete already if the first got past iteration 12)
    records = train_records(run_dir)
    assert [r["iteration"] for r in records] == list(range(1, len(records) + 1)) and len(records) >= 12  # each once
    assert_same_losses(records[:12], train_records(reference_12))
    assert not (run_dir / ".lock").exists()


KILLED_WITH_A_CHILD = """
import os, signal, sys, time
from gan_ignite.io import RunLock
RunLock(sys.argv[1]).acquire()
if os.fork() == 0:  # a loader worker: it shares the open lock file and outlives its parent by a few seconds
    time.sleep(float(sys.argv[2]))
    os._exit(0)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("child_seconds, wait, taken", [(1.5, 30.0, True), (8.0, 1.0, False)])
def test_a_run_killed_with_its_loader_workers_alive_hands_its_lock_on_once_they_exit(
        child_seconds, wait, taken, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    killed = subprocess.run([PYTHON, "-c", KILLED_WITH_A_CHILD, str(run_dir), str(child_seconds)], env=cli_env(),
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    assert killed.returncode == -9  # (no pipes: the child would hold them open)
    monkeypatch.setattr(safe_files, "ORPHANS_WAIT_SECONDS", wait)
    if taken:  # the holder is gone: wait for the orphans, not refuse the restart
        with RunDir(run_dir).lock():
            assert json.loads((run_dir / ".lock").read_text())["pid"] == os.getpid()
    else:  # orphans that do not exit in time: refused as a run in use
        with pytest.raises(safe_files.RunDirError, match="in use by another run"):
            RunDir(run_dir).lock()


@pytest.mark.slow
def test_sampling_needs_no_lock(evaluated_run, tmp_path):
    with RunDir(evaluated_run).lock():  # a run is training there
        checkpoint = str(evaluated_run / "checkpoints" / "checkpoint_3.pt")
        assert sample_main(["--checkpoint", checkpoint, "--out", str(tmp_path / "samples"), "--num", "2"]) == 0


def test_a_checkpoint_of_another_run_is_refused_and_a_fork_records_its_parent(tmp_path, image_folder, stats_cache,
                                                                              capsys):
    ours, theirs, fork = tmp_path / "ours", tmp_path / "theirs", tmp_path / "fork"
    assert main(tiny_overrides(ours, image_folder, stats_cache, **ONE_EPOCH)) == 0
    assert main(tiny_overrides(theirs, image_folder, stats_cache, **{**ONE_EPOCH, "seed": 5})) == 0
    foreign = theirs / "checkpoints" / "checkpoint_6.pt"
    before = files_of(ours)
    assert main(tiny_overrides(ours, image_folder, stats_cache, **{
        **ONE_EPOCH, "train.max_epochs": 2, "train.resume_from": foreign})) == 2
    message = last_error(capsys)
    assert "another run" in message and run_id(theirs)["id"] in message and "output_dir=NEW_DIR" in message
    assert files_of(ours) == before

    assert main(tiny_overrides(fork, image_folder, stats_cache, **{
        **ONE_EPOCH, "train.max_epochs": 2, "train.resume_from": foreign})) == 0
    forked = run_id(fork)
    assert forked["parent_id"] == run_id(theirs)["id"] and forked["id"] not in (run_id(theirs)["id"], None)
    assert forked["parent_checkpoint"] == str(foreign.resolve())
    assert torch.load(fork / "checkpoints" / "checkpoint_12.pt", weights_only=False)["run"] == forked
    assert [r["iteration"] for r in train_records(fork)] == list(range(7, 13))  # the fork continues the counters
    assert main(tiny_overrides(fork, image_folder, stats_cache, **{
        **ONE_EPOCH, "train.max_epochs": 3, "train.resume_from": "auto"})) == 0
    assert run_id(fork) == forked  # a resumed fork keeps its id and its parent


# ----------------------------------------------------------------------------- a full disk
class FullDiskFile:
    """A file on a full disk: a write stores half its bytes, then fails with ENOSPC."""

    def __init__(self, handle):
        self._handle = handle

    def write(self, data) -> int:
        self._handle.write(bytes(data[:len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self._handle.close()


def full_disk_for(patch: pytest.MonkeyPatch, name: str, mode: str) -> None:
    """Every file the run directory writes whose name contains ``name`` and whose open mode
    contains ``mode`` sits on a full disk."""
    real_open = builtins.open

    def open_on_a_full_disk(file, file_mode="r", *args, **kwargs):
        handle = real_open(file, file_mode, *args, **kwargs)
        return FullDiskFile(handle) if name in Path(file).name and mode in file_mode else handle

    patch.setattr(safe_files, "open", open_on_a_full_disk, raising=False)  # the one writer run_dir uses


@pytest.mark.parametrize("name, mode", [("config.yaml", "wb"), ("history.jsonl", "a"), ("checkpoint_12.pt", "wb")])
def test_a_full_disk_during_a_write_keeps_checkpoint_and_config_and_a_resume_completes(
        name, mode, tmp_path, image_folder, stats_cache, reference_12, capsys):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(run_dir, image_folder, stats_cache, **ONE_EPOCH)
    assert main(overrides) == 0
    before = files_of(run_dir)
    with pytest.MonkeyPatch.context() as patch:
        full_disk_for(patch, name, mode)
        assert main(overrides + CONTINUE) == 2
    message = last_error(capsys)
    assert name in message and "No space left on device" in message and "free there" in message
    assert "intact" in message
    after = files_of(run_dir)
    assert after["checkpoints/checkpoint_6.pt"] == before["checkpoints/checkpoint_6.pt"]
    if name == "config.yaml":
        assert after["config.yaml"] == before["config.yaml"]
    assert not [path for path in after if path.endswith(".tmp")]  # no temporary file left
    history = read_jsonl(run_dir / "history.jsonl")  # whole lines only; up to 12 if only the checkpoint failed
    written = 12 if name.startswith("checkpoint") else 6
    assert history.bad_lines == [] and [r["iteration"] for r in history.records] == list(range(1, written + 1))
    assert main(overrides + CONTINUE) == 0  # the disk has room again
    assert_same_losses(train_records(run_dir), train_records(reference_12))


def test_a_really_full_file_system_during_a_checkpoint_write(tmp_path, image_folder, stats_cache, reference_12,
                                                            capsys):
    """On a 1 MB tmpfs (where this machine may mount one): torch's zip writer fails with a
    RuntimeError, which is reported as the full disk it is."""
    mount = tmp_path / "small"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (the write-hook test above covers the same paths)")
    try:
        run_dir = mount / "run"
        overrides = tiny_overrides(run_dir, image_folder, stats_cache, **ONE_EPOCH)
        assert main(overrides) == 0
        first = (run_dir / "checkpoints" / "checkpoint_6.pt").read_bytes()
        ballast = mount / "ballast"
        ballast.write_bytes(b"\0" * (shutil.disk_usage(mount).free - len(first) // 3))
        assert main(overrides + CONTINUE) == 2
        message = last_error(capsys)
        assert "checkpoint_12.pt" in message and "No space left on device" in message and "intact" in message
        assert (run_dir / "checkpoints" / "checkpoint_6.pt").read_bytes() == first
        assert not list(run_dir.rglob("*.tmp"))
        ballast.unlink()
        assert main(overrides + CONTINUE) == 0
        assert_same_losses(train_records(run_dir), train_records(reference_12))
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


# ----------------------------------------------------------------------------- damaged side files
def load_plot_script():
    spec = importlib.util.spec_from_file_location("plot_curves", ROOT / "scripts" / "plot_curves.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def insert_garbage(history: Path) -> None:
    """A stray number at line 2 and a non-UTF-8 line at line 4."""
    lines = history.read_bytes().splitlines(keepends=True)
    history.write_bytes(b"".join([lines[0], b"42\n", lines[1], b"\xff\xfe{\"kind\n", *lines[2:]]))


@pytest.mark.slow
def test_garbage_history_lines_are_skipped_and_reported_by_evaluate_and_the_plots(evaluated_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(evaluated_run, run_dir)
    insert_garbage(run_dir / "history.jsonl")
    with RunDir(run_dir).lock():  # a run is training there: evaluating and plotting need no lock
        assert evaluate_main(["--checkpoint", str(run_dir / "checkpoints" / "checkpoint_3.pt")]) == 0
        out = capsys.readouterr().out
        assert "skipped 2 unreadable line(s) (line 2, 4" in out and "reproduces the history.jsonl record" in out
        recorded = json.loads((run_dir / "evaluations.jsonl").read_text().splitlines()[-1])
        assert recorded["iteration"] == 3  # the result is kept
        assert load_plot_script().main([str(run_dir)]) == 0
        assert "line 2, 4" in capsys.readouterr().err
        for name in ("loss_curves.png", "metrics.png", "training_progress.gif"):
            assert (run_dir / "plots" / name).stat().st_size > 1000
        grids = RunDir(run_dir).grids()
        grids[-1][1].write_bytes(grids[-1][1].read_bytes()[:100])  # a grid cut short
        assert load_plot_script().main([str(run_dir)]) == 0
        assert f"skipped 1 unreadable image(s): {grids[-1][1]}" in capsys.readouterr().err
        with Image.open(run_dir / "plots" / "training_progress.gif") as gif:
            assert gif.n_frames == len(grids) - 1


def test_a_resume_drops_garbage_history_lines_and_orphaned_temporary_files(tmp_path, image_folder, stats_cache,
                                                                          reference_12, capsys):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(run_dir, image_folder, stats_cache, **ONE_EPOCH)
    assert main(overrides) == 0
    insert_garbage(run_dir / "history.jsonl")
    orphans = [run_dir / ".config.yaml.0123abcd.tmp", run_dir / "checkpoints" / ".checkpoint_12.pt.89abcdef.tmp",
               run_dir / "images" / ".fixed_noise_iter_0000012.png.0123abcd.tmp"]
    for orphan in orphans:
        orphan.write_bytes(b"left by a kill -9 during a write")
    assert main(overrides + CONTINUE) == 0
    err = capsys.readouterr().err
    assert "skipped 2 unreadable line(s) (line 2, 4" in err and "Removed 3 temporary file(s)" in err
    assert not any(orphan.exists() for orphan in orphans)
    assert read_jsonl(run_dir / "history.jsonl").bad_lines == []
    assert_same_losses(train_records(run_dir), train_records(reference_12))


def test_a_resume_that_fails_after_its_checks_leaves_config_and_history_as_they_were(tmp_path, image_folder,
                                                                                     stats_cache, capsys):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(run_dir, image_folder, stats_cache, **ONE_EPOCH)
    assert main(overrides) == 0
    before = files_of(run_dir)
    # found while setting up the evaluation, after the checkpoint was restored
    assert main(overrides + [*CONTINUE, "eval.every_epochs=1", f"eval.num_samples={10**12}"]) == 2
    assert "would need about" in last_error(capsys)
    # ignite would raise a ValueError at the first iteration: a run keeps its epoch length
    assert main(overrides + [*CONTINUE, "train.epoch_length=4"]) == 2
    assert "trained with epochs of 6 iterations" in last_error(capsys)
    assert files_of(run_dir) == before


def test_an_append_after_a_torn_line_starts_a_line_of_its_own(tmp_path):
    log = tmp_path / "evaluations.jsonl"
    log.write_bytes(b'{"fid": 1.0}\n{"fid": 2.')  # the last line cut short by a kill
    append_text(log, json.dumps({"fid": 3.0}) + "\n")
    lines = read_jsonl(log)
    assert [record["fid"] for record in lines.records] == [1.0, 3.0] and lines.bad_lines == [2]


def test_the_plots_read_the_history_without_torch_or_ignite(evaluated_run):
    code = ("import sys; sys.path.insert(0, 'scripts'); import plot_curves; "
            f"lines = plot_curves.RunDir({str(evaluated_run)!r}).history.lines(); "
            "print(len(lines.records), 'torch' in sys.modules, 'ignite' in sys.modules)")
    result = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, cwd=ROOT, env=cli_env(), timeout=120)
    assert result.stdout.split() == ["4", "False", "False"], result.stderr


def test_an_unreadable_statistics_cache_file_is_a_miss_and_is_recomputed(tmp_path, caplog):
    features = torch.randn(12, 4, generator=torch.Generator().manual_seed(0))
    computed = []

    def compute() -> RealStatistics:
        computed.append(1)
        return RealStatistics.from_features(features)

    first = cached_real_statistics(tmp_path, {"dataset": "x"}, compute)
    (path,) = tmp_path.glob("real_stats_*.npz")
    path.write_bytes(path.read_bytes()[:300])  # cut short, e.g. by a full disk of an earlier version
    with caplog.at_level(logging.WARNING):
        second = cached_real_statistics(tmp_path, {"dataset": "x"}, compute)
    assert len(computed) == 2 and "Ignoring unreadable real statistics cache file" in caplog.text
    np.testing.assert_array_equal(second.sigma, first.sigma)
    cached_real_statistics(tmp_path, {"dataset": "x"}, compute)
    assert len(computed) == 2  # rewritten: a hit again


def test_an_unreadable_image_cache_is_decoded_again(tmp_path, image_folder, caplog):
    from gan_ignite.config import load_config
    from gan_ignite.data import load_dataset

    config = load_config(None, tiny_overrides(tmp_path / "run", image_folder, tmp_path, **{"data.cache": "true"}))
    dataset = load_dataset(config.data)
    expected = cached_images(dataset, config.data, tmp_path)[5]
    (path,) = tmp_path.glob("images_*.npy")
    path.write_bytes(path.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING):
        again = cached_images(dataset, config.data, tmp_path)
    assert "unreadable image cache" in caplog.text and len(again) == 48 and torch.equal(again[5], expected)


# ----------------------------------------------------------------------------- validate before writing
def write_yaml(path: Path, content: dict) -> Path:
    path.write_text(yaml.safe_dump(content))
    return path


@pytest.mark.parametrize("extra, words", [
    ({"seed": -1}, "'seed': -1 is out of range"),
    ({"seed": 2**32 - 1, "dist.nproc_per_node": 2, "dist.backend": "gloo"}, "'seed': 4294967295 is out of range"),
    ({"train.batch_size": 64}, "'train.batch_size': 64 is more than the 48 training images"),
    ({"eval.num_samples": 10**12}, "would need about"),
    # the reference set is drawn from the whole training set (48 images here), never the training subset
    ({"data.max_train_size": 4, "train.batch_size": 4, "eval.num_real": "all", "eval.num_samples": 64,
      "eval.nearest_k": 60, "eval.metrics": "[fid,prdc]"}, "reference set has 48 image(s)"),
])
def test_input_that_cannot_work_exits_2_before_anything_is_written(extra, words, tmp_path, image_folder,
                                                                   stats_cache, capsys):
    run_dir = tmp_path / "run"
    assert main(tiny_overrides(run_dir, image_folder, stats_cache, **{**TRAIN_ONLY, "eval.every_epochs": 1,
                                                                      **extra})) == 2
    assert words in last_error(capsys)
    assert not run_dir.exists()


def test_an_empty_output_dir_is_refused(tmp_path, capsys):
    config = write_yaml(tmp_path / "config.yaml", {"output_dir": ""})
    assert main(["--config", str(config)]) == 2
    assert "'output_dir'" in last_error(capsys)


@pytest.mark.parametrize("command, argv, words", [
    ("evaluate", ["--device", "cuda:7"], "does not exist here"),
    ("evaluate", ["--device", "banana"], "is not a device name"),
    ("sample", ["--device", "banana", "--out", "{tmp}/s"], "is not a device name"),
    ("sample", ["--num", str(10**12), "--out", "{tmp}/s"], "would need about"),
    ("sample", ["--seed", "-1", "--out", "{tmp}/s"], "out of range"),
])
def test_run_commands_check_their_options_first(command, argv, words, evaluated_run, tmp_path, capsys):
    entry = {"evaluate": evaluate_main, "sample": sample_main}[command]
    checkpoint = evaluated_run / "checkpoints" / "checkpoint_3.pt"
    before = files_of(evaluated_run)
    assert entry(["--checkpoint", str(checkpoint), *(item.format(tmp=tmp_path) for item in argv)]) == 2
    assert words in last_error(capsys)
    assert files_of(evaluated_run) == before and not (tmp_path / "s").exists()


@pytest.fixture(scope="module")
def statistics_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("stats") / "good.npz"
    RealStatistics.from_features(torch.randn(40, 6, generator=torch.Generator().manual_seed(1))).save(path)
    return path


@pytest.mark.parametrize("option, words", [
    (["--is-splits", "0"], "--is-splits 0 must be at least 1"),
    (["--kid-subsets", "0"], "--kid-subsets 0 must be at least 1"),
    (["--nearest-k", "0"], "--nearest-k 0 must be at least 1"),
    (["--batch-size", "0"], "--batch-size 0 must be at least 1"),
    (["--device", "cuda:9"], "does not exist here"),
])
def test_metrics_cli_options_below_one_exit_2(option, words, statistics_file, capsys):
    assert metrics_main([str(statistics_file), str(statistics_file), *option]) == 2
    assert words in last_error(capsys)


@pytest.mark.parametrize("damage, words", [
    (lambda a: {**a, "mu": np.full_like(a["mu"], np.nan)}, "mu holds NaN"),
    (lambda a: {**a, "sigma": a["sigma"] + np.triu(np.ones_like(a["sigma"]), 1)}, "sigma is not symmetric"),
    (lambda a: {**a, "sigma": a["sigma"] - 10 * np.eye(len(a["mu"]))}, "negative variances"),
    (lambda a: {**a, "features": a["features"][:, :3]}, "features has shape"),
    (lambda a: {key: value for key, value in a.items() if key != "sigma"}, "lacks ['sigma']"),
    (None, "Cannot read statistics file"),
])
def test_malformed_statistics_files_exit_2_naming_the_file_and_print_no_value(damage, words, statistics_file,
                                                                              tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    if damage is None:
        bad.write_bytes(statistics_file.read_bytes()[:500])  # cut short
    else:
        with np.load(statistics_file) as data:
            np.savez(bad, **damage({key: data[key] for key in data.files}))
    assert metrics_main([str(bad), str(statistics_file)]) == 2
    captured = capsys.readouterr()
    assert words in captured.err and str(bad) in captured.err and "FID" not in captured.out


def test_impossible_values_are_never_printed(statistics_file, tmp_path, capsys):
    """A symmetric covariance with a healthy diagonal can still be no covariance at all: the file
    is refused when it is read (not positive semi-definite), and no negative FID is printed."""
    with np.load(statistics_file) as data:
        arrays = {key: data[key] for key in ("mu", "sigma")}
    size = len(arrays["mu"])
    arrays["sigma"] = np.eye(size) + 50 * (np.ones((size, size)) - np.eye(size))  # not positive semidefinite
    np.savez(tmp_path / "indefinite.npz", **arrays)
    assert metrics_main([str(tmp_path / "indefinite.npz"), str(statistics_file), "--metrics", "fid"]) == 2
    captured = capsys.readouterr()
    assert "not positive semi-definite" in captured.err and "FID:" not in captured.out


# ----------------------------------------------------------------------------- failed starts
def test_a_start_that_fails_before_its_first_checkpoint_can_be_run_again(tmp_path, image_folder, stats_cache,
                                                                         reference_12, capsys):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(run_dir, image_folder, stats_cache, **{**ONE_EPOCH, "train.max_epochs": 2})
    with pytest.MonkeyPatch.context() as patch:
        full_disk_for(patch, "history.jsonl", "a")  # fails at the first history flush, before any checkpoint
        assert main(overrides) == 2
    assert "history.jsonl" in last_error(capsys)
    assert (run_dir / "config.yaml").is_file() and not RunDir(run_dir).holds_a_run()
    assert main(overrides) == 0  # the same command: not "already holds a run"
    assert_same_losses(train_records(run_dir), train_records(reference_12))


@pytest.mark.slow
def test_ctrl_c_during_the_real_statistics_exits_130_with_one_line_and_the_same_command_works(
        tmp_path, image_folder, stats_cache, capsys):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(run_dir, image_folder, stats_cache, **{"train.max_epochs": 1})

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluation_module, "reference_statistics", interrupted)
        assert main(overrides) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("Interrupted by Ctrl-C before training")
    assert not run_dir.exists()  # as a kill -9 would leave it, or better
    assert main(overrides) == 0


@pytest.mark.slow
def test_ctrl_c_in_a_real_process_during_the_real_statistics_exits_130_without_a_traceback(tmp_path, image_folder):
    run_dir, cache = tmp_path / "run", tmp_path / "cache"  # a cache of its own: the statistics are computed
    process = start(tiny_overrides(run_dir, image_folder, cache, **{"train.max_epochs": 1}))
    deadline = time.monotonic() + 120
    while "Real statistics cache miss" not in stderr_of(process) and time.monotonic() < deadline:
        assert process.poll() is None, stderr_of(process)[-2000:]
        time.sleep(0.05)
    process.send_signal(2)  # SIGINT, as Ctrl-C sends it
    assert process.wait(timeout=60) == 130
    err = stderr_of(process)
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("Interrupted by Ctrl-C")
    assert not run_dir.exists() and not list(cache.rglob("*.tmp"))  # no half-written statistics


@pytest.mark.parametrize("command", ["evaluate", "sample", "metrics"])
def test_ctrl_c_in_the_other_commands_exits_130_with_one_line(command, evaluated_run, image_folder, tmp_path,
                                                              capsys):
    checkpoint = str(evaluated_run / "checkpoints" / "checkpoint_3.pt")

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    target, entry, argv = {
        "evaluate": ("gan_ignite.evaluation.Evaluation.run", evaluate_main, ["--checkpoint", checkpoint]),
        "sample": ("gan_ignite.sample.to_pil", sample_main,
                   ["--checkpoint", checkpoint, "--out", str(tmp_path / "s"), "--num", "3"]),
        "metrics": ("gan_ignite.metrics.compare.folder_features", metrics_main,
                    [str(image_folder), str(image_folder), "--inception-weights", "random"]),
    }[command]
    before = files_of(evaluated_run)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(target, interrupted)
        assert entry(argv) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("Interrupted by Ctrl-C")
    assert files_of(evaluated_run) == before


# ----------------------------------------------------------------------------- files from the wild
def test_decompression_bombs_are_skipped_and_counted_or_refused_naming_the_file(tmp_path, stats_cache, capsys):
    folder = tmp_path / "images"
    make_shape_images(folder / "a", 16)
    make_shape_images(folder / "b", 1, size=64)  # 4096 pixels: a bomb under the limit below
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Image, "MAX_IMAGE_PIXELS", 1500)  # bombs above 2 x 1500 pixels, as PIL defines them
        overrides = tiny_overrides(tmp_path / "run", folder, stats_cache, **ONE_EPOCH)
        assert main(overrides) == 0
        assert "skipped 1 unreadable image" in capsys.readouterr().err
        strict = tiny_overrides(tmp_path / "strict", folder, stats_cache, **{**ONE_EPOCH,
                                                                            "data.skip_bad_images": "false"})
        assert main(strict) == 2
    message = last_error(capsys)
    assert message.startswith("error: Cannot read image file") and "img_0000.png" in message and "/b/" in message


def test_folder_walks_follow_each_directory_once(tmp_path):
    root = tmp_path / "images"
    make_shape_images(root / "a", 3)
    (root / "a" / "loop").symlink_to(root, target_is_directory=True)  # a symlink loop
    (root / "b").symlink_to(root / "a", target_is_directory=True)  # a second way into a/
    expected = [root / "a" / f"img_{index:04d}.png" for index in range(3)]
    assert find_image_files(root) == expected and list_images(root) == expected


def test_sample_checks_its_file_names_without_listing_them(tmp_path):
    out = tmp_path / "samples"
    make_shape_images(out, 2)  # img_0000.png, img_0001.png: not sample names
    args = argparse.Namespace(out=out, grid=False, gif=None, num=10**12)
    for name in ("000005.png", "1000000.png"):
        (out / name).write_bytes(b"")
    started = time.perf_counter()
    with pytest.raises(Exception, match=r"already holds 2 other image\(s\)"):
        check_outputs(args)  # 10**12 planned names: only a streamed check returns at once
    assert time.perf_counter() - started < 5
    for path in out.glob("img_*.png"):
        path.unlink()
    check_outputs(args)
