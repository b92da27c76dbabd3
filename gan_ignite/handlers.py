"""Handlers that read engine state and write files: history records, image grids, checkpoints.

The files' formats and how they are written live in :mod:`gan_ignite.run_dir`; rank 0 writes, and
a write that fails there stops every rank with the same message (every rank reaches the same
collectives also on that path).
"""

from __future__ import annotations

import datetime
import logging
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import ignite.distributed as idist
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, ProgressBar
from ignite.handlers.checkpoint import BaseSaveHandler
from torch import nn
from torchvision.utils import make_grid, save_image

from gan_ignite.cluster import take_held_signal
from gan_ignite.errors import RunDirError, on_every_rank
from gan_ignite.metrics.timing import describe_seconds
from gan_ignite.run_dir import HistoryWriter, RunDir, atomic_write, write_checkpoint

logger = logging.getLogger(__name__)


class TensorState:
    """A tensor that :class:`ignite.handlers.Checkpoint` can save and restore (e.g. the fixed noise)."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"tensor": self.tensor}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.tensor.copy_(state["tensor"])


class PerRankRngStates:
    """Every rank's RNG states, for an exact mid-epoch resume of a multi-process run.

    ``DeterministicEngine`` checkpoints the RNG states of the process that writes the checkpoint
    (rank 0) and would restore them on every rank, so after a resume all ranks would draw rank
    0's latent stream. This object, saved after the trainer, holds the states of all ranks and
    hands each rank its own back when loaded (after the trainer's own state).
    """

    def __init__(self, trainer: Engine):
        self.trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        own = self.trainer.state_dict()["rng_states"]
        if idist.get_world_size() == 1:
            return {"per_rank": [own]}
        gathered: list[Any] = [None] * idist.get_world_size()
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
    """The step outputs of every iteration, kept on the device and written to ``history.jsonl``
    once per period, as one ``kind: train`` record per iteration averaged over all processes.

    A flush happens every ``every`` iterations, at every epoch end, before every checkpoint (the
    history on disk then always reaches the checkpoint) and at the end: one host synchronisation
    per period instead of several per iteration, which decides a GPU run's speed. The same flush is
    the NaN guard: at the first non-finite value it records the iteration in
    ``engine.state.diverged`` and stops the run without firing COMPLETED, so no checkpoint of the
    diverged models is ever written (checkpoints flush first) and the last good one stays the
    latest. Records from the first non-finite one on are not written (they are not valid JSON).
    """

    # the progress display's running averages: ignite RunningAverage's formula and alpha
    RUNNING_KEYS, ALPHA = ("Loss_G", "Loss_D"), 0.98

    def __init__(self, writer: Optional[HistoryWriter], every: int):
        self.writer, self.every = writer, every
        self.pending: list[tuple[int, int, Mapping[str, Any]]] = []
        self.running: dict[str, float] = {}

    def attach(self, trainer: Engine) -> None:
        trainer.state.diverged = None
        trainer.add_event_handler(Events.STARTED, lambda _: self.running.clear())

        @trainer.on(Events.ITERATION_COMPLETED)
        def _keep(engine: Engine) -> None:
            self.pending.append((engine.state.epoch, engine.state.iteration, engine.state.output))

        trainer.add_event_handler(Events.ITERATION_COMPLETED(every=self.every) | Events.EPOCH_COMPLETED, self.flush)

    def flush(self, engine: Engine) -> None:
        """Write the pending records (a collective in multi-process runs: call it on every rank)."""
        if not self.pending or engine.state.diverged is not None:
            return
        keys = list(self.pending[0][2])
        values = torch.stack([torch.stack([torch.as_tensor(output[key], dtype=torch.float64, device=idist.device())
                                           for key in keys]) for _, _, output in self.pending])
        if idist.get_world_size() > 1:
            values = idist.all_reduce(values) / idist.get_world_size()
        rows = values.cpu().tolist()  # the period's one host synchronisation
        pending, self.pending = self.pending, []
        records, diverged = [], None
        for (epoch, iteration, _), row in zip(pending, rows):
            record = dict(zip(keys, row))
            if not all(math.isfinite(value) for value in row):
                diverged = {"iteration": iteration, "epoch": epoch, **record}
                break
            records.append({"kind": "train", "epoch": epoch, "iteration": iteration, **record})
            self._update_running(record)
        engine.state.metrics.update(self.running)
        on_every_rank(lambda: self.writer.append_many(records), run_here=self.writer is not None)
        if diverged is not None:
            engine.state.diverged = diverged
            engine.terminate(skip_completed=True)


    def _update_running(self, record: Mapping[str, float]) -> None:
        """The exponential running averages of ``Loss_G`` / ``Loss_D`` over the iterations, as ignite's
        RunningAverage computes them (over every process's mean), from the flushed records."""
        for key in self.RUNNING_KEYS:
            if key in record:
                previous = self.running.get(key)
                value = record[key]
                self.running[key] = value if previous is None else previous * self.ALPHA + (1 - self.ALPHA) * value


class StopVote:
    """Whether any rank was asked to stop, agreed by every rank after every iteration without a host
    synchronisation on the training backend: a one-element all-reduce (MAX) on a gloo group of its own
    (CPU tensors, also when training runs on NCCL), started asynchronously after iteration ``i`` and
    read after iteration ``i + 1``, by when it has long finished. Every rank reads the same value after
    the same iteration, so all stop together, one iteration after the first rank saw the signal.
    A collective: every rank creates it and calls it once per iteration."""

    WAIT_SECONDS = 60.0

    def __init__(self) -> None:
        self.group = dist.new_group(backend="gloo")
        self.flag = torch.zeros(1, dtype=torch.int64)
        self.pending: Any = None

    def __call__(self, received: int) -> int:
        agreed = self.finish()
        self.flag = torch.tensor([received], dtype=torch.int64)
        self.pending = dist.all_reduce(self.flag, op=dist.ReduceOp.MAX, group=self.group, async_op=True)
        return agreed

    def finish(self) -> int:
        """Wait for the vote in flight (at the end of a run every rank has started the same number)
        and return it (0 if none)."""
        if self.pending is None:
            return 0
        self.pending.wait(datetime.timedelta(seconds=self.WAIT_SECONDS))
        self.pending = None
        return int(self.flag.item())


class GracefulStop:
    """On SIGTERM, SIGINT or SIGUSR1 (SLURM's ``--signal=USR1@90``, sent before a time limit or a
    preemption) finish the current iteration, save a checkpoint of it and stop the trainer.

    One process checks its own flag after every iteration. Several processes agree through a
    :class:`StopVote` after every iteration, so all ranks stop after the same iteration even if only
    one received the signal. The exit code says what comes next: 130 for SIGINT (Ctrl-C), the
    ``requeue_exit_code`` for the ``requeue_signals`` (the job should run again and resume), 0 for
    the others.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)

    def __init__(self, requeue_signals: Sequence[str] = ("SIGUSR1",), requeue_exit_code: int = 75) -> None:
        self.received: Optional[int] = None
        self.stopped_at: Optional[int] = None
        self.requeue_signals = {signal.Signals[name] for name in requeue_signals}
        self.requeue_exit_code = requeue_exit_code
        self.vote: Optional[StopVote] = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C aborts at once
        self.received = signum
        logger.warning("Received %s: stopping after this iteration and saving a checkpoint",
                       signal.Signals(signum).name)

    def install(self) -> "GracefulStop":
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        held = take_held_signal()  # a warning that came during the setup
        if held is not None:
            self._handle(held, None)
        return self

    def uninstall(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def attach(self, trainer: Engine, save_checkpoint: Callable[[Engine], None], every: int = 1) -> None:
        """``every`` is unused (requests were once shared every ``log.every`` iterations)."""
        del every
        if idist.get_world_size() > 1:
            self.vote = StopVote()

        def _maybe_stop(engine: Engine) -> None:
            received = self.received or 0
            if self.vote is not None:
                received = self.vote(received)
            if received and engine.state.diverged is None:
                self.received, self.stopped_at = received, engine.state.iteration
                save_checkpoint(engine)  # flushes the history first
                engine.terminate(skip_completed=True)

        trainer.add_event_handler(Events.ITERATION_COMPLETED, _maybe_stop)

    def finish(self) -> None:
        """At the end of a run that did not fail: the last vote in flight is collected."""
        if self.vote is not None:
            self.vote.finish()

    @property
    def exit_code(self) -> Optional[int]:
        """None unless a signal stopped the run."""
        if self.stopped_at is None or self.received is None:
            return None
        received = signal.Signals(self.received)
        if received == signal.SIGINT:
            return 130
        return self.requeue_exit_code if received in self.requeue_signals else 0

    @property
    def requeue(self) -> bool:
        return self.exit_code is not None and signal.Signals(self.received) in self.requeue_signals


# a terminal's progress bar is redrawn at most this often (ignite's bar redraws at every event it is
# given: with log.every=1 on a GPU that is thousands of redraws a second, each a terminal write)
PROGRESS_MIN_SECONDS = 0.5


def bounded_rate(every: int, min_seconds: float) -> Callable[[Engine, int], bool]:
    """An ignite event filter: every ``every``-th iteration, but not within ``min_seconds`` of the last
    one that passed; the last iteration of each epoch always passes (the bar ends on the true count)."""
    last = {"time": -math.inf}

    def passes(engine: Engine, iteration: int) -> bool:
        if iteration % every and iteration % engine.state.epoch_length:
            return False
        now = time.monotonic()
        if now - last["time"] < min_seconds and iteration % engine.state.epoch_length:
            return False
        last["time"] = now
        return True

    return passes


def attach_progress(trainer: Engine, every: int, every_seconds: float, batch_size: int,
                    stream: Optional[Any] = None) -> None:
    """Progress for people: on a terminal ignite's ProgressBar, refreshed every ``every``
    iterations; otherwise (a file under SLURM, nohup or CI) one plain line every ``every``
    iterations or ``every_seconds`` seconds, whichever comes first, and no carriage returns.
    Reading the losses synchronises with the device, so it happens only at this period."""
    stream = stream if stream is not None else sys.stderr
    if stream.isatty():
        ProgressBar(persist=True, file=stream).attach(
            trainer, metric_names=["Loss_G", "Loss_D"],
            event_name=Events.ITERATION_COMPLETED(event_filter=bounded_rate(every, PROGRESS_MIN_SECONDS)))
        return
    PlainProgress(every, every_seconds, batch_size, stream).attach(trainer)


class PlainProgress:
    """``epoch 2/4  iteration 300/600  Loss_G 1.234  Loss_D 0.567  412.3 img/s  ETA 0:01:23`` lines."""

    def __init__(self, every: int, every_seconds: float, batch_size: int, stream: Any):
        self.every, self.every_seconds, self.batch_size, self.stream = every, every_seconds, batch_size, stream
        self.last_time, self.last_iteration = time.monotonic(), 0

    def attach(self, trainer: Engine) -> None:
        trainer.add_event_handler(Events.STARTED, self._start)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._maybe_print)
        trainer.add_event_handler(Events.COMPLETED, self._print)

    def _start(self, engine: Engine) -> None:
        self.last_time, self.last_iteration = time.monotonic(), engine.state.iteration

    def _maybe_print(self, engine: Engine) -> None:
        if engine.state.iteration % self.every == 0 or time.monotonic() - self.last_time >= self.every_seconds:
            self._print(engine)

    def _print(self, engine: Engine) -> None:
        now, state = time.monotonic(), engine.state
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
                       images_dir: Path, every: int,
                       listeners: Optional[list[Callable[[torch.Tensor, int], None]]] = None) -> None:
    """Every ``every`` iterations and at the end, write G(fixed noise) as a PNG grid (rank 0 only);
    ``generator()`` gives the generator to draw with (e.g. a freshly recalibrated EMA copy), and
    ``listeners`` receive the grid (3 x H x W in [0, 1]) with the iteration."""
    listeners = listeners if listeners is not None else []

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
    """ignite's TensorboardLogger on rank 0, fed from what the run records anyway (no extra host
    synchronisation): every history record (``train/<key>`` per iteration at each flush,
    ``eval/<metric>`` per evaluation), the fixed-noise grids and the learning rates. A resumed run
    purges the events after its checkpoint's iteration, so the curves continue without duplicate
    steps. Returns the logger (close it at the end)."""
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
    """Write an image grid atomically; a grid that cannot be written is worth a warning, not the
    run (the next checkpoint write stops a run whose disk is full)."""
    try:
        atomic_write(path, write)
    except RunDirError as error:
        logger.warning("%s The run goes on without this image.", error)


class CheckpointSaver(BaseSaveHandler):
    """ignite's save handler for :func:`gan_ignite.run_dir.write_checkpoint` (atomic, fsynced, one
    error paragraph for any write failure), on rank 0."""

    def __init__(self, checkpoint_dir: Path):
        self.checkpoint_dir = checkpoint_dir

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Optional[Mapping] = None) -> None:
        if idist.get_rank() == 0:
            write_checkpoint(checkpoint, self.checkpoint_dir / filename)

    def remove(self, filename: str) -> None:
        if idist.get_rank() == 0:
            (self.checkpoint_dir / filename).unlink(missing_ok=True)


def attach_checkpoints(trainer: Engine, to_save: Mapping[str, Any], run_dir: RunDir, every_epochs: int,
                       every_iters: Optional[int], n_saved: int,
                       before_save: Callable[[Engine], None] = lambda engine: None) -> Callable[[Engine], None]:
    """ignite ``Checkpoint`` of everything in ``to_save`` as ``checkpoint_<iteration>.pt``.

    Saved every ``every_epochs`` epochs, every ``every_iters`` iterations if set, and at the end,
    each time after ``before_save(engine)`` (called on every rank; it may flush the history, sync
    buffers and stop a diverged run, which is then not saved). Only rank 0 writes, atomically
    (a kill or a full disk during a write leaves the previous checkpoint intact); a failed write
    stops every rank with its message. Old checkpoints are pruned here rather than by
    ``Checkpoint(n_saved=...)``, which forgets the files of a run before a resume.
    """
    checkpoint = Checkpoint(to_save, CheckpointSaver(run_dir.checkpoint_dir), filename_prefix="", n_saved=None,
                            global_step_transform=lambda engine, _: engine.state.iteration)

    saved_at: set[int] = set()

    def _save(engine: Engine) -> None:
        before_save(engine)  # e.g. flush the history: the NaN guard runs there
        if getattr(engine.state, "diverged", None) is not None:
            return  # never checkpoint models that produced a non-finite loss
        if engine.state.iteration in saved_at:
            return  # the epoch-end, iteration and signal schedules may coincide
        saved_at.add(engine.state.iteration)
        on_every_rank(lambda: checkpoint(engine))
        if idist.get_rank() == 0:
            for _, old in run_dir.checkpoints()[:-n_saved]:
                old.unlink(missing_ok=True)

    events = Events.EPOCH_COMPLETED(every=every_epochs) | Events.COMPLETED
    if every_iters:
        events = events | Events.ITERATION_COMPLETED(every=every_iters)
    trainer.add_event_handler(events, _save)
    return _save


def attach_best_checkpoint(evaluator: Engine, trainer: Engine, to_save: Mapping[str, Any], run_dir: RunDir) -> None:
    """Keep the checkpoint with the lowest FID as ``best_checkpoint_<iteration>_neg_fid=<-fid>.pt``.

    The best score so far is read from the files on disk, not kept in memory, so a resumed run
    keeps comparing against the best checkpoint of the run before the resume.
    """
    best = Checkpoint(to_save, CheckpointSaver(run_dir.checkpoint_dir), filename_prefix="best", n_saved=None,
                      score_function=lambda _: -evaluator.state.metrics["fid"], score_name="neg_fid",
                      global_step_transform=lambda *_: trainer.state.iteration)

    @evaluator.on(Events.COMPLETED)
    def _save_if_best(_: Engine) -> None:
        fid = evaluator.state.metrics.get("fid", math.inf)
        existing = run_dir.best_checkpoints()
        is_best = math.isfinite(fid) and (not existing or -fid > max(score for score, _ in existing))
        # rank 0 sees the files it wrote; every rank must take the same branch (saving runs collectives)
        if idist.get_world_size() > 1:
            is_best = bool(idist.broadcast(int(is_best), src=0))
        if not is_best:
            return
        on_every_rank(lambda: best(evaluator))
        if idist.get_rank() == 0:
            newest = {path.name for path in
                      run_dir.checkpoint_dir.glob(f"best_checkpoint_{trainer.state.iteration}_*.pt")}
            for _, path in existing:
                if path.name not in newest:
                    path.unlink(missing_ok=True)


def attach_evaluation(trainer: Engine, evaluate: Callable[[], dict[str, Any]], every_epochs: int,
                      writer: Optional[HistoryWriter], before_run: Callable[[], None] = lambda: None) -> None:
    """Every ``every_epochs`` epochs call ``before_run`` then ``evaluate`` (on every rank) and write
    one ``kind: eval`` record with the values it returns (rank 0)."""

    @trainer.on(Events.EPOCH_COMPLETED(every=every_epochs))
    def _evaluate(engine: Engine) -> None:
        if getattr(engine.state, "diverged", None) is not None:
            return  # the NaN guard stopped the run at this epoch's end: nothing worth scoring
        before_run()
        values = evaluate()
        record = {"kind": "eval", "epoch": engine.state.epoch, "iteration": engine.state.iteration, **values}
        on_every_rank(lambda: writer.append(record), run_here=writer is not None)
        if writer is not None:
            shown = "  ".join(f"{name} {value:.4f}" for name, value in values.items() if isinstance(value, float))
            logger.info("Evaluation at epoch %d, iteration %d (%s, %d samples, %s): %s", engine.state.epoch,
                        engine.state.iteration, values.get("model"), values.get("num_samples", 0),
                        describe_seconds(values.get("seconds", {})), shown)
