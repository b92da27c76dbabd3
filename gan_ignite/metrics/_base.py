"""Shared pieces of the metrics: the device, output selection, and the collectives that gather rows
and share results and errors across ranks."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import ignite.distributed as idist
import torch
from ignite.exceptions import NotComputableError

from gan_ignite.errors import ConfigError, UserError
from gan_ignite.metrics.timing import timed_part

FEATURES_KEY = "features"
LOGITS_KEY = "logits"


def resolve_device(name: str | None) -> torch.device:
    """``name`` as a device that exists here (``None``: cuda when available, else cpu)."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    available = "cpu" + (f", cuda, cuda:0 ... cuda:{gpus - 1}" if gpus else " (no CUDA device is visible)")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device '{name}' is not a device name; the devices here are {available}.") from None
    if device.type == "cuda" and (not gpus or (device.index or 0) >= gpus):
        raise ConfigError(f"--device {name} does not exist here; the devices here are {available}.")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name}: only cpu and cuda devices are supported; the devices here are "
                          f"{available}.")
    return device


class SelectKey:
    """Default ``output_transform``: take ``output[key]`` from the evaluator's output dict."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __call__(self, output: Any) -> torch.Tensor:
        if isinstance(output, Mapping) and self.key in output:
            return output[self.key]
        found = list(output) if isinstance(output, Mapping) else type(output).__name__
        raise KeyError(f"The evaluator output must be a dict with key '{self.key}' (Inception outputs of the "
                       f"generated images: {{'features': [B, 2048], 'logits': [B, 1008]}}), got {found}; "
                       "pass output_transform= to select it yourself.")


def gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """The 2-d ``rows`` [n_rank, D] of every rank in rank order, on every rank (no rows: any [0, *])."""
    if idist.get_world_size() == 1:
        return rows
    with timed_part("gather"):  # an evaluation's record says what its gathers cost
        # all_gather needs equal shapes: the rows are zero-padded, then trimmed
        shapes = idist.all_gather(torch.tensor([rows.shape[0], rows.shape[1]], device=rows.device))
        counts, widths = shapes[0::2].tolist(), shapes[1::2].tolist()
        largest, width = max(counts), max(widths)
        padded = torch.zeros((largest, width), dtype=rows.dtype, device=rows.device)
        padded[: rows.shape[0], : rows.shape[1]] = rows
        gathered = idist.all_gather(padded)
        return torch.cat([gathered[rank * largest : rank * largest + n] for rank, n in enumerate(counts)])


def first_error_on_any_rank(message: str) -> str:
    """The first non-empty error message ("": none) of all ranks, on every rank (a collective)."""
    if idist.get_world_size() == 1:
        return message
    return next((text for text in idist.all_gather(message) if text), "")


T = TypeVar("T")


def on_every_rank(work: Callable[[], T], run_here: bool = True) -> T | None:
    """``work()`` (where ``run_here``), its :class:`~gan_ignite.errors.UserError` raised on every rank (the
    others' with the same words). A collective, so no rank waits in a later one another has left."""
    result, error = None, None
    if run_here:
        try:
            result = work()
        except UserError as exc:
            error = exc
    message = first_error_on_any_rank(str(error) if error is not None else "")
    if error is not None:
        raise error
    if message:
        raise UserError(message)
    return result


def rank0_first(work: Callable[[], T]) -> T:
    """``work()`` on rank 0, then on the others (e.g. a download into a shared cache), as :func:`on_every_rank`."""
    first = idist.get_rank() == 0
    result = on_every_rank(work, run_here=first)
    others = on_every_rank(work, run_here=not first)
    return result if first else others


def broadcast_from_rank0(payload: Any) -> Any:
    """A JSON-serialisable ``payload`` computed on rank 0, returned on every rank (others pass anything)."""
    if idist.get_world_size() == 1:
        return payload
    text = idist.broadcast(json.dumps(payload) if idist.get_rank() == 0 else None, src=0, safe_mode=True)
    return json.loads(text)


def on_rank0(compute: Callable[[], Any]) -> Any:
    """``compute()`` on rank 0; its JSON-serialisable result, or its ValueError / NotComputableError, on every rank."""
    result, error = None, None
    if idist.get_rank() == 0:
        try:
            result = compute()
        except (ValueError, NotComputableError) as exc:
            error = [type(exc).__name__, str(exc)]
    shared = broadcast_from_rank0({"result": result, "error": error})
    if shared["error"] is not None:
        kind, message = shared["error"]
        raise (NotComputableError if kind == NotComputableError.__name__ else ValueError)(message)
    return shared["result"]
