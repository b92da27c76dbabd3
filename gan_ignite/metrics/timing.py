"""Where an evaluation's time goes: seconds per part (generation, preprocessing, network, metrics,
gather), so a slow evaluation says why.

Work queued on a GPU is timed with CUDA events on the stream it runs on (read once, at the end:
no synchronisation per batch); work on the host (a PIL resize, the statistics and the square root
at the end) by the wall clock, after the device has caught up. On a CPU every part is wall-clock
time in the thread that does it. Parts that run in a background thread overlap the others, so
the parts may add up to more than the total.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Optional

import torch

__all__ = ["PART_NAMES", "PartTimer", "active_timer", "describe_seconds", "timed_part"]

PART_NAMES = ("generate", "prepare", "network", "metrics", "gather")


class PartTimer:
    """Seconds per named part of one evaluation on ``device``."""

    def __init__(self, device: torch.device | str):
        self.cuda = torch.device(device).type == "cuda"
        self.seconds: dict[str, float] = defaultdict(float)
        self._events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []
        self._lock = threading.Lock()
        self._started = time.perf_counter()

    @contextlib.contextmanager
    def device_part(self, name: str) -> Iterator[None]:
        """Work queued on the device (kernels): CUDA events around it, or the wall clock on a CPU."""
        if not self.cuda:
            with self.host_part(name, synchronize=False):
                yield
            return
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        yield
        end.record()
        with self._lock:
            self._events.append((name, start, end))

    @contextlib.contextmanager
    def host_part(self, name: str, synchronize: bool = False) -> Iterator[None]:
        """Work on the host; with ``synchronize`` (on a GPU) the device's queue is drained before
        and after, so only this part's own time counts (use it for once-per-evaluation work)."""
        if synchronize and self.cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        try:
            yield
        finally:
            if synchronize and self.cuda:
                torch.cuda.synchronize()
            with self._lock:
                self.seconds[name] += time.perf_counter() - started

    def begin(self, name: str, host: bool = False) -> tuple:
        """The start of a part that a context manager cannot enclose (e.g. between two engine
        events); :meth:`end` closes it. ``host`` parts are wall-clock after a device synchronisation."""
        if host or not self.cuda:
            if host and self.cuda:
                torch.cuda.synchronize()
            return name, host, time.perf_counter()
        start = torch.cuda.Event(enable_timing=True)
        start.record()
        return name, host, start

    def end(self, token: tuple) -> None:
        name, host, start = token
        if isinstance(start, float):
            if host and self.cuda:
                torch.cuda.synchronize()
            with self._lock:
                self.seconds[name] += time.perf_counter() - start
            return
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        with self._lock:
            self._events.append((name, start, end))

    def summary(self) -> dict[str, float]:
        """``{part: seconds, ..., "total": seconds}`` rounded to milliseconds (synchronises once);
        ``gather`` is counted apart from ``metrics``, which contains it."""
        if self.cuda:
            torch.cuda.synchronize()
        total = time.perf_counter() - self._started
        seconds = dict(self.seconds)
        for name, start, end in self._events:
            seconds[name] = seconds.get(name, 0.0) + start.elapsed_time(end) / 1000
        if "gather" in seconds and "metrics" in seconds:
            seconds["metrics"] = max(seconds["metrics"] - seconds["gather"], 0.0)
        ordered = {name: round(seconds[name], 3) for name in PART_NAMES if name in seconds}
        return {**ordered, "total": round(total, 3)}


_ACTIVE: dict[str, Optional[PartTimer]] = {"timer": None}


@contextlib.contextmanager
def active_timer(timer: Optional[PartTimer]) -> Iterator[None]:
    """Make ``timer`` the one :func:`timed_part` reports to (e.g. the gather inside a metric's compute)."""
    previous, _ACTIVE["timer"] = _ACTIVE["timer"], timer
    try:
        yield
    finally:
        _ACTIVE["timer"] = previous


@contextlib.contextmanager
def timed_part(name: str) -> Iterator[None]:
    """Time of ``name`` (a collective, once per metric) on the active timer, the device drained
    before and after; a no-op without an active timer."""
    timer = _ACTIVE["timer"]
    if timer is None:
        yield
        return
    with timer.host_part(name, synchronize=True):
        yield


def describe_seconds(seconds: dict[str, float]) -> str:
    """``2.10 s (generate 0.10, prepare 0.30, network 1.50, metrics 0.10)`` from a :meth:`PartTimer.summary`."""
    parts = ", ".join(f"{name} {value:.2f}" for name, value in seconds.items() if name != "total")
    return f"{seconds.get('total', 0.0):.2f} s ({parts})"
