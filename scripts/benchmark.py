"""Speed against its limits, every ratio measured side by side in one run (machines are noisy).

    python scripts/benchmark.py [--device cpu|cuda] [--iters N] [--eval-samples N] [--json OUT]
                                [--amp] [--channels-last] [--compile] [--data-cache] [--metric-parts]
                                [--full-eval N] [--profile DIR] [--set KEY=VALUE ...] [--versus KEY=VALUE ...]

(a) Training img/s of our trainer (the real ``build_training`` + ``attach_handlers`` with every
    handler a run attaches: history log, NaN guard, progress output, image grids, checkpoint
    schedule, graceful stop) against a plain PyTorch loop of the identical step on the same data,
    models and optimizers; with ``--data-cache`` also our trainer reading the image folder through
    ``data.cache`` against decoding it every epoch.
(b) One evaluation of N generated images (the real ``setup_evaluation``: generation, uint8,
    PIL resize, FID Inception, FID + IS + KID + PRDC) against the FID Inception forward alone on
    the same N prepared images, and against the pipeline of PyTorch-Ignite's GAN evaluation
    tutorial: ignite ``FID()`` + ``InceptionScore()`` with their own Inception passes (real and
    fake for FID, fake again for IS), a per-image PIL resize, the real images redone every epoch.
    Inception networks are random-init (ignite's default torchvision Inception would download
    ImageNet weights): the compute is the same.
(c) Peak RSS and, on CUDA, peak GPU memory.
(d) ``--full-eval N``: one evaluation of N generated images (FID and IS, as papers report them:
    generation, uint8, resize, Inception, statistics) against reference statistics already in the
    cache, as every evaluation after a run's first one is; its time, img/s and peak GPU memory.
``--profile DIR`` writes a ``torch.profiler`` table of one more training window and one more
evaluation (where the time goes when a ratio misses its target).
(e) ``--peers``: the FID of the same two image folders (``--peer-images`` each) by our metrics CLI
    in every protocol and by pytorch-fid, torch-fidelity and clean-fid, each in its own protocol
    (``scripts/fid_peers.py``), all with the same random-init weights file; whole processes timed
    (start-up, file reading, resizing, Inception, statistics). Per protocol the fastest peer's time
    over ours (``peer_speedup``), the same-protocol peer's (``peer_speedup_same_protocol``), and
    ``peer_speedup_min``, the smallest of the first; the FIDs of ours and each peer are reported too.
``--metric-parts`` adds the metric-level comparisons: FID accumulation against
``ignite.metrics.FID.update`` and the trace term against ``scipy.linalg.sqrtm``.

Each pair alternates (ours, reference, ours, reference, ...) and keeps each side's best, so a
burst of load on the machine does not decide a ratio. Results are printed and written as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision
from ignite.engine import Engine, Events
from PIL import Image
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gan_ignite import data as data_module  # noqa: E402
from gan_ignite.config import load_config  # noqa: E402
from gan_ignite.engines import LOSS_KEYS, make_training_step  # noqa: E402
from gan_ignite.evaluation import setup_evaluation  # noqa: E402
from gan_ignite.latents import evaluation_latents  # noqa: E402
from gan_ignite.metrics.scores.fid import FID, frechet_distance  # noqa: E402
from gan_ignite.metrics.scores.real_stats import RealStatistics  # noqa: E402
from gan_ignite.metrics.scores.fid import covariance_sqrt_factor, mean_and_covariance, trace_sqrt_product  # noqa: E402
from gan_ignite.metrics.networks.features import prepare_images  # noqa: E402
from gan_ignite.metrics.networks.inception import load_fid_inception  # noqa: E402
from gan_ignite.metrics.networks.preprocess import PROTOCOLS  # noqa: E402
from gan_ignite.run_dir import RunDir  # noqa: E402
from gan_ignite.training import attach_handlers, build_training, discriminator_lr, setup_models  # noqa: E402


# ----------------------------------------------------------------------------- setup
def synthetic_folder(root: Path, count: int, size: int, seed: int = 0, height: int | None = None) -> Path:
    """``count`` JPEGs of coloured shapes (``size`` wide, ``height`` high, default square): decoding
    real files is part of what the data cache saves. Written by a process pool (20,000 take seconds
    on 16 cores); image ``i`` depends only on ``seed`` and ``i``."""
    root.mkdir(parents=True, exist_ok=True)
    chunks = [(root, start, min(start + 500, count), size, height or size, seed) for start in range(0, count, 500)]
    if len(chunks) > 1 and (os.cpu_count() or 1) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(len(chunks), os.cpu_count() or 1)) as pool:
            list(pool.map(_write_shapes, chunks))
    else:
        for chunk in chunks:
            _write_shapes(chunk)
    return root


def _write_shapes(chunk: tuple) -> None:
    root, start, stop, width, height, seed = chunk
    yy, xx = np.mgrid[0:height, 0:width]
    for index in range(start, stop):
        rng = np.random.default_rng([seed, index])
        image = (xx / width)[..., None] * rng.uniform(0, 255, 3)
        disc = (xx - rng.uniform(0, width)) ** 2 + (yy - rng.uniform(0, height)) ** 2 < \
            (rng.uniform(0.1, 0.3) * min(width, height)) ** 2
        image[disc] = rng.uniform(0, 255, 3)
        Image.fromarray(image.astype(np.uint8)).save(root / f"img_{index:05d}.jpg", quality=95)


def benchmark_config(args: argparse.Namespace, work: Path, **extra):
    values = {
        "output_dir": work / "run", "data.name": "imagefolder", "data.root": args.images_dir,
        "data.image_size": args.image_size, "data.channels": 3, "data.num_workers": args.num_workers,
        "model.arch": args.arch, "model.latent_dim": 100, "model.g_features": args.width,
        "model.d_features": args.width,
        "train.batch_size": args.batch_size, "train.image_every": 500, "train.amp": args.amp,
        "train.channels_last": args.channels_last, "train.compile": args.compile,
        "eval.num_samples": args.eval_samples, "eval.batch_size": args.eval_batch_size,
        "eval.inception_weights": "random", "eval.metrics": "[fid,is,kid,prdc]", "eval.is_splits": 2,
        "eval.kid_subset_size": max(2, args.eval_samples // 2), "eval.nearest_k": 3,
        "eval.stats_cache_dir": work / "cache", "eval.precision": args.precision, **extra}
    return load_config(None, [f"{key}={value}" for key, value in values.items()] + list(args.set))


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def profiled(directory: Path | None, name: str, device: torch.device):
    """Profile the block with ``torch.profiler`` and write its operator table to ``directory/name.txt``
    (sorted by device time on CUDA, CPU time otherwise); a no-op without ``directory``."""
    if directory is None:
        yield
        return
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        yield
        synchronize(device)
    directory.mkdir(parents=True, exist_ok=True)
    sort_by = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    (directory / f"{name}.txt").write_text(profiler.key_averages().table(sort_by=sort_by, row_limit=30) + "\n")


# ----------------------------------------------------------------------------- (a) training
def our_trainer_seconds(config, dataset, device: torch.device, warmup: int, iters: int,
                        run_dir: Path, profile_dir: Path | None = None,
                        phases: dict[str, float] | None = None) -> tuple[float, float]:
    """Seconds for ``iters`` iterations of the full trainer after ``warmup`` ones, and the seconds
    of one checkpoint write (a run writes one per epoch: hundreds to thousands of iterations, so
    the timed window is kept inside one epoch and the checkpoint is timed on its own). ``phases``
    receives the wall time of each phase: setup (models, trainer, handlers), loader_start (to the
    first batch: worker start-up), warmup (cuDNN autotuning, torch.compile), timed, checkpoint."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    (run_dir / "images").mkdir(parents=True, exist_ok=True)
    training = build_training(config, dataset, device, run_dir)
    save_checkpoint, _ = attach_handlers(training, RunDir(run_dir))
    marks: dict[str, float] = {"setup": time.perf_counter()}

    @training.trainer.on(Events.GET_BATCH_COMPLETED)
    def _first_batch(_: Engine) -> None:
        marks.setdefault("first_batch", time.perf_counter())

    @training.trainer.on(Events.ITERATION_COMPLETED)
    def _clock(engine: Engine) -> None:
        if engine.state.iteration in (warmup, warmup + iters):
            synchronize(device)
            marks["start" if engine.state.iteration == warmup else "end"] = time.perf_counter()
        if engine.state.iteration == warmup + iters:
            marks["checkpoint"] = timed(lambda: save_checkpoint(engine))
            engine.terminate()

    marks["run"] = time.perf_counter()
    with profiled(profile_dir, "profile_training", device):
        training.trainer.run(training.loader, max_epochs=1, epoch_length=warmup + iters + 1)
    data_module.shutdown_workers(training.loader)
    if phases is not None:
        phases.update(setup=marks["setup"] - started, loader_start=marks["first_batch"] - marks["run"],
                      warmup=marks["start"] - marks["first_batch"], timed=marks["end"] - marks["start"],
                      checkpoint=marks["checkpoint"])
    return marks["end"] - marks["start"], marks["checkpoint"]


def host_overhead_us(config, dataset, device: torch.device, run_dir: Path, warmup: int = 20,
                     iters: int = 300) -> float:
    """Microseconds per iteration of the trainer around a no-op step: the real ``build_training`` and
    ``attach_handlers`` (every handler a run attaches: history log and NaN guard, progress output, image
    grids, checkpoint schedule, graceful stop, EMA / ADA when set), the engine's own event loop, fed
    one real batch again and again (no loading). What the trainer adds to each step on the host: a
    GPU iteration of ~15 ms (DCGAN-64, batch 128, H200) hides it if it stays far below that."""
    (run_dir / "images").mkdir(parents=True, exist_ok=True)
    training = build_training(config, dataset, device, run_dir)
    attach_handlers(training, RunDir(run_dir))
    batch = next(iter(training.loader))
    data_module.shutdown_workers(training.loader)
    output = {key: torch.zeros((), device=device) for key in LOSS_KEYS}
    if training.recipe.ada is not None:
        output.update(real_sign=torch.zeros((), device=device), ada_p=training.recipe.ada.augment.p)
    training.trainer._process_function = lambda engine, _batch: dict(output)
    marks: dict[str, float] = {}

    @training.trainer.on(Events.ITERATION_COMPLETED)
    def _clock(engine: Engine) -> None:
        if engine.state.iteration in (warmup, warmup + iters):
            synchronize(device)
            marks["start" if engine.state.iteration == warmup else "end"] = time.perf_counter()
        if engine.state.iteration == warmup + iters:
            engine.terminate()

    training.trainer.run([batch] * (warmup + iters + 1), max_epochs=1)
    return (marks["end"] - marks["start"]) / iters * 1e6


def plain_loop_seconds(config, dataset, device: torch.device, warmup: int, iters: int,
                       profile_dir: Path | None = None) -> float:
    """The identical step in a bare loop: same models, optimizers, loader, no engine, no handlers."""
    torch.manual_seed(config.seed)
    generator, discriminator = setup_models(config, device)
    betas = (config.train.beta1, config.train.beta2)
    optimizer_g = torch.optim.Adam(generator.parameters(), lr=config.train.lr, betas=betas)
    optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=discriminator_lr(config.train), betas=betas)
    model_g, model_d = (torch.compile(generator), torch.compile(discriminator)) if config.train.compile else \
        (generator, discriminator)
    step = make_training_step(model_g, model_d, optimizer_g, optimizer_d, config.model.latent_dim, device,
                              amp=config.train.amp, channels_last=config.train.channels_last)
    loader = data_module.train_loader(dataset, config.data, config.train.batch_size, data_module.cache_dir(config))
    done, start = 0, 0.0
    with profiled(profile_dir, "profile_bare_loop", device):
        while done < warmup + iters:
            for batch in loader:
                step(None, batch)
                done += 1
                if done == warmup:
                    synchronize(device)
                    start = time.perf_counter()
                if done == warmup + iters:
                    break
        synchronize(device)
        elapsed = time.perf_counter() - start
    data_module.shutdown_workers(loader)
    return elapsed


SWITCH_SETS = {"plain": {}, "amp": {"train.amp": True}, "channels_last": {"train.channels_last": True},
               "compile": {"train.compile": True},
               "all": {"train.amp": True, "train.channels_last": True, "train.compile": True}}


def bench_training(args: argparse.Namespace, work: Path, device: torch.device) -> dict:
    """(a) for the switches given (--amp, --channels-last, --compile); with ``--switch-sets`` for each
    named set in turn, in this one process (imports, data and CUDA context paid once), under
    ``training``."""
    if not args.switch_sets:
        return bench_one_switch_set(args, work, device, {})
    return {"training": {name: bench_one_switch_set(args, work / name, device, SWITCH_SETS[name])
                         for name in args.switch_sets}}


def bench_one_switch_set(args: argparse.Namespace, work: Path, device: torch.device, switches: dict) -> dict:
    started = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    config = benchmark_config(args, work, **switches)
    dataset = data_module.load_dataset(config.data)
    warmup, iters, images = args.warmup, args.iters, args.iters * args.batch_size
    versus_config = benchmark_config(args, work, **{**switches, **dict(item.split("=", 1) for item in args.versus)})
    ours, plain, checkpoints, versus, phases = [], [], [], [], {}
    for repeat in range(args.repeats):
        seconds, checkpoint = our_trainer_seconds(config, dataset, device, warmup, iters, work / f"train_{repeat}",
                                                  phases=phases if repeat == 0 else None)
        ours.append(seconds)
        checkpoints.append(checkpoint)
        plain.append(plain_loop_seconds(config, dataset, device, warmup, iters))
        if args.versus:
            versus.append(our_trainer_seconds(versus_config, dataset, device, warmup, iters,
                                              work / f"versus_{repeat}")[0])
    overhead = [host_overhead_us(config, dataset, device, work / f"overhead_{repeat}") for repeat in range(args.repeats)]
    if args.profile:  # one more window of each side, profiled, after the timed ones
        our_trainer_seconds(config, dataset, device, warmup, iters, work / "train_profiled", args.profile)
        plain_loop_seconds(config, dataset, device, warmup, iters, args.profile)
    result = {"switches": sorted(switches), "train_img_per_s": images / min(ours), "plain_img_per_s": images / min(plain),
              "checkpoint_seconds": min(checkpoints), "host_overhead_us_per_iteration": min(overhead),
              "phase_seconds": {name: round(value, 3) for name, value in phases.items()}}
    result["train_ratio_vs_plain"] = result["train_img_per_s"] / result["plain_img_per_s"]
    if versus:  # time per iteration of another recipe against this one, side by side
        result["versus_img_per_s"] = images / min(versus)
        result["versus_time_ratio"] = min(versus) / min(ours)
    if args.data_cache:
        cached_config = benchmark_config(args, work, **{**switches, "data.cache": True})
        cached = [our_trainer_seconds(cached_config, dataset, device, warmup, iters, work / f"cached_{repeat}")[0]
                  for repeat in range(args.repeats)]
        result["cached_train_img_per_s"] = images / min(cached)
        result["data_cache_speedup"] = result["cached_train_img_per_s"] / result["train_img_per_s"]
        # the loaders alone: how many images per second the data path can feed a faster device
        loaders = [data_module.train_loader(dataset, each.data, args.batch_size, data_module.cache_dir(each))
                   for each in (config, cached_config)]
        decoded, cached_rate = (loader_img_per_s(loader) for loader in loaders)
        for loader in loaders:
            data_module.shutdown_workers(loader)
        result.update(loader_img_per_s=decoded, cached_loader_img_per_s=cached_rate)
    result["wall_seconds"] = time.perf_counter() - started
    return result


def loader_img_per_s(loader, passes: int = 2) -> float:
    """Images per second of iterating ``loader`` (the best of ``passes`` passes after a warm one)."""
    best = 0.0
    for attempt in range(passes + 1):
        count, start = 0, time.perf_counter()
        for images, _ in loader:
            count += len(images)
        if attempt:
            best = max(best, count / (time.perf_counter() - start))
    return best


# ----------------------------------------------------------------------------- (b) evaluation
def random_torchvision_inception() -> None:
    """Make ignite's default InceptionModel build torchvision's Inception v3 without downloading."""
    original = torchvision.models.inception_v3

    def without_weights(*args, **kwargs):
        return original(weights=None, aux_logits=True, transform_input=True, init_weights=False)

    torchvision.models.inception_v3 = without_weights


def tutorial_resize(batch: torch.Tensor) -> torch.Tensor:
    """The tutorial's resize: ToPILImage -> PIL bilinear to 299 -> ToTensor, one image at a time."""
    return torch.stack([transforms.ToTensor()(transforms.ToPILImage()(image).resize((299, 299), Image.BILINEAR))
                        for image in batch])


def tutorial_evaluator(generator: torch.nn.Module, real_images: torch.Tensor, latents: list[torch.Tensor],
                       device: torch.device) -> Engine:
    """ignite FID() + InceptionScore() with their default extractors, as in the tutorial."""
    from ignite.metrics import FID as IgniteFID
    from ignite.metrics import InceptionScore as IgniteIS

    class TolerantIgniteFID(IgniteFID):
        """Random-init Inception gives near-uniform softmax outputs, whose covariance product can make
        ignite's sqrtm fail ("Imaginary component"); the work is still timed."""

        def compute(self) -> float:
            try:
                return super().compute()
            except ValueError:
                return float("nan")

    def step(engine: Engine, index: int):
        with torch.no_grad():
            fake = tutorial_resize(generator(latents[index].to(device)).cpu())
            start = index * len(latents[0])
            real = tutorial_resize(real_images[start:start + len(latents[index])])
        return fake.to(device), real.to(device)

    evaluator = Engine(step)
    TolerantIgniteFID(device=device).attach(evaluator, "fid")
    IgniteIS(device=device, output_transform=lambda output: output[0]).attach(evaluator, "is")
    return evaluator


def bench_evaluation(args: argparse.Namespace, work: Path, device: torch.device) -> dict:
    """(b) for each protocol of ``--protocols``: our evaluation against the FID Inception alone on the
    same prepared images (the same network object: the fastest layout at this precision), and
    once against the pipeline of PyTorch-Ignite's GAN evaluation tutorial. The first protocol's
    figures are also given flat (``eval_img_per_s``, ``eval_ratio_vs_inception``, ...)."""
    by_protocol = {protocol: bench_evaluation_protocol(args, work / f"eval_{protocol}", device, protocol, index == 0)
                   for index, protocol in enumerate(args.protocols)}
    result = dict(by_protocol[args.protocols[0]])
    result["eval_by_protocol"] = {protocol: {key: value for key, value in values.items()
                                             if key in ("eval_img_per_s", "inception_only_img_per_s",
                                                        "eval_ratio_vs_inception", "eval_seconds_parts")}
                                  for protocol, values in by_protocol.items()}
    return result


def bench_evaluation_protocol(args: argparse.Namespace, work: Path, device: torch.device, protocol: str,
                              with_tutorial: bool) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    config = benchmark_config(args, work, **{"eval.protocol": protocol})
    dataset = data_module.load_dataset(config.data)
    torch.manual_seed(0)
    generator, _ = setup_models(config, device)
    generator.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluation = setup_evaluation(config, dataset, generator, device)  # computes the real statistics once
        evaluation.run()  # warm-up: the real side's square-root factor and PRDC radii are computed once per run
        network = evaluation.network
        latents = list(evaluation_latents(config, args.eval_samples).split(args.eval_batch_size))
        with torch.no_grad():
            prepared = [prepare_images(generator(latent.to(device)), network) for latent in latents]
        if with_tutorial:
            real_images = torch.stack([dataset[i] for i in range(args.eval_samples)])
            random_torchvision_inception()
            tutorial = tutorial_evaluator(generator, real_images, latents, device)

        def inception_only() -> None:
            for batch in prepared:
                network(batch)
            synchronize(device)

        ours, alone, reference, parts = [], [], [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            values = evaluation.run()
            synchronize(device)
            ours.append(time.perf_counter() - started)
            parts.append(values["seconds"])
            alone.append(timed(inception_only))
            if with_tutorial:
                reference.append(timed(lambda: tutorial.run(range(len(latents)), max_epochs=1)))
        with profiled(args.profile, f"profile_evaluation_{protocol}", device):
            evaluation.run()
    count = args.eval_samples
    result = {"eval_img_per_s": count / min(ours), "inception_only_img_per_s": count / min(alone),
              "eval_seconds_parts": parts[ours.index(min(ours))]}
    result["eval_ratio_vs_inception"] = result["eval_img_per_s"] / result["inception_only_img_per_s"]
    if with_tutorial:
        result["seed_eval_img_per_s"] = count / min(reference)
        result["eval_speedup_vs_seed"] = result["eval_img_per_s"] / result["seed_eval_img_per_s"]
    return result


def bench_full_evaluation(args: argparse.Namespace, work: Path, device: torch.device) -> dict:
    """One evaluation of ``args.full_eval`` samples, FID and IS, against cached reference statistics."""
    config = benchmark_config(args, work, **{"eval.num_samples": args.full_eval, "eval.num_real": "all",
                                             "eval.metrics": "[fid,is]", "eval.is_splits": 10})
    dataset = data_module.load_dataset(config.data)
    torch.manual_seed(0)
    generator, _ = setup_models(config, device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        setup_evaluation(config, dataset, generator, device)  # the reference statistics, into the cache
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        evaluation = setup_evaluation(config, dataset, generator, device)  # a cache hit, as in a run
        setup_seconds = time.perf_counter() - started  # loading the network and the cached statistics
        started = time.perf_counter()
        record = evaluation.run()
        synchronize(device)
        seconds = time.perf_counter() - started
        values = evaluation.evaluator.state.metrics
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        # the network alone on as many prepared images, at the same layout and precision
        with torch.no_grad():
            batch = prepare_images(generator(torch.randn(args.eval_batch_size, 100, 1, 1, device=device)),
                                   evaluation.network)
        evaluation.network(batch)  # warm
        synchronize(device)
        passes = max(1, min(20, args.full_eval // args.eval_batch_size))
        alone = timed(lambda: ([evaluation.network(batch) for _ in range(passes)], synchronize(device)))
    inception_seconds = alone / (passes * args.eval_batch_size) * args.full_eval
    return {"full_eval_samples": args.full_eval, "full_eval_seconds": seconds, "full_eval_setup_seconds": setup_seconds,
            "full_eval_img_per_s": args.full_eval / seconds, "full_eval_fid": values["fid"],
            "full_eval_seconds_parts": record["seconds"], "full_eval_inception_alone_seconds": inception_seconds,
            "full_eval_time_vs_inception": seconds / inception_seconds, "full_eval_cuda_peak_mb": peak}


# ----------------------------------------------------------------------------- metric parts
def pool3_like_features(count: int, dim: int, seed: int) -> torch.Tensor:
    """Correlated, non-negative features (like ReLU'd pool3) with a full-rank covariance."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(dim, dim, generator=generator) / dim**0.5
    return (torch.randn(count, dim, generator=generator) @ mixing).relu_()


def bench_metric_parts(count: int = 2048, dim: int = 2048, batch_size: int = 64) -> dict:
    import scipy.linalg
    from ignite.metrics import FID as IgniteFID

    real, fake = pool3_like_features(count, dim, 0), pool3_like_features(count, dim, 1)
    ignite_fid = IgniteFID(num_features=dim, feature_extractor=torch.nn.Identity())
    ignite_seconds = timed(lambda: [ignite_fid.update(pair) for pair in zip(real.split(batch_size),
                                                                             fake.split(batch_size))])
    stats = RealStatistics(None, *[t.numpy() for t in mean_and_covariance(real)], count)
    ours = FID(stats)
    ours_seconds = timed(lambda: [ours.update(batch) for batch in fake.split(batch_size)])
    s1 = mean_and_covariance(pool3_like_features(2 * count, dim, 2))
    s2 = mean_and_covariance(pool3_like_features(2 * count, dim, 3) * 1.05 + 0.01)
    cold = timed(lambda: frechet_distance(s1[0], s1[1], s2[0], s2[1]))
    factor = covariance_sqrt_factor(s1[1])
    warm = timed(lambda: trace_sqrt_product(factor, s2[1]))
    sqrtm = timed(lambda: scipy.linalg.sqrtm(s1[1].numpy() @ s2[1].numpy()))
    return {"fid_accumulation_speedup_vs_ignite": ignite_seconds / ours_seconds,
            "trace_speedup_vs_sqrtm": sqrtm / cold, "trace_speedup_vs_sqrtm_warm": sqrtm / warm}


# ----------------------------------------------------------------------------- (e) peers
ROOT = Path(__file__).resolve().parents[1]
PEERS = ("pytorch-fid", "torch-fidelity", "clean-fid")  # each computes FID in the protocol of its name


def timed_process(command: list[str], out: Path) -> tuple[float, float]:
    """Seconds of the whole process and the FID it wrote to ``out`` (JSON)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return seconds, json.loads(out.read_text())["fid"]


def bench_peers(args: argparse.Namespace, work: Path) -> dict:
    """(e) at each precision of ``--peer-precisions`` (the packages' GPU default is TF32 convolutions;
    ours is fp32 unless asked): ours in each protocol against the peers, like for like. The flat
    keys are the first precision's; ``peers_by_precision`` holds each; ``peer_speedup_min`` is the
    smallest over every precision."""
    real = synthetic_folder(work / "peer_real", args.peer_images, args.image_size, seed=1)
    fake = synthetic_folder(work / "peer_fake", args.peer_images, args.image_size, seed=2)
    weights = work / "random_fid_inception.pth"  # one file in pytorch-fid's format for every side
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save({k: v.contiguous() for k, v in load_fid_inception("random").state_dict().items()}, weights)
    by_precision = {precision: peers_at(args, work, real, fake, weights, precision)
                    for precision in args.peer_precisions}
    result = dict(by_precision[args.peer_precisions[0]])
    result["peers_by_precision"] = by_precision
    result["peer_speedup_min"] = min(values["peer_speedup_min"] for values in by_precision.values())
    return result


def peers_at(args: argparse.Namespace, work: Path, real: Path, fake: Path, weights: Path, precision: str) -> dict:
    common = ["--batch-size", str(args.eval_batch_size), "--num-workers", str(args.num_workers), "--device",
              args.device, "--precision", precision]
    commands = {("ours", protocol): [sys.executable, "-m", "gan_ignite.metrics", str(real), str(fake), "--protocol",
                                     protocol, "--inception-weights", str(weights), "--metrics", "fid", *common]
                for protocol in args.peer_protocols}
    commands.update({("peer", name): [sys.executable, "scripts/fid_peers.py", name, str(real), str(fake), "--weights",
                                      str(weights), *common] for name in PEERS if name in args.peer_protocols})
    seconds: dict[tuple[str, str], list[float]] = {key: [] for key in commands}
    fids: dict[tuple[str, str], float] = {}
    for _ in range(args.repeats):  # alternating, the best of each kept
        for (side, name), command in commands.items():
            out = work / f"{side}_{name}_{precision}.json"
            took, fids[side, name] = timed_process([*command, "--json", str(out)], out)
            seconds[side, name].append(took)
    best = {key: min(values) for key, values in seconds.items()}
    ours = {name: best["ours", name] for name in args.peer_protocols}
    peers = {name: best["peer", name] for name in PEERS if ("peer", name) in best}
    fastest = min(peers.values())
    result = {"peer_images": args.peer_images, "peer_precision": precision, "peer_seconds": peers,
              "ours_seconds": ours, "peer_speedup": {name: fastest / ours[name] for name in ours},
              "peer_speedup_same_protocol": {name: peers[name] / ours[name] for name in peers},
              "peer_fid": {name: fids["peer", name] for name in peers},
              "ours_fid": {name: fids["ours", name] for name in ours}}
    result["peer_speedup_min"] = min(result["peer_speedup"].values())
    return result


# ----------------------------------------------------------------------------- report
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--iters", type=int, default=40, help="timed training iterations per repeat")
    parser.add_argument("--warmup", type=int, default=5, help="untimed training iterations first")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=64, choices=(32, 64, 128))
    parser.add_argument("--arch", default="dcgan", choices=("dcgan", "resnet"), help="model.arch")
    parser.add_argument("--width", type=int, default=64, help="model.g_features = model.d_features")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--images", type=int, default=1024, help="size of the synthetic image folder")
    parser.add_argument("--eval-samples", type=int, default=128)
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=4,
                        help="alternating repeats per side; the best is kept (2 left the ratio ±10%% on a 2-core CPU)")
    parser.add_argument("--amp", action="store_true", help="train.amp (bf16 autocast)")
    parser.add_argument("--channels-last", action="store_true", help="train.channels_last")
    parser.add_argument("--compile", action="store_true", help="train.compile (torch.compile of G and D)")
    parser.add_argument("--data-cache", action="store_true", help="also time training with data.cache=true")
    parser.add_argument("--metric-parts", action="store_true", help="also FID accumulation and trace term")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any config override, e.g. --set train.ema_decay=0.999 --set train.augment=diffaugment")
    parser.add_argument("--versus", action="append", default=[], metavar="KEY=VALUE",
                        help="also time the trainer with these overrides on top, alternating with the base "
                             "config: versus_time_ratio = its time per iteration / the base's")
    parser.add_argument("--full-eval", type=int, default=0, metavar="N",
                        help="also time one evaluation of N samples (FID + IS) against cached reference statistics")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="write torch.profiler tables of one training window and one evaluation to DIR")
    parser.add_argument("--peers", action="store_true",
                        help="(e) our metrics CLI in every protocol against pytorch-fid, torch-fidelity, clean-fid")
    parser.add_argument("--peer-images", type=int, default=200, help="images per folder for --peers")
    parser.add_argument("--peer-protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS),
                        help="protocols timed by --peers (the peers of these names run)")
    parser.add_argument("--switch-sets", nargs="+", choices=list(SWITCH_SETS), default=None,
                        help="time the trainer with each of these switch sets in turn, in this process (all = amp + "
                             "channels_last + compile); results under 'training'")
    parser.add_argument("--protocols", nargs="+", choices=list(PROTOCOLS), default=["torch-fidelity"],
                        help="(b) for each of these protocols (default torch-fidelity)")
    parser.add_argument("--precision", choices=("fp32", "tf32"), default="fp32",
                        help="eval.precision of (b) and (d): the FID Inception's numerics")
    parser.add_argument("--peer-precisions", nargs="+", choices=("fp32", "tf32"), default=["fp32"],
                        help="(e) at each of these precisions, every side alike")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="reuse this synthetic image folder (made there if missing) instead of a new one")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--json", metavar="OUT", help="write the results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else
                    f"cpu ({torch.get_num_threads()} threads)", "torch": torch.__version__,
                    "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                    "options": {key: getattr(args, key) for key in ("iters", "batch_size", "image_size", "arch", "width",
                                                                     "eval_samples", "amp", "channels_last",
                                                                     "compile", "num_workers", "set",
                                                                     "versus", "precision", "protocols",
                                                                     "switch_sets")}}
    with tempfile.TemporaryDirectory(prefix="gan_ignite_benchmark_") as directory:
        work = Path(directory)
        args.images_dir = args.data_dir or work / "images"
        count = max(args.images, args.eval_samples)
        if (not (args.skip_train and args.skip_eval) or args.full_eval) and \
                len(list(Path(args.images_dir).glob("*.jpg"))) < count:
            started = time.perf_counter()
            synthetic_folder(Path(args.images_dir), count, args.image_size)
            result["data_seconds"] = time.perf_counter() - started
        if not args.skip_train:
            result.update(bench_training(args, work, device))
        if not args.skip_eval:
            result.update(bench_evaluation(args, work, device))
        if args.peers:
            result.update(bench_peers(args, work))
        # the peak of (a) and (b); (d) resets it to measure its own
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        if args.full_eval:
            result.update(bench_full_evaluation(args, work, device))
    if args.metric_parts:
        result.update(bench_metric_parts())
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for key, value in result.items():
        if isinstance(value, dict):
            value = ", ".join(f"{name} {number:.4g}" if isinstance(number, float) else f"{name} {number}"
                              for name, number in value.items())
        print(f"{key:>34}: {value:.4g}" if isinstance(value, float) else f"{key:>34}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
