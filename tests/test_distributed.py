"""One checkpoint, one number: two gloo processes on the CPU, through every launcher.

- a run trained by two torchrun "nodes" on localhost completes with evaluation;
- its training-time record equals the standalone evaluation of the same checkpoint in one
  process, in two spawned processes and under torchrun with two processes;
- a failed cache write stops both processes with one message, no hang;
- a two-process run stopped by SIGTERM mid-epoch and resumed gives the uninterrupted losses.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import (PYTHON, ROOT, TRAIN_ONLY, assert_same_losses, cli_env, start, stderr_of, tiny_overrides,
                      train_records, wait_for_iteration)
from gan_ignite.evaluate import main as evaluate_main

METRIC_KEYS = ("fid", "is", "is_std", "kid", "kid_std", "precision", "recall", "density", "coverage")
ALL_METRICS = {"eval.metrics": "[fid,is,kid,prdc]", "eval.kid_subsets": 5, "eval.kid_subset_size": 12,
               "eval.nearest_k": 3}
TIMEOUT = 300


def cpu_env() -> dict[str, str]:
    return {**cli_env(), "CUDA_VISIBLE_DEVICES": ""}  # CPU processes, also on a machine with GPUs


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(*args: str) -> list[str]:
    return [PYTHON, "-m", "torch.distributed.run", *args]


def run_cli(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, env=cpu_env(), cwd=ROOT, timeout=TIMEOUT)


def eval_records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "history.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["kind"] == "eval"]


def standalone_records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "evaluations.jsonl").read_text().splitlines()]


def assert_same_metrics(got: dict, expected: dict) -> None:
    for key in METRIC_KEYS:
        assert got[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-9), key


@pytest.fixture(scope="module")
def two_node_run(tmp_path_factory, image_folder, stats_cache) -> Path:
    """Two torchrun invocations on localhost, one process each, as two nodes of one gloo job."""
    run_dir = tmp_path_factory.mktemp("two_nodes") / "run"
    overrides = tiny_overrides(run_dir, image_folder, stats_cache, **ALL_METRICS)
    port = free_port()
    # stderr to files, not pipes: reading one node's pipe to the end while the other's fills up
    # would block that node in a write and its peer in a collective (a deadlock)
    logs = [run_dir.parent / f"node_{rank}.stderr" for rank in (0, 1)]
    with logs[0].open("w") as log_0, logs[1].open("w") as log_1:
        nodes = [subprocess.Popen(torchrun("--nnodes=2", f"--node_rank={rank}", "--nproc_per_node=1",
                                           "--master_addr=127.0.0.1", f"--master_port={port}", "-m",
                                           "gan_ignite.train", *overrides),
                                  stdout=subprocess.DEVNULL, stderr=log, env=cpu_env(), cwd=ROOT)
                 for rank, log in zip((0, 1), (log_0, log_1))]
        try:
            for node in nodes:
                node.wait(timeout=TIMEOUT)
        finally:
            for node in nodes:
                node.kill()
    for node, log in zip(nodes, logs):
        assert node.returncode == 0, log.read_text()[-3000:]
    return run_dir


@pytest.mark.slow
def test_two_node_torchrun_run_trains_and_evaluates(two_node_run):
    records = eval_records(two_node_run)
    assert [(r["epoch"], r["world_size"], r["model"]) for r in records] == [(1, 2, "generator"), (2, 2, "generator")]
    assert all(r["fid"] > 0 and r["kid_subset_size"] == 12 for r in records)
    assert [r["iteration"] for r in train_records(two_node_run)] == list(range(1, 7))
    assert (two_node_run / "checkpoints" / "checkpoint_6.pt").is_file()


@pytest.mark.slow
def test_one_process_evaluation_reproduces_the_two_process_record(two_node_run, capsys):
    # fails if ranks score different BatchNorm statistics or draw other latents than one process
    assert evaluate_main(["--checkpoint", str(two_node_run / "checkpoints" / "checkpoint_6.pt")]) == 0
    assert "reproduces the history.jsonl record of iteration 6" in capsys.readouterr().out
    standalone = standalone_records(two_node_run)[-1]
    assert (standalone["world_size"], standalone["num_samples"], standalone["iteration"]) == (1, 24, 6)
    assert_same_metrics(standalone, eval_records(two_node_run)[-1])


@pytest.mark.parametrize("launcher", ["spawn", "torchrun"])
@pytest.mark.slow
def test_two_process_evaluation_equals_one_process(launcher, two_node_run):
    checkpoint = str(two_node_run / "checkpoints" / "checkpoint_3.pt")
    if launcher == "spawn":
        command = [PYTHON, "-m", "gan_ignite.evaluate", "--checkpoint", checkpoint, "dist.nproc_per_node=2"]
    else:
        command = torchrun("--nproc_per_node=2", f"--master_port={free_port()}", "-m", "gan_ignite.evaluate",
                           "--checkpoint", checkpoint)
    result = run_cli(command)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reproduces the history.jsonl record of iteration 3" in result.stdout
    two_process = standalone_records(two_node_run)[-1]
    assert two_process["world_size"] == 2 and two_process["iteration"] == 3
    assert_same_metrics(two_process, eval_records(two_node_run)[0])


@pytest.mark.slow
def test_unwritable_cache_stops_both_processes_with_one_message(tmp_path, image_folder):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(run_dir, image_folder, blocker / "cache", **{
        "dist.nproc_per_node": 2, "dist.backend": "gloo", "train.max_epochs": 1})
    result = run_cli([PYTHON, "-m", "gan_ignite.train", *overrides])
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.count("Could not write the real statistics cache") == 1
    assert "eval.stats_cache_dir" in result.stderr and "Traceback" not in result.stderr
    assert not list((run_dir / "checkpoints").glob("*.pt"))  # stopped before any training time was spent


@pytest.mark.slow
def test_two_process_sigterm_mid_epoch_and_resume_equal_the_uninterrupted_run(tmp_path, image_folder, stats_cache):
    common = {**TRAIN_ONLY, "dist.nproc_per_node": 2, "dist.backend": "gloo", "train.batch_size": 4, "log.every": 1,
              "train.max_epochs": 2}  # 12 iterations per epoch
    reference_dir, run_dir = tmp_path / "reference", tmp_path / "interrupted"
    reference = run_cli([PYTHON, "-m", "gan_ignite.train", *tiny_overrides(reference_dir, image_folder, stats_cache,
                                                                            **common)])
    assert reference.returncode == 0, reference.stderr[-3000:]
    overrides = tiny_overrides(run_dir, image_folder, stats_cache, **common)
    process = start(overrides, env=cpu_env())
    assert wait_for_iteration(process, run_dir, 14)
    process.send_signal(signal.SIGTERM)  # to the parent only, as a scheduler does; it forwards to the workers
    assert process.wait(timeout=TIMEOUT) == 0, stderr_of(process)[-3000:]
    stderr = stderr_of(process)
    assert "SIGTERM" in stderr and "resume_from=auto" in stderr and "Traceback" not in stderr
    last = train_records(run_dir)[-1]["iteration"]
    assert 14 <= last < 24 and last % 12 and (run_dir / "checkpoints" / f"checkpoint_{last}.pt").is_file()
    resumed = run_cli([PYTHON, "-m", "gan_ignite.train", *overrides, "train.resume_from=auto"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_losses(train_records(run_dir), train_records(reference_dir))
