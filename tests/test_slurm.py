"""SLURM on the CPU: processes started with the environment ``srun`` gives its tasks (gloo, localhost
as every node), a preemption signal mid-epoch, and the placements that cannot work.

- 2 nodes x 1 task train and evaluate; the evaluation of the finished run by 1 node x 2 tasks gives
  the one-process number;
- ``torchrun`` inside an allocation (a 2-node job's variables around it) trains;
- SIGUSR1 to one of 2 tasks mid-epoch: both checkpoint the same, current iteration and exit with the
  requeue code; ``train.resume_from=auto`` then gives the uninterrupted run's losses;
- with ``dist.requeue=scontrol`` rank 0 runs ``scontrol requeue $SLURM_JOB_ID``;
- several tasks per node with ``dist.nproc_per_node``, and a world size that does not divide the
  batch, exit 2 with one paragraph naming the key.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import (PYTHON, ROOT, TRAIN_ONLY, assert_same_losses, cli_env, tiny_overrides, train_records,
                      wait_for_iteration)
from gan_ignite import signals
from gan_ignite.evaluate import main as evaluate_main
from gan_ignite.signals import GracefulStop
from gan_ignite.train import main as train_main

TIMEOUT = 300
METRIC_KEYS = ("fid", "is", "is_std")
REQUEUE_EXIT_CODE = 75  # dist.requeue_exit_code's default


def slurm_job_id() -> str:
    """A job id whose port for ignite (15000 + its last four digits) is free on localhost."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if 15000 <= port <= 24999:
            return f"7{port - 15000:04d}"
    for port in range(24999, 15000, -1):  # the OS hands out ports elsewhere: find one in ignite's range
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return f"7{port - 15000:04d}"
    raise RuntimeError("no free port in 15000..24999")


def srun_env(job_id: str, rank: int, ntasks: int, nodes: int) -> dict[str, str]:
    """What srun sets for task ``rank`` of a step of ``ntasks`` tasks spread evenly over ``nodes``."""
    per_node = ntasks // nodes
    nodelist = ",".join(["127.0.0.1", "localhost"][:nodes]) if nodes <= 2 else "127.0.0.1"
    tasks_per_node = str(per_node) if nodes == 1 else f"{per_node}(x{nodes})"
    return {
        "SLURM_JOB_ID": job_id, "SLURM_JOBID": job_id, "SLURM_STEP_ID": "0", "SLURM_PROCID": str(rank),
        "SLURM_LOCALID": str(rank % per_node), "SLURM_NODEID": str(rank // per_node), "SLURM_NTASKS": str(ntasks),
        "SLURM_NPROCS": str(ntasks), "SLURM_STEP_NUM_TASKS": str(ntasks), "SLURM_JOB_NUM_NODES": str(nodes),
        "SLURM_NNODES": str(nodes), "SLURM_STEP_NUM_NODES": str(nodes), "SLURM_JOB_NODELIST": nodelist,
        "SLURM_NODELIST": nodelist, "SLURM_STEP_NODELIST": nodelist, "SLURM_TASKS_PER_NODE": tasks_per_node,
        "SLURM_STEP_TASKS_PER_NODE": tasks_per_node,
    }


def cpu_env(**extra: str) -> dict[str, str]:
    return {**cli_env(), "CUDA_VISIBLE_DEVICES": "", **extra}


class Step:
    """The tasks of one simulated ``srun`` step, each a process with its stderr in a file."""

    def __init__(self, command: list[str], folder: Path, ntasks: int, nodes: int, env: dict | None = None):
        self.job_id = job_id = slurm_job_id()
        self.logs = [folder / f"task_{rank}_{job_id}.stderr" for rank in range(ntasks)]
        self.tasks = []
        for rank, log in enumerate(self.logs):
            # stderr to files, not pipes: a full pipe nobody reads would block its task in a write
            with log.open("w") as handle:
                self.tasks.append(subprocess.Popen([PYTHON, *command], cwd=ROOT, stdout=subprocess.DEVNULL,
                                                   stderr=handle, env={**cpu_env(), **(env or {}),
                                                                       **srun_env(job_id, rank, ntasks, nodes)}))

    def wait(self) -> list[int]:
        try:
            return [task.wait(timeout=TIMEOUT) for task in self.tasks]
        finally:
            for task in self.tasks:
                task.kill()

    def stderr(self, rank: int = 0) -> str:
        return self.logs[rank].read_text()

    def all_stderr(self) -> str:
        return "\n".join(f"--- task {rank}\n{self.stderr(rank)[-2500:]}" for rank in range(len(self.tasks)))


def history(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "history.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["kind"] == kind]


# ----------------------------------------------------------------------------- launching
@pytest.fixture(scope="module")
def srun_two_node_run(tmp_path_factory, image_folder, stats_cache) -> Path:
    """``srun --nodes=2 --ntasks-per-node=1 python -m gan_ignite.train ...``, 2 epochs, evaluated after the 2nd."""
    run_dir = tmp_path_factory.mktemp("srun_two_nodes") / "run"
    step = Step(["-m", "gan_ignite.train", *tiny_overrides(run_dir, image_folder, stats_cache,
                                                          **{"eval.every_epochs": 2})], run_dir.parent,
                ntasks=2, nodes=2)
    assert step.wait() == [0, 0], step.all_stderr()
    return run_dir


@pytest.mark.slow
def test_srun_on_two_nodes_trains_and_evaluates_as_one_job(srun_two_node_run):
    evaluations = history(srun_two_node_run, "eval")
    assert [(record["epoch"], record["world_size"]) for record in evaluations] == [(2, 2)]
    assert [record["iteration"] for record in train_records(srun_two_node_run)] == list(range(1, 7))
    assert (srun_two_node_run / "checkpoints" / "checkpoint_6.pt").is_file()


@pytest.mark.slow
def test_evaluation_by_two_srun_tasks_gives_the_one_process_number(srun_two_node_run, tmp_path, capsys):
    checkpoint = srun_two_node_run / "checkpoints" / "checkpoint_6.pt"
    assert evaluate_main(["--checkpoint", str(checkpoint)]) == 0
    capsys.readouterr()
    evaluations = srun_two_node_run / "evaluations.jsonl"
    one_process = json.loads(evaluations.read_text().splitlines()[-1])
    step = Step(["-m", "gan_ignite.evaluate", "--checkpoint", str(checkpoint)], tmp_path, ntasks=2, nodes=1)
    assert step.wait() == [0, 0], step.all_stderr()
    two_tasks = json.loads(evaluations.read_text().splitlines()[-1])
    assert (one_process["world_size"], two_tasks["world_size"]) == (1, 2)
    assert two_tasks["iteration"] == one_process["iteration"] == 6
    for key in METRIC_KEYS:
        assert two_tasks[key] == pytest.approx(one_process[key], rel=1e-6, abs=1e-9), key
        assert two_tasks[key] == pytest.approx(history(srun_two_node_run, "eval")[-1][key], rel=1e-6, abs=1e-9), key


@pytest.mark.slow
def test_torchrun_inside_a_slurm_allocation_trains(tmp_path, image_folder, stats_cache):
    # torchrun's ranks (0, 1) disagree with the SLURM task around it (SLURM_PROCID=0 of a 2-node job): ignite
    # would refuse them if it read SLURM_*
    run_dir = tmp_path / "run"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    overrides = tiny_overrides(run_dir, image_folder, stats_cache,
                               **{**TRAIN_ONLY, "dist.backend": "gloo", "train.batch_size": 4, "train.max_epochs": 1})
    log = tmp_path / "torchrun.stderr"
    with log.open("w") as handle:
        result = subprocess.run([PYTHON, "-m", "torch.distributed.run", "--nproc_per_node=2",
                                 f"--master_port={port}", "-m", "gan_ignite.train", *overrides], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=handle, timeout=TIMEOUT,
                                env=cpu_env(**srun_env(slurm_job_id(), 0, ntasks=2, nodes=2)))
    assert result.returncode == 0, log.read_text()[-3000:]
    assert [record["iteration"] for record in train_records(run_dir)] == list(range(1, 13))


def _input_error(monkeypatch, capsys, env: dict[str, str], overrides: list[str]) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert train_main(overrides) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("error:") == 1 and "Traceback" not in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr  # one paragraph
    return stderr


def test_several_tasks_per_node_with_nproc_per_node_exits_2(tmp_path, image_folder, stats_cache, monkeypatch, capsys):
    stderr = _input_error(monkeypatch, capsys, srun_env("123", 0, ntasks=2, nodes=1),
                          tiny_overrides(tmp_path / "run", image_folder, stats_cache, **{"dist.nproc_per_node": 2}))
    assert "'dist.nproc_per_node'" in stderr and "2 tasks per node" in stderr and "--ntasks-per-node" in stderr
    assert not (tmp_path / "run").exists()


def test_a_world_size_that_does_not_divide_the_batch_exits_2(tmp_path, image_folder, stats_cache, monkeypatch,
                                                              capsys):
    stderr = _input_error(monkeypatch, capsys, srun_env("123", 0, ntasks=3, nodes=3),
                          tiny_overrides(tmp_path / "run", image_folder, stats_cache, **{"train.batch_size": 8}))
    assert "'train.batch_size'" in stderr and "not divisible by the 3 processes" in stderr
    assert "SLURM_NTASKS" in stderr
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- preemption
PREEMPTED = {**TRAIN_ONLY, "train.batch_size": 4, "train.max_epochs": 8,  # 12 iterations per epoch, 96 in all
             "log.every": 5, "train.checkpoint_every": 100,  # no epoch checkpoints: only the signal's and the last
             "data.num_workers": 2}  # the resume is exact with loader workers too


@pytest.mark.slow
def test_sigusr1_to_one_task_mid_epoch_checkpoints_requeues_and_resumes_exactly(tmp_path, image_folder,
                                                                                stats_cache):
    reference_dir, run_dir = tmp_path / "reference", tmp_path / "preempted"
    reference = Step(["-m", "gan_ignite.train", *tiny_overrides(reference_dir, image_folder, stats_cache,
                                                               **PREEMPTED)], tmp_path, ntasks=2, nodes=1)
    assert reference.wait() == [0, 0], reference.all_stderr()

    overrides = tiny_overrides(run_dir, image_folder, stats_cache, **PREEMPTED)
    step = Step(["-m", "gan_ignite.train", *overrides], tmp_path, ntasks=2, nodes=1)
    assert wait_for_iteration(step.tasks[0], run_dir, 15, timeout=TIMEOUT)
    step.tasks[1].send_signal(signal.SIGUSR1)  # one task only: the ranks must agree on the iteration
    assert step.wait() == [REQUEUE_EXIT_CODE] * 2, step.all_stderr()
    stderr = step.stderr(0)
    assert "Stopped by SIGUSR1 after iteration" in stderr and "requeued" in stderr and "Traceback" not in stderr
    assert "error:" not in stderr
    last = train_records(run_dir)[-1]["iteration"]
    saved = sorted(int(path.stem.split("_")[1]) for path in (run_dir / "checkpoints").glob("checkpoint_*.pt"))
    assert 15 <= last < 96 and saved == [last], (last, saved)  # the current iteration's, not an epoch end's
    assert f"after iteration {last};" in stderr and f"after iteration {last};" in step.stderr(1)

    resumed = Step(["-m", "gan_ignite.train", *overrides, "train.resume_from=auto"], tmp_path, ntasks=2, nodes=1)
    assert resumed.wait() == [0, 0], resumed.all_stderr()
    records, expected = train_records(run_dir), train_records(reference_dir)
    assert [record["iteration"] for record in records] == list(range(1, 97))  # each iteration once
    assert_same_losses(records, expected)
    largest = max(abs(got[key] - want[key]) for got, want in zip(records, expected) for key in ("Loss_G", "Loss_D"))
    print(f"stopped after iteration {last}; resumed Loss_G/Loss_D of iterations 1-96 vs the uninterrupted run: "
          f"max |difference| {largest:.3g}")


@pytest.mark.slow
def test_one_task_per_node_spawning_nproc_per_node_processes_forms_one_group(tmp_path, image_folder, stats_cache):
    # 2 nodes x 1 task x dist.nproc_per_node=2: one group of 4 (global ranks node * 2 + i), not two of 2
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(run_dir, image_folder, stats_cache, **{
        **TRAIN_ONLY, "dist.nproc_per_node": 2, "dist.backend": "gloo", "train.batch_size": 4,
        "train.max_epochs": 1})
    step = Step(["-m", "gan_ignite.train", *overrides], tmp_path, ntasks=2, nodes=2)
    assert step.wait() == [0, 0], step.all_stderr()
    assert [record["iteration"] for record in train_records(run_dir)] == list(range(1, 13))  # 48 images / 4
    checkpoint = torch.load(run_dir / "checkpoints" / "checkpoint_12.pt", weights_only=False)
    assert len(checkpoint["rng_states_per_rank"]["per_rank"]) == 4


FAKE_SCONTROL = """#!/bin/sh
echo "$@" >> "{calls}"
"""


@pytest.mark.slow
def test_requeue_with_scontrol_asks_slurm_once(tmp_path, image_folder, stats_cache):
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol_calls"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(FAKE_SCONTROL.format(calls=calls))
    (bin_dir / "scontrol").chmod(0o755)
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(run_dir, image_folder, stats_cache, **{**PREEMPTED, "dist.requeue": "scontrol"})
    step = Step(["-m", "gan_ignite.train", *overrides], tmp_path, ntasks=1, nodes=1,
                env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert wait_for_iteration(step.tasks[0], run_dir, 5, timeout=TIMEOUT)
    step.tasks[0].send_signal(signal.SIGUSR1)
    assert step.wait() == [REQUEUE_EXIT_CODE], step.all_stderr()
    assert calls.read_text().splitlines() == [f"requeue {step.job_id}"]
    assert f"Asked SLURM to requeue job {step.job_id}" in step.stderr(0)


def test_a_warning_signal_during_the_setup_is_kept_for_the_graceful_stop():
    # SIGUSR1's default action ends the process: before the trainer's handler is installed the launcher
    # holds it, and the graceful stop then acts on it after the first iteration
    previous = signal.getsignal(signal.SIGUSR1)
    handlers_logger = logging.getLogger("gan_ignite")
    # the "gan_ignite" logger may still write to an earlier in-process run's stderr, closed by now
    handlers_logger.disabled = True
    try:
        signals.hold_warning_signal()
        os.kill(os.getpid(), signal.SIGUSR1)  # the process survives
        stop = GracefulStop()
        stop.install()
        try:
            assert stop.received == signal.SIGUSR1
        finally:
            stop.uninstall()
        assert signals.take_held_signal() is None
    finally:
        signal.signal(signal.SIGUSR1, previous)
        handlers_logger.disabled = False


@pytest.mark.parametrize("override, words", [
    ("dist.requeue_exit_code=2", "differ from 1, 2, 130"),
    ("dist.requeue_on=[SIGKILL]", "not among ['SIGUSR1', 'SIGTERM']"),
    ("dist.requeue=sometimes", "not one of exit_code, scontrol"),
])
def test_requeue_settings_are_checked_before_any_work(override, words, tmp_path, image_folder, stats_cache, capsys):
    assert train_main(tiny_overrides(tmp_path / "run", image_folder, stats_cache) + [override]) == 2
    stderr = capsys.readouterr().err
    assert f"'{override.split('=')[0]}'" in stderr and words in stderr and "Traceback" not in stderr
    assert not (tmp_path / "run").exists()
