"""Starting a run's processes, each running ``worker(local_rank, config)``: one; those of ``torchrun`` or
``srun``; or, with ``dist.nproc_per_node=N``, N spawned here rather than by ``idist.Parallel``, so that
signals are forwarded to them (a scheduler signals the parent only) and a worker's input error is one
paragraph. Anything but success is raised as :class:`~gan_ignite.errors.RunStopped`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Optional

import ignite.distributed as idist
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from omegaconf import DictConfig

from gan_ignite import cluster, signals
from gan_ignite.command import outcome, report
from gan_ignite.config import MAX_SEED
from gan_ignite.errors import ConfigError, RunStopped

logger = logging.getLogger("gan_ignite")
Worker = Callable[[int, DictConfig], None]
CLOSE_TIMEOUT_SECONDS = 30.0  # how long the end of a run waits for the other processes


# ----------------------------------------------------------------------------- what the launch decides
def check_launch(config: DictConfig) -> None:
    """What depends on where and how the run is launched, checked before any process starts."""
    nproc, gpus = config.dist.nproc_per_node, torch.cuda.device_count()
    size, processes = cluster.run_world_size(nproc), nproc or 1
    problem = cluster.placement_problem(nproc, config.dist.backend)
    checks = [
        (problem is None, "dist.nproc_per_node", str(problem)),
        (0 <= config.seed <= MAX_SEED - (size - 1), "seed",
         f"{config.seed} is out of range: each process seeds its random generators with seed + rank, which must "
         f"lie in [0, {MAX_SEED}]"),
        (config.train.batch_size % size == 0, "train.batch_size",
         f"{config.train.batch_size} (the global batch) is not divisible by the {size} processes "
         f"({cluster.describe_processes(nproc)}); choose a multiple of {size}"),
        (config.eval.every_epochs == 0 or config.eval.num_samples >= size, "eval.num_samples",
         f"{config.eval.num_samples} is too few: one per process ({size}); raise eval.num_samples"),
        (not gpus or processes <= gpus, "dist.nproc_per_node",
         f"{processes} but only {gpus} GPU(s) are visible: each process needs a GPU of its own. Lower "
         f"dist.nproc_per_node, or train on CPU processes with CUDA_VISIBLE_DEVICES='' and dist.backend=gloo"),
    ]
    for passed, key, message in checks:
        if not passed:
            raise ConfigError(f"Invalid value for config key '{key}': {message}.")


def resolve_backend(config: DictConfig) -> Optional[str]:
    """``dist.backend``, or nccl / gloo when several processes are asked for without one."""
    backend = config.dist.backend
    if backend is None and ((config.dist.nproc_per_node or 1) > 1 or cluster.env_world_size() > 1):
        return "nccl" if torch.cuda.is_available() else "gloo"
    return None if backend is None else str(backend)


# ----------------------------------------------------------------------------- launching
def launch(worker: Worker, config: DictConfig, debug: bool = False, keep_alive: Any = None,
           interrupted: str = "Interrupted by Ctrl-C.") -> None:
    """Run ``worker`` on every rank; a failure or a stop is raised as :class:`RunStopped`. Spawned workers
    hold ``keep_alive`` (e.g. the run directory's lock) while they run; ``interrupted``: the Ctrl-C line."""
    check_launch(config)
    cluster.follow_torchrun()
    signals.hold_warning_signal()
    backend, processes = resolve_backend(config), config.dist.nproc_per_node or 1

    def leave_now(code: int, text: str) -> None:
        report(text)
        _requeue_if_asked(code, config)
        sys.stdout.flush()
        os._exit(code)

    if processes > 1 and not cluster.under_torchrun():
        code, text = _spawn(worker, config, processes, backend, debug, keep_alive, interrupted)
    else:
        code, text = _run_here(worker, config, backend, debug, interrupted, leave_now)
    _requeue_if_asked(code, config)
    if code or text:
        raise RunStopped(code, text.removeprefix("error: "), is_error=text.startswith("error: "))


def _requeue_if_asked(code: int, config: DictConfig) -> None:
    """With ``dist.requeue=scontrol``, rank 0 of a run stopped for a requeue asks SLURM to requeue the job."""
    if code == config.dist.requeue_exit_code and config.dist.requeue == "scontrol" and cluster.env_rank() == 0:
        cluster.request_requeue()


def _run_here(worker: Worker, config: DictConfig, backend: Optional[str], debug: bool, interrupted: str,
              leave_now: Callable[[int, str], None]) -> tuple[int, str]:
    """``worker`` in this process's ``idist.Parallel`` context: ``(exit code, message)``. When the others
    never reach the end, ``leave_now`` ends this process before ``Parallel`` would wait for them."""
    result: dict[str, tuple[int, str]] = {}

    def work() -> None:
        with idist.Parallel(backend=backend) as parallel:
            result["run"] = outcome(lambda: parallel.run(worker, config), debug, interrupted)
            if not close_process_group(barrier=result["run"][0] == 0):  # no barrier where others may wait
                leave_now(*result["run"])

    started = outcome(work, debug, interrupted)  # the group itself failed to start or to close
    return started if started[0] or "run" not in result else result["run"]


def close_process_group(barrier: bool) -> bool:
    """A barrier (ignite's ``Parallel`` destroys the group without one) and ``idist.finalize``, in a thread
    given ``CLOSE_TIMEOUT_SECONDS``; False if another rank never arrived (it failed or hangs)."""
    if not (dist.is_available() and dist.is_initialized()):
        return True
    device, closed = idist.device(), threading.Event()

    def close() -> None:
        try:
            if device.type == "cuda":  # the current device is per thread: NCCL's barrier must use this rank's
                torch.cuda.set_device(device)
            if barrier:
                dist.barrier()
            idist.finalize()
            closed.set()
        except Exception as error:  # a broken group: leave without it, as on a timeout
            logger.warning("Closing the process group failed: %s", error)

    thread = threading.Thread(target=close, name="close-process-group", daemon=True)
    thread.start()
    thread.join(CLOSE_TIMEOUT_SECONDS)
    if not closed.is_set():
        logger.warning("Rank %d: the other processes did not reach the end of the run within %.0f s (one of them "
                       "failed or hangs); leaving the process group without them.", idist.get_rank(),
                       CLOSE_TIMEOUT_SECONDS)
    return closed.is_set()


# ----------------------------------------------------------------------------- spawn mode
def _spawn(worker: Worker, config: DictConfig, processes: int, backend: Optional[str], debug: bool,
           keep_alive: Any, interrupted: str) -> tuple[int, str]:
    with tempfile.TemporaryDirectory(prefix="gan_ignite_outcomes_") as outcome_dir:
        context = mp.start_processes(_spawned_worker, nprocs=processes, join=False, start_method="spawn",
                                     args=(worker, config, processes, backend, debug, _free_port(), outcome_dir,
                                           keep_alive, interrupted))
        with signals.Forward(lambda: context.processes):
            try:
                while not context.join(timeout=1.0):
                    pass
            except mp.ProcessRaisedException as failure:  # a bug: the worker's traceback is in the message
                return 1, f"error: a worker process failed:\n{failure}"
            except mp.ProcessExitedException as failure:
                return _first_failure(outcome_dir, processes) or (failure.exit_code or 1, f"error: {failure}")
        return _first_failure(outcome_dir, processes) or (0, "")


def _spawned_worker(local_rank: int, worker: Worker, config: DictConfig, processes: int, backend: Optional[str],
                    debug: bool, port: int, outcome_dir: str, keep_alive: Any, interrupted: str) -> None:
    del keep_alive  # unpickled, e.g. the lock's open file, which stays open until this process ends
    # a Ctrl-C reaches the parent only, which forwards it once (a second would mean "abort at once")
    with contextlib.suppress(OSError):
        os.setpgrp()
    signals.hold_warning_signal()
    os.environ.update(cluster.spawn_environment(local_rank, processes, port))
    if "SLURM_JOB_ID" in os.environ:  # the ranks are the ones just set, not the srun task's
        os.environ[cluster.HIDDEN_JOB_ID] = os.environ.pop("SLURM_JOB_ID")

    def write_outcome(code: int, text: str) -> None:
        Path(outcome_dir, f"rank{local_rank}.json").write_text(json.dumps({"code": code, "text": text}))

    def leave_now(code: int, text: str) -> None:
        write_outcome(code, text)
        os._exit(code)

    code, text = _run_here(worker, config, backend, debug, interrupted, leave_now)
    write_outcome(code, text)
    if code not in (0, 130, config.dist.requeue_exit_code):  # a failure: the parent stops the other workers at once
        sys.exit(code)


def _first_failure(outcome_dir: str, processes: int) -> Optional[tuple[int, str]]:
    """``(code, text)`` of the first rank that failed, else of the first that wrote its outcome; None if none did."""
    paths = [Path(outcome_dir, f"rank{rank}.json") for rank in range(processes)]
    written = [json.loads(path.read_text()) for path in paths if path.is_file()]
    failed = [item for item in written if item["code"] != 0]
    if not written:
        return None
    chosen = (failed or written)[0]
    return chosen["code"], chosen["text"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
