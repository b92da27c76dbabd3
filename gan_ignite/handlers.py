"""Handlers that read engine state and write files: history records, image grids, checkpoints."""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from torch import nn
from torchvision.utils import save_image

from gan_ignite.engines import LOSS_KEYS

logger = logging.getLogger(__name__)
CHECKPOINT_PATTERN = re.compile(r"^checkpoint_(\d+)\.pt$")


class HistoryWriter:
    """Append-only ``history.jsonl``: one JSON object per line, flushed at every record."""

    def __init__(self, path: Path):
        self.path = path

    def append(self, record: Mapping[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        records = []
        with open(self.path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut short by a kill: drop it
                    continue
        return records

    def truncate_after(self, iteration: int) -> int:
        """Drop records newer than ``iteration`` (written after the checkpoint we resume from).

        The file is rewritten to a temporary file and renamed, so a kill cannot lose the history.
        Returns how many records were dropped.
        """
        records = self.read()
        kept = [record for record in records if record.get("iteration", 0) <= iteration]
        temporary = self.path.with_suffix(".jsonl.tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(record) + "\n" for record in kept)
        os.replace(temporary, self.path)
        return len(records) - len(kept)


class TensorState:
    """A tensor that :class:`ignite.handlers.Checkpoint` can save and restore (e.g. the fixed noise)."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"tensor": self.tensor}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.tensor.copy_(state["tensor"])


def attach_train_history(trainer: Engine, writer: Optional[HistoryWriter]) -> None:
    """One ``kind: train`` record per iteration; the values are averaged over all processes."""

    @trainer.on(Events.ITERATION_COMPLETED)
    def _record(engine: Engine) -> None:
        values = torch.tensor([engine.state.output[key] for key in LOSS_KEYS], dtype=torch.float64)
        if idist.get_world_size() > 1:
            values = idist.all_reduce(values.to(idist.device())).cpu() / idist.get_world_size()
        if writer is not None:
            record = {"kind": "train", "epoch": engine.state.epoch, "iteration": engine.state.iteration}
            record.update({key: float(value) for key, value in zip(LOSS_KEYS, values.tolist())})
            writer.append(record)


def attach_image_grids(trainer: Engine, generator: nn.Module, fixed_noise: torch.Tensor, images_dir: Path,
                       every: int) -> None:
    """Every ``every`` iterations and at the end, write G(fixed noise) as a PNG grid (rank 0 only)."""

    def _save(engine: Engine) -> None:
        path = images_dir / f"fixed_noise_iter_{engine.state.iteration:07d}.png"
        if path.exists():
            return
        was_training = generator.training
        generator.eval()
        with torch.no_grad():
            fake_images = generator(fixed_noise).cpu()
        generator.train(was_training)
        save_image(fake_images, path, nrow=8, normalize=True, value_range=(-1, 1))

    if idist.get_rank() == 0:
        trainer.add_event_handler(Events.ITERATION_COMPLETED(every=every) | Events.COMPLETED, _save)


def save_real_grid(real_images: torch.Tensor, path: Path) -> None:
    save_image(real_images[:64], path, nrow=8, normalize=True, value_range=(-1, 1))


def checkpoint_files(checkpoint_dir: Path) -> list[tuple[int, Path]]:
    """Periodic checkpoints as (iteration, path), oldest first."""
    if not checkpoint_dir.is_dir():
        return []
    return sorted((int(match.group(1)), path) for path in checkpoint_dir.iterdir()
                  if (match := CHECKPOINT_PATTERN.match(path.name)))


def latest_checkpoint(checkpoint_dir: Path) -> Optional[Path]:
    """The periodic checkpoint with the highest iteration, or None."""
    found = checkpoint_files(checkpoint_dir)
    return found[-1][1] if found else None


def attach_checkpoints(trainer: Engine, to_save: Mapping[str, Any], checkpoint_dir: Path, every_epochs: int,
                       every_iters: Optional[int], n_saved: int) -> Checkpoint:
    """ignite ``Checkpoint`` of everything in ``to_save`` as ``checkpoint_<iteration>.pt``.

    Saved every ``every_epochs`` epochs, every ``every_iters`` iterations if set, and at the end.
    DiskSaver writes to a temporary file and renames it (``atomic=True``), so a kill during a write
    leaves the previous checkpoint intact. Only rank 0 writes. Old checkpoints are pruned here
    rather than by ``Checkpoint(n_saved=...)``, which forgets the files of a run before a resume.
    """
    saver = DiskSaver(str(checkpoint_dir), require_empty=False, atomic=True, create_dir=True)
    checkpoint = Checkpoint(to_save, saver, filename_prefix="", n_saved=None,
                            global_step_transform=lambda engine, _: engine.state.iteration)

    def _save(engine: Engine) -> None:
        if (checkpoint_dir / f"checkpoint_{engine.state.iteration}.pt").exists():
            return  # the epoch-end and iteration schedules may coincide
        checkpoint(engine)
        if idist.get_rank() == 0:
            for _, old in checkpoint_files(checkpoint_dir)[:-n_saved]:
                old.unlink(missing_ok=True)

    events = Events.EPOCH_COMPLETED(every=every_epochs) | Events.COMPLETED
    if every_iters:
        events = events | Events.ITERATION_COMPLETED(every=every_iters)
    trainer.add_event_handler(events, _save)
    return checkpoint


def attach_best_checkpoint(evaluator: Engine, trainer: Engine, to_save: Mapping[str, Any],
                           checkpoint_dir: Path) -> None:
    """Keep the checkpoint with the lowest FID as ``best_checkpoint_<iteration>_neg_fid=<-fid>.pt``."""

    def _score(_: Engine) -> float:
        fid = evaluator.state.metrics.get("fid", math.inf)
        return -fid if math.isfinite(fid) else -math.inf

    saver = DiskSaver(str(checkpoint_dir), require_empty=False, atomic=True, create_dir=True)
    best = Checkpoint(to_save, saver, filename_prefix="best", n_saved=1, score_function=_score,
                      score_name="neg_fid", global_step_transform=lambda *_: trainer.state.iteration)
    evaluator.add_event_handler(Events.COMPLETED, best)


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The plain numbers among an evaluator's metrics (ignite also stores mapping-valued ones)."""
    result = {}
    for name, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (int, float)):
            result[name] = float(value)
    return result


def attach_evaluation(trainer: Engine, evaluator: Engine, batch_sizes: list[int], every_epochs: int,
                      writer: Optional[HistoryWriter], record_fields: Mapping[str, Any],
                      before_run: Callable[[], None] = lambda: None) -> None:
    """Run the evaluator every ``every_epochs`` epochs and write one ``kind: eval`` record."""

    @trainer.on(Events.EPOCH_COMPLETED(every=every_epochs))
    def _evaluate(engine: Engine) -> None:
        before_run()
        evaluator.run(batch_sizes, max_epochs=1)
        values = scalar_metrics(evaluator.state.metrics)
        if writer is not None:
            record = {"kind": "eval", "epoch": engine.state.epoch, "iteration": engine.state.iteration}
            record.update(values)
            record.update(record_fields)
            writer.append(record)
            shown = "  ".join(f"{name}: {value:.4f}" for name, value in values.items())
            logger.info("Epoch [%d/%d] %s", engine.state.epoch, engine.state.max_epochs, shown)
