"""The configuration schema, loading (YAML + dotted overrides) and validation.

The schema is a tree of dataclasses turned into an OmegaConf structured config, so unknown keys
and wrong types are rejected by OmegaConf itself; :func:`load_config` turns those rejections and
the value checks below into :class:`~gan_ignite.errors.ConfigError` messages that name the key.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from gan_ignite import cluster
from gan_ignite.augment import AUGMENTS
from gan_ignite.errors import ConfigError
from gan_ignite.losses import LOSSES
from gan_ignite.metrics.scores.factory import METRIC_NAMES, METRICS, MetricOptions, feature_space, min_samples
from gan_ignite.metrics.networks.features import FEATURE_NETWORKS
from gan_ignite.metrics.networks.inception import PRECISIONS
from gan_ignite.metrics.networks.preprocess import DEFAULT_PROTOCOL, PROTOCOLS, protocol_for_resize

DATASETS = ("imagefolder", "celeba", "cifar10", "mnist", "fashion_mnist")
SCORED_MODELS = ("generator", "ema")
# a finished run's config read to score, sample or inspect it here: one process, whatever the run used
ONE_PROCESS = ("dist.nproc_per_node=null", "dist.backend=null")
IMAGE_SIZES = (32, 64, 128)
MAX_SEED = 2**32 - 1  # numpy's limit; ignite's manual_seed seeds numpy, random and torch
CONFIG_DOCS = "docs/configuration.md and its generated reference, docs/reference/configuration.md"
logger = logging.getLogger("gan_ignite")


@dataclass
class DataConfig:
    name: str = "fashion_mnist"  # the dataset; imagefolder = any folder of images, recursive
    root: str = "data"  # where the data is (a folder of images, or torchvision's download folder)
    image_size: int = 32  # training and generated image size
    channels: int = 1  # 1 (grayscale) or 3; images of other modes are converted
    num_workers: int = 2  # data loader workers
    # train on a seeded uniform random sample of this many images (never "the first N"); evaluations
    # still draw the reference set from the whole training set; null = every image
    max_train_size: Optional[int] = None
    subset_seed: int = 0  # which subset (data.max_train_size)
    download: bool = True  # whether torchvision may download a dataset it does not find
    skip_bad_images: bool = True  # skip unreadable image files (counted in the log), or stop naming the file
    # decode + resize once into a uint8 memory-mapped array in eval.stats_cache_dir, train from it
    cache: bool = False


@dataclass
class ModelConfig:
    latent_dim: int = 100  # DCGAN latent size
    g_features: int = 64  # generator width
    d_features: int = 64  # discriminator width
    spectral_norm: bool = False  # spectral normalisation of D's convolutions (replaces D's BatchNorm)


@dataclass
class TrainConfig:
    batch_size: int = 128  # the global batch, split over processes (must divide evenly)
    max_epochs: int = 5  # epochs to train
    epoch_length: Optional[int] = None  # iterations per epoch; null = the whole dataset
    lr: float = 2e-4  # Adam's learning rate (of G, and of D unless train.lr_d); also applied when resuming
    lr_d: Optional[float] = None  # the discriminator's learning rate (TTUR); null = lr
    beta1: float = 0.5  # Adam's beta1
    beta2: float = 0.999  # Adam's beta2
    image_every: int = 500  # fixed-noise image grid every N iterations
    checkpoint_every: int = 1  # checkpoint every N epochs
    checkpoint_every_iters: Optional[int] = None  # also checkpoint every N iterations; null = off
    n_saved: int = 2  # how many checkpoints to keep
    # auto = the latest checkpoint in output_dir (or a fresh start), or a checkpoint path (another
    # run's checkpoint forks it into a new output_dir)
    resume_from: Optional[str] = None
    loss: str = "bce"  # the GAN loss on D's logits; bce is the DCGAN paper's
    augment: str = "none"  # differentiable augmentation of every image D sees, real and generated
    ada_p: float = 0.0  # ADA's p at the start of a run (StyleGAN2-ADA's augment_p); the controller moves it
    ada_target: float = 0.6  # ADA's target for E[sign(D(real))]
    ada_speed_images: int = 500_000  # images over which ADA's p can go from 0 to 1
    ada_interval: int = 4  # iterations between ADA controller updates
    ema_decay: Optional[float] = None  # EMA generator's decay, e.g. 0.999; null = no EMA generator
    ema_start: int = 0  # iterations before the EMA starts averaging (it follows the live weights until then)
    amp: bool = False  # bf16 autocast of G and D (CUDA); changes results
    channels_last: bool = False  # NHWC layout of G, D and images; changes results by round-off
    compile: bool = False  # torch.compile of G and D; changes results by round-off
    deterministic: bool = False  # deterministic CUDA algorithms (slower); off: cuDNN benchmark mode


@dataclass
class EvalConfig:
    every_epochs: int = 1  # evaluate every N epochs (0 = never)
    # what evaluations, grids and the best checkpoint use; null = ema when
    # train.ema_decay is set
    model: Optional[str] = None
    num_samples: int = 3000  # generated images scored per evaluation
    num_real: Any = None  # reference images: null = num_samples, an int, or "all" (the whole training set)
    real_subset_seed: int = 0  # seed of the reference set's random sample
    batch_size: int = 64  # evaluation batch
    # inception (standard FID / IS), classifier:PATH (a domain classifier), dinov2:PATH or clip:PATH
    feature_network: str = "inception"
    protocol: Optional[str] = None  # FID preprocessing: the implementation whose FID to reproduce
    resize: Optional[str] = None  # replaced by protocol: an earlier version's 'bilinear' is read as 'tutorial'
    precision: str = "fp32"  # the FID Inception's: fp32, or tf32 (cuDNN's TF32 convolutions, GPU only)
    # a published mu/sigma .npz instead of the reference images; needs eval.protocol set explicitly
    reference_stats: Optional[str] = None
    # empty = download pytorch-fid's file once; a path = pytorch-fid's .pth or NVIDIA's TorchScript .pt;
    # random = a random-init network, for tests only
    inception_weights: Optional[str] = None
    metrics: List[str] = field(default_factory=lambda: ["fid", "is"])  # any of the metrics registry's names
    is_splits: int = 10  # Inception Score splits
    kid_subsets: int = 100  # KID subsets
    kid_subset_size: int = 1000  # KID subset size (clipped to the samples there are)
    nearest_k: int = 5  # k of precision / recall / density / coverage
    fd_inf_points: int = 15  # fid_inf / fd_inf: FD at this many subset sizes ...
    fd_inf_min_fraction: float = 0.1  # ... from this fraction of eval.num_samples up to all of them
    # where real-set statistics (and data.cache images) are cached; null = ~/.cache/gan_ignite/stats
    stats_cache_dir: Optional[str] = None


@dataclass
class LogConfig:
    every: int = 50  # iterations between history flushes, NaN checks, progress updates and log lines
    every_seconds: float = 30.0  # at most this long between log lines when the output is not a terminal
    tensorboard: bool = False  # also write TensorBoard events under RUN_DIR/tb/ (needs the tb extra)


REQUEUE_MODES = ("exit_code", "scontrol")
REQUEUE_SIGNALS = ("SIGUSR1", "SIGTERM")
RESERVED_EXIT_CODES = (0, 1, 2, 130)  # success, failure, input error, Ctrl-C


@dataclass
class DistConfig:
    backend: Optional[str] = None  # nccl, gloo, xla-tpu or horovod; null = one process (or what torchrun set up)
    nproc_per_node: Optional[int] = None  # processes to spawn; null = one, or whatever torchrun set up
    # a stop by one of requeue_on's signals (SLURM's --signal=USR1@90 before a time limit or a
    # preemption) checkpoints the current iteration and ends with requeue_exit_code; see docs/clusters.md
    requeue: str = "exit_code"  # exit_code, or scontrol: rank 0 also runs `scontrol requeue $SLURM_JOB_ID` once every rank has finished
    requeue_on: List[str] = field(default_factory=lambda: ["SIGUSR1"])  # the signals that ask for a requeue: SIGUSR1, SIGTERM
    requeue_exit_code: int = 75  # the exit code of such a stop (EX_TEMPFAIL, "try again later"; 0, 1, 2 and 130 are refused)


@dataclass
class RunConfig:
    """Written by the trainer into config.yaml (values given are replaced): the run's id and, for a
    run forked from another run's checkpoint, the parent's id and that checkpoint."""

    id: Optional[str] = None  # the run's id
    parent_id: Optional[str] = None  # a fork's parent run
    parent_checkpoint: Optional[str] = None  # the checkpoint a fork started from


@dataclass
class Config:
    seed: int = 999  # each process uses seed + rank, which must lie in [0, 2^32 - 1]
    output_dir: str = "runs/default"  # the run directory (one run per directory)
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)
    dist: DistConfig = field(default_factory=DistConfig)


def _read_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist; pass an existing YAML file to --config "
                          f"(the shipped ones are in configs/).")
    try:
        with open(path, encoding="utf-8") as handle:
            content = yaml.safe_load(handle)
    except yaml.YAMLError as error:
        raise ConfigError(f"Config file {path} is not valid YAML: {error}. Fix the file and run again.") from None
    if content is None:
        content = {}
    if not isinstance(content, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of sections (seed, output_dir, data, model, "
                          f"train, eval, log, dist), not a {type(content).__name__}.")
    return OmegaConf.create(content)


def _explain(error: OmegaConfBaseException, source: str) -> ConfigError:
    key = getattr(error, "full_key", None) or "?"
    if isinstance(error, ConfigKeyError):
        return ConfigError(f"Unknown config key '{key}' in {source}. Check its spelling; the valid keys are the "
                           f"fields of gan_ignite/config.py (see {CONFIG_DOCS}).")
    if isinstance(error, ValidationError):
        msg = str(error).splitlines()[0]
        return ConfigError(f"Wrong type for config key '{key}' in {source}: {msg}. See {CONFIG_DOCS}.")
    return ConfigError(f"Invalid config in {source} at key '{key}': {str(error).splitlines()[0]}.")


def load_config(path: Optional[str | os.PathLike] = None, overrides: Sequence[str] = ()) -> DictConfig:
    """Schema defaults <- YAML file <- dotted ``key.sub=value`` overrides, then validate."""
    config = OmegaConf.structured(Config)
    sources = []
    if path is not None:
        sources.append((_read_yaml(Path(path)), f"config file {path}"))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"Override '{item}' is not of the form key.sub=value (e.g. train.max_epochs=5).")
        sources.append((OmegaConf.from_dotlist([item]), f"override '{item}'"))
    for source, where in sources:
        try:
            config = OmegaConf.merge(config, source)
        except OmegaConfBaseException as error:
            raise _explain(error, where) from None
    resolve_protocol(config.eval)
    validate(config)
    OmegaConf.set_readonly(config, True)
    return config


def resolve_protocol(evaluation: DictConfig) -> None:
    """Fill in ``eval.protocol``: an earlier version's ``eval.resize`` maps onto the protocol that
    computes the same thing (or stops with what to use instead); a reference statistics file needs
    the protocol it was computed with said explicitly; otherwise the default."""
    if evaluation.resize is not None:
        try:
            legacy = protocol_for_resize(evaluation.resize)
        except ValueError as error:
            raise ConfigError(f"Invalid value for config key 'eval.resize': {error}") from None
        _require(evaluation.protocol in (None, legacy), "eval.resize",
                 f"'{evaluation.resize}' (= eval.protocol={legacy}) contradicts eval.protocol={evaluation.protocol}; "
                 "remove eval.resize")
        logger.warning("eval.resize=%s (a setting of earlier versions) is read as eval.protocol=%s, the same "
                       "computation.", evaluation.resize, legacy)
        evaluation.protocol, evaluation.resize = legacy, None
    _require(evaluation.protocol is not None or not evaluation.reference_stats, "eval.protocol",
             "eval.reference_stats needs the protocol its statistics were computed with, given explicitly "
             "(e.g. torch-fidelity for TTUR's files, pytorch-fid for pytorch-fid's, clean-fid for clean-fid's "
             "'clean' files), so that generated images are preprocessed the same way")
    if evaluation.protocol is None:
        evaluation.protocol = DEFAULT_PROTOCOL


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"Invalid value for config key '{key}': {message}.")


def validate(config: DictConfig) -> None:
    """Value checks that a type schema cannot express; each names the key and the fix."""
    data, model, train, evaluation, dist = config.data, config.model, config.train, config.eval, config.dist
    _require(data.name in DATASETS, "data.name", f"'{data.name}' is not one of {', '.join(DATASETS)}")
    _require(data.image_size in IMAGE_SIZES, "data.image_size",
             f"{data.image_size} is not supported; the DCGAN models are built for {IMAGE_SIZES}")
    _require(data.channels in (1, 3), "data.channels", f"{data.channels} must be 1 (grayscale) or 3 (RGB)")
    _require(data.num_workers >= 0, "data.num_workers", "must be >= 0")
    _require(data.max_train_size is None or data.max_train_size > 0, "data.max_train_size",
             "must be a positive number of images or null for the whole dataset")
    for section, key in ((data, "subset_seed"), (config.eval, "real_subset_seed")):
        _require(0 <= section[key] <= MAX_SEED, f"{'data' if section is data else 'eval'}.{key}",
                 f"{section[key]} is out of range: seeds lie in [0, {MAX_SEED}]")
    for key in ("latent_dim", "g_features", "d_features"):
        _require(model[key] > 0, f"model.{key}", f"{model[key]} must be positive")
    _require(train.batch_size > 0, "train.batch_size", f"{train.batch_size} must be positive")
    _require(train.lr > 0, "train.lr", f"{train.lr} must be positive")
    _require(train.lr_d is None or train.lr_d > 0, "train.lr_d", f"{train.lr_d} must be positive or null (= train.lr)")
    _require(0 <= train.beta1 < 1 and 0 <= train.beta2 < 1, "train.beta1/beta2", "Adam betas must be in [0, 1)")
    _require(train.max_epochs > 0, "train.max_epochs", "must be positive")
    for key in ("epoch_length", "checkpoint_every_iters"):
        _require(train[key] is None or train[key] > 0, f"train.{key}", "must be positive or null")
    for key in ("image_every", "checkpoint_every", "n_saved"):
        _require(train[key] > 0, f"train.{key}", "must be positive")
    validate_recipe(train)
    _require(config.log.every > 0, "log.every", "must be a positive number of iterations")
    _require(config.log.every_seconds > 0, "log.every_seconds", "must be positive")
    _require(dist.nproc_per_node is None or dist.nproc_per_node > 0, "dist.nproc_per_node", "must be positive")
    _require(dist.backend in (None, "gloo", "nccl", "xla-tpu", "horovod"), "dist.backend",
             f"'{dist.backend}' is not one of gloo, nccl, xla-tpu, horovod (or null for a single process)")
    _require(str(config.output_dir).strip() != "", "output_dir", "is empty; name the run directory, e.g. runs/my_run")
    _require(dist.requeue in REQUEUE_MODES, "dist.requeue",
             f"'{dist.requeue}' is not one of {', '.join(REQUEUE_MODES)} (exit_code: end with dist.requeue_exit_code "
             "and let the job script or the site requeue; scontrol: also run scontrol requeue $SLURM_JOB_ID)")
    unknown_signals = [name for name in dist.requeue_on if name not in REQUEUE_SIGNALS]
    _require(not unknown_signals, "dist.requeue_on",
             f"{unknown_signals} not among {list(REQUEUE_SIGNALS)} (SIGINT is Ctrl-C: it never requeues)")
    _require(0 < dist.requeue_exit_code < 256 and dist.requeue_exit_code not in RESERVED_EXIT_CODES,
             "dist.requeue_exit_code", f"{dist.requeue_exit_code} must lie in 1..255 and differ from "
             f"{', '.join(map(str, RESERVED_EXIT_CODES[1:]))} (failure, input error, Ctrl-C)")
    placement = cluster.placement_problem(dist.nproc_per_node, dist.backend)
    _require(placement is None, "dist.nproc_per_node", str(placement))
    world_size = launch_world_size(config)
    _require(0 <= config.seed <= MAX_SEED - (world_size - 1), "seed",
             f"{config.seed} is out of range: each process seeds its random generators with seed + rank, which "
             f"must lie in [0, {MAX_SEED}]")
    _require(train.batch_size % world_size == 0, "train.batch_size",
             f"{train.batch_size} (the global batch) is not divisible by the {world_size} processes "
             f"({describe_processes(config)}); choose a multiple of {world_size}")
    validate_eval(evaluation, world_size)
    _require(evaluation.model in (None, *SCORED_MODELS), "eval.model",
             f"'{evaluation.model}' is not one of {', '.join(SCORED_MODELS)} "
             "(or null: ema when train.ema_decay is set)")
    _require(evaluation.model != "ema" or train.ema_decay is not None, "eval.model",
             "'ema' needs an EMA generator: set train.ema_decay (e.g. 0.999)")


def describe_processes(config: DictConfig) -> str:
    """Where a run's processes come from, for messages."""
    if cluster.under_torchrun():
        return "torchrun's WORLD_SIZE"
    if cluster.slurm_task():
        tasks = f"the {cluster.slurm_tasks()} tasks of SLURM job {cluster.slurm_job_id()} (SLURM_NTASKS)"
        return tasks + (f" x dist.nproc_per_node={config.dist.nproc_per_node}"
                        if (config.dist.nproc_per_node or 1) > 1 else "")
    return "dist.nproc_per_node"


def scored_model(config: DictConfig) -> str:
    """Which generator weights evaluations, image grids and the best checkpoint use."""
    if config.eval.model is not None:
        return config.eval.model
    return "ema" if config.train.ema_decay is not None else "generator"


def launch_world_size(config: DictConfig) -> int:
    """The number of processes this run will have: ``dist.nproc_per_node``, torchrun's WORLD_SIZE, or
    srun's tasks (times ``dist.nproc_per_node`` when each task spawns that many)."""
    return cluster.run_world_size(config.dist.nproc_per_node)


def validate_eval(evaluation: DictConfig, world_size: int) -> None:
    """The eval.* checks, also run by the evaluate CLI after its own overrides: each sample count
    must be enough for every requested metric, so a run never spends its training time only to
    crash at the first evaluation."""
    _require(evaluation.every_epochs >= 0, "eval.every_epochs", "must be >= 0 (0 disables evaluation)")
    _require(evaluation.batch_size > 0, "eval.batch_size", "must be positive")
    _require(evaluation.protocol in PROTOCOLS, "eval.protocol",
             f"'{evaluation.protocol}' is not one of {', '.join(PROTOCOLS)}")
    _require(evaluation.precision in PRECISIONS, "eval.precision",
             f"'{evaluation.precision}' is not one of {', '.join(PRECISIONS)} (fp32: full precision, the default; "
             "tf32: cuDNN's TF32 convolutions on a GPU, what pytorch-fid, torch-fidelity and clean-fid compute there)")
    network = str(evaluation.feature_network).partition(":")[0]
    _require(evaluation.precision == "fp32" or network == "inception", "eval.precision",
             f"'{evaluation.precision}' applies to the FID Inception only; eval.feature_network="
             f"{evaluation.feature_network} computes at its own precision: use eval.precision=fp32")
    _require(network in FEATURE_NETWORKS, "eval.feature_network",
             f"'{evaluation.feature_network}' is not one of {', '.join(FEATURE_NETWORKS)} "
             "(a file is given after a colon: classifier:/path/to/classifier.pt, "
             "dinov2:/path/to/dinov2_vitl14_pretrain.pth, clip:/path/to/ViT-L-14-336px.pt)")
    unknown = [name for name in evaluation.metrics if name not in METRIC_NAMES]
    _require(not unknown, "eval.metrics", f"{unknown} not among {list(METRIC_NAMES)}")
    for key in ("is_splits", "kid_subsets", "kid_subset_size", "nearest_k"):
        _require(evaluation[key] > 0, f"eval.{key}", "must be positive")
    _require(evaluation.fd_inf_points >= 2, "eval.fd_inf_points", "must be at least 2 (a line needs two points)")
    _require(0 < evaluation.fd_inf_min_fraction < 1, "eval.fd_inf_min_fraction",
             "must lie strictly between 0 and 1 (the smallest subset, as a fraction of eval.num_samples)")
    num_real = evaluation.num_real
    _require(num_real is None or num_real == "all" or (isinstance(num_real, int) and not isinstance(num_real, bool)),
             "eval.num_real", f"'{num_real}' must be null (= eval.num_samples), a number of images or 'all'")
    options = metric_options(evaluation)
    # (reason, count, whether the real set needs it too)
    needed = [("at least 2 samples", 2, True), (f"one per process ({world_size})", world_size, False)]
    needed += [(f"metric '{name}' needs {count}" + METRICS[name].why_min_samples(options), count,
                METRICS[name].needs_real is not None)
               for name, count in min_samples(evaluation.metrics, options).items()]
    for reason, count, for_real in needed:
        _require(evaluation.num_samples >= count, "eval.num_samples",
                 f"{evaluation.num_samples} is too few: {reason}; raise eval.num_samples or change the metric's option")
        if for_real and isinstance(num_real, int):
            _require(num_real >= count, "eval.num_real", f"{num_real} is too few: {reason}")


def metric_options(evaluation: DictConfig, device: Any = "cpu") -> MetricOptions:
    """The metrics' options from the eval.* config (feature space: the feature network's name)."""
    return MetricOptions(is_splits=evaluation.is_splits, kid_subsets=evaluation.kid_subsets,
                         kid_subset_size=evaluation.kid_subset_size, nearest_k=evaluation.nearest_k,
                         device=device, feature_space=feature_space(str(evaluation.feature_network)),
                         fd_inf_points=evaluation.fd_inf_points, fd_inf_min_fraction=evaluation.fd_inf_min_fraction)


def validate_recipe(train: DictConfig) -> None:
    """The loss, augmentation and EMA keys; the names come from the registries."""
    _require(train.loss in LOSSES, "train.loss", f"'{train.loss}' is not one of {', '.join(LOSSES)}")
    _require(train.augment in AUGMENTS, "train.augment", f"'{train.augment}' is not one of {', '.join(AUGMENTS)}")
    _require(0 < train.ada_target < 1, "train.ada_target",
             f"{train.ada_target} must be in (0, 1): the wanted mean sign of D's outputs on reals (0.6 in the paper)")
    _require(0 <= train.ada_p <= 1, "train.ada_p",
             f"{train.ada_p} must be in [0, 1]: the probability with which ADA applies each transform at the start")
    for key in ("ada_speed_images", "ada_interval"):
        _require(train[key] > 0, f"train.{key}", "must be positive")
    _require(train.ema_decay is None or 0 < train.ema_decay < 1, "train.ema_decay",
             f"{train.ema_decay} must be in (0, 1), e.g. 0.999, or null to train without an EMA generator")
    _require(train.ema_start >= 0, "train.ema_start", "must be >= 0")
