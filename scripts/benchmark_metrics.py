"""Measure gan_ignite.metrics against the seed's ignite defaults, side by side, in one run.

    python scripts/benchmark_metrics.py [--num-samples 64] [--device cpu]

(a) FID accumulation: our batched float64 sums vs ``ignite.metrics.FID.update`` (a Python loop
    of per-sample outer products) on the same 2048 pairs of 2048-d features.
(b) tr sqrt(S1 S2) at 2048-d: our symmetric eigenvalue route vs ``scipy.linalg.sqrtm`` (as in
    pytorch-fid and ignite), with both FID values printed.
(c) evaluator time per epoch at the same sample count: our pipeline (one Inception forward per
    generated image, real statistics cached) vs the seed notebook's (ignite ``FID()`` and
    ``InceptionScore()`` with their default extractors: Inception runs on real and fake for FID
    and again on fake for IS). All networks are random-init: ignite's default torchvision
    Inception would download ImageNet weights, so ``torchvision.models.inception_v3`` is patched
    to build the same architecture without weights; compute cost is unchanged.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
import torchvision
from ignite.engine import Engine
from PIL import Image
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gan_ignite.metrics import (  # noqa: E402
    FID,
    RealStatistics,
    create_metrics,
    InceptionFeatures,
    extract_features,
    frechet_distance,
    load_fid_inception,
)
from gan_ignite.metrics.fid import covariance_sqrt_factor, mean_and_covariance, trace_sqrt_product  # noqa: E402
from gan_ignite.models import Generator  # noqa: E402

LATENT_DIM = 100


def timed(function: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def pool3_like_features(count: int, dim: int, seed: int) -> torch.Tensor:
    """Correlated, non-negative features (like ReLU'd pool3) with a full-rank covariance."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(dim, dim, generator=generator) / dim**0.5
    return (torch.randn(count, dim, generator=generator) @ mixing).relu_()


# ----------------------------------------------------------------------------- (a) accumulation
def bench_accumulation(count: int, dim: int, batch_size: int) -> dict:
    from ignite.metrics import FID as IgniteFID

    real, fake = pool3_like_features(count, dim, 0), pool3_like_features(count, dim, 1)
    pairs = list(zip(real.split(batch_size), fake.split(batch_size)))
    ignite_fid = IgniteFID(num_features=dim, feature_extractor=torch.nn.Identity())
    ignite_seconds, _ = timed(lambda: [ignite_fid.update(pair) for pair in pairs])

    def ours() -> FID:
        stats = RealStatistics(None, *[t.numpy() for t in mean_and_covariance(real)], count)  # real side
        metric = FID(stats)
        for batch in fake.split(batch_size):  # fake side
            metric.update(batch)
        return metric

    ours_seconds, metric = timed(ours)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = (metric.compute(), ignite_fid.compute())
    return {"ours": ours_seconds, "ref": ignite_seconds, "values": values}


# ----------------------------------------------------------------------------- (b) trace sqrt
def bench_trace_sqrt(count: int, dim: int) -> dict:
    s1 = mean_and_covariance(pool3_like_features(count, dim, 2))
    s2 = mean_and_covariance(pool3_like_features(count, dim, 3) * 1.05 + 0.01)
    cold, ours_value = timed(lambda: frechet_distance(s1[0], s1[1], s2[0], s2[1]))
    factor = covariance_sqrt_factor(s1[1])
    warm, _ = timed(lambda: trace_sqrt_product(factor, s2[1]))
    sigma1, sigma2 = s1[1].numpy(), s2[1].numpy()
    ref_seconds, covmean = timed(lambda: scipy.linalg.sqrtm(sigma1 @ sigma2))
    diff = (s1[0] - s2[0]).numpy()
    ref_value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean).real
    return {"ours": cold, "warm": warm, "ref": ref_seconds, "values": (ours_value, float(ref_value))}


# ----------------------------------------------------------------------------- (c) evaluator
def random_torchvision_inception() -> None:
    """Make ignite's default InceptionModel build torchvision's Inception v3 without downloading."""
    original = torchvision.models.inception_v3

    def without_weights(*args, **kwargs):
        kwargs.pop("weights", None)
        kwargs.pop("pretrained", None)
        return original(weights=None, aux_logits=True, transform_input=True, init_weights=False)

    torchvision.models.inception_v3 = without_weights


def seed_interpolate(batch: torch.Tensor) -> torch.Tensor:
    """The seed notebook's resize, verbatim in behaviour: ToPILImage -> PIL bilinear -> ToTensor."""
    resized = [transforms.ToTensor()(transforms.ToPILImage()(img).resize((299, 299), Image.BILINEAR))
               for img in batch]
    return torch.stack(resized)


def seed_evaluator(generator: torch.nn.Module, real_images: torch.Tensor, batch_size: int,
                   device: torch.device) -> Engine:
    from ignite.metrics import FID as IgniteFID
    from ignite.metrics import InceptionScore as IgniteIS

    def step(engine: Engine, index: int):
        with torch.no_grad():
            fake = seed_interpolate(generator(torch.randn(batch_size, LATENT_DIM, 1, 1, device=device)).cpu())
            real = seed_interpolate(real_images[index * batch_size : (index + 1) * batch_size])
        return fake.to(device), real.to(device)

    class TolerantIgniteFID(IgniteFID):
        """Random-init torchvision Inception gives near-uniform softmax outputs, whose covariance
        product can make ignite's sqrtm fail ("Imaginary component"); the work is still timed."""

        def compute(self) -> float:
            try:
                return super().compute()
            except ValueError:
                return float("nan")

    evaluator = Engine(step)
    TolerantIgniteFID(device=device).attach(evaluator, "fid")
    IgniteIS(device=device, output_transform=lambda output: output[0]).attach(evaluator, "is")
    return evaluator


def our_evaluator(generator: torch.nn.Module, extractor: torch.nn.Module, real_stats: RealStatistics,
                  batch_size: int, device: torch.device) -> Engine:
    def step(engine: Engine, index: int):
        with torch.no_grad():
            fake = generator(torch.randn(batch_size, LATENT_DIM, 1, 1, device=device))
        return extract_features(fake, InceptionFeatures(extractor, "bilinear"))

    evaluator = Engine(step)
    for name, metric in create_metrics(["fid", "is"], real_stats, is_splits=2, device=device).items():
        metric.attach(evaluator, name)
    return evaluator


def bench_evaluator(num_samples: int, batch_size: int, device: torch.device, repeats: int) -> dict:
    torch.manual_seed(0)
    generator = Generator(LATENT_DIM, 3, 64, 64).to(device).eval()
    real_images = torch.rand(num_samples, 3, 64, 64) * 2 - 1
    batches = list(range(num_samples // batch_size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        extractor = load_fid_inception("random", device)
        real_seconds, real_stats = timed(lambda: RealStatistics.from_features(torch.cat([
            extract_features(chunk, InceptionFeatures(extractor))["features"].cpu()
            for chunk in real_images.split(batch_size)])))
        ours = our_evaluator(generator, extractor, real_stats, batch_size, device)
        random_torchvision_inception()
        seed = seed_evaluator(generator, real_images, batch_size, device)
        ours_times, seed_times = [], []
        for _ in range(repeats):  # alternate, keep the best: robust to other load on the machine
            ours_times.append(timed(lambda: ours.run(batches, max_epochs=1))[0])
            seed_times.append(timed(lambda: seed.run(batches, max_epochs=1))[0])
    return {"ours": min(ours_times), "ref": min(seed_times), "real_once": real_seconds,
            "values": (ours.state.metrics, seed.state.metrics)}


# ----------------------------------------------------------------------------- report
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-samples", type=int, default=64, help="generated images per evaluator epoch (c)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--features", type=int, default=2048, help="feature pairs for (a) and samples for (b)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2, help="evaluator epochs per pipeline in (c); best is kept")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}", flush=True)

    accumulation = bench_accumulation(args.features, 2048, 64)
    print(f"(a) FID values: ours {accumulation['values'][0]:.6f}  ignite {accumulation['values'][1]:.6f}",
          flush=True)
    trace = bench_trace_sqrt(max(args.features, 4096), 2048)
    print(f"(b) FID values: ours {trace['values'][0]:.6f}  sqrtm {trace['values'][1]:.6f}  "
          f"(rel. diff {abs(trace['values'][0] - trace['values'][1]) / trace['values'][1]:.1e})", flush=True)
    evaluator = bench_evaluator(args.num_samples, args.batch_size, device, args.repeats)
    ours_metrics, seed_metrics = evaluator["values"]
    print(f"(c) ours: {ours_metrics}\n    seed: {seed_metrics}")

    rows = [
        (f"(a) FID accumulation, {args.features} pairs x 2048-d", accumulation, "ignite FID.update"),
        ("(b) tr sqrt(S1 S2), 2048-d (cold: 2 eigh)", trace, "scipy sqrtm"),
        (f"(c) evaluator epoch, {args.num_samples} samples (best of {args.repeats})", evaluator, "seed FID()+IS()"),
    ]
    print(f"\n{'part':<48}{'ours [s]':>10}{'reference [s]':>15}  {'reference':<18}{'speed-up':>9}")
    for label, result, reference in rows:
        print(f"{label:<48}{result['ours']:>10.3f}{result['ref']:>15.3f}  {reference:<18}"
              f"{result['ref'] / result['ours']:>8.1f}x")
    print(f"{'    (b) warm: real factor cached, per epoch':<48}{trace['warm']:>10.3f}{trace['ref']:>15.3f}  "
          f"{'scipy sqrtm':<18}{trace['ref'] / trace['warm']:>8.1f}x")
    print(f"{'    (c) real statistics, once per run':<48}{evaluator['real_once']:>10.3f}")


if __name__ == "__main__":
    main()
