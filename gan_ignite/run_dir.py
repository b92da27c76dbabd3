"""The run directory: its layout, its lock, the run's identity and every file a run writes there.

``RUN_DIR/`` holds one run (see docs/run-directory.md and docs/fault-tolerance.md):

- ``.lock``: an OS file lock (``flock``) that the training process holds while it runs; a second
  training run on the same directory stops at once naming the holder. The lock belongs to the
  process (and to the worker processes it spawns), so a killed run leaves no stale lock.
  Evaluating, sampling and plotting only read the run and take no lock.
- ``config.yaml``, the checkpoints and the images are written to a temporary file in the same
  folder, flushed, fsynced and renamed over the old file, so a kill or a full disk leaves the old
  file or the new one, never a torn one. A temporary file left by a kill is removed when the next
  run starts. ``history.jsonl`` and ``evaluations.jsonl`` are append-only logs: an append that
  fails is cut off again (rewriting the whole file at every flush would cost time quadratic in
  the run's length), and a resume rewrites the history (temporary file, rename) without the
  records newer than its checkpoint.
- A run gets an id when it starts (``run.id`` in ``config.yaml``, ``run`` in every checkpoint):
  a checkpoint of another run cannot be resumed into it; continuing another run's checkpoint in a
  new directory is a fork, which records its parent (``run.parent_id``, ``run.parent_checkpoint``).
- Every write failure (an ``OSError`` such as a full disk, or torch's ``RuntimeError`` from its zip
  writer) becomes one :class:`~gan_ignite.errors.RunDirError` paragraph naming the file and the
  free space; lines of ``history.jsonl`` that cannot be parsed are skipped and reported by line number.

Nothing here imports torch or ignite at import time (only the functions that read or write
checkpoints do), so ``scripts/plot_curves.py`` reads a run's history without them.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import logging
import os
import re
import shutil
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Mapping, Optional, Sequence

import yaml

from gan_ignite.errors import RunDirError, format_bytes

try:
    import fcntl
except ImportError:  # no flock (Windows): runs there are not locked
    fcntl = None

logger = logging.getLogger("gan_ignite")

CONFIG, HISTORY, EVALUATIONS, LOCK = "config.yaml", "history.jsonl", "evaluations.jsonl", ".lock"
CHECKPOINTS, IMAGES, PLOTS, TENSORBOARD = "checkpoints", "images", "plots", "tb"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint_(\d+)\.pt$")
BEST_PATTERN = re.compile(r"^best_checkpoint_\d+_neg_fid=(-?[0-9.]+|-inf)\.pt$")
GRID_PATTERN = re.compile(r"^fixed_noise_iter_(\d+)\.png$")
TEMP_PATTERN = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")  # atomic_write's temporary files
# temporary files of earlier versions: the history rewrite and ignite's DiskSaver
LEGACY_TEMP = {"": re.compile(r"^history\.jsonl\.tmp$"), CHECKPOINTS: re.compile(r"^tmp[a-z0-9_]{8}$")}
CHECKPOINT_KEYS = {"generator": "generator", "ema": "ema_generator"}
RUN_KEYS = ("id", "parent_id", "parent_checkpoint")  # the run.* config section and a checkpoint's "run"


# ----------------------------------------------------------------------------- writing files
def free_space(path: Path) -> str:
    """'<size> free' on the file system of ``path`` (or of its nearest existing parent)."""
    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return f"{format_bytes(shutil.disk_usage(folder).free)} free there"
    except OSError:
        return "free space unknown"


def write_failure(path: Path, error: BaseException, intact: str = "") -> RunDirError:
    """The one-paragraph error for a failed write of ``path``."""
    reason = error.strerror if isinstance(error, OSError) and error.strerror else _first_line(error)
    if isinstance(error, OSError) and error.errno == errno.ELOOP:  # a link refused: space is not the issue
        return RunDirError(f"Could not write '{path}': {reason}. {intact}".strip())
    return RunDirError(f"Could not write '{path}' ({reason}; {free_space(path)}). {intact}".strip())


class _RecordingWriter:
    """A binary file that remembers the first OSError of its writes: torch's zip writer turns a
    failed write (e.g. ENOSPC) into a RuntimeError ("unexpected pos ..."), which hides the reason."""

    def __init__(self, handle: BinaryIO):
        self.handle, self.error = handle, None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = self.error or error
            raise

    def flush(self) -> None:
        self.handle.flush()


def _write_error(error: BaseException, recorder: Optional[_RecordingWriter]) -> Optional[BaseException]:
    """The write failure behind ``error``, or None when it is not one (a bug must stay a traceback)."""
    if recorder is not None and recorder.error is not None:
        return recorder.error
    if isinstance(error, OSError):
        return error
    if isinstance(error, RuntimeError) and any(word in str(error) for word in
                                               ("PytorchStreamWriter", "inline_container", "file write failed")):
        return error
    return None


def atomic_write(path: Path, write: Callable[[BinaryIO], Any], intact: str = "") -> None:
    """Write ``path`` through ``write(handle)`` into a temporary file of the same folder, flush,
    fsync and rename it over ``path``: readers see the old file or the complete new one, and a
    symbolic link at ``path`` is replaced, never written through (the one writer,
    :func:`gan_ignite.metrics.safe_files.atomic_write`). On a failure the temporary file is removed
    and a write failure becomes :func:`write_failure` (``intact`` says what the user still has)."""
    safe_files = _safe_files()
    recorder: Optional[_RecordingWriter] = None

    def recorded(handle: BinaryIO) -> None:
        nonlocal recorder
        recorder = _RecordingWriter(handle)
        write(recorder)

    try:
        safe_files.atomic_write(Path(path), recorded)
    except Exception as error:
        failure = _write_error(error, recorder)
        if failure is None:
            raise
        raise write_failure(Path(path), failure, intact) from None


def _safe_files() -> Any:
    """:mod:`gan_ignite.metrics.safe_files`, imported when first needed (importing the metrics
    package brings torch, which reading a run's history must not need)."""
    from gan_ignite.metrics import safe_files

    return safe_files


def write_text(path: Path, text: str, intact: str = "") -> None:
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")), intact)


def append_lines(path: Path, lines: Sequence[str], intact: str = "") -> None:
    """Append ``lines`` (each ending in a newline) to ``path`` in one write, never through a
    symbolic link (refused: the link's target is not touched). A failed append is cut off again,
    so the file keeps whole lines; a line torn by an earlier kill is ended first, so the new
    records never join it."""
    try:
        _safe_files().append_bytes(Path(path), "".join(lines).encode("utf-8"))
    except OSError as error:
        raise write_failure(Path(path), error, intact) from None


# ----------------------------------------------------------------------------- history.jsonl
@dataclass
class JsonLines:
    """The records of a JSON-lines file and the numbers (1-based) of the lines that were skipped."""

    path: Path
    records: list[dict]
    bad_lines: list[int]

    def report(self) -> str:
        """'' or one sentence naming the skipped lines."""
        if not self.bad_lines:
            return ""
        shown = ", ".join(map(str, self.bad_lines[:10])) + (", ..." if len(self.bad_lines) > 10 else "")
        return (f"{self.path}: skipped {len(self.bad_lines)} unreadable line(s) (line {shown}: not a JSON record, "
                f"e.g. cut short by a kill or damaged); the other {len(self.records)} records are used.")


def read_jsonl(path: Path) -> JsonLines:
    """Every record of a JSON-lines file; lines that are not UTF-8 JSON objects (with an integer
    ``iteration`` and a string ``kind`` where present) are skipped and listed."""
    records, bad_lines = [], []
    if Path(path).is_file():
        with open(path, "rb") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                record = _parse_record(line)
                if record is None:
                    bad_lines.append(number)
                else:
                    records.append(record)
    return JsonLines(Path(path), records, bad_lines)


def _parse_record(line: bytes) -> Optional[dict]:
    try:
        record = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    iteration, kind = record.get("iteration", 0), record.get("kind", "")
    if not isinstance(iteration, int) or isinstance(iteration, bool) or not isinstance(kind, str):
        return None
    return record


class HistoryWriter:
    """``history.jsonl``: one JSON object per line, appended (rank 0). ``listeners`` (e.g.
    TensorBoard) receive every record appended."""

    INTACT = ("The records written before are intact. Free some space (or fix the folder) and continue with "
              "train.resume_from=auto.")

    def __init__(self, path: Path):
        self.path = Path(path)
        self.listeners: list[Callable[[Mapping[str, Any]], None]] = []

    def append(self, record: Mapping[str, Any]) -> None:
        self.append_many([record])

    def append_many(self, records: Sequence[Mapping[str, Any]]) -> None:
        append_lines(self.path, [json.dumps(record) + "\n" for record in records], self.INTACT)
        for record in records:
            for listener in self.listeners:
                listener(record)

    def lines(self) -> JsonLines:
        return read_jsonl(self.path)

    def read(self) -> list[dict]:
        return self.lines().records

    def truncate_after(self, iteration: int) -> tuple[int, JsonLines]:
        """Drop the records newer than ``iteration`` (written after the checkpoint a run resumes
        from) and the unreadable lines; the file is replaced atomically. Returns how many records
        were dropped and what was read."""
        lines = self.lines()
        if not self.path.exists():
            return 0, lines
        kept = [record for record in lines.records if record.get("iteration", 0) <= iteration]
        write_text(self.path, "".join(json.dumps(record) + "\n" for record in kept), self.INTACT)
        return len(lines.records) - len(kept), lines

    def sync(self) -> None:
        """fsync the file (before a checkpoint: the history on disk reaches it even after a power loss)."""
        if self.path.exists():
            with open(self.path, "rb") as handle:
                os.fsync(handle.fileno())


def history_record(records: Iterable[Mapping[str, Any]], iteration: Optional[int],
                   model: str = "generator") -> Optional[dict]:
    """The evaluation record written at ``iteration`` for ``model`` (the last one, if several), or None."""
    if iteration is None:
        return None
    matching = [dict(record) for record in records
                if record.get("kind") == "eval" and record.get("iteration") == iteration
                and record.get("model", "generator") == model]
    return matching[-1] if matching else None


# ----------------------------------------------------------------------------- the directory
class RunDir:
    """Where each file of a run lives."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir('{self.path}')"

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def images_dir(self) -> Path:
        return self.path / IMAGES

    @property
    def plots_dir(self) -> Path:
        return self.path / PLOTS

    @property
    def history(self) -> HistoryWriter:
        return HistoryWriter(self.path / HISTORY)

    @property
    def evaluations_path(self) -> Path:
        return self.path / EVALUATIONS

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Periodic checkpoints as (iteration, path), oldest first."""
        return sorted((int(found), path) for found, path in _matching(self.checkpoint_dir, CHECKPOINT_PATTERN))

    def latest_checkpoint(self) -> Optional[Path]:
        found = self.checkpoints()
        return found[-1][1] if found else None

    def best_checkpoints(self) -> list[tuple[float, Path]]:
        """The best-FID checkpoints as (-FID, path)."""
        return [(float(score), path) for score, path in _matching(self.checkpoint_dir, BEST_PATTERN)]

    def holds_a_run(self) -> bool:
        """A directory holds a run once the run wrote a checkpoint: a start that failed before its
        first checkpoint leaves nothing worth keeping, so the same command may start over there."""
        return bool(self.checkpoints() or self.best_checkpoints())

    def grids(self) -> list[tuple[int, Path]]:
        """The fixed-noise grids as (iteration, path), in iteration order."""
        return sorted((int(found), path) for found, path in _matching(self.images_dir, GRID_PATTERN))

    def recorded_run(self) -> dict[str, Optional[str]]:
        """The ``run`` section of config.yaml ({} when there is none or it cannot be read)."""
        if not self.config_path.is_file():  # also never a FIFO, whose read would block
            return {}
        try:
            content = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return {}
        run = content.get("run") if isinstance(content, dict) else None
        return {key: run.get(key) for key in RUN_KEYS} if isinstance(run, dict) else {}

    def write_config(self, config: Any) -> None:
        """``config.yaml`` (atomically); call it only with a validated config of a run that started."""
        from omegaconf import OmegaConf

        write_text(self.config_path, OmegaConf.to_yaml(config), "The previous config.yaml is intact.")

    def remove_orphans(self) -> list[Path]:
        """Remove the temporary files that a killed write left (call it holding the lock)."""
        removed = []
        for sub in ("", CHECKPOINTS, IMAGES):
            folder = self.path / sub
            legacy = LEGACY_TEMP.get(sub)
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                if entry.is_file() and (TEMP_PATTERN.match(entry.name) or (legacy and legacy.match(entry.name))):
                    with contextlib.suppress(OSError):
                        entry.unlink()
                        removed.append(entry)
        return removed

    def remove_grids_after(self, iteration: int) -> None:
        """Grids of iterations a resumed run will draw again (or never: a start that failed before)."""
        for grid_iteration, path in self.grids():
            if grid_iteration > iteration:
                with contextlib.suppress(OSError):
                    path.unlink()

    def lock(self) -> "RunLock":
        return RunLock(self.path).acquire()


def _matching(folder: Path, pattern: re.Pattern) -> list[tuple[str, Path]]:
    """(first group of the match, path) for the files in ``folder`` whose name matches."""
    if not folder.is_dir():
        return []
    return [(match.group(1), path) for path in folder.iterdir() if (match := pattern.match(path.name))]


# ----------------------------------------------------------------------------- the lock
class RunLock:
    """An exclusive ``flock`` on ``RUN_DIR/.lock``, which holds who took it (host, pid, start
    time, command). The lock dies with the processes holding it; released normally, its file is
    removed, and so is the directory if this lock created it and nothing else was written there."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.path = Path(run_dir), Path(run_dir) / LOCK
        self.fd: Optional[int] = None
        self.created_dir = False

    def acquire(self) -> "RunLock":
        self.created_dir = not self.run_dir.exists()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.fd = self._open_locked()
            holder = {"host": socket.gethostname(), "pid": os.getpid(),
                      "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                      "command": " ".join(sys.argv)}
            # written in place: replacing the file would give later runs another file to lock
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, json.dumps(holder).encode(), 0)
        except OSError as error:
            self.release()
            if error.errno == errno.ELOOP:
                raise RunDirError(f"The lock file '{self.path}' cannot be used: {error.strerror}. Nothing was "
                                  f"changed.") from None
            raise RunDirError(f"output_dir '{self.run_dir}' cannot be written ({error.strerror or error}; "
                              f"{free_space(self.run_dir)}). Choose a writable folder with output_dir=..., or "
                              f"free some space.") from None
        except BaseException:
            self.release()
            raise
        return self

    def _open_locked(self) -> Optional[int]:
        if fcntl is None:
            logger.warning("This platform has no flock: the run directory is not locked against a second run.")
            return _safe_files().open_no_follow(self.path, os.O_RDWR | os.O_CREAT)
        while True:
            # never through a link: the holder's details would overwrite the link's target
            fd = _safe_files().open_no_follow(self.path, os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder_text(fd)
                os.close(fd)
                raise RunDirError(
                    f"output_dir '{self.run_dir}' is in use by another run ({holder}). One run directory holds "
                    f"one run, written by one process at a time: wait for that run to end (or stop it), or "
                    f"choose another output_dir=...; nothing was changed.") from None
            try:
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)  # the holder removed the file while we opened it: lock the new one

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            os.close(self.fd)
            self.fd = None
        if self.created_dir:
            with contextlib.suppress(OSError):
                self.run_dir.rmdir()  # only when empty: a start that failed leaves no folder behind

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *_: Any) -> None:
        self.release()

    def __reduce__(self) -> tuple:
        """Pickled for a spawned worker process, the lock's open file is passed to it: the workers
        share the lock, so it lasts while any process of the run lives."""
        from multiprocessing import reduction

        if self.fd is None:
            return _inherited_lock, (None,)
        return _inherited_lock, (reduction.DupFd(self.fd),)


def _inherited_lock(duplicate: Any) -> Optional[int]:
    return None if duplicate is None else duplicate.detach()  # kept open until the process exits


def _holder_text(fd: int, wait: float = 1.0) -> str:
    """Who holds the lock, from the details it writes right after taking it: a second run started
    at the same moment may look between the two, so unreadable details are read again for up to
    ``wait`` seconds before saying so."""
    deadline = time.monotonic() + wait
    while True:
        try:
            holder = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
            command = str(holder.get("command", "?"))
            command = command if len(command) <= 200 else command[:197] + "..."
            return f"pid {holder['pid']} on host {holder['host']}, started {holder['started']}: {command}"
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            if time.monotonic() >= deadline:
                return "a process that has not written its details yet"
            time.sleep(0.05)


# ----------------------------------------------------------------------------- the run's identity
def new_run_id() -> str:
    return f"{datetime.datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}"


class RunIdentity:
    """The ``run`` entry of every checkpoint (saved with ignite's Checkpoint). Never loaded back:
    a start decides its identity (:func:`identify_run`) before it restores a checkpoint."""

    def __init__(self, fields: Mapping[str, Optional[str]]):
        self.fields = {key: fields.get(key) for key in RUN_KEYS}

    def state_dict(self) -> dict[str, Optional[str]]:
        return dict(self.fields)

    def load_state_dict(self, _state: Mapping[str, Any]) -> None:
        pass


def checkpoint_run(checkpoint: Mapping[str, Any], path: Optional[Path] = None) -> dict[str, Optional[str]]:
    """The checkpoint's ``run`` fields (``id``, ``parent_id``, ``parent_checkpoint``): each a plain
    string or null. Anything else (a dict, a number, an OmegaConf interpolation such as
    ``${oc.env:HOME}``, which the run's config would resolve) raises :class:`RunDirError`."""
    run = checkpoint.get("run")
    if run is None:
        return {}
    where = f"Checkpoint '{path}'" if path is not None else "The checkpoint"
    fix = ("It was not written by gan_ignite.train (or was edited); resume from a checkpoint of a gan_ignite run. "
           "Nothing was changed.")
    if not isinstance(run, Mapping):
        raise RunDirError(f"{where} has a 'run' field that is a {type(run).__name__}, not the run's identity "
                          f"(id, parent_id, parent_checkpoint). {fix}")
    fields = {key: run.get(key) for key in RUN_KEYS}
    for key, value in fields.items():
        if value is not None and (not isinstance(value, str) or "${" in value or len(value) > 4096):
            shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
            raise RunDirError(f"{where} has run.{key} = {shown}: a run's identity fields are plain strings (an "
                              f"interpolation or a nested value would be evaluated as part of the new run's config). "
                              f"{fix}")
    return fields


def identify_run(run_dir: RunDir, resume: Optional[Path],
                 checkpoint: Optional[Mapping[str, Any]]) -> dict[str, Optional[str]]:
    """The ``run.*`` fields of a training start in ``run_dir``: a new id for a fresh start, the
    run's own id when it continues, a new id recording the parent for a fork (a checkpoint of
    another run continued in a directory that holds no run). A checkpoint of another run resumed
    into a directory that holds a run is refused (:class:`RunDirError`)."""
    if resume is None or checkpoint is None:
        return {"id": new_run_id(), "parent_id": None, "parent_checkpoint": None}
    recorded, theirs = run_dir.recorded_run(), checkpoint_run(checkpoint, resume).get("id")
    ours = recorded.get("id")
    if run_dir.holds_a_run():
        inside = resume.resolve().parent == run_dir.checkpoint_dir.resolve()
        if not ((theirs == ours) if (theirs and ours) else inside):
            raise RunDirError(
                f"train.resume_from='{resume}' is a checkpoint of another run (run {theirs or 'without an id'}), "
                f"but output_dir '{run_dir.path}' holds run {ours or 'without an id'}: resuming would mix the two "
                f"runs' history and checkpoints. To continue that checkpoint, fork it into a new directory "
                f"(output_dir=NEW_DIR train.resume_from={resume}; the new run records its parent); to continue "
                f"this run, use train.resume_from=auto. Nothing was changed.")
        return {"id": ours or theirs or new_run_id(), "parent_id": recorded.get("parent_id"),
                "parent_checkpoint": recorded.get("parent_checkpoint")}
    return {"id": new_run_id(), "parent_id": theirs, "parent_checkpoint": str(resume.resolve())}


def with_run_fields(config: Any, fields: Mapping[str, Optional[str]]) -> Any:
    """``config`` (read-only) with its ``run`` section replaced by ``fields``."""
    from omegaconf import OmegaConf

    updated = OmegaConf.merge(config, {"run": dict(fields)})
    OmegaConf.set_readonly(updated, True)
    return updated


# ----------------------------------------------------------------------------- checkpoints
def read_checkpoint(path: Path, fix: str) -> dict:
    """The checkpoint in ``path`` (on the CPU), read as data: ``torch.load(weights_only=True)``
    through :func:`gan_ignite.metrics.safe_files.load_torch_file`, so a file carrying code is refused
    without running it. A missing, irregular, damaged, code-carrying or foreign file raises one
    :class:`RunDirError` naming it, followed by ``fix`` (what to do)."""
    path = Path(path)
    if not path.exists():
        raise RunDirError(f"Checkpoint '{path}' does not exist. {fix}")
    checkpoint = _safe_files().load_torch_file(path, "Checkpoint", fix, RunDirError)
    if not isinstance(checkpoint, dict):
        raise RunDirError(f"'{path}' is not a gan_ignite checkpoint (it holds a {type(checkpoint).__name__}). {fix}")
    return checkpoint


def write_checkpoint(checkpoint: Mapping[str, Any], path: Path) -> None:
    import torch

    atomic_write(path, lambda handle: torch.save(checkpoint, handle),
                 "The previous checkpoints are intact (each is written to a temporary file and renamed when "
                 "complete). Free some space (or fix the folder) and continue with train.resume_from=auto.")


def resolve_resume(config: Any) -> Optional[Path]:
    """The checkpoint to resume from: ``auto`` = the latest in output_dir (None if there is none)."""
    resume = config.train.resume_from
    if not resume:
        return None
    if resume == "auto":
        return RunDir(config.output_dir).latest_checkpoint()
    path = Path(resume)
    if not path.is_file():
        raise RunDirError(f"train.resume_from='{resume}' is not a checkpoint file. Pass a checkpoint_<iteration>.pt "
                          f"from a run's checkpoints/ folder, or 'auto' for the latest one in output_dir.")
    return path


# ----------------------------------------------------------------------------- loading a run (evaluate, sample)
def run_directory(checkpoint: Path) -> RunDir:
    """The run directory of a checkpoint: the folder holding ``config.yaml``, the checkpoint's
    folder or the one above it (``RUN_DIR/checkpoints/checkpoint_N.pt``)."""
    for candidate in (checkpoint.parent.parent, checkpoint.parent):
        if (candidate / CONFIG).is_file():
            return RunDir(candidate)
    raise RunDirError(f"No config.yaml found next to checkpoint '{checkpoint}' (looked in its folder and the one "
                      f"above). Pass a checkpoint inside a gan_ignite run directory.")


def load_run_config(checkpoint: Path, overrides: Sequence[str] = ()) -> tuple[RunDir, Any]:
    """The run directory of ``checkpoint`` and its ``config.yaml`` with ``overrides``, in one process
    unless the overrides ask for more (the run's own launch settings say nothing about how this
    machine should score or sample)."""
    from gan_ignite.config import ONE_PROCESS, load_config

    if not checkpoint.is_file():
        raise RunDirError(f"Checkpoint '{checkpoint}' does not exist; pass a file from a run's checkpoints/.")
    run_dir = run_directory(checkpoint)
    return run_dir, load_config(run_dir.config_path, [*ONE_PROCESS, *overrides])


def load_generator(config: Any, checkpoint_path: Path, device: Any, model: str = "generator") -> tuple[Any, dict]:
    """The checkpoint's ``model`` (``generator`` or ``ema``) ready to be scored, and the trainer state."""
    from gan_ignite.evaluation import prepare_for_scoring
    from gan_ignite.models import generator_from_config

    how = "Pass a checkpoint written by gan_ignite.train, with the run's config.yaml beside it."
    state = read_checkpoint(checkpoint_path, how)
    key = CHECKPOINT_KEYS[model]
    if key not in state:
        if model == "ema":
            raise RunDirError(f"Checkpoint '{checkpoint_path}' holds no EMA generator: its run was trained without "
                              f"train.ema_decay. Use the live generator (--model generator).")
        raise RunDirError(f"Checkpoint '{checkpoint_path}' holds no generator. {how}")
    generator = generator_from_config(config)
    try:
        generator.load_state_dict(state[key])
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as error:
        which = "generator" if model == "generator" else "EMA generator"
        raise RunDirError(f"Cannot load the {which} from '{checkpoint_path}': {_first_line(error)}. {how}") from None
    return prepare_for_scoring(generator.to(device), config, model, device), state.get("trainer", {})


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
