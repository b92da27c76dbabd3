"""Where an evaluation's time goes: seconds per part (generate, prepare, network, metrics, gather).
Work queued on a GPU is timed with CUDA events, read once at the end; host work by the wall clock.
Parts run in a background thread overlap the others, so they may add up to more than the total.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any, Optional

import torch

PART_NAMES = ("generate", "prepare", "network", "metrics", "gather")


class PartTimer:
    def __init__(self, device: torch.device | str):
        self.cuda = torch.device(device).type == "cuda"
        self._parts: list[tuple[str, Any, Any]] = []  # (name, start, end): perf_counter seconds or CUDA events
        self._lock = threading.Lock()
        self._started = time.perf_counter()

    def begin(self, name: str, host: bool = False) -> tuple:
        """The start of a part that :meth:`end` closes: CUDA events on a GPU, else the wall clock;
        a ``host`` part is wall-clock time with the device drained before and after."""
        if host or not self.cuda:
            return self._wall_clock(name, host)
        start = torch.cuda.Event(enable_timing=True)
        start.record()
        return name, host, start

    def end(self, token: tuple) -> None:
        name, synchronize, start = token
        if isinstance(start, float):
            if synchronize and self.cuda:
                torch.cuda.synchronize()
            end = time.perf_counter()
        else:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
        with self._lock:
            self._parts.append((name, start, end))

    def _wall_clock(self, name: str, synchronize: bool) -> tuple:
        if synchronize and self.cuda:
            torch.cuda.synchronize()
        return name, synchronize, time.perf_counter()

    def device_part(self, name: str) -> contextlib.AbstractContextManager:
        return self._until_exit(self.begin(name))

    def host_part(self, name: str, synchronize: bool = False) -> contextlib.AbstractContextManager:
        """Work on the host; ``synchronize`` drains the device before and after (for once-per-evaluation work)."""
        return self._until_exit(self._wall_clock(name, synchronize))

    @contextlib.contextmanager
    def _until_exit(self, token: tuple) -> Iterator[None]:
        try:
            yield
        finally:
            self.end(token)

    def summary(self) -> dict[str, float]:
        """``{part: seconds, ..., "total": seconds}`` rounded to milliseconds (synchronises once);
        ``gather`` is counted apart from ``metrics``, which contains it."""
        if self.cuda:
            torch.cuda.synchronize()
        total = time.perf_counter() - self._started
        seconds: dict[str, float] = defaultdict(float)
        for name, start, end in self._parts:
            seconds[name] += end - start if isinstance(start, float) else start.elapsed_time(end) / 1000
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
    """Time ``name`` (a collective, once per metric) on the active timer, if any, the device drained."""
    timer = _ACTIVE["timer"]
    with timer.host_part(name, synchronize=True) if timer is not None else contextlib.nullcontext():
        yield


def describe_seconds(seconds: dict[str, float]) -> str:
    """``2.10 s (generate 0.10, prepare 0.30, network 1.50, metrics 0.10)`` from a :meth:`PartTimer.summary`."""
    parts = ", ".join(f"{name} {value:.2f}" for name, value in seconds.items() if name != "total")
    return f"{seconds.get('total', 0.0):.2f} s ({parts})"
