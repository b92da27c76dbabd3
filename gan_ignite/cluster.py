"""Where this process sits, read from the environment: alone, under ``torchrun``, or one task of a SLURM
job step (``srun``, where ignite's ``idist.Parallel`` takes the ranks from ``SLURM_*``); the world size
a run will have, the placements that cannot work, and asking SLURM to requeue a job.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from typing import Optional

logger = logging.getLogger("gan_ignite")
# what ignite's SLURM support needs (ignite/distributed/comp_models/native.py, _setup_env_in_slurm)
SLURM_TASK_VARIABLES = ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS", "SLURM_JOB_NODELIST", "SLURM_JOB_NUM_NODES")
# the job's id, kept here once it is hidden from ignite (scontrol requeue needs it)
HIDDEN_JOB_ID = "GAN_IGNITE_SLURM_JOB_ID"


def under_torchrun() -> bool:
    """Started by torchrun (or torch.distributed.launch): its variables give the ranks."""
    return "TORCHELASTIC_RUN_ID" in os.environ or ("LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ
                                                   and not slurm_task())


def slurm_task() -> bool:
    """One task of a SLURM job step started by ``srun``, not under torchrun: ignite reads ``SLURM_*``."""
    return "SLURM_JOB_ID" in os.environ and "SLURM_PROCID" in os.environ and "TORCHELASTIC_RUN_ID" not in os.environ


def slurm_job_id() -> Optional[str]:
    return os.environ.get("SLURM_JOB_ID") or os.environ.get(HIDDEN_JOB_ID) or os.environ.get("SLURM_JOBID")


def most_tasks_per_node() -> int:
    """The most tasks of the step on one node, from ``SLURM_STEP_TASKS_PER_NODE`` (srun) or
    ``SLURM_TASKS_PER_NODE`` (the job), as in ``"2(x3),1"``; else the tasks spread over the nodes."""
    text = os.environ.get("SLURM_STEP_TASKS_PER_NODE") or os.environ.get("SLURM_TASKS_PER_NODE") or ""
    counts = [int(match.group(1)) for part in text.split(",")
              if (match := re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)) and int(match.group(2) or 1) > 0]
    if not counts and slurm_task():  # no per-node counts given: tasks over nodes
        nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1") or 1)
        counts = [-(-slurm_tasks() // nodes)] if nodes > 0 else []
    return max(counts or [1])


def slurm_tasks() -> int:
    return int(os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS") or "1")


def env_world_size() -> int:
    """The processes the launcher started: srun's tasks, torchrun's WORLD_SIZE, else 1."""
    return slurm_tasks() if slurm_task() else int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    """This process's global rank as srun or torchrun set it; 0 for a lone process."""
    return int(os.environ["SLURM_PROCID"]) if slurm_task() else int(os.environ.get("RANK", "0"))


def run_world_size(nproc_per_node: Optional[int]) -> int:
    """The processes a run will have: srun's tasks x ``dist.nproc_per_node`` (one task per node
    spawning that many), torchrun's WORLD_SIZE, or ``dist.nproc_per_node`` on one machine."""
    if slurm_task():
        return slurm_tasks() * (nproc_per_node or 1)
    return env_world_size() if under_torchrun() or not nproc_per_node else nproc_per_node


def describe_processes(nproc_per_node: Optional[int]) -> str:
    if under_torchrun():
        return "torchrun's WORLD_SIZE"
    if slurm_task():
        tasks = f"the {slurm_tasks()} tasks of SLURM job {slurm_job_id()} (SLURM_NTASKS)"
        return tasks + (f" x dist.nproc_per_node={nproc_per_node}" if (nproc_per_node or 1) > 1 else "")
    return "dist.nproc_per_node"


def placement_problem(nproc_per_node: Optional[int], backend: Optional[str]) -> Optional[str]:
    """Why ``dist.*`` cannot work with the SLURM step this process belongs to (None if it can)."""
    if not slurm_task():
        return None
    missing = [name for name in SLURM_TASK_VARIABLES if name not in os.environ]
    if missing and (backend is not None or slurm_tasks() > 1):
        return (f"this process runs in SLURM job {slurm_job_id()} but lacks {', '.join(missing)}, which srun sets "
                f"for each task: start it with srun (see docs/clusters.md)")
    if (nproc_per_node or 1) > 1 and most_tasks_per_node() > 1:
        given = os.environ.get("SLURM_STEP_TASKS_PER_NODE") or os.environ.get("SLURM_TASKS_PER_NODE")
        return (f"{nproc_per_node} processes per task, but srun already started {most_tasks_per_node()} tasks per "
                f"node (SLURM_TASKS_PER_NODE={given}). Either let srun start one task per GPU (--ntasks-per-node=N) "
                f"and set dist.nproc_per_node=null, or start one task per node (--ntasks-per-node=1) that spawns "
                f"dist.nproc_per_node processes")
    return None


def follow_torchrun() -> None:
    """Under torchrun inside a SLURM allocation, hide the job from ignite (it would take the ranks
    from ``SLURM_*`` and reject torchrun's); the id stays readable for :func:`request_requeue`."""
    if "TORCHELASTIC_RUN_ID" in os.environ and "SLURM_JOB_ID" in os.environ:
        os.environ[HIDDEN_JOB_ID] = os.environ.pop("SLURM_JOB_ID")


def spawn_environment(local_rank: int, processes: int, port: int) -> dict[str, str]:
    """The torchrun-like variables of the ``local_rank``-th of ``processes`` processes this task spawns:
    ranks 0..N-1 on 127.0.0.1; as the one task of its node in a SLURM step over several nodes, global
    ranks ``node * N + local_rank`` and ignite's SLURM master address and port."""
    env = {"LOCAL_RANK": str(local_rank), "LOCAL_WORLD_SIZE": str(processes), "RANK": str(local_rank),
           "WORLD_SIZE": str(processes), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    if slurm_task() and slurm_tasks() > 1:
        # ignite's SLURM translation (master address from the node list, port from the job id) has no
        # public form, and ignite does not take user-set ranks under SLURM (pytorch/ignite issue 3259)
        from ignite.distributed.comp_models.native import _setup_ddp_vars_from_slurm_env

        slurm = _setup_ddp_vars_from_slurm_env(dict(os.environ))
        node, nodes = int(os.environ["SLURM_PROCID"]), slurm_tasks()  # one task per node (placement_problem)
        env.update(RANK=str(node * processes + local_rank), WORLD_SIZE=str(nodes * processes),
                   MASTER_ADDR=str(slurm["MASTER_ADDR"]), MASTER_PORT=str(slurm["MASTER_PORT"]))
    return env


def request_requeue() -> None:
    """``scontrol requeue $SLURM_JOB_ID``; a warning when that cannot be done or fails."""
    job_id, scontrol = slurm_job_id(), shutil.which("scontrol")
    if job_id is None or scontrol is None:
        logger.warning("dist.requeue=scontrol, but %s: the job is not requeued by this process (its exit code "
                       "says it should be).", "this is no SLURM job (no SLURM_JOB_ID)" if job_id is None
                       else "the scontrol command is not on PATH")
        return
    try:
        result = subprocess.run([scontrol, "requeue", job_id], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        logger.warning("scontrol requeue %s failed: %s", job_id, error)
        return
    if result.returncode != 0:
        logger.warning("scontrol requeue %s failed (exit code %d): %s", job_id, result.returncode,
                       (result.stderr or result.stdout).strip())
    else:
        logger.info("Asked SLURM to requeue job %s (scontrol requeue)", job_id)
