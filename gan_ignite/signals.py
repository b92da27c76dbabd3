"""Every signal handler: SLURM's warning held during the set-up (:func:`hold_warning_signal`), the
trainer's graceful stop (:class:`GracefulStop`), and a parent (the spawning launcher, the sweep)
passing the signals it gets on to its child processes (:class:`Forward`).
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
    """Remember SIGUSR1 (SLURM's ``--signal=USR1@N`` warning) instead of dying of it: a warning during the
    set-up then stops the run after its first iteration, with a checkpoint."""
    signal.signal(signal.SIGUSR1, lambda signum, _frame: _held.append(signum))


def take_held_signal() -> Optional[int]:
    """The warning signal received while held (None if none), forgotten once taken."""
    held = _held[-1] if _held else None
    _held.clear()
    return held


class Forward:
    """While in use, pass ``signals`` on to each living one of ``processes()`` and remember the last received."""

    def __init__(self, processes: Callable[[], Sequence[Any]], signals: Sequence[int] = STOP_SIGNALS):
        self.processes, self.signals = processes, signals
        self.received: Optional[int] = None

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
    """Whether any rank was asked to stop, agreed without a host synchronisation on the training backend: an
    all-reduce (MAX) on a gloo group of its own (CPU tensors, also under NCCL), started after iteration ``i``
    and read after ``i + 1``, so all ranks stop together. A collective: every rank calls it once per iteration."""

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
        """Wait for the vote in flight and return it (0 if none)."""
        if self.pending is None:
            return 0
        self.pending.wait(datetime.timedelta(seconds=self.WAIT_SECONDS))
        self.pending = None
        return int(self.flag.item())


class GracefulStop:
    """On SIGTERM, SIGINT or SIGUSR1 finish the current iteration, save a checkpoint of it and stop the
    trainer (several ranks agree through a :class:`StopVote`); a second Ctrl-C aborts at once. The exit
    code: 130 for SIGINT, ``requeue_exit_code`` for the ``requeue_signals``, 0 for the others."""

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
        self._previous = {signum: signal.signal(signum, self._handle) for signum in STOP_SIGNALS}
        held = take_held_signal()
        if held is not None:
            self._handle(held, None)

    def uninstall(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def attach(self, trainer: Any, save_checkpoint: Callable[[Any], None], world_size: int) -> None:
        from ignite.engine import Events

        self.vote = StopVote() if world_size > 1 else None

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
        """At the end of a run that did not fail: collect the last vote in flight."""
        if self.vote is not None:
            self.vote.finish()

    @property
    def exit_code(self) -> Optional[int]:
        """None unless a signal stopped the run."""
        if self.stopped_at is None or self.received is None:
            return None
        if self.received == signal.SIGINT:
            return 130
        return self.requeue_exit_code if self.received in self.requeue_signals else 0

    @property
    def requeue(self) -> bool:
        return self.exit_code is not None and signal.Signals(self.received) in self.requeue_signals
