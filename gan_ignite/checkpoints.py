"""Checkpoints: reading them, where a training start resumes from, the run's identity, and the periodic
and best-by-FID :class:`~ignite.handlers.Checkpoint` handlers (their lists of saved files travel in every
periodic checkpoint). A run gets an id when it starts: another run's checkpoint cannot be resumed into it;
continuing one in a new directory is a fork, which records its parent (``run.parent_id``, ``run.parent_checkpoint``).
"""

from __future__ import annotations

import datetime
import math
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import ignite.distributed as idist
from ignite.engine import Engine, Events
from ignite.handlers.checkpoint import BaseSaveHandler, Checkpoint

from gan_ignite.errors import RunDirError
from gan_ignite.io import atomic_write, first_line, load_torch_file
from gan_ignite.metrics._base import on_every_rank
from gan_ignite.run_dir import RUN_KEYS, RunDir

MODEL_KEYS = {"generator": "generator", "ema": "ema_generator"}  # eval.model -> the checkpoint's entry
# entries that a run with another recipe, or a fork's first checkpoint, may lack
OPTIONAL_STATE = ("ema_generator", "ada", "checkpointer", "best_checkpointer", "networks")
RESUME_FIX = "Pass another file to train.resume_from (e.g. the run's previous checkpoint), or start a new run."
WRITE_INTACT = ("The previous checkpoints are intact (each is written to a temporary file and renamed when "
                "complete). Free some space (or fix the folder) and continue with train.resume_from=auto.")


def read_checkpoint(path: Path, fix: str) -> dict:
    """The checkpoint in ``path`` on the CPU, read as data; anything else raises :class:`RunDirError`."""
    checkpoint = load_torch_file(path, "Checkpoint", fix, RunDirError)
    if not isinstance(checkpoint, dict):
        raise RunDirError(f"'{path}' is not a gan_ignite checkpoint (it holds a {type(checkpoint).__name__}). {fix}")
    return checkpoint


def restore(to_load: Mapping[str, Any], checkpoint: Mapping[str, Any], path: Path) -> None:
    """ignite's ``Checkpoint.load_objects``; a checkpoint that does not fit is a :class:`RunDirError`."""
    try:
        Checkpoint.load_objects(to_load=to_load, checkpoint=checkpoint)
    except (RuntimeError, KeyError, ValueError, TypeError) as error:
        raise RunDirError(f"Checkpoint '{path}' does not fit this config: {first_line(error)}. Resume with the config "
                          f"the run was started with (its output_dir/config.yaml), or start a new run.") from None


class CheckpointSaver(BaseSaveHandler):
    """ignite's save handler: an atomic write on rank 0."""

    def __init__(self, checkpoint_dir: Path):
        self.checkpoint_dir = checkpoint_dir

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Optional[Mapping] = None) -> None:
        import torch

        if idist.get_rank() == 0:
            atomic_write(self.checkpoint_dir / filename, lambda handle: torch.save(checkpoint, handle), WRITE_INTACT)

    def remove(self, filename: str) -> None:
        if idist.get_rank() == 0:
            (self.checkpoint_dir / filename).unlink(missing_ok=True)


# ----------------------------------------------------------------------------- the run's identity
def new_run_id() -> str:
    return f"{datetime.datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}"


class RunIdentity:
    """The ``run`` entry of every checkpoint (config.yaml's ``run``), never loaded back: :func:`plan_start`
    decides a start's identity."""

    def __init__(self, fields: Mapping[str, Optional[str]]):
        self.fields = {key: fields.get(key) for key in RUN_KEYS}

    def state_dict(self) -> dict[str, Any]:
        return dict(self.fields)

    def load_state_dict(self, _state: Mapping[str, Any]) -> None:
        pass


class NetworkPaths(RunIdentity):
    """The ``networks`` entry of every checkpoint: the class paths of the run's own generator and
    discriminator (null: built in), data that a start compares and never imports."""

    def __init__(self, model: Any):
        self.fields = {role: model[role] for role in ("generator", "discriminator")}


def checkpoint_run(checkpoint: Mapping[str, Any], path: Path) -> dict[str, Optional[str]]:
    """The checkpoint's ``run`` fields, each a plain string or null; anything else (e.g. an interpolation
    such as ``${oc.env:HOME}``, which the run's config would resolve) raises :class:`RunDirError`."""
    run = checkpoint.get("run")
    if run is None:
        return {}
    fix = ("It was not written by gan_ignite.train (or was edited); resume from a checkpoint of a gan_ignite run. "
           "Nothing was changed.")
    if not isinstance(run, Mapping):
        raise RunDirError(f"Checkpoint '{path}' has a 'run' field that is a {type(run).__name__}, not the run's "
                          f"identity (id, parent_id, parent_checkpoint). {fix}")
    fields = {key: run.get(key) for key in RUN_KEYS}
    for key, value in fields.items():
        if value is not None and (not isinstance(value, str) or "${" in value or len(value) > 4096):
            shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
            raise RunDirError(f"Checkpoint '{path}' has run.{key} = {shown}: a run's identity fields are plain "
                              f"strings (an interpolation or a nested value would be evaluated as part of the new "
                              f"run's config). {fix}")
    return fields


# ----------------------------------------------------------------------------- where a start begins
@dataclass
class Start:
    """How a training start begins: fresh, continuing its own run, or forking another run's checkpoint."""

    run: dict[str, Optional[str]]  # the run.* fields
    resume: Optional[Path] = None  # the checkpoint to restore
    forked: bool = False
    checkpoint: Optional[dict] = field(default=None, repr=False)  # its content, read once per process

    def shared(self) -> dict[str, Any]:
        return {"run": self.run, "resume": str(self.resume) if self.resume else None, "forked": self.forked}

    @classmethod
    def from_shared(cls, shared: Mapping[str, Any]) -> "Start":
        """Another rank's view of rank 0's plan; it reads the checkpoint itself."""
        resume = Path(shared["resume"]) if shared["resume"] else None
        return cls(dict(shared["run"]), resume, shared["forked"],
                   read_checkpoint(resume, RESUME_FIX) if resume else None)


def resolve_resume(config: Any, run_dir: RunDir) -> Optional[Path]:
    """``train.resume_from``; ``auto`` is the latest checkpoint in output_dir (None if there is none)."""
    resume = config.train.resume_from
    if not resume:
        return None
    if resume == "auto":
        return run_dir.latest_checkpoint()
    path = Path(resume)
    if not path.is_file():
        raise RunDirError(f"train.resume_from='{resume}' is not a checkpoint file. Pass a checkpoint_<iteration>.pt "
                          f"from a run's checkpoints/ folder, or 'auto' for the latest one in output_dir.")
    return path


def plan_start(config: Any) -> Start:
    """Rank 0's decision, before anything is written: which checkpoint and which run identity. Refuses to
    start over a directory that holds a run, and to resume another run's checkpoint into it."""
    run_dir = RunDir(config.output_dir)
    resume, holds_a_run = resolve_resume(config, run_dir), run_dir.holds_a_run()
    if resume is None:
        if holds_a_run:
            raise RunDirError(f"output_dir '{run_dir.path}' already holds a run (checkpoints in "
                              f"{run_dir.checkpoint_dir}). Continue it with train.resume_from=auto, or choose another "
                              f"output_dir=...; nothing was changed.")
        return Start({"id": new_run_id(), "parent_id": None, "parent_checkpoint": None})
    older = [path for _, path in run_dir.checkpoints() if path != resume] if config.train.resume_from == "auto" else []
    fix = (f"Resume from the checkpoint before it with train.resume_from={older[-1]}, or start a new run."
           if older else RESUME_FIX)
    checkpoint = read_checkpoint(resume, fix)
    theirs = checkpoint_run(checkpoint, resume).get("id")
    if not holds_a_run:
        _require_same_networks(checkpoint, config, resume)
        return Start({"id": new_run_id(), "parent_id": theirs, "parent_checkpoint": str(resume.resolve())}, resume,
                     True, checkpoint)
    recorded = run_dir.recorded_run()
    ours = recorded.get("id")
    _require_same_data(run_dir.recorded_config().get("data"), config, resume)
    _require_same_networks(checkpoint, config, resume)
    inside = resume.resolve().parent == run_dir.checkpoint_dir.resolve()
    if not ((theirs == ours) if (theirs and ours) else inside):
        raise RunDirError(
            f"train.resume_from='{resume}' is a checkpoint of another run (run {theirs or 'without an id'}), but "
            f"output_dir '{run_dir.path}' holds run {ours or 'without an id'}: resuming would mix the two runs' "
            f"history and checkpoints. To continue that checkpoint, fork it into a new directory "
            f"(output_dir=NEW_DIR train.resume_from={resume}; the new run records its parent); to continue this run, "
            f"use train.resume_from=auto. Nothing was changed.")
    return Start({"id": ours or theirs or new_run_id(), "parent_id": recorded.get("parent_id"),
                  "parent_checkpoint": recorded.get("parent_checkpoint"),
                  "data_fingerprint": recorded.get("data_fingerprint")}, resume, False, checkpoint)


def refuse_other_data(key: str, recorded: Any, given: Any, resume: Path) -> None:
    """A resume keeps the run's data: its checkpoints and records were made on it."""
    raise RunDirError(f"Invalid value for config key '{key}': the run in this output_dir was trained with {key}="
                      f"{recorded}, this start asks for {given}, and a resumed run keeps its data (its checkpoints and "
                      f"evaluation records belong to it). Resume with the run's own data settings (its config.yaml), "
                      f"or fork the checkpoint into a new run: output_dir=NEW_DIR train.resume_from={resume}.")


def _require_same_networks(checkpoint: Mapping[str, Any], config: Any, resume: Path) -> None:
    """A checkpoint of networks of one's own resumes or forks only with the same class named by the user:
    its recorded class paths are data, never imported."""
    recorded = checkpoint.get("networks")
    for role in ("generator", "discriminator"):
        path = recorded.get(role) if isinstance(recorded, Mapping) else None
        if isinstance(path, str) and path != config.model[role]:
            raise RunDirError(f"Checkpoint '{resume}' was trained with its own {role}, model.{role}={path} (module "
                              f"'{path.partition(':')[0]}'), and this start names {config.model[role] or 'the built-in one'}: "
                              f"a checkpoint never imports code by itself. If you trust that module, give "
                              f"model.{role}={path} (and its model.{role}_kwargs) to resume or fork it.")


def _require_same_data(recorded: Any, config: Any, resume: Path) -> None:
    for key in ("name", "image_size", "channels"):
        if isinstance(recorded, Mapping) and key in recorded and str(recorded[key]) != str(config.data[key]):
            refuse_other_data(f"data.{key}", recorded[key], config.data[key], resume)


# ----------------------------------------------------------------------------- the save handlers
def periodic_checkpoint(to_save: Mapping[str, Any], run_dir: RunDir, n_saved: int) -> Checkpoint:
    """``checkpoint_<iteration>.pt``, the last ``n_saved`` kept."""
    return Checkpoint(to_save, CheckpointSaver(run_dir.checkpoint_dir), filename_prefix="", n_saved=n_saved,
                      global_step_transform=lambda engine, _: engine.state.iteration, include_self=True)


def attach_checkpoints(trainer: Engine, checkpoint: Checkpoint, every_epochs: int, every_iters: Optional[int],
                       before_save: Callable[[Engine], bool]) -> Callable[[Engine], None]:
    """Save every ``every_epochs`` epochs, every ``every_iters`` iterations if set, and at the end, when
    ``before_save(engine)`` (the history flush and NaN guard, on every rank) allows. Returns the save."""
    saved_at: set[int] = set()

    def save(engine: Engine) -> None:
        if not before_save(engine) or engine.state.iteration in saved_at:
            return  # a diverged model is never saved; the schedules may coincide
        saved_at.add(engine.state.iteration)
        on_every_rank(lambda: checkpoint(engine))

    events = Events.EPOCH_COMPLETED(every=every_epochs) | Events.COMPLETED
    if every_iters:
        events = events | Events.ITERATION_COMPLETED(every=every_iters)
    trainer.add_event_handler(events, save)
    return save


def best_checkpoint(to_save: Mapping[str, Any], run_dir: RunDir, evaluator: Engine, trainer: Engine) -> Checkpoint:
    """``best_checkpoint_<iteration>_neg_fid=<-FID>.pt``, the lowest FID (an equal one keeps the earlier)."""
    return Checkpoint(to_save, CheckpointSaver(run_dir.checkpoint_dir), filename_prefix="best", n_saved=1,
                      score_function=lambda _: -evaluator.state.metrics["fid"], score_name="neg_fid",
                      global_step_transform=lambda *_: trainer.state.iteration)


def attach_best_checkpoint(evaluator: Engine, best: Checkpoint) -> None:
    """After every evaluation with a finite FID (on every rank: saving gathers every rank's state)."""

    @evaluator.on(Events.COMPLETED)
    def _save_if_best(engine: Engine) -> None:
        if math.isfinite(engine.state.metrics.get("fid", math.nan)):
            on_every_rank(lambda: best(engine))


def restore_savers(savers: Mapping[str, Checkpoint], checkpoint: Mapping[str, Any], run_dir: RunDir,
                   n_saved: int) -> None:
    """A continued run's lists of saved files; files beyond a lowered ``train.n_saved`` are removed."""
    for key, saver in savers.items():
        state = checkpoint.get(key)
        if state is None:
            continue
        saved = list(state["_saved"])
        limit = n_saved if key == "checkpointer" else 1
        for _, filename in saved[:-limit]:
            if idist.get_rank() == 0:
                (run_dir.checkpoint_dir / filename).unlink(missing_ok=True)
        saver.load_state_dict({**state, "_saved": saved[-limit:]})
