"""Loading a feature network's file: the one error every feature network raises, and the one reader
of their weight files (data only, no code). The networks (classifier, dinov2, clip) and
:mod:`gan_ignite.metrics.networks.features` (which picks among them) all import from here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gan_ignite.metrics.safe_files import load_torch_file

__all__ = ["FeatureNetworkError", "read_network_file"]


class FeatureNetworkError(ValueError):
    """A feature network that is unknown, or whose file cannot be used."""


def read_network_file(path: Path, label: str, how: str) -> Any:
    """A feature network's file read as data on the CPU (``torch.load(weights_only=True)`` through
    :func:`gan_ignite.metrics.safe_files.load_torch_file`: a file carrying code is refused without
    running it); a missing, irregular or unreadable file raises :class:`FeatureNetworkError` naming
    it (``label`` 'path') and saying ``how`` to get a good one."""
    return load_torch_file(path, label, f"To get a good one: {how}.", FeatureNetworkError)
