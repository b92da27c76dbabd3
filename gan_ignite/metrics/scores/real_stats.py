"""Reference-set statistics: computed once, cached on disk by a key of everything they depend on,
validated when read. The ``.npz`` holds ``mu`` and ``sigma`` under pytorch-fid's key names (so
``python -m pytorch_fid stats.npz other`` reads it), plus ``features``, ``num`` and ``meta``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch

from gan_ignite.errors import RealStatisticsError, RunDirError
from gan_ignite.io import atomic_write, check_npz, first_line
from gan_ignite.metrics._base import broadcast_from_rank0, first_error_on_any_rank, gather_rows
from gan_ignite.metrics.networks.features import FeatureNetwork, InceptionFeatures, Prefetch, prepare_images
from gan_ignite.metrics.options import DEFAULT_PROTOCOL
from gan_ignite.metrics.scores.fid import mean_and_covariance

logger = logging.getLogger(__name__)
NPZ_FORMAT = ("Expected an .npz of numeric arrays 'mu' [D] and 'sigma' [D, D] (pytorch-fid's format), optionally "
              "'features' [N, D] (N >= 2), 'num' (an integer) and 'meta' (a JSON object); recompute it with python -m "
              "gan_ignite.metrics FOLDER --save-stats OUT.npz.")
# relative tolerance of the covariance checks: float32 features give round-off far below it
SYMMETRY_TOLERANCE, PSD_TOLERANCE = 1e-6, 1e-6


@dataclass
class RealStatistics:
    """Feature statistics of a reference image set."""

    features: np.ndarray | None  # float32 [N, D]; needed by KID and PRDC
    mu: np.ndarray  # float64 [D]
    sigma: np.ndarray  # float64 [D, D]
    num: int
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_features(cls, features: torch.Tensor | np.ndarray, meta: Mapping | None = None) -> RealStatistics:
        features = torch.as_tensor(features, dtype=torch.float32).cpu()
        mu, sigma = mean_and_covariance(features)
        return cls(features.numpy(), mu.numpy(), sigma.numpy(), int(features.shape[0]), dict(meta or {}))

    def save(self, path: str | os.PathLike, label: str = "statistics file", intact: str = "") -> Path:
        path = Path(path)
        arrays = {"mu": self.mu, "sigma": self.sigma, "num": np.int64(self.num),
                  "meta": np.array(json.dumps(self.meta, sort_keys=True, default=str))}
        if self.features is not None:
            arrays["features"] = self.features
        atomic_write(path, lambda stream: np.savez(stream, **arrays), intact, label=label)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> RealStatistics:
        """Our ``.npz`` or pytorch-fid's, validated completely; every command reads reference statistics here."""
        path = Path(path)
        if not path.exists():
            raise RealStatisticsError(f"Cannot read statistics file '{path}': it does not exist. {NPZ_FORMAT}")
        check_npz(path, "Statistics file", NPZ_FORMAT, RealStatisticsError)
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls._from_npz(data, path)
        except RealStatisticsError:
            raise
        except (OSError, ValueError, TypeError, EOFError, KeyError, zipfile.BadZipFile) as error:  # e.g. cut short
            raise RealStatisticsError(f"Cannot read statistics file '{path}' ({type(error).__name__}: "
                                      f"{first_line(error)}). {NPZ_FORMAT}") from None

    @classmethod
    def _from_npz(cls, data: Any, path: Path) -> RealStatistics:
        missing = [key for key in ("mu", "sigma") if key not in data.files]
        if missing:
            raise _invalid(path, f"lacks {missing}; it has {data.files}")
        arrays = {key: data[key] for key in ("mu", "sigma", "features", "num", "meta") if key in data.files}
        for key in ("mu", "sigma", "features"):
            if key in arrays and arrays[key].dtype.kind not in "fiu":
                raise _invalid(path, f"stores '{key}' as {arrays[key].dtype}, not numbers")
        mu, sigma = arrays["mu"].astype(np.float64), arrays["sigma"].astype(np.float64)
        if mu.ndim != 1 or mu.size == 0 or sigma.shape != (mu.size, mu.size):
            raise _invalid(path, f"has mu {mu.shape} and sigma {sigma.shape}; expected mu [D] and sigma [D, D] with "
                                 "D >= 1")
        features = arrays["features"].astype(np.float32) if "features" in arrays else None
        num = _count(arrays.get("num"), features, path)
        meta = _metadata(arrays.get("meta"), path)
        check_statistics(mu, sigma, features, path)
        return cls(features, mu, sigma, num, meta)

    def recorded(self, key: str) -> Any:
        """What ``meta`` (or a cache file's ``meta.key_parts``) records (``protocol``, ...); None if it does not say."""
        value = self.meta.get(key)
        if value is None and isinstance(self.meta.get("key_parts"), dict):
            value = self.meta["key_parts"].get(key)
        return value


def _invalid(path: Path, problem: str) -> RealStatisticsError:
    return RealStatisticsError(f"Statistics file '{path}' {problem}. {NPZ_FORMAT}")


def _count(num: np.ndarray | None, features: np.ndarray | None, path: Path) -> int:
    """``num``: a non-negative integer scalar, equal to the rows of ``features`` when both are there."""
    if num is None:
        return len(features) if features is not None and features.ndim == 2 else 0
    if num.shape != () or num.dtype.kind not in "iu" or int(num) < 0:
        raise _invalid(path, f"has num = {_short(num)} ({num.dtype}, shape {num.shape}), not a non-negative integer")
    if features is not None and features.ndim == 2 and int(num) != features.shape[0]:
        raise _invalid(path, f"says num = {int(num)} images but holds features of {features.shape[0]}")
    return int(num)


def _metadata(meta: np.ndarray | None, path: Path) -> dict[str, Any]:
    """``meta``: a JSON object whose recorded settings are strings (or null)."""
    if meta is None:
        return {}
    if meta.shape != () or meta.dtype.kind != "U":
        raise _invalid(path, f"has meta of type {meta.dtype} and shape {meta.shape}, not a JSON text")
    try:
        value = json.loads(str(meta))
    except ValueError as error:
        raise _invalid(path, f"has meta that is not JSON ({error})") from None
    if not isinstance(value, dict):
        raise _invalid(path, f"has meta = {_short(value)}, a {type(value).__name__}, not a JSON object")
    key_parts = value.get("key_parts")
    if key_parts is not None and not isinstance(key_parts, dict):
        raise _invalid(path, f"has meta.key_parts = {_short(key_parts)}, not a JSON object")
    for source in (value, key_parts or {}):
        for key in ("protocol", "feature_network", "inception_precision", "inception_weights"):
            if source.get(key) is not None and not isinstance(source.get(key), str):
                raise _invalid(path, f"records {key} = {_short(source[key])}, not a string")
    return value


def _short(value: Any) -> str:
    text = repr(value.tolist() if isinstance(value, np.ndarray) else value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_statistics(mu: np.ndarray, sigma: np.ndarray, features: np.ndarray | None, path: Path) -> None:
    """Refuse statistics that can only give meaningless metrics: wrong shapes, fewer than 2 images, values that
    are not finite, a covariance not symmetric and positive semi-definite (it could give a negative FID)."""
    problems = []
    if features is not None and (features.ndim != 2 or features.shape[1] != mu.size):
        problems.append(f"features has shape {features.shape}, expected [N, {mu.size}]")
    elif features is not None and features.shape[0] < 2:
        problems.append(f"features holds {features.shape[0]} images, fewer than 2")
    for name, array in (("mu", mu), ("sigma", sigma), ("features", features)):
        if array is not None and not np.isfinite(array).all():
            problems.append(f"{name} holds NaN or infinite values")
    if np.isfinite(sigma).all():
        scale = max(float(np.abs(sigma).max(initial=0.0)), np.finfo(np.float64).tiny)
        if float(np.abs(sigma - sigma.T).max(initial=0.0)) > SYMMETRY_TOLERANCE * scale:
            problems.append("sigma is not symmetric")
        elif (np.diag(sigma) < 0).any():
            problems.append("sigma has negative variances on its diagonal")
        else:  # a Cholesky factorisation of sigma + tolerance * I decides, far cheaper than the eigenvalues
            matrix = torch.from_numpy(np.ascontiguousarray(sigma, dtype=np.float64))
            shifted = matrix + PSD_TOLERANCE * scale * torch.eye(matrix.shape[0], dtype=matrix.dtype)
            if int(torch.linalg.cholesky_ex(shifted).info) != 0:
                lowest = float(torch.linalg.eigvalsh(matrix)[0])
                problems.append(f"sigma is not positive semi-definite (an eigenvalue of {lowest:.3g}, a covariance "
                                f"has none below 0): FIDs against it could be negative")
    if problems:
        raise RealStatisticsError(f"Statistics file '{path}' cannot be used: {'; '.join(problems)}. It is damaged or "
                                  "was not written as feature statistics; recompute it (python -m gan_ignite.metrics "
                                  "FOLDER --save-stats OUT.npz).")


def compute_real_statistics(batches: Iterable[Any], network: FeatureNetwork | torch.nn.Module,
                            protocol: str = DEFAULT_PROTOCOL, device: str | torch.device | None = None,
                            max_samples: int | None = None) -> RealStatistics:
    """Statistics of batches of images (float in [-1, 1] or uint8, or ``(images, labels, ...)``) through ``network``
    (or a module with the FID Inception's input contract, behind ``protocol``), at most ``max_samples`` per rank.
    Every rank passes its contiguous shard and gets the full set; a failure anywhere is raised everywhere."""
    if isinstance(network, torch.nn.Module):
        network = InceptionFeatures(network.to(device) if device is not None else network, protocol)
    local, error = torch.zeros((0, network.num_features)), None
    try:
        local = _local_features(batches, network, max_samples)
    except Exception as exc:  # shared below, then re-raised here with its own type and traceback
        error = exc
    message = first_error_on_any_rank(f"{type(error).__name__}: {error}" if error is not None else "")
    if error is not None:
        raise error
    if message:
        raise RealStatisticsError(f"Computing the real statistics failed on another process: {message}")
    features = gather_rows(local.to(idist.device()) if idist.get_world_size() > 1 else local).cpu()
    if features.shape[0] < 2:
        raise RealStatisticsError(f"Real statistics need at least 2 images, got {features.shape[0]}; "
                                  "check the dataset.")
    return RealStatistics.from_features(features)


def _local_features(batches: Iterable[Any], network: FeatureNetwork, max_samples: int | None) -> torch.Tensor:
    """Features of ``batches``; reading, conversion and resizing run one batch ahead of the network."""

    def prepared() -> Iterator[torch.Tensor]:
        count = 0
        for batch in batches:
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            if max_samples is not None:
                images = images[: max_samples - count]
            if images.shape[0] == 0:
                return
            count += images.shape[0]
            yield prepare_images(images, network)

    batches_ready = Prefetch(prepared()) if getattr(network, "host_work", True) else prepared()
    collected = [network(batch)[0].float() for batch in batches_ready]  # on the device until the end
    return torch.cat(collected).cpu() if collected else torch.zeros((0, network.num_features))


def cache_key(key_parts: Mapping[str, Any]) -> str:
    """A short stable hash of ``key_parts`` (JSON with sorted keys)."""
    return hashlib.sha256(json.dumps(dict(key_parts), sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_real_statistics(cache_dir: str | os.PathLike, key_parts: Mapping[str, Any],
                           compute_fn: Callable[[], RealStatistics]) -> RealStatistics:
    """The statistics for ``key_parts`` (everything they depend on) from ``cache_dir``, or ``compute_fn()`` stored
    there. On every rank: rank 0 alone reads and writes the file and broadcasts; a failed write raises everywhere."""
    path = Path(cache_dir) / f"real_stats_{cache_key(key_parts)}.npz"
    stats = _load_on_rank0(path)
    if broadcast_from_rank0(stats is not None):
        logger.info("Real statistics cache hit: %s", path)
        return _broadcast_statistics(stats)
    logger.info("Real statistics cache miss: computing %s", dict(key_parts))
    stats = compute_fn()
    stats.meta = {**stats.meta, "key_parts": json.loads(json.dumps(dict(key_parts), default=str))}
    error = None
    if idist.get_rank() == 0:
        try:
            stats.save(path, "the real statistics cache file", "The statistics are cached so that later evaluations "
                       "and runs skip recomputing them: choose a writable folder (eval.stats_cache_dir=... in a "
                       "training config, or fix the permissions).")
            logger.info("Real statistics of %d images saved to %s", stats.num, path)
        except RunDirError as failure:
            error = str(failure)
    error = broadcast_from_rank0(error)
    if error:
        raise RealStatisticsError(error)
    return stats


def _load_on_rank0(path: Path) -> RealStatistics | None:
    if idist.get_rank() != 0 or not path.is_file():
        return None
    try:
        return RealStatistics.load(path)
    except Exception as error:  # an unreadable cache entry (cut short, damaged) is a miss: recomputed
        logger.warning("Ignoring unreadable real statistics cache file (it is recomputed): %s", error)
        return None


def _broadcast_statistics(stats: RealStatistics | None) -> RealStatistics:
    if idist.get_world_size() == 1:
        return stats
    is_source = idist.get_rank() == 0
    header = broadcast_from_rank0({"num": stats.num, "meta": stats.meta, "features": stats.features is not None}
                                  if is_source else None)

    def share(array: np.ndarray | None) -> np.ndarray:
        tensor = torch.from_numpy(array).to(idist.device()) if is_source else None
        return idist.broadcast(tensor, src=0, safe_mode=True).cpu().numpy()

    mu, sigma = share(stats.mu if is_source else None), share(stats.sigma if is_source else None)
    features = share(stats.features if is_source else None) if header["features"] else None
    return stats if is_source else RealStatistics(features, mu, sigma, header["num"], header["meta"])
