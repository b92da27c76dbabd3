"""The metrics' names and options without torch, for the config schema, the metrics command and ``--help``:
the registries' names as :class:`Name` Enums (each registry checks them at import) and :class:`MetricOptions`,
every option with its meaning and bounds."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Any, Iterable


class Name(str, enum.Enum):
    """A name from a fixed list: equal to its string, printed (and written to YAML / JSON) as it."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


def names(enum_name: str, values: Iterable[str], module: str = __name__) -> Any:
    """A :class:`Name` Enum whose members are ``values`` (member names may hold dashes: OmegaConf
    reads an Enum value by its member name), defined as ``module.enum_name`` (how it pickles)."""
    return Name(enum_name, [(value, value) for value in values], module=module)


MetricName = names("MetricName", ("fid", "is", "kid", "prdc", "fd", "cmmd", "vendi", "authpct", "fid_inf", "fd_inf"))
ProtocolName = names("ProtocolName", ("tutorial", "pytorch-fid", "torch-fidelity", "clean-fid"))
Precision = names("Precision", ("fp32", "tf32"))
DEFAULT_PROTOCOL = "torch-fidelity"  # TTUR's: the protocol of most published GAN FIDs
DEFAULT_SEED = 2020  # of the IS shuffle and the KID subsets: torch-fidelity's default rng_seed
FEATURE_NETWORKS = ("inception", "classifier", "dinov2", "clip")  # a file follows a colon: classifier:PATH
MAX_BATCH_SIZE, MAX_WORKERS = 65_536, 64  # images per forward pass, loader workers: the most a machine can run


def option(default: Any, low: float, high: float, meaning: str) -> Any:
    return field(default=default, metadata={"bounds": (low, high), "help": meaning})


@dataclass
class MetricOptions:
    """The options of the metrics (``eval.<name>`` in a config, ``--<name>`` on the metrics command)."""

    is_splits: int = option(10, 1, 10_000, "Inception Score splits")
    kid_subsets: int = option(100, 1, 100_000, "KID subsets")
    kid_subset_size: int = option(1000, 1, 1_000_000, "KID subset size (clipped to the samples there are)")
    nearest_k: int = option(5, 1, 1000, "k of precision / recall / density / coverage")
    fd_inf_points: int = option(15, 2, 1000, "fid_inf / fd_inf: FD at this many subset sizes ...")
    fd_inf_min_fraction: float = option(0.1, 1e-6, 1 - 1e-6, "... from this fraction of the samples up to all of them")


def option_problems(options: Any) -> list[tuple[str, str]]:
    """``(option, why)`` for each value of ``options`` (MetricOptions or a config section) outside its bounds."""
    problems = []
    for item in fields(MetricOptions):
        low, high = item.metadata["bounds"]
        value = getattr(options, item.name)
        if not low <= value <= high:
            bound = f"at least {low:g}" if value < low else f"at most {high:g}"
            problems.append((item.name, f"{value} must be {bound} ({item.metadata['help']})"))
    return problems
