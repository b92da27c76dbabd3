"""Every signal handler in one place.

- :func:`hold_warning_signal`: SIGUSR1 (SLURM's ``--signal=USR1@N`` warning) ends a process by
  default; until the trainer's graceful stop takes over it is remembered instead.
- :class:`GracefulStop`: on SIGTERM, SIGINT or SIGUSR1 the trainer finishes the current iteration,
  saves a checkpoint of it and stops; all ranks agree on when (:class:`StopVote`).
- :class:`Forward`: a parent (the spawning launcher, the sweep) passes the signals it gets on to
  its child processes, which then stop gracefully.
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
from typing import Any, Callable, Optional, Sequence

logger = logging.getLogger("gan_ignite")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
_held: list[int] = []


def hold_warning_signal() -> None:
    """Remember SIGUSR1 instead of dying of it: a warning that arrives during the set-up then stops the
    run after its first iteration, with a checkpoint."""
    signal.signal(signal.SIGUSR1, lambda signum, _frame: _held.append(signum))


def take_held_signal() -> Optional[int]:
    """The warning signal received while held (None if none), forgotten once taken."""
    held = _held[-1] if _held else None
    _held.clear()
    return held


class Forward:
    """While in use, pass SIGTERM, SIGINT and SIGUSR1 on to ``processes()`` (each living one gets
    every signal once) and remember the last one received."""

    def __init__(self, processes: Callable[[], Sequence[Any]], signals: Sequence[int] = STOP_SIGNALS):
        self.processes, self.signals = processes, signals
        self.received: Optional[int] = None
        self.previous: dict[int, Any] = {}

    def _forward(self, signum: int, _frame: Any) -> None:
        self.received = signum
        for process in self.processes():
            if process.poll() is None if hasattr(process, "poll") else process.is_alive():
                os.kill(process.pid, signum)

    def __enter__(self) -> "Forward":
        self.previous = {signum: signal.signal(signum, self._forward) for signum in self.signals}
        return self

    def __exit__(self, *_: Any) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


class StopVote:
    """Whether any rank was asked to stop, agreed by every rank after every iteration without a host
    synchronisation on the training backend: a one-element all-reduce (MAX) on a gloo group of its own
    (CPU tensors, also when training runs on NCCL), started asynchronously after iteration ``i`` and
    read after iteration ``i + 1``, by when it has long finished. Every rank reads the same value after
    the same iteration, so all stop together, one iteration after the first rank saw the signal.
    A collective: every rank creates it and calls it once per iteration."""

    WAIT_SECONDS = 60.0

    def __init__(self) -> None:
        import torch
        import torch.distributed as dist

        self.dist, self.torch = dist, torch
        self.group = dist.new_group(backend="gloo")
        self.flag = torch.zeros(1, dtype=torch.int64)
        self.pending: Any = None

    def __call__(self, received: int) -> int:
        agreed = self.finish()
        self.flag = self.torch.tensor([received], dtype=self.torch.int64)
        self.pending = self.dist.all_reduce(self.flag, op=self.dist.ReduceOp.MAX, group=self.group, async_op=True)
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
    """On SIGTERM, SIGINT or SIGUSR1 (SLURM's warning before a time limit or a preemption) finish the
    current iteration, save a checkpoint of it and stop the trainer.

    One process checks its own flag after every iteration; several agree through a :class:`StopVote`,
    so all ranks stop after the same iteration even if only one received the signal. The exit code
    says what comes next: 130 for SIGINT (Ctrl-C), ``requeue_exit_code`` for the ``requeue_signals``
    (the job should run again and resume), 0 for the others. A second Ctrl-C aborts at once.
    """

    def __init__(self, requeue_signals: Sequence[str] = ("SIGUSR1",), requeue_exit_code: int = 75) -> None:
        self.received: Optional[int] = None
        self.stopped_at: Optional[int] = None
        self.requeue_signals = {signal.Signals[name] for name in requeue_signals}
        self.requeue_exit_code = requeue_exit_code
        self.vote: Optional[StopVote] = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        logger.warning("Received %s: stopping after this iteration and saving a checkpoint",
                       signal.Signals(signum).name)

    def install(self) -> None:
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        held = take_held_signal()
        if held is not None:
            self._handle(held, None)

    def uninstall(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def attach(self, trainer: Any, save_checkpoint: Callable[[Any], None], world_size: int) -> None:
        from ignite.engine import Events

        if world_size > 1:
            self.vote = StopVote()

        def _maybe_stop(engine: Any) -> None:
            received = self.received or 0
            if self.vote is not None:
                received = self.vote(received)
            if received:
                self.received, self.stopped_at = received, engine.state.iteration
                save_checkpoint(engine)
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
