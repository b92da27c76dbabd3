"""Evaluation set up the same way for the trainer and ``python -m gan_ignite.evaluate`` (feature network,
reference statistics, metrics, evaluator), so scoring a checkpoint afterwards reproduces the record written
when it was saved; and loading a checkpoint's generator for scoring.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Mapping, Optional, Sequence

import ignite.distributed as idist
import PIL
import torch
from ignite.engine import Engine
from ignite.handlers import ProgressBar
from omegaconf import DictConfig
from torch.utils.data import Dataset

from gan_ignite import data as data_module
from gan_ignite.checkpoints import MODEL_KEYS, read_checkpoint
from gan_ignite.config import metric_options, scored_model
from gan_ignite.ema import recalibrate_batchnorm
from gan_ignite.engines import create_evaluator, generated_batches
from gan_ignite.errors import ConfigError, RunDirError, UserError
from gan_ignite.io import first_line, require_memory
from gan_ignite.latents import evaluation_latents
from gan_ignite.metrics._base import on_every_rank, rank0_first
from gan_ignite.metrics.scores.factory import (METRICS, Scoring, check_network_supports, create_metrics,
                                               feature_space, min_samples)
from gan_ignite.networks import build
from gan_ignite.metrics.networks.features import FeatureNetwork, load_feature_network
from gan_ignite.metrics.networks.inception import weights_tag
from gan_ignite.metrics.networks.preprocess import to_device
from gan_ignite.metrics.scores.real_stats import RealStatistics, cached_real_statistics, compute_real_statistics
from gan_ignite.metrics.timing import PartTimer, active_timer

logger = logging.getLogger("gan_ignite")
# an upper bound of what a sample costs: Inception's pool3 features (2048) and logits (1008), float32,
# kept per sample, gathered, and converted to float64 by KID / PRDC
FEATURE_DIM, LOGITS_DIM, BYTES_PER_VALUE = 2048, 1008, 4 + 4 + 8
# BatchNorm statistics of an EMA generator: 2048 seeded latents in batches of 256
EMA_BN_BATCHES, EMA_BN_BATCH_SIZE, EMA_BN_OFFSET = 8, 256, 2_000_003


def num_real_images(evaluation: DictConfig, available: int) -> int:
    """How many reference images: ``eval.num_real`` (null = ``eval.num_samples``, ``all`` = every one)."""
    wanted = evaluation.num_samples if evaluation.num_real is None else evaluation.num_real
    return available if wanted == "all" else min(int(wanted), available)


@dataclass
class Evaluation:
    """An evaluator, the generator and network it scores with and this rank's share of the latents."""

    evaluator: Engine
    generator: torch.nn.Module
    network: FeatureNetwork
    batches: list[torch.Tensor]
    device: torch.device
    record_fields: dict[str, Any]

    def run(self) -> dict[str, Any]:
        """One record's values: the metrics', the record's fields and ``seconds``, the time of each part."""
        timer = PartTimer(self.device)
        self.evaluator.timer = timer
        data = generated_batches(self.generator, self.network, self.batches, self.device, timer)
        try:
            with active_timer(timer):
                self.evaluator.run(data, max_epochs=1, epoch_length=len(self.batches))
        finally:
            self.evaluator.timer = None
        return {**scalar_metrics(self.evaluator.state.metrics), **self.record_fields, "seconds": timer.summary()}


def setup_evaluation(config: DictConfig, dataset: Dataset, generator: torch.nn.Module, device: torch.device,
                     model: str = "generator") -> Evaluation:
    """Feature network, reference statistics, metrics and evaluator, on every rank (it may run
    collectives); ``model`` names the scored weights in the records."""
    evaluation = config.eval
    check_sample_counts(config, len(dataset))  # type: ignore[arg-type]  # the reference set: the whole training set
    def load() -> FeatureNetwork:
        with warnings.catch_warnings():  # the command says it once (warn_if_random)
            warnings.filterwarnings("ignore", message=".*RANDOM-INIT")
            network = load_feature_network(evaluation.feature_network, device,
                                           inception_weights=evaluation.inception_weights,
                                           protocol=evaluation.protocol, precision=evaluation.precision)
        check_network_supports(evaluation.metrics, network)
        return network

    network = rank0_first(load)  # a download lands in the torch hub cache once
    real_stats = reference_statistics(config, dataset, network, device)
    scoring = Scoring(**vars(metric_options(evaluation)), device=device,
                      feature_space=feature_space(str(evaluation.feature_network)))
    metrics = create_metrics(list(evaluation.metrics), real_stats, scoring)
    evaluator = create_evaluator(generator, network, metrics)
    rank, world_size = idist.get_rank(), idist.get_world_size()
    if rank == 0 and sys.stderr.isatty():  # in a log file the evaluation's one summary line is enough
        ProgressBar(persist=False, desc="Evaluation").attach(evaluator)
    start, stop = data_module.shard_bounds(evaluation.num_samples, rank, world_size)
    latents = to_device(evaluation_latents(config, evaluation.num_samples)[start:stop], device)  # once, not per batch
    inception = evaluation.feature_network == "inception"
    record_fields = {"model": model, "num_samples": evaluation.num_samples, "num_real": real_stats.num or None,
                     "real_subset_seed": None if evaluation.reference_stats else evaluation.real_subset_seed,
                     "feature_network": evaluation.feature_network,
                     "protocol": evaluation.protocol if inception else None,  # null: no Inception scored
                     # what the Inception computed: tf32 asked on a CPU computes fp32
                     "inception_precision": getattr(network, "precision", None) if inception else None,
                     "inception_weights": weights_tag(evaluation.inception_weights) if inception else None,
                     **reference_file_fields(evaluation), "world_size": world_size}
    return Evaluation(evaluator, generator, network, list(latents.split(evaluation.batch_size)), device,
                      record_fields)


def check_sample_counts(config: DictConfig, available_real: int) -> None:
    """Before any work: the reference set is large enough for every metric, and the samples fit in memory."""
    evaluation = config.eval
    num_real = num_real_images(evaluation, available_real)
    for name, count in min_samples(evaluation.metrics, metric_options(evaluation)).items():
        if METRICS[name].needs_real is not None and num_real < count:
            raise UserError(f"The reference set has {num_real} image(s) (eval.num_real={evaluation.num_real}, "
                            f"{available_real} training images), but metric '{name}' needs at least {count}. Use "
                            f"more images, or change eval.metrics or the metric's option.")
    require_memory(evaluation_memory_bytes(evaluation.num_samples, num_real, list(evaluation.metrics),
                                           config.model.latent_dim),
                   f"An evaluation of eval.num_samples={evaluation.num_samples} against {num_real} reference images",
                   "Lower eval.num_samples or eval.num_real.")


def evaluation_memory_bytes(num_samples: int, num_real: int, metrics: Sequence[str], latent_dim: int) -> int:
    """A rough upper bound of the memory an evaluation needs (latents, features, logits)."""
    per_sample = latent_dim * 4 + (LOGITS_DIM * BYTES_PER_VALUE if "is" in metrics else 0)
    stores_features = any(METRICS[name].needs_generated_features for name in metrics)
    per_sample += FEATURE_DIM * BYTES_PER_VALUE if stores_features else 0
    return num_samples * per_sample + num_real * FEATURE_DIM * BYTES_PER_VALUE


def reference_statistics(config: DictConfig, dataset: Dataset, network: FeatureNetwork,
                         device: torch.device) -> RealStatistics:
    """Statistics of the reference subset of the *whole* training set (a generator that memorised a
    ``data.max_train_size`` subset must not look good), cached under a key that holds everything they
    depend on (see docs/metrics.md); with ``eval.reference_stats`` that file's."""
    evaluation = config.eval
    if evaluation.reference_stats:
        return on_every_rank(lambda: reference_file_statistics(evaluation, network))
    indices = data_module.reference_indices(len(dataset), num_real_images(evaluation, len(dataset)),
                                            evaluation.real_subset_seed)
    key_parts = {"dataset": config.data.name, "root": str(Path(config.data.root).resolve()),
                 "pool": len(dataset), "num_real": len(indices), "real_subset_seed": evaluation.real_subset_seed,
                 "files": data_module.dataset_fingerprint(dataset, indices), "image_size": config.data.image_size,
                 "channels": config.data.channels, "feature_network": network.tag,
                 "protocol": getattr(network, "protocol", None),
                 "inception_precision": getattr(network, "precision", None),
                 "preprocess_version": data_module.PREPROCESS_VERSION, "pillow": PIL.__version__}
    loader = data_module.eval_loader(dataset, indices, evaluation.batch_size, config.data.num_workers)
    return cached_real_statistics(data_module.cache_dir(config), key_parts,
                                  lambda: compute_real_statistics(loader, network, device=device))


def reference_file_statistics(evaluation: DictConfig, network: FeatureNetwork) -> RealStatistics:
    """``eval.reference_stats`` (TTUR's, pytorch-fid's, clean-fid's or our ``.npz``), checked against the
    network, protocol, precision and metrics."""
    path = Path(evaluation.reference_stats).expanduser()
    stats = RealStatistics.load(path)
    where = f"The reference statistics file '{path}' (eval.reference_stats)"
    if stats.mu.shape[0] != network.num_features:
        raise ConfigError(f"{where} holds {stats.mu.shape[0]}-d statistics, but the feature network "
                          f"'{evaluation.feature_network}' gives {network.num_features}-d features.")
    recorded = stats.recorded("protocol")
    if recorded is not None and recorded != evaluation.protocol:
        raise ConfigError(f"{where} was computed with protocol {recorded}, not eval.protocol={evaluation.protocol}: "
                          f"set eval.protocol={recorded}.")
    recorded_precision, precision = stats.recorded("inception_precision"), getattr(network, "precision", None)
    if recorded_precision is not None and precision is not None and recorded_precision != precision:
        raise ConfigError(f"{where} was computed at precision {recorded_precision}, this evaluation computes "
                          f"{precision}: TF32 moves the features by ~1e-3. Set eval.precision={recorded_precision} "
                          "(on a GPU), or recompute the statistics at this precision.")
    recorded_network = stats.recorded("feature_network")
    if recorded_network is not None and recorded_network != network.tag:
        raise ConfigError(f"{where} was computed with the feature network {recorded_network}, this evaluation "
                          f"uses {network.tag}: other weights or preprocessing give other values.")
    needs_features = [name for name in evaluation.metrics if METRICS[name].needs_real == "features"]
    if needs_features and stats.features is None:
        raise ConfigError(f"{where} holds only mu and sigma, and {', '.join(needs_features).upper()} {'needs' if len(needs_features) == 1 else 'need'} the "
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
    """The plain numbers among an evaluator's metrics; counts such as ``kid_subset_size`` stay integers."""
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
                       "are meaningless (for tests and trial runs only); the records are marked "
                       "inception_weights=random.")


def load_generator(config: DictConfig, checkpoint_path: Path, device: Any, model: str = "generator",
                   allowed: Optional[Collection[str]] = None) -> tuple[torch.nn.Module, dict]:
    """The checkpoint's ``model`` (``generator`` or ``ema``) ready to be scored, and the trainer state;
    ``allowed``: the modules a class path in the run's config may import (:func:`gan_ignite.networks.build`)."""
    how = "Pass a checkpoint written by gan_ignite.train, with the run's config.yaml beside it."
    state = read_checkpoint(checkpoint_path, how)
    key = MODEL_KEYS[model]
    if key not in state:
        if model == "ema":
            raise RunDirError(f"Checkpoint '{checkpoint_path}' holds no EMA generator: its run was trained without "
                              f"train.ema_decay. Use the live generator (--model generator).")
        raise RunDirError(f"Checkpoint '{checkpoint_path}' holds no generator. {how}")
    generator = build(config, "generator", allowed)
    try:
        generator.load_state_dict(state[key])
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as error:
        which = "generator" if model == "generator" else "EMA generator"
        raise RunDirError(f"Cannot load the {which} from '{checkpoint_path}': {first_line(error)}. {how}") from None
    return prepare_for_scoring(generator.to(device), config, model, device), state.get("trainer", {})


def prepare_for_scoring(generator: torch.nn.Module, config: DictConfig, model: str,
                        device: torch.device) -> torch.nn.Module:
    """``generator`` in eval mode; an EMA one with seeded BatchNorm statistics recomputed for its weights."""
    if model == "ema":
        recalibrate_batchnorm(generator, config.model.latent_dim, EMA_BN_BATCHES, EMA_BN_BATCH_SIZE,
                              config.seed + EMA_BN_OFFSET, device)
    return generator.eval()


class ScoredGenerator:
    """The generator evaluations and grids use in training: the live one, or an EMA copy refreshed before each use."""

    def __init__(self, config: DictConfig, live: torch.nn.Module, ema: Optional[torch.nn.Module],
                 device: torch.device):
        self.config, self.ema, self.device = config, ema, device
        self.name = scored_model(config)
        self.module = copy.deepcopy(ema) if self.name == "ema" else live

    def refresh(self) -> torch.nn.Module:
        if self.name == "ema":
            self.module.load_state_dict(self.ema.state_dict())
            prepare_for_scoring(self.module, self.config, "ema", self.device)
        return self.module
