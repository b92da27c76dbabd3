"""Time and memory of the registry's set metrics on fixed random features:

    OMP_NUM_THREADS=1 python scripts/metric_costs.py [--num 10000] [--dim 2048] [--metrics fd,cmmd,...]

Both sets (reference and generated) hold ``--num`` rows of ``--dim`` float32 features (standard
normal, seeded). Each metric runs in its own process, through the registry's ``compute_from_sets``
(what the metrics CLI runs; an evaluator's metric does the same work once its rows are gathered),
with the reference statistics (mean, covariance) already computed, as the statistics cache provides
them, but nothing else cached: the reference-only parts (AuthPct's nearest-neighbour distances
within the reference set, the covariance factor of FD_inf) are included, as in a run's first
evaluation. ``fd`` includes the generated set's mean and covariance. Memory is the process's peak
RSS above what it held with the features and statistics loaded; seconds are wall-clock and CPU time
of the process (equal on an idle machine with one thread). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time

import numpy as np

DEFAULT_METRICS = ("fd", "cmmd", "vendi", "authpct", "fid_inf")


def _measure(name: str, num: int, dim: int, queue: multiprocessing.Queue) -> None:
    import torch

    from gan_ignite.metrics.scores.factory import MetricOptions, compute_from_sets
    from gan_ignite.metrics.scores.real_stats import RealStatistics

    rng = np.random.default_rng(0)
    real = RealStatistics.from_features(rng.standard_normal((num, dim), dtype=np.float32))
    fake_rows = (rng.standard_normal((num, dim), dtype=np.float32) * 1.1).astype(np.float32)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start, cpu_start = time.perf_counter(), time.process_time()
    fake = (RealStatistics.from_features(fake_rows) if name == "fd"  # FD needs the generated moments
            else RealStatistics(fake_rows, np.zeros(dim), np.zeros((dim, dim)), num))
    values = compute_from_sets([name], real, fake, None, MetricOptions())
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 1024
    queue.put((name, seconds, cpu_seconds, peak_mib, values, torch.get_num_threads()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--metrics", default=",".join(DEFAULT_METRICS))
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    print("| metric | n per set | dim | seconds (wall) | seconds (CPU) | peak RSS above the inputs (MiB) | value |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in args.metrics.split(","):
        queue = context.Queue()
        process = context.Process(target=_measure, args=(name, args.num, args.dim, queue))
        process.start()
        name, seconds, cpu_seconds, peak_mib, values, threads = queue.get()
        process.join()
        shown = ", ".join(f"{key}={value if isinstance(value, int) else format(value, '.4g')}"
                          for key, value in values.items())
        print(f"| {name} | {args.num} | {args.dim} | {seconds:.1f} | {cpu_seconds:.1f} | {peak_mib:.0f} | {shown} |",
              flush=True)
    print(f"\ntorch threads: {threads}")


if __name__ == "__main__":
    main()
