"""Starting the processes of a run, shared by the train and evaluate command lines.

Three ways to run, one worker function ``worker(local_rank, config)`` executed on every rank:

- one process (no ``dist.*`` set);
- under ``torchrun``, or as the tasks of ``srun`` (one per GPU): ``idist.Parallel`` joins the process
  group from the environment (torchrun's variables, or ``SLURM_*`` through ignite's native SLURM
  support; see :mod:`gan_ignite.cluster`), on one or several nodes;
- ``dist.nproc_per_node=N``: this module spawns N processes itself. It does not use
  ``idist.Parallel``'s own spawning, because it must (1) forward SIGTERM / SIGINT / SIGUSR1 to the
  workers (a scheduler signals the parent only) and (2) report a worker's input error as one paragraph
  with exit code 2 instead of a traceback. Each worker joins the group through the same
  environment variables torchrun would set (as the one ``srun`` task of its node, with global ranks
  over all the step's nodes).

Input errors (:data:`~gan_ignite.errors.INPUT_ERRORS`) end a process with exit code 2 and a one-paragraph message;
:class:`~gan_ignite.errors.RunStopped` carries its own exit code and message; Ctrl-C anywhere ends
it with exit code 130 and one line.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Optional

import ignite.distributed as idist
import ignite.distributed.utils as idist_utils
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from omegaconf import DictConfig

from gan_ignite import cluster
from gan_ignite.cluster import env_world_size, under_torchrun
from gan_ignite.errors import INPUT_ERRORS, RunStopped

env_rank = cluster.env_rank  # the command lines ask the launcher for their rank before it starts
Worker = Callable[[int, DictConfig], None]


def launched_by_torchrun() -> bool:
    return under_torchrun()


def resolve_backend(config: DictConfig) -> Optional[str]:
    """``dist.backend``, or nccl / gloo when several processes are asked for without one."""
    backend = config.dist.backend
    several = (config.dist.nproc_per_node or 1) > 1 or env_world_size() > 1
    if backend is None and several:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    return backend


INTERRUPTED = "Interrupted by Ctrl-C."


def launch(worker: Worker, config: DictConfig, debug: bool = False, keep_alive: Any = None,
           interrupted: str = INTERRUPTED) -> int:
    """Run ``worker`` on every rank and return the exit code for this process. ``keep_alive`` (e.g.
    the run directory's lock) is handed to spawned workers, which hold it while they run;
    ``interrupted`` is the line printed for a Ctrl-C."""
    cluster.follow_torchrun()
    cluster.hold_warning_signal()
    backend = resolve_backend(config)
    processes = config.dist.nproc_per_node or 1
    if processes > 1 and not under_torchrun():
        code = _spawn(worker, config, processes, backend, debug, keep_alive, interrupted)
        requeue_if_asked(code, config)
        return code
    code, message = run_reporting(worker, config, backend, debug, interrupted)
    report(code, message, config.dist.requeue_exit_code)
    requeue_if_asked(code, config)
    exit_now_if_left_open(code)
    return code


def requeue_if_asked(code: int, config: DictConfig) -> None:
    """With ``dist.requeue=scontrol``, a run stopped for a requeue (exit code
    ``dist.requeue_exit_code``) asks SLURM to requeue the job: once, from rank 0, after every rank
    has finished (the process group is closed)."""
    if code == config.dist.requeue_exit_code and config.dist.requeue == "scontrol" and env_rank() == 0:
        cluster.request_requeue()


def run_reporting(worker: Worker, config: DictConfig, backend: Optional[str], debug: bool,
                  interrupted: str = INTERRUPTED) -> tuple[int, str]:
    """Run ``worker`` in this process's ``idist.Parallel`` context; ``(exit code, message)``."""
    try:
        with idist.Parallel(backend=backend) as parallel:
            try:
                parallel.run(worker, config)
            except BaseException:  # the other ranks may wait in a collective: no barrier, leave at once
                close_process_group(barrier=False)
                raise
            close_process_group()
    except INPUT_ERRORS as error:
        if debug:
            raise
        return 2, clean_message(str(error))
    except RunStopped as stopped:
        return stopped.exit_code, stopped.message
    except KeyboardInterrupt:
        return 130, interrupted
    return 0, ""


# how long the end of a run waits for the other processes before it leaves without them
CLOSE_TIMEOUT_SECONDS = 30.0
_left_open = {"process_group": False}


def close_process_group(timeout: float = CLOSE_TIMEOUT_SECONDS, barrier: bool = True) -> bool:
    """End this process's part of the process group: a barrier (every rank has finished its
    collectives; skipped with ``barrier=False`` on the error path, where the others may wait in a
    collective), then ignite's ``idist.finalize`` (``destroy_process_group``), both in a thread given
    ``timeout`` seconds. ignite's ``Parallel`` destroys the group without a barrier, and a 1-process
    torchrun + NCCL run was seen hanging there after "End of run". If another rank never arrives
    (it crashed or hangs), this rank logs it and leaves without the group; the process then ends
    through :func:`exit_now_if_left_open` instead of waiting in the interpreter's shutdown. True if
    the group was closed."""
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
            logging.getLogger("gan_ignite").warning("Closing the process group failed: %s", error)

    thread = threading.Thread(target=close, name="close-process-group", daemon=True)
    thread.start()
    thread.join(timeout)
    if not closed.is_set():
        logging.getLogger("gan_ignite").warning(
            "Rank %d: the other processes did not reach the end of the run within %.0f s (one of them failed or "
            "hangs); leaving the process group without them.", idist.get_rank(), timeout)
        # ignite's Parallel would destroy the group again and wait for the missing ranks, and idist's
        # next get_rank() would re-read the still initialised group with collectives: one process from now on
        idist_utils._set_model(idist_utils._SerialModel())
        idist_utils._need_to_sync = False
        _left_open["process_group"] = True
    return closed.is_set()


def exit_now_if_left_open(code: int) -> None:
    """After :func:`close_process_group` gave up, the interpreter's shutdown could wait on the group
    (NCCL's destructors): flush and end the process with ``code`` at once."""
    if _left_open["process_group"]:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def report(code: int, message: str, requeue_code: Optional[int] = None) -> None:
    """A message on stderr, after "error: " unless the code means success, Ctrl-C or a requeue."""
    if message:
        print(("error: " if code not in (0, 130, requeue_code) else "") + message, file=sys.stderr)


def input_error_exit(error: Exception, debug: bool) -> int:
    """A command line's input error: re-raised with ``--debug`` (to show the traceback), otherwise
    one paragraph on stderr and exit code 2."""
    if debug:
        raise error
    report(2, clean_message(str(error)))
    return 2


def interrupted_exit(message: str = INTERRUPTED) -> int:
    """A command line interrupted by Ctrl-C: one line on stderr and exit code 130."""
    report(130, message)
    return 130


def clean_message(message: str) -> str:
    """A UserError raised inside a DataLoader worker comes back with the worker's traceback in its
    message; keep only the error's own text."""
    marker = "Original Traceback (most recent call last):"
    if marker in message:
        message = message.strip().splitlines()[-1].split(": ", 1)[-1]
    return message


# ----------------------------------------------------------------------------- spawn mode
def _spawn(worker: Worker, config: DictConfig, processes: int, backend: Optional[str], debug: bool,
           keep_alive: Any, interrupted: str) -> int:
    with tempfile.TemporaryDirectory(prefix="gan_ignite_outcomes_") as outcome_dir:
        context = mp.start_processes(_spawned_worker, nprocs=processes, join=False, start_method="spawn",
                                     args=(worker, config, processes, backend, debug, _free_port(), outcome_dir,
                                           keep_alive, interrupted))
        forwarded = _forward_signals_to(context.processes)
        try:
            while not context.join(timeout=1.0):
                pass
        except mp.ProcessRaisedException as failure:  # a bug: the worker's traceback is in the message
            print(f"error: a worker process failed:\n{failure}", file=sys.stderr)
            return 1
        except mp.ProcessExitedException as failure:
            outcomes = _read_outcomes(outcome_dir, processes)
            code, message = _first_failure(outcomes) or (failure.exit_code or 1, str(failure))
            report(code, message, config.dist.requeue_exit_code)
            return code
        finally:
            _restore_signals(forwarded)
        code, message = _first_failure(_read_outcomes(outcome_dir, processes)) or (0, "")
        report(code, message, config.dist.requeue_exit_code)
        return code


def _spawned_worker(local_rank: int, worker: Worker, config: DictConfig, processes: int, backend: Optional[str],
                    debug: bool, port: int, outcome_dir: str, keep_alive: Any, interrupted: str) -> None:
    del keep_alive  # unpickled, e.g. the lock's open file, which stays open until this process ends
    # Leave the terminal's process group: a Ctrl-C reaches the parent only, which forwards it
    # once (a second copy would mean "abort at once" to the graceful stop).
    try:
        os.setpgrp()
    except OSError:
        pass
    cluster.hold_warning_signal()
    os.environ.update(cluster.spawn_environment(local_rank, processes, port))
    if "SLURM_JOB_ID" in os.environ:  # the ranks are the ones just set, not the srun task's
        os.environ[cluster.HIDDEN_JOB_ID] = os.environ.pop("SLURM_JOB_ID")
    code, message = run_reporting(worker, config, backend, debug, interrupted)
    Path(outcome_dir, f"rank{local_rank}.json").write_text(json.dumps({"code": code, "message": message}))
    exit_now_if_left_open(code)
    if code not in (0, 130, config.dist.requeue_exit_code):  # a failure: the parent stops the other workers at once
        sys.exit(code)


def _read_outcomes(outcome_dir: str, processes: int) -> list[dict[str, Any]]:
    outcomes = []
    for rank in range(processes):
        path = Path(outcome_dir, f"rank{rank}.json")
        outcomes.append(json.loads(path.read_text()) if path.is_file() else {"code": None, "message": ""})
    return outcomes


def _first_failure(outcomes: list[dict[str, Any]]) -> Optional[tuple[int, str]]:
    """``(code, message)`` of rank 0, unless rank 0 wrote none or succeeded while another rank
    failed: then of the first rank that failed. None if no rank wrote an outcome."""
    written = [outcome for outcome in outcomes if outcome["code"] is not None]
    failed = [outcome for outcome in written if outcome["code"] != 0]
    if not written:
        return None
    rank0 = outcomes[0]
    chosen = rank0 if rank0["code"] not in (None, 0) or (rank0["code"] == 0 and not failed) else \
        (failed or written)[0]
    return chosen["code"], chosen["message"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# what a scheduler or a user sends to the parent of spawned workers (SIGUSR1: SLURM's --signal=USR1@90)
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def _forward_signals_to(processes: list) -> dict[int, Any]:
    def forward(signum: int, _frame: Any) -> None:
        for process in processes:
            if process.is_alive():
                os.kill(process.pid, signum)

    return {signum: signal.signal(signum, forward) for signum in FORWARDED_SIGNALS}


def _restore_signals(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)
