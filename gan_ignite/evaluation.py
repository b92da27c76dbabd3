"""Evaluation shared by the trainer and ``python -m gan_ignite.evaluate``: the feature network, the
reference statistics, the metrics and the evaluator, set up the same way for both, so that scoring
a checkpoint afterwards reproduces the record written when it was saved.

One checkpoint, one number:

- sample ``i`` of an evaluation always gets latent vector ``i`` of one seeded CPU stream
  (:func:`evaluation_latents`), whatever the world size and batch size; each rank scores a
  contiguous slice, and features are gathered in rank order, i.e. in sample order;
- the reference set is a seeded random sample of the training set (``eval.real_subset_seed``),
  or all of it (``eval.num_real: all``), or a published statistics file (``eval.reference_stats``);
- its statistics are cached under a key that holds a fingerprint of the image files, the
  preprocessing version and the Pillow version, so they cannot go stale silently.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import ignite.distributed as idist
import PIL
import torch
from ignite.engine import Engine
from ignite.handlers import ProgressBar
from omegaconf import DictConfig
from torch.utils.data import Dataset

from gan_ignite import data as data_module
from gan_ignite.config import ONE_PROCESS, load_config, scored_model
from gan_ignite.ema import recalibrate_batchnorm
from gan_ignite.engines import create_evaluator, generated_batches
from gan_ignite.errors import ConfigError, RunDirError, on_every_rank
from gan_ignite.handlers import HistoryWriter
from gan_ignite.metrics.factory import METRICS, check_network_supports, create_metrics
from gan_ignite.metrics.features import FeatureNetwork, load_feature_network
from gan_ignite.metrics.inception import weights_tag
from gan_ignite.metrics.real_stats import RealStatistics, cached_real_statistics, compute_real_statistics
from gan_ignite.models import generator_from_config

logger = logging.getLogger("gan_ignite")
EVAL_NOISE_OFFSET = 1_000_003  # evaluation latents: their own stream, apart from the training seed's
CHECKPOINT_KEYS = {"generator": "generator", "ema": "ema_generator"}
# BatchNorm statistics of an EMA generator: 2048 seeded latents in batches of 256
EMA_BN_BATCHES, EMA_BN_BATCH_SIZE, EMA_BN_OFFSET = 8, 256, 2_000_003


def evaluation_latents(config: DictConfig, num_samples: int) -> torch.Tensor:
    """All ``num_samples`` latent vectors of an evaluation, from one seeded CPU stream."""
    noise = torch.Generator().manual_seed(config.seed + EVAL_NOISE_OFFSET)
    return torch.randn(num_samples, config.model.latent_dim, 1, 1, generator=noise)


def num_real_images(evaluation: DictConfig, available: int) -> int:
    """How many reference images: ``eval.num_real`` (null = ``eval.num_samples``, ``all`` = every one)."""
    wanted = evaluation.num_real
    if wanted is None:
        wanted = evaluation.num_samples
    return available if wanted == "all" else min(int(wanted), available)


@dataclass
class Evaluation:
    """An evaluator, the generator and network it scores with and this rank's share of the
    latents; :meth:`run` returns one record's values."""

    evaluator: Engine
    generator: torch.nn.Module
    network: FeatureNetwork
    batches: list[torch.Tensor]
    device: torch.device
    record_fields: dict[str, Any]

    def run(self) -> dict[str, Any]:
        data = generated_batches(self.generator, self.network, self.batches, self.device)
        self.evaluator.run(data, max_epochs=1, epoch_length=len(self.batches))
        return {**scalar_metrics(self.evaluator.state.metrics), **self.record_fields}


def setup_evaluation(config: DictConfig, dataset: Dataset, generator: torch.nn.Module, device: torch.device,
                     model: str = "generator") -> Evaluation:
    """Feature network, reference statistics (computed once per cache key), metrics and evaluator.

    Every rank must call this (it may run collectives). ``model`` names the weights being scored
    in the records.
    """
    evaluation = config.eval
    network = on_every_rank(lambda: load_feature_network(evaluation.feature_network, device,
                                                         inception_weights=evaluation.inception_weights,
                                                         protocol=evaluation.protocol))
    on_every_rank(lambda: check_network_supports(evaluation.metrics, network))
    real_stats = reference_statistics(config, dataset, network, device)
    metrics = create_metrics(list(evaluation.metrics), real_stats, is_splits=evaluation.is_splits,
                             kid_subsets=evaluation.kid_subsets, kid_subset_size=evaluation.kid_subset_size,
                             nearest_k=evaluation.nearest_k, device=device)
    evaluator = create_evaluator(generator, network, metrics)
    rank, world_size = idist.get_rank(), idist.get_world_size()
    if rank == 0 and sys.stderr.isatty():  # in a log file the evaluation's one summary line is enough
        ProgressBar(persist=False, desc="Evaluation").attach(evaluator)
    start, stop = data_module.shard_bounds(evaluation.num_samples, rank, world_size)
    latents = evaluation_latents(config, evaluation.num_samples)[start:stop]
    inception = evaluation.feature_network == "inception"
    record_fields = {"model": model, "num_samples": evaluation.num_samples, "num_real": real_stats.num or None,
                     "real_subset_seed": None if evaluation.reference_stats else evaluation.real_subset_seed,
                     "feature_network": evaluation.feature_network,
                     "protocol": evaluation.protocol if inception else None,  # null: no Inception scored
                     "inception_weights": weights_tag(evaluation.inception_weights) if inception else None,
                     **reference_file_fields(evaluation), "world_size": world_size}
    return Evaluation(evaluator, generator, network, list(latents.split(evaluation.batch_size)), device,
                      record_fields)


def reference_statistics(config: DictConfig, dataset: Dataset, network: FeatureNetwork,
                         device: torch.device) -> RealStatistics:
    """Statistics of the reference subset of the training set, from the cache or computed (sharded
    over the ranks) and cached. The key holds everything they depend on (see the README's "Metrics").
    With ``eval.reference_stats`` they are that file's instead."""
    evaluation = config.eval
    if evaluation.reference_stats:
        return on_every_rank(lambda: reference_file_statistics(evaluation, network))
    pool = data_module.training_set(dataset, config.data)
    indices = data_module.reference_indices(len(pool), num_real_images(evaluation, len(pool)),
                                            evaluation.real_subset_seed)
    key_parts = {"dataset": config.data.name, "root": str(Path(config.data.root).resolve()),
                 "pool": len(pool), "num_real": len(indices), "real_subset_seed": evaluation.real_subset_seed,
                 "files": data_module.dataset_fingerprint(pool, indices),
                 "image_size": config.data.image_size, "channels": config.data.channels,
                 "feature_network": network.tag, "preprocess_version": data_module.PREPROCESS_VERSION,
                 "pillow": PIL.__version__}
    loader = data_module.eval_loader(pool, indices, evaluation.batch_size, config.data.num_workers)
    cache_dir = data_module.cache_dir(config)
    return cached_real_statistics(cache_dir, key_parts, lambda: compute_real_statistics(loader, network,
                                                                                        device=device))


def reference_file_statistics(evaluation: DictConfig, network: FeatureNetwork) -> RealStatistics:
    """``eval.reference_stats`` (TTUR's, pytorch-fid's, clean-fid's or our ``.npz``), checked against
    the network, the protocol and the metrics: one paragraph naming the file if it does not fit."""
    path = Path(evaluation.reference_stats).expanduser()
    stats = RealStatistics.load(path)
    where = f"The reference statistics file '{path}' (eval.reference_stats)"
    if stats.mu.shape[0] != network.num_features:
        raise ConfigError(f"{where} holds {stats.mu.shape[0]}-d statistics, but the feature network "
                          f"'{evaluation.feature_network}' gives {network.num_features}-d features.")
    recorded = stats.meta.get("protocol")
    if recorded is not None and recorded != evaluation.protocol:
        raise ConfigError(f"{where} was computed with protocol {recorded}, not eval.protocol={evaluation.protocol}: "
                          f"set eval.protocol={recorded}.")
    recorded_network = stats.meta.get("feature_network")
    if recorded_network is not None and recorded_network != network.tag:
        raise ConfigError(f"{where} was computed with the feature network {recorded_network}, this evaluation "
                          f"uses {network.tag}: other weights or preprocessing give other values.")
    needs_features = [name for name in evaluation.metrics if METRICS[name].needs_real == "features"]
    if needs_features and stats.features is None:
        raise ConfigError(f"{where} holds only mu and sigma, and {', '.join(needs_features).upper()} need(s) the "
                          f"reference images' features: drop {', '.join(needs_features)} from eval.metrics, or score "
                          f"against the images (leave eval.reference_stats empty).")
    return stats


def reference_file_fields(evaluation: DictConfig) -> dict[str, Any]:
    """The record fields naming ``eval.reference_stats`` (path and content hash); none without it."""
    if not evaluation.reference_stats:
        return {}
    path = Path(evaluation.reference_stats).expanduser()
    return {"reference_stats": str(path), "reference_stats_sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:12]}


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float | int]:
    """The plain numbers among an evaluator's metrics (ignite also stores mapping-valued ones);
    counts such as ``kid_subset_size`` stay integers."""
    result: dict[str, float | int] = {}
    for name, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (int, float)):
            result[name] = value if isinstance(value, int) else float(value)
    return result


def warn_if_random(record_fields: Mapping[str, Any]) -> None:
    if record_fields["inception_weights"] == "random" and record_fields["feature_network"] == "inception":
        logger.warning("eval.inception_weights=random: a random-init Inception network is scoring. Its FID / IS "
                       "are meaningless (for tests only); the records are marked inception_weights=random.")


def run_directory(checkpoint: Path) -> Path:
    """The run directory of a checkpoint: the folder holding ``config.yaml``, the checkpoint's
    folder or the one above it (``RUN_DIR/checkpoints/checkpoint_N.pt``)."""
    for candidate in (checkpoint.parent.parent, checkpoint.parent):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise RunDirError(f"No config.yaml found next to checkpoint '{checkpoint}' (looked in its folder and the one "
                      f"above). Pass a checkpoint inside a gan_ignite run directory.")


def load_run_config(checkpoint: Path, overrides: Sequence[str] = ()) -> tuple[Path, DictConfig]:
    """The run directory of ``checkpoint`` and its ``config.yaml`` with ``overrides``, in one process
    unless the overrides ask for more (the run's own launch settings say nothing about how this
    machine should score or sample)."""
    if not checkpoint.is_file():
        raise RunDirError(f"Checkpoint '{checkpoint}' does not exist; pass a file from a run's checkpoints/.")
    run_dir = run_directory(checkpoint)
    return run_dir, load_config(run_dir / "config.yaml", [*ONE_PROCESS, *overrides])


def load_generator(config: DictConfig, checkpoint_path: Path, device: torch.device,
                   model: str = "generator") -> tuple[torch.nn.Module, dict]:
    """The checkpoint's ``model`` (``generator`` or ``ema``) ready to be scored, and the trainer state."""
    generator = generator_from_config(config)
    try:
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        generator.load_state_dict(state[CHECKPOINT_KEYS[model]])
    except Exception as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if isinstance(error, KeyError) and model == "ema":
            raise RunDirError(f"Checkpoint '{checkpoint_path}' holds no EMA generator: its run was trained without "
                              f"train.ema_decay. Use the live generator (--model generator).") from None
        raise RunDirError(f"Cannot load the {model} generator from '{checkpoint_path}': {first_line}. Pass a "
                          f"checkpoint written by gan_ignite.train with the run's config.yaml beside it.") from None
    return prepare_for_scoring(generator.to(device), config, model, device), state.get("trainer", {})


def prepare_for_scoring(generator: torch.nn.Module, config: DictConfig, model: str,
                        device: torch.device) -> torch.nn.Module:
    """An EMA generator gets BatchNorm statistics recomputed for its averaged weights (they do not
    fit the live generator's running statistics it carries); seeded, so every rank and the
    evaluate CLI compute the same ones."""
    if model == "ema":
        recalibrate_batchnorm(generator, config.model.latent_dim, EMA_BN_BATCHES, EMA_BN_BATCH_SIZE,
                              config.seed + EMA_BN_OFFSET, device)
    return generator.eval()


class ScoredGenerator:
    """The generator evaluations and image grids use during training: the live one, or a copy of
    the EMA generator refreshed (weights copied, BatchNorm recalibrated) before each use."""

    def __init__(self, config: DictConfig, live: torch.nn.Module, ema: Optional[torch.nn.Module],
                 device: torch.device):
        self.config, self.live, self.ema, self.device = config, live, ema, device
        self.name = scored_model(config)
        self.module = copy.deepcopy(ema) if self.name == "ema" else live

    def refresh(self) -> torch.nn.Module:
        if self.name == "ema":
            self.module.load_state_dict(self.ema.state_dict())
            prepare_for_scoring(self.module, self.config, "ema", self.device)
        return self.module


def history_record(run_dir: Path, iteration: Optional[int], model: str = "generator") -> Optional[dict]:
    """The ``history.jsonl`` evaluation record written at ``iteration`` for ``model`` (the last
    one, if several), or None."""
    if iteration is None:
        return None
    matching = [record for record in HistoryWriter(run_dir / "history.jsonl").read()
                if record.get("kind") == "eval" and record.get("iteration") == iteration
                and record.get("model", "generator") == model]
    return matching[-1] if matching else None
