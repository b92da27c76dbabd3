"""The run directory's layout (docs/run-directory.md), its ``config.yaml`` and its ``history.jsonl``.

Every file is replaced atomically except the two JSON-lines logs, which are appended (rewriting them
at every flush would cost time quadratic in the run's length); their unreadable lines are skipped
and reported. Nothing here imports torch or ignite, so ``scripts/plot_curves.py`` reads a run without them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import yaml

from gan_ignite.errors import RunDirError
from gan_ignite.io import RunLock, append_text, atomic_write

CONFIG, HISTORY, EVALUATIONS = "config.yaml", "history.jsonl", "evaluations.jsonl"
CHECKPOINTS, IMAGES, PLOTS, TENSORBOARD = "checkpoints", "images", "plots", "tb"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint_(\d+)\.pt$")
BEST_PATTERN = re.compile(r"^best_checkpoint_(\d+)_neg_fid=(-?[0-9.]+|-inf)\.pt$")
GRID_PATTERN = re.compile(r"^fixed_noise_iter_(\d+)\.png$")
TEMP_PATTERN = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")  # atomic_write's temporary files
RUN_KEYS = ("id", "parent_id", "parent_checkpoint", "data_fingerprint")  # the run.* config section and a checkpoint's "run"


def write_text(path: Path, text: str, intact: str = "") -> None:
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")), intact)


# ----------------------------------------------------------------------------- history.jsonl
@dataclass
class JsonLines:
    """The records of a JSON-lines file and the numbers (1-based) of the lines that were skipped."""

    path: Path
    records: list[dict]
    bad_lines: list[int]

    def report(self) -> str:
        if not self.bad_lines:
            return ""
        shown = ", ".join(map(str, self.bad_lines[:10])) + (", ..." if len(self.bad_lines) > 10 else "")
        return (f"{self.path}: skipped {len(self.bad_lines)} unreadable line(s) (line {shown}: not a JSON record, "
                f"e.g. cut short by a kill or damaged); the other {len(self.records)} records are used.")


def read_jsonl(path: Path) -> JsonLines:
    """Every record of a JSON-lines file; lines that are not JSON records are skipped and listed."""
    records, bad_lines = [], []
    if Path(path).is_file():
        with open(path, "rb") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    record = _parse_record(line)
                    (bad_lines.append(number) if record is None else records.append(record))
    return JsonLines(Path(path), records, bad_lines)


def _parse_record(line: bytes) -> Optional[dict]:
    try:
        record = json.loads(line.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError included
        return None
    if not isinstance(record, dict):
        return None
    iteration = record.get("iteration", 0)
    valid = isinstance(iteration, int) and not isinstance(iteration, bool) and isinstance(record.get("kind", ""), str)
    return record if valid else None


def jsonl(records: Iterable[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


class HistoryWriter:
    """``history.jsonl``, appended by rank 0; ``listeners`` (e.g. TensorBoard) receive every record appended."""

    INTACT = ("The records written before are intact. Free some space (or fix the folder) and continue with "
              "train.resume_from=auto.")

    def __init__(self, path: Path):
        self.path = Path(path)
        self.listeners: list[Callable[[Mapping[str, Any]], None]] = []

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        append_text(self.path, jsonl(records), self.INTACT)
        for record in records:
            for listener in self.listeners:
                listener(record)

    def lines(self) -> JsonLines:
        return read_jsonl(self.path)

    def read(self) -> list[dict]:
        return self.lines().records

    def truncate_after(self, iteration: int) -> tuple[int, JsonLines]:
        """Drop the records newer than ``iteration`` and the unreadable lines: (records dropped, what was read)."""
        lines = self.lines()
        if not self.path.exists():
            return 0, lines
        kept = [record for record in lines.records if record.get("iteration", 0) <= iteration]
        write_text(self.path, jsonl(kept), self.INTACT)
        return len(lines.records) - len(kept), lines

    def sync(self) -> None:
        """fsync the file (before a checkpoint: the history reaches it even after a power loss)."""
        if self.path.exists():
            with open(self.path, "rb") as handle:
                os.fsync(handle.fileno())


def history_record(records: Iterable[Mapping[str, Any]], iteration: Optional[int],
                   model: str = "generator") -> Optional[dict]:
    """The last evaluation record written at ``iteration`` for ``model``, or None."""
    matching = [dict(record) for record in records
                if record.get("kind") == "eval" and record.get("iteration") == iteration
                and record.get("model", "generator") == model]
    return matching[-1] if matching and iteration is not None else None


# ----------------------------------------------------------------------------- the directory
class RunDir:
    """Where each file of a run lives."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.config_path, self.evaluations_path = self.path / CONFIG, self.path / EVALUATIONS
        self.checkpoint_dir, self.images_dir = self.path / CHECKPOINTS, self.path / IMAGES
        self.plots_dir = self.path / PLOTS
        self.history = HistoryWriter(self.path / HISTORY)

    def __repr__(self) -> str:
        return f"RunDir('{self.path}')"

    def checkpoints(self) -> list[tuple[int, Path]]:
        return _matching(self.checkpoint_dir, CHECKPOINT_PATTERN)

    def latest_checkpoint(self) -> Optional[Path]:
        found = self.checkpoints()
        return found[-1][1] if found else None

    def best_checkpoints(self) -> list[tuple[int, Path]]:
        return _matching(self.checkpoint_dir, BEST_PATTERN)

    def holds_a_run(self) -> bool:
        """Once it has a checkpoint: a start that failed before its first leaves nothing worth keeping."""
        return bool(self.checkpoints() or self.best_checkpoints())

    def grids(self) -> list[tuple[int, Path]]:
        return _matching(self.images_dir, GRID_PATTERN)

    def recorded_config(self) -> dict[str, Any]:
        """config.yaml as plain data ({} when there is none or it cannot be read)."""
        if not self.config_path.is_file():  # also never a FIFO, whose read would block
            return {}
        try:
            content = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
            return {}
        return content if isinstance(content, dict) else {}

    def recorded_run(self) -> dict[str, Optional[str]]:
        """The ``run`` section of config.yaml ({} when there is none or it cannot be read)."""
        run = self.recorded_config().get("run")
        return {key: run.get(key) for key in RUN_KEYS} if isinstance(run, dict) else {}

    def write_config(self, config: Any) -> None:
        """Only with a validated config of a run that started."""
        from omegaconf import OmegaConf

        write_text(self.config_path, OmegaConf.to_yaml(config), "The previous config.yaml is intact.")

    def remove_orphans(self) -> list[Path]:
        """Remove the temporary files a killed write left (call it holding the lock)."""
        removed = []
        for folder in (self.path, self.checkpoint_dir, self.images_dir):
            for entry in (folder.iterdir() if folder.is_dir() else ()):
                if entry.is_file() and TEMP_PATTERN.match(entry.name):
                    with contextlib.suppress(OSError):
                        entry.unlink()
                        removed.append(entry)
        return removed

    def remove_after(self, iteration: int) -> None:
        """Remove the grids and checkpoints newer than ``iteration`` (a resumed run's lost future, a failed start's)."""
        for found, path in (*self.grids(), *self.checkpoints(), *self.best_checkpoints()):
            if found > iteration:
                with contextlib.suppress(OSError):
                    path.unlink()

    def lock(self) -> RunLock:
        return RunLock(self.path).acquire()


def _matching(folder: Path, pattern: re.Pattern) -> list[tuple[int, Path]]:
    """(iteration in the name, path) of the files in ``folder`` whose name matches, in iteration order."""
    if not folder.is_dir():
        return []
    return sorted((int(match.group(1)), path) for path in folder.iterdir() if (match := pattern.match(path.name)))


# ----------------------------------------------------------------------------- a finished run's config
def run_directory(checkpoint: Path) -> RunDir:
    """The checkpoint's folder or the one above it, whichever holds ``config.yaml``."""
    for candidate in (checkpoint.parent.parent, checkpoint.parent):
        if (candidate / CONFIG).is_file():
            return RunDir(candidate)
    raise RunDirError(f"No config.yaml found next to checkpoint '{checkpoint}' (looked in its folder and the one "
                      f"above). Pass a checkpoint inside a gan_ignite run directory.")


def load_run_config(checkpoint: Path, overrides: Sequence[str] = ()) -> tuple[RunDir, Any]:
    """The run directory of ``checkpoint`` and its ``config.yaml`` with ``overrides``, in one process unless
    they ask for more (the run's launch settings say nothing about how this machine should score or sample)."""
    from gan_ignite.config import ONE_PROCESS, load_config

    if not checkpoint.is_file():
        raise RunDirError(f"Checkpoint '{checkpoint}' does not exist; pass a file from a run's checkpoints/.")
    run_dir = run_directory(checkpoint)
    return run_dir, load_config(run_dir.config_path, [*ONE_PROCESS, *overrides])
