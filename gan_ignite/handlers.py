"""Handlers that read engine state and write files: history records, progress, image grids,
TensorBoard, evaluation records. Rank 0 writes; a write that fails there stops every rank with the
same message (every rank reaches the same collectives also on that path).
"""

from __future__ import annotations

import datetime
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar
from torch import nn
from torchvision.utils import make_grid, save_image

from gan_ignite.errors import RunDirError
from gan_ignite.io import atomic_write
from gan_ignite.metrics._base import on_every_rank
from gan_ignite.metrics.timing import describe_seconds
from gan_ignite.run_dir import HistoryWriter

logger = logging.getLogger(__name__)


class TensorState:
    """A tensor that :class:`ignite.handlers.Checkpoint` can save and restore (e.g. the fixed noise)."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"tensor": self.tensor}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.tensor.copy_(state["tensor"].reshape(self.tensor.shape))


class PerRankRngStates:
    """Every rank's RNG states, saved and restored after the trainer's: ``DeterministicEngine`` saves
    rank 0's and would restore them on every rank, so that all ranks would draw rank 0's stream."""

    def __init__(self, trainer: Engine):
        self.trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        own = self.trainer.state_dict()["rng_states"]
        gathered = [own] * idist.get_world_size()
        if len(gathered) > 1:
            torch.distributed.all_gather_object(gathered, own)
        return {"per_rank": gathered}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        per_rank = state["per_rank"]
        if len(per_rank) == idist.get_world_size():
            self.trainer.state.rng_states = per_rank[idist.get_rank()]
        else:
            logger.warning("The checkpoint was written by %d processes and is resumed by %d: the rest of the "
                           "interrupted epoch draws other random numbers than the uninterrupted run would have.",
                           len(per_rank), idist.get_world_size())


class TrainingLog:
    """Every iteration's step outputs, kept on the device and flushed to ``history.jsonl`` once per period
    as ``kind: train`` records averaged over all processes. The flush is the NaN guard: at the first
    non-finite value it sets :attr:`diverged` and stops the run without COMPLETED (so without a checkpoint).
    """

    # the progress display's running averages: ignite RunningAverage's formula and alpha
    RUNNING_KEYS, ALPHA = ("Loss_G", "Loss_D"), 0.98

    def __init__(self, writer: Optional[HistoryWriter], every: int):
        self.writer, self.every = writer, every
        self.pending: list[tuple[int, int, Mapping[str, Any]]] = []
        self.running: dict[str, float] = {}
        self.diverged: Optional[dict[str, Any]] = None

    def attach(self, trainer: Engine) -> None:
        trainer.add_event_handler(Events.STARTED, lambda _: self.running.clear())

        @trainer.on(Events.ITERATION_COMPLETED)
        def _keep(engine: Engine) -> None:
            self.pending.append((engine.state.epoch, engine.state.iteration, engine.state.output))

        trainer.add_event_handler(Events.ITERATION_COMPLETED(every=self.every) | Events.EPOCH_COMPLETED, self.flush)

    def flush(self, engine: Engine) -> None:
        """Write the pending records (a collective in multi-process runs: call it on every rank)."""
        if not self.pending or self.diverged is not None:
            return
        keys = list(self.pending[0][2])
        values = torch.stack([torch.stack([torch.as_tensor(output[key], dtype=torch.float64, device=idist.device())
                                           for key in keys]) for _, _, output in self.pending])
        if idist.get_world_size() > 1:
            values = idist.all_reduce(values) / idist.get_world_size()
        rows = values.cpu().tolist()  # the period's one host synchronisation
        pending, self.pending = self.pending, []
        records = []
        for (epoch, iteration, _), row in zip(pending, rows):
            record = dict(zip(keys, row))
            if not all(math.isfinite(value) for value in row):
                self.diverged = {"iteration": iteration, "epoch": epoch, **record}
                break
            records.append({"kind": "train", "epoch": epoch, "iteration": iteration, **record})
            self._update_running(record)
        engine.state.metrics.update(self.running)
        on_every_rank(lambda: self.writer.append(records), run_here=self.writer is not None)
        if self.diverged is not None:
            engine.terminate(skip_completed=True)

    def _update_running(self, record: Mapping[str, float]) -> None:
        """ignite RunningAverage's averages of ``Loss_G`` / ``Loss_D``, from the flushed records."""
        for key in self.RUNNING_KEYS:
            if key in record:
                previous = self.running.get(key)
                value = record[key]
                self.running[key] = value if previous is None else previous * self.ALPHA + (1 - self.ALPHA) * value


# a terminal's progress bar is redrawn at most this often (ignite's redraws at every event it is given)
PROGRESS_MIN_SECONDS = 0.5


def bounded_rate(every: int, min_seconds: float) -> Callable[[Engine, int], bool]:
    """An event filter: every ``every``-th iteration, not within ``min_seconds`` of the last that passed;
    always the last of an epoch."""
    last = {"time": -math.inf}

    def passes(engine: Engine, iteration: int) -> bool:
        now, epoch_end = time.monotonic(), iteration % engine.state.epoch_length == 0
        if not epoch_end and (iteration % every or now - last["time"] < min_seconds):
            return False
        last["time"] = now
        return True

    return passes


def attach_progress(trainer: Engine, every: int, every_seconds: float, batch_size: int) -> None:
    """On a terminal ignite's ProgressBar every ``every`` iterations; otherwise (a log file) one plain line
    every ``every`` iterations or ``every_seconds`` seconds, whichever comes first."""
    stream = sys.stderr
    if stream.isatty():
        ProgressBar(persist=True, file=stream).attach(
            trainer, metric_names=["Loss_G", "Loss_D"],
            event_name=Events.ITERATION_COMPLETED(event_filter=bounded_rate(every, PROGRESS_MIN_SECONDS)))
        return
    PlainProgress(every, every_seconds, batch_size, stream).attach(trainer)


class PlainProgress:
    """``epoch 2/4  iteration 300/600  Loss_G 1.234  Loss_D 0.567  412.3 img/s  ETA 0:01:23`` lines. The
    rate counts training only: the pause at an epoch's end (evaluation, checkpoint) is left out."""

    def __init__(self, every: int, every_seconds: float, batch_size: int, stream: Any):
        self.every, self.every_seconds, self.batch_size, self.stream = every, every_seconds, batch_size, stream
        self.last_time, self.last_iteration = time.monotonic(), 0
        self.paused: Optional[float] = None

    def attach(self, trainer: Engine) -> None:
        trainer.add_event_handler(Events.STARTED, self._start)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._maybe_print)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._pause)
        trainer.add_event_handler(Events.EPOCH_STARTED, self._resume)
        trainer.add_event_handler(Events.COMPLETED, self._print)

    def _pause(self, _: Engine) -> None:
        self.paused = time.monotonic()

    def _resume(self, _: Engine) -> None:
        if self.paused is not None:
            self.last_time += time.monotonic() - self.paused
            self.paused = None

    def _start(self, engine: Engine) -> None:
        self.last_time, self.last_iteration = time.monotonic(), engine.state.iteration

    def _maybe_print(self, engine: Engine) -> None:
        if engine.state.iteration % self.every == 0 or time.monotonic() - self.last_time >= self.every_seconds:
            self._print(engine)

    def _print(self, engine: Engine) -> None:
        now, state = self.paused or time.monotonic(), engine.state
        if state.iteration == self.last_iteration:
            return
        seconds_per_iteration = (now - self.last_time) / (state.iteration - self.last_iteration)
        total = state.epoch_length * state.max_epochs
        losses = "  ".join(f"{name} {float(state.metrics[name]):.4f}" for name in ("Loss_G", "Loss_D")
                           if name in state.metrics)
        eta = datetime.timedelta(seconds=round(seconds_per_iteration * (total - state.iteration)))
        print(f"epoch {state.epoch}/{state.max_epochs}  iteration {state.iteration}/{total}  {losses}  "
              f"{self.batch_size / max(seconds_per_iteration, 1e-9):.1f} img/s  ETA {eta}", file=self.stream,
              flush=True)
        self.last_time, self.last_iteration = now, state.iteration


def attach_image_grids(trainer: Engine, generator: Callable[[], nn.Module], fixed_noise: torch.Tensor,
                       images_dir: Path, every: int, listeners: list[Callable[[torch.Tensor, int], None]]) -> None:
    """Every ``every`` iterations and at the end, write ``generator()``'s images of the fixed noise as a
    PNG grid (rank 0 only) and hand the grid (3 x H x W in [0, 1]) with the iteration to ``listeners``."""
    last_saved = {"iteration": -1}

    def _save(engine: Engine) -> None:
        if engine.state.iteration == last_saved["iteration"]:
            return  # the schedule and the end of the run may coincide
        last_saved["iteration"] = engine.state.iteration
        path = images_dir / f"fixed_noise_iter_{engine.state.iteration:07d}.png"
        model = generator()
        was_training = model.training
        model.eval()
        with torch.no_grad():
            fake_images = model(fixed_noise).cpu()
        model.train(was_training)
        grid = make_grid(fake_images, nrow=8, normalize=True, value_range=(-1, 1))
        save_side_image(lambda handle: save_image(grid, handle, format="png"), path)
        for listener in listeners:
            listener(grid, engine.state.iteration)

    if idist.get_rank() == 0:
        trainer.add_event_handler(Events.ITERATION_COMPLETED(every=every) | Events.COMPLETED, _save)


def attach_tensorboard(trainer: Engine, log_dir: Path, writer: HistoryWriter, optimizers: Mapping[str, Any],
                       grid_listeners: list, every: int) -> Any:
    """ignite's TensorboardLogger (returned: close it at the end), fed the history records, fixed-noise
    grids and learning rates; a resumed run purges the events after its checkpoint's iteration."""
    from ignite.handlers.tensorboard_logger import OptimizerParamsHandler, TensorboardLogger

    logger_tb = TensorboardLogger(log_dir=str(log_dir), purge_step=trainer.state.iteration + 1)
    summary = logger_tb.writer

    def _record(record: Mapping[str, Any]) -> None:
        prefix = "train" if record.get("kind") == "train" else "eval"
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("epoch", "iteration"):
                summary.add_scalar(f"{prefix}/{key}", value, record["iteration"])

    writer.listeners.append(_record)
    grid_listeners.append(lambda grid, iteration: summary.add_image("fixed_noise", grid, iteration))
    for name, optimizer in optimizers.items():
        logger_tb.attach(trainer, log_handler=OptimizerParamsHandler(optimizer, param_name="lr", tag=name),
                         event_name=Events.ITERATION_COMPLETED(every=every))
    return logger_tb


def attach_skipped_images_log(trainer: Engine) -> None:
    """Count the unreadable images the loader skipped (``batch[1]``) and log the count per epoch."""
    skipped = {"count": 0}

    @trainer.on(Events.ITERATION_COMPLETED)
    def _count(engine: Engine) -> None:
        skipped["count"] += int(engine.state.batch[1])

    @trainer.on(Events.EPOCH_COMPLETED)
    def _report(engine: Engine) -> None:
        if skipped["count"]:
            logger.warning("Epoch %d: skipped %d unreadable image(s) (data.skip_bad_images=true; the files are "
                           "named in the warnings above)", engine.state.epoch, skipped["count"])
        skipped["count"] = 0


def save_real_grid(real_images: torch.Tensor, path: Path) -> None:
    save_side_image(lambda handle: save_image(real_images[:64], handle, format="png", nrow=8, normalize=True,
                                              value_range=(-1, 1)), path)


def save_side_image(write: Callable[[Any], None], path: Path) -> None:
    """Write an image grid atomically; one that cannot be written is worth a warning, not the run."""
    try:
        atomic_write(path, write)
    except RunDirError as error:
        logger.warning("%s The run goes on without this image.", error)


def attach_evaluation(trainer: Engine, evaluate: Callable[[], dict[str, Any]], every_epochs: int,
                      writer: Optional[HistoryWriter], before_run: Callable[[Engine], bool]) -> None:
    """Every ``every_epochs`` epochs unless ``before_run`` says no, ``evaluate`` and write a ``kind: eval`` record."""

    @trainer.on(Events.EPOCH_COMPLETED(every=every_epochs))
    def _evaluate(engine: Engine) -> None:
        if not before_run(engine):
            return
        values = evaluate()
        record = {"kind": "eval", "epoch": engine.state.epoch, "iteration": engine.state.iteration, **values}
        on_every_rank(lambda: writer.append([record]), run_here=writer is not None)
        if writer is not None:
            shown = "  ".join(f"{name} {value:.4f}" for name, value in values.items() if isinstance(value, float))
            logger.info("Evaluation at epoch %d, iteration %d (%s, %d samples, %s): %s", engine.state.epoch,
                        engine.state.iteration, values.get("model"), values.get("num_samples", 0),
                        describe_seconds(values.get("seconds", {})), shown)
