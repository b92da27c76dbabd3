"""The configuration schema, loading (YAML + dotted overrides) and its one validation pass.

The schema is a tree of dataclasses turned into an OmegaConf structured config: unknown keys,
wrong types and names outside a fixed list (the Enum fields) are rejected by OmegaConf itself;
:func:`load_config` turns those rejections and the value checks of :func:`validate` into
:class:`~gan_ignite.errors.ConfigError` paragraphs that name the key. Loading is pure: what the
launch environment decides (the world size, SLURM's placement) is checked when launching
(:mod:`gan_ignite.launch`). No torch here, so ``--help`` answers at once.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from gan_ignite.errors import ConfigError
from gan_ignite.metrics.options import (DEFAULT_PROTOCOL, FEATURE_NETWORKS, MAX_BATCH_SIZE, MAX_WORKERS, MetricName,
                                        MetricOptions, Precision, ProtocolName, names, option_problems)

DataName = names("DataName", ("imagefolder", "celeba", "cifar10", "mnist", "fashion_mnist"), __name__)
Loss = names("Loss", ("bce", "non_saturating", "hinge"), __name__)  # the names of gan_ignite.losses.LOSSES
Augment = names("Augment", ("none", "diffaugment", "ada"), __name__)  # the names of gan_ignite.augment.AUGMENTS
Arch = names("Arch", ("dcgan", "resnet"), __name__)  # the names of gan_ignite.networks.ARCHITECTURES
ScoredModel = names("ScoredModel", ("generator", "ema"), __name__)
Backend = names("Backend", ("gloo", "nccl", "xla-tpu", "horovod"), __name__)
RequeueMode = names("RequeueMode", ("exit_code", "scontrol"), __name__)
RequeueSignal = names("RequeueSignal", ("SIGUSR1", "SIGTERM"), __name__)
IMAGE_SIZES = (32, 64, 128)
MAX_SEED = 2**32 - 1  # numpy's limit; ignite's manual_seed seeds numpy, random and torch
RESERVED_EXIT_CODES = (0, 1, 2, 130)  # success, failure, input error, Ctrl-C
# a finished run's config read to score, sample or inspect it here: one process, whatever the run used
ONE_PROCESS = ("dist.nproc_per_node=null", "dist.backend=null")
CONFIG_DOCS = "docs/configuration.md and its generated reference, docs/reference/configuration.md"
CLASS_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")  # package.module:Class
# key: (its sign, the most a real machine can run, what it counts); a larger value is refused before
# any work, a null one (where the schema allows it) passes
POSITIVE, NON_NEGATIVE = "positive", ">= 0"
LR = "Adam's step size; GAN learning rates lie around 1e-5 to 1e-3 and anything above 1 diverges"
RANGES = {
    "data.num_workers": (NON_NEGATIVE, MAX_WORKERS, "loader worker processes; more than a machine's cores only add processes"),
    "data.max_train_size": (POSITIVE, 10**12, "images"), "model.latent_dim": (POSITIVE, 65_536, "the latent size"),
    "model.g_features": (POSITIVE, 65_536, "the generator's width"),
    "model.d_features": (POSITIVE, 65_536, "the discriminator's width"),
    "train.batch_size": (POSITIVE, MAX_BATCH_SIZE, "images per step"), "train.max_epochs": (POSITIVE, 1_000_000, "epochs"),
    "train.epoch_length": (POSITIVE, 10**9, "iterations per epoch"), "train.lr": (POSITIVE, 1.0, LR),
    "train.lr_d": (POSITIVE, 1.0, LR), "train.image_every": (POSITIVE, 10**12, "iterations"),
    "train.checkpoint_every": (POSITIVE, 1_000_000, "epochs"),
    "train.checkpoint_every_iters": (POSITIVE, 10**12, "iterations"), "train.n_saved": (POSITIVE, 10_000, "checkpoints"),
    "train.ada_speed_images": (POSITIVE, 10**15, "images"), "train.ada_interval": (POSITIVE, 10**12, "iterations"),
    "train.ema_start": (NON_NEGATIVE, 10**15, "iterations"), "eval.every_epochs": (NON_NEGATIVE, 1_000_000, "epochs"),
    "eval.num_samples": (POSITIVE, 10**15, "generated images"),
    "eval.batch_size": (POSITIVE, MAX_BATCH_SIZE, "images per forward pass"), "log.every": (POSITIVE, 10**12, "iterations"),
    "log.every_seconds": (POSITIVE, 31_536_000.0, "seconds (a year)"),
    "dist.nproc_per_node": (POSITIVE, 4096, "processes"),
}
MAX_CONFIG_BYTES, MAX_CONFIG_VALUES, MAX_CONFIG_DEPTH = 1_000_000, 100_000, 32  # a config is a few KB


@dataclass
class DataConfig:
    name: DataName = DataName["fashion_mnist"]  # the dataset; imagefolder = any folder of images, recursive
    root: str = "data"  # where the data is (a folder of images, or torchvision's download folder)
    image_size: int = 32  # training and generated image size
    channels: int = 1  # 1 (grayscale) or 3; images of other modes are converted
    num_workers: int = 2  # data loader workers
    # train on a seeded uniform random sample of this many images (never "the first N"); evaluations
    # still draw the reference set from the whole training set; null = every image
    max_train_size: Optional[int] = None
    subset_seed: int = 0  # which subset (data.max_train_size)
    download: bool = True  # whether torchvision may download a dataset it does not find (offline: copy it into data.root, set false)
    skip_bad_images: bool = True  # skip unreadable image files (counted in the log), or stop naming the file
    # decode + resize once into a uint8 memory-mapped array in eval.stats_cache_dir, train from it
    cache: bool = False


@dataclass
class ModelConfig:
    arch: Arch = Arch["dcgan"]  # the built-in generator and discriminator (docs/networks.md)
    latent_dim: int = 100  # the latent size: a generator maps (N, latent_dim) latents to images
    g_features: int = 64  # the built-in generator's width
    d_features: int = 64  # the built-in discriminator's width
    spectral_norm: bool = False  # dcgan: spectral normalisation of D's convolutions (replaces D's BatchNorm)
    # your own generator, "package.module:Class" (importable, never a file path); null = model.arch's
    generator: Optional[str] = None
    generator_kwargs: Dict[str, Any] = field(default_factory=dict)  # model.generator's constructor arguments
    discriminator: Optional[str] = None  # your own discriminator, as model.generator; null = model.arch's
    discriminator_kwargs: Dict[str, Any] = field(default_factory=dict)  # model.discriminator's constructor arguments


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
    loss: Loss = Loss["bce"]  # the GAN loss on D's logits; bce is the DCGAN paper's
    augment: Augment = Augment["none"]  # differentiable augmentation of every image D sees, real and generated
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
class EvalConfig(MetricOptions):  # the metrics' options (is_splits, kid_subsets, ...) come first
    every_epochs: int = 1  # evaluate every N epochs (0 = never)
    # what evaluations, grids and the best checkpoint use; null = ema when train.ema_decay is set
    model: Optional[ScoredModel] = None
    num_samples: int = 3000  # generated images scored per evaluation
    num_real: Any = None  # reference images: null = num_samples, an int, or "all" (the whole training set)
    real_subset_seed: int = 0  # seed of the reference set's random sample
    batch_size: int = 64  # evaluation batch
    # inception (standard FID / IS), classifier:PATH (a domain classifier), dinov2:PATH or clip:PATH
    feature_network: str = "inception"
    protocol: Optional[ProtocolName] = None  # FID preprocessing: the implementation whose FID to reproduce
    precision: Precision = Precision["fp32"]  # the FID Inception's: fp32, or tf32 (cuDNN's TF32 convolutions, GPU only)
    # a published mu/sigma .npz instead of the reference images; needs eval.protocol set explicitly
    reference_stats: Optional[str] = None
    # empty = download pytorch-fid's file once; a path = pytorch-fid's .pth or NVIDIA's TorchScript .pt;
    # random = a random-init network, for tests and offline trial runs (FID / IS meaningless, records marked)
    inception_weights: Optional[str] = None
    metrics: List[MetricName] = field(default_factory=lambda: [MetricName["fid"], MetricName["is"]])  # the metrics each evaluation computes
    # where real-set statistics (and data.cache images) are cached; null = ~/.cache/gan_ignite/stats
    stats_cache_dir: Optional[str] = None


@dataclass
class LogConfig:
    every: int = 50  # iterations between history flushes, NaN checks, progress updates and log lines
    every_seconds: float = 30.0  # at most this long between log lines when the output is not a terminal
    tensorboard: bool = False  # also write TensorBoard events under RUN_DIR/tb/ (needs the tb extra)


@dataclass
class DistConfig:
    backend: Optional[Backend] = None  # null = one process (or what torchrun set up)
    nproc_per_node: Optional[int] = None  # processes to spawn; null = one, or whatever torchrun set up
    # a stop by one of requeue_on's signals (SLURM's --signal=USR1@90 before a time limit or a
    # preemption) checkpoints the current iteration and ends with requeue_exit_code (docs/clusters.md);
    # with scontrol, rank 0 also runs `scontrol requeue $SLURM_JOB_ID` once every rank has finished
    requeue: RequeueMode = RequeueMode["exit_code"]
    requeue_on: List[RequeueSignal] = field(default_factory=lambda: [RequeueSignal["SIGUSR1"]])  # the signals that ask for a requeue (SIGINT is Ctrl-C: it never requeues)
    requeue_exit_code: int = 75  # the exit code of such a stop (EX_TEMPFAIL, "try again later"; 0, 1, 2 and 130 are refused)


@dataclass
class RunConfig:
    """Written by the trainer into config.yaml (values given are replaced): the run's id and, for a
    run forked from another run's checkpoint, the parent's id and that checkpoint."""

    id: Optional[str] = None  # the run's id
    parent_id: Optional[str] = None  # a fork's parent run
    parent_checkpoint: Optional[str] = None  # the checkpoint a fork started from
    data_fingerprint: Optional[str] = None  # the training data's files (paths and sizes): a resume must find them


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


# ----------------------------------------------------------------------------- loading
def _read_yaml(path: Path) -> DictConfig:
    """The file as a config, refusing what would hang or exhaust the parser: a FIFO or a huge file,
    text that is not UTF-8, aliases that expand without bound ("billion laughs"), deep nesting."""
    where, fix = f"Config file {path}", "Fix the file (a config is a small UTF-8 YAML mapping) and run again."
    if not path.is_file():
        raise ConfigError(f"{where} does not exist or is not a regular file; pass an existing YAML file to --config "
                          f"(the shipped ones are in configs/).")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{where} holds {path.stat().st_size:,} bytes, more than a config's {MAX_CONFIG_BYTES:,}. "
                          f"{fix}")
    try:
        content = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ConfigError(f"{where} is not UTF-8 text (byte {error.object[error.start]:#04x} at position "
                          f"{error.start}); save it as UTF-8. {fix}") from None
    except RecursionError:
        raise ConfigError(f"{where} nests its values too deeply to be read. {fix}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{where} is not valid YAML: {error}. Fix the file and run again.") from None
    if content is None:
        content = {}
    if not isinstance(content, dict):
        raise ConfigError(f"{where} must hold a mapping of sections (seed, output_dir, data, model, "
                          f"train, eval, log, dist), not a {type(content).__name__}.")
    problem = _size_problem(content)
    if problem:
        raise ConfigError(f"{where} {problem}. {fix}")
    return OmegaConf.create(content)


def _size_problem(content: Any) -> str:
    """'' or why ``content`` (shared values counted each time they appear) is too big or too deep."""
    count, stack = 0, [(content, 1)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_CONFIG_VALUES:
            return (f"expands to more than {MAX_CONFIG_VALUES:,} values (YAML aliases repeat what they refer to: an "
                    f"alias bomb?)")
        if depth > MAX_CONFIG_DEPTH:
            return f"nests values more than {MAX_CONFIG_DEPTH} levels deep"
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return ""


def _explain(error: OmegaConfBaseException, source: str) -> ConfigError:
    key = getattr(error, "full_key", None) or "?"
    if isinstance(error, ConfigKeyError):
        return ConfigError(f"Unknown config key '{key}' in {source}. Check its spelling; the valid keys are the "
                           f"fields of gan_ignite/config.py (see {CONFIG_DOCS}).")
    message = str(error).splitlines()[0]
    if isinstance(error, ValidationError) and "expected one of [" in message:  # an Enum field
        allowed = message.split("expected one of [", 1)[1].rsplit("]", 1)[0]
        if key.endswith("]"):  # an item of a list of names
            listed = [name.strip() for name in allowed.split(",")]
            return ConfigError(f"Invalid value for config key '{key.rsplit('[', 1)[0]}' in {source}: "
                               f"['{error.value}'] not among {listed}. See {CONFIG_DOCS}.")
        return ConfigError(f"Invalid value for config key '{key}' in {source}: '{error.value}' is not one of "
                           f"{allowed}. See {CONFIG_DOCS}.")
    if isinstance(error, ValidationError):
        return ConfigError(f"Wrong type for config key '{key}' in {source}: {message}. See {CONFIG_DOCS}.")
    return ConfigError(f"Invalid config in {source} at key '{key}': {message}.")


def load_config(path: Optional[str | os.PathLike] = None, overrides: Sequence[str] = ()) -> DictConfig:
    """Schema defaults <- YAML file <- dotted ``key.sub=value`` overrides, then :func:`validate`.
    Returns a read-only config whose ``eval.protocol`` is filled in."""
    config = OmegaConf.structured(Config)
    sources = []
    if path is not None:
        sources.append((_read_yaml(Path(path)), f"config file {path}"))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"Override '{item}' is not of the form key.sub=value (e.g. train.max_epochs=5).")
        sources.append((item, f"override '{item}'"))
    for source, where in sources:
        try:
            config = OmegaConf.merge(config, OmegaConf.from_dotlist([source]) if isinstance(source, str) else source)
        except OmegaConfBaseException as error:
            raise _explain(error, where) from None
    try:  # interpolations (${...}) are resolved once, here: a missing key or variable, a loop, bad grammar
        OmegaConf.resolve(config)
    except OmegaConfBaseException as error:
        raise ConfigError(f"Config key '{getattr(error, 'full_key', None) or '?'}' holds an interpolation that cannot "
                          f"be resolved ({str(error).splitlines()[0]}). Fix or remove the ${{...}} there.") from None
    validate(config)
    if config.eval.protocol is None:
        config.eval.protocol = ProtocolName[DEFAULT_PROTOCOL]
    OmegaConf.set_readonly(config, True)
    return config


# ----------------------------------------------------------------------------- validation
def out_of_range(key: str, value: float) -> Optional[str]:
    """Why ``value`` is no value for ``key`` of :data:`RANGES` (also the bound of a command's option
    of the same meaning), or None."""
    sign, limit, what = RANGES[key]
    if not (value > 0 if sign == POSITIVE else value >= 0):
        return f"{value} must be {sign}"
    return f"{value} is more than {limit:,}, the most a run can use ({what})" if value > limit else None


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"Invalid value for config key '{key}': {message}.")


def validate(config: DictConfig) -> None:
    """The value checks a type schema cannot express; each names the key and the fix."""
    for key in RANGES:
        value = OmegaConf.select(config, key)
        problem = None if value is None else out_of_range(key, value)
        _require(problem is None, key, str(problem))
    data, train, dist = config.data, config.train, config.dist
    for role in ("generator", "discriminator"):
        path = config.model[role]
        _require(path is None or CLASS_PATH.match(path) is not None, f"model.{role}",
                 f"'{path}' is not an importable class path: write package.module:Class (never a file path)")
    own = config.model.generator is not None and config.model.discriminator is not None
    _require(data.image_size in IMAGE_SIZES or (own and 8 <= data.image_size <= 1024), "data.image_size",
             f"{data.image_size} is not supported; the built-in models are built for {IMAGE_SIZES} (your own "
             f"generator and discriminator may take 8 to 1024)")
    _require(data.channels in (1, 3), "data.channels", f"{data.channels} must be 1 (grayscale) or 3 (RGB)")
    for key in ("seed", "data.subset_seed", "eval.real_subset_seed"):
        value = OmegaConf.select(config, key)
        _require(0 <= value <= MAX_SEED, key, f"{value} is out of range: seeds lie in [0, {MAX_SEED}]")
    _require(str(config.output_dir).strip() != "", "output_dir", "is empty; name the run directory, e.g. runs/my_run")
    _require(0 <= train.beta1 < 1 and 0 <= train.beta2 < 1, "train.beta1/beta2", "Adam betas must be in [0, 1)")
    _require(0 < train.ada_target < 1, "train.ada_target",
             f"{train.ada_target} must be in (0, 1): the wanted mean sign of D's outputs on reals (0.6 in the paper)")
    _require(0 <= train.ada_p <= 1, "train.ada_p",
             f"{train.ada_p} must be in [0, 1]: the probability with which ADA applies each transform at the start")
    _require(train.ema_decay is None or 0 < train.ema_decay < 1, "train.ema_decay",
             f"{train.ema_decay} must be in (0, 1), e.g. 0.999, or null to train without an EMA generator")
    _require(0 < dist.requeue_exit_code < 256 and dist.requeue_exit_code not in RESERVED_EXIT_CODES,
             "dist.requeue_exit_code", f"{dist.requeue_exit_code} must lie in 1..255 and differ from "
             f"{', '.join(map(str, RESERVED_EXIT_CODES[1:]))} (failure, input error, Ctrl-C)")
    validate_eval(config.eval)
    _require(config.eval.model != "ema" or train.ema_decay is not None, "eval.model",
             "'ema' needs an EMA generator: set train.ema_decay (e.g. 0.999)")


def validate_eval(evaluation: DictConfig) -> None:
    """The eval.* checks: each sample count must be enough for every requested metric, so a run never
    spends its training time only to crash at the first evaluation."""
    _require(evaluation.protocol is not None or not evaluation.reference_stats, "eval.protocol",
             "eval.reference_stats needs the protocol its statistics were computed with, given explicitly "
             "(e.g. torch-fidelity for TTUR's files, pytorch-fid for pytorch-fid's, clean-fid for clean-fid's "
             "'clean' files), so that generated images are preprocessed the same way")
    network = str(evaluation.feature_network).partition(":")[0]
    _require(network in FEATURE_NETWORKS, "eval.feature_network",
             f"'{evaluation.feature_network}' is not one of {', '.join(FEATURE_NETWORKS)} "
             "(a file is given after a colon: classifier:/path/to/classifier.pt, "
             "dinov2:/path/to/dinov2_vitl14_pretrain.pth, clip:/path/to/ViT-L-14-336px.pt)")
    _require(evaluation.precision == "fp32" or network == "inception", "eval.precision",
             f"'{evaluation.precision}' applies to the FID Inception only; eval.feature_network="
             f"{evaluation.feature_network} computes at its own precision: use eval.precision=fp32")
    for key, why in option_problems(evaluation):
        _require(False, f"eval.{key}", why)
    num_real = evaluation.num_real
    _require(num_real is None or num_real == "all" or (isinstance(num_real, int) and not isinstance(num_real, bool)),
             "eval.num_real", f"'{num_real}' must be null (= eval.num_samples), a number of images or 'all'")
    for reason, count, for_real in sample_needs(evaluation):
        _require(evaluation.num_samples >= count, "eval.num_samples",
                 f"{evaluation.num_samples} is too few: {reason}; raise eval.num_samples or change the metric's option")
        if for_real and isinstance(num_real, int):
            _require(num_real >= count, "eval.num_real", f"{num_real} is too few: {reason}")


def sample_needs(evaluation: DictConfig) -> list[tuple[str, int, bool]]:
    """(reason, fewest samples, whether the reference set needs as many) of the requested metrics."""
    from gan_ignite.metrics.scores.factory import METRICS  # here, not above: the registry brings torch

    options = metric_options(evaluation)
    needs = [("at least 2 samples", 2, True)]
    for name in evaluation.metrics:
        spec = METRICS[name]
        needs.append((f"metric '{name}' needs {spec.min_samples(options)}{spec.why_min_samples(options)}",
                      spec.min_samples(options), spec.needs_real is not None))
    return needs


def metric_options(evaluation: DictConfig) -> MetricOptions:
    """The eval.* section's metric options as one :class:`MetricOptions`."""
    return MetricOptions(**{key: evaluation[key] for key in MetricOptions.__dataclass_fields__})


def scored_model(config: DictConfig) -> str:
    """Which generator weights evaluations, image grids and the best checkpoint use."""
    if config.eval.model is not None:
        return str(config.eval.model)
    return "ema" if config.train.ema_decay is not None else "generator"
