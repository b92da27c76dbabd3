"""Score a saved generator: ``python -m gan_ignite.evaluate --checkpoint CKPT [--num-samples N]``.

The config is read from the checkpoint's run directory (``RUN_DIR/config.yaml``); dotted overrides
may change the evaluation settings (e.g. ``eval.inception_weights=/path/to/weights.pth``). The
metrics are printed and appended as one JSON line to ``RUN_DIR/evaluations.jsonl`` (a file of its
own, so that a run that is still training keeps sole ownership of ``history.jsonl``).

Also home of :func:`setup_evaluation`, which the trainer uses too.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import ignite.distributed as idist
import torch
from ignite.handlers import ProgressBar
from omegaconf import DictConfig

from gan_ignite import data as data_module
from gan_ignite.config import load_config
from gan_ignite.engines import create_evaluator, eval_batch_sizes
from gan_ignite.errors import RunDirError, UserError
from gan_ignite.handlers import scalar_metrics
from gan_ignite.metrics.factory import create_metrics
from gan_ignite.metrics.inception import InceptionWeightsError, load_fid_inception, weights_tag
from gan_ignite.metrics.real_stats import RealStatisticsError, cached_real_statistics, compute_real_statistics
from gan_ignite.models import Generator

logger = logging.getLogger("gan_ignite")
INPUT_ERRORS = (UserError, InceptionWeightsError, RealStatisticsError)
DEFAULT_STATS_CACHE = Path.home() / ".cache" / "gan_ignite" / "stats"


def setup_evaluation(config: DictConfig, dataset, generator: torch.nn.Module, device: torch.device,
                     num_samples: Optional[int] = None):
    """Inception network, real-set statistics (computed once per key, cached on disk), metrics and the
    evaluator engine. Returns ``(evaluator, batch_sizes, record_fields)``."""
    evaluation = config.eval
    num_samples = num_samples or evaluation.num_samples
    extractor = load_fid_inception(evaluation.inception_weights, device)
    real_count = min(num_samples, len(dataset))
    weights = weights_tag(evaluation.inception_weights)
    key_parts = {"dataset": config.data.name, "root": str(Path(config.data.root).resolve()),
                 "subset": f"first {real_count}", "image_size": config.data.image_size,
                 "channels": config.data.channels, "resize": evaluation.resize, "weights": weights,
                 "num_samples": real_count}
    loader = data_module.eval_loader(dataset, real_count, evaluation.batch_size, config.data.num_workers)

    def compute():
        return compute_real_statistics((images for images, _ in loader), extractor, evaluation.resize, device)

    cache_dir = Path(evaluation.stats_cache_dir) if evaluation.stats_cache_dir else DEFAULT_STATS_CACHE
    real_stats = cached_real_statistics(cache_dir, key_parts, compute)
    metrics = create_metrics(list(evaluation.metrics), real_stats, is_splits=evaluation.is_splits,
                             kid_subsets=evaluation.kid_subsets, kid_subset_size=evaluation.kid_subset_size,
                             nearest_k=evaluation.nearest_k, device=device)
    rank, world_size = idist.get_rank(), idist.get_world_size()
    evaluator = create_evaluator(generator, extractor, metrics, config.model.latent_dim, evaluation.resize, device,
                                 noise_seed=config.seed + 1_000_003 * (rank + 1))
    if rank == 0:
        ProgressBar(persist=False, desc="Evaluation").attach(evaluator)
    batch_sizes = eval_batch_sizes(num_samples, evaluation.batch_size, rank, world_size)
    record_fields = {"num_samples": num_samples, "num_real": real_count, "resize": evaluation.resize,
                     "inception_weights": weights}
    return evaluator, batch_sizes, record_fields


def warn_if_random(record_fields: dict) -> None:
    if record_fields["inception_weights"] == "random":
        logger.warning("eval.inception_weights=random: a random-init Inception network is scoring. Its FID / IS "
                       "are meaningless (for tests only); the records are marked inception_weights=random.")


def run_directory(checkpoint: Path) -> Path:
    for candidate in (checkpoint.parent.parent, checkpoint.parent):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise RunDirError(f"No config.yaml found next to checkpoint '{checkpoint}' (looked in its folder and the one "
                      f"above). Pass a checkpoint inside a gan_ignite run directory.")


def load_generator(config: DictConfig, checkpoint_path: Path, device: torch.device) -> tuple[Generator, dict]:
    """The checkpoint's generator and its trainer state (iteration, epoch_length, ...)."""
    generator = Generator(config.model.latent_dim, config.data.channels, config.data.image_size,
                          config.model.g_features)
    try:
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        generator.load_state_dict(state["generator"])
    except Exception as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RunDirError(f"Cannot load the generator from '{checkpoint_path}': {first_line}. Pass a checkpoint "
                          f"written by gan_ignite.train with the run's config.yaml beside it.") from None
    return generator.to(device), state.get("trainer", {})


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m gan_ignite.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path, help="checkpoint_<iteration>.pt of a run")
    parser.add_argument("--num-samples", type=int, default=10_000,
                        help="generated images to score (and real images, capped by the dataset); default 10,000, "
                             "use 50,000 for numbers comparable with papers")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for input errors")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. eval.metrics=[fid,is,kid,prdc]")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s", force=True)
    try:
        if not args.checkpoint.is_file():
            raise RunDirError(f"Checkpoint '{args.checkpoint}' does not exist; pass a file from a run's checkpoints/.")
        if args.num_samples < 2:
            raise UserError(f"--num-samples must be at least 2, got {args.num_samples}.")
        run_dir = run_directory(args.checkpoint)
        config = load_config(run_dir / "config.yaml", args.overrides)
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        generator, trainer_state = load_generator(config, args.checkpoint, device)
        dataset = data_module.load_dataset(config.data)
        evaluator, batch_sizes, record_fields = setup_evaluation(config, dataset, generator, device,
                                                                 args.num_samples)
        warn_if_random(record_fields)
        started = time.perf_counter()
        evaluator.run(batch_sizes, max_epochs=1)
        values = scalar_metrics(evaluator.state.metrics)
    except INPUT_ERRORS as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    iteration, epoch_length = trainer_state.get("iteration"), trainer_state.get("epoch_length")
    epoch = iteration // epoch_length if iteration is not None and epoch_length else None
    record = {"checkpoint": str(args.checkpoint), "epoch": epoch, "iteration": iteration, **values,
              **record_fields, "seconds": round(time.perf_counter() - started, 2)}
    for name, value in values.items():
        print(f"{name}: {value:.6g}")
    with open(run_dir / "evaluations.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
