"""Train one config with several seeds and report the spread:
``python -m gan_ignite.sweep --config FILE --seeds 0 1 2 [--out SWEEP_DIR] [--report-only] [overrides...]``.

Each seed trains in a process of its own, one after another, exactly as
``python -m gan_ignite.train --config FILE overrides... seed=S output_dir=SWEEP_DIR/seed_S
train.resume_from=auto`` would (SWEEP_DIR defaults to the config's ``output_dir`` + ``_sweep``).
Re-running the same command skips the seeds whose latest checkpoint has reached
``train.max_epochs`` (no process is started for them) and resumes an interrupted seed from its
latest checkpoint, so a sweep killed at any point is finished by running it again.

When a seed's training fails (a non-finite loss, a crash) the sweep says so, goes on with the
other seeds (one diverged seed says nothing about the others, and their report is what the
sweep is for), writes the report without it and exits with code 1. An input error (exit 2: data,
weights, a checkpoint that does not fit) would be the same for every seed: the sweep stops there.
Ctrl-C / SIGTERM are passed on to the training process, which saves a checkpoint; the sweep then
stops with the training's exit code (130 / 0).

The report, from the ``kind: eval`` records of each run's ``history.jsonl``:

- ``SWEEP_DIR/sweep.csv``: per seed the best FID and its iteration, the final FID, IS and KID
  (when recorded), the settings the records were scored with, and the run's status;
- ``SWEEP_DIR/sweep.md``: mean, standard deviation and 95% confidence interval of the mean
  (Student t: ``t(0.975, n-1) * sd / sqrt(n)``) per metric over the finished seeds, their number,
  the seeds left out, and a warning naming the runs whose records differ in sample count, real
  set, feature network, weights, protocol, reference statistics file or scored model (such values
  are not comparable);
- ``SWEEP_DIR/sweep_fid.png``: the FID curve of every seed and, at the iterations all of them
  evaluated, their mean with a band of mean ± the 95% confidence interval.

``--report-only`` rebuilds the report from the runs on disk without training (with ``--out``,
``--config`` may be left out, and without ``--seeds`` every ``seed_*`` folder is reported).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import math
import os
import re
import signal
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import DictConfig

import gan_ignite
from gan_ignite.command import main_for
from gan_ignite.config import ONE_PROCESS, load_config
from gan_ignite.errors import ConfigError, RunStopped, UserError
from gan_ignite.io import atomic_write
from gan_ignite.metrics.options import ProtocolName
from gan_ignite.run_dir import RunDir, write_text
from gan_ignite.signals import Forward

SETTINGS = ("num_samples", "num_real", "real_subset_seed", "feature_network", "protocol", "inception_weights",
            "reference_stats_sha256", "model")
# always reported (best FID, final FID, IS and KID); then every other labelled value of the metrics registry
ALWAYS_REPORTED = ("fid", "is", "kid")
CSV_COLUMNS = ("seed", "status", "evaluations", "best_fid", "best_fid_iteration", "final_iteration", "final_fid",
               "final_is", "final_kid", *SETTINGS, "run_dir")
SWEEP_SETS = ("seed", "output_dir", "train.resume_from")  # overrides the sweep sets itself
SEED_DIR = re.compile(r"^seed_(-?\d+)$")
EXIT_INPUT = 2
INTERRUPTED = "Interrupted by Ctrl-C; run the same command again to continue the sweep."
INTERMIXED = True  # overrides may come before, between and after the options


@dataclass
class Sweep:
    config_file: Optional[Path]
    overrides: list[str]
    seeds: list[int]
    directory: Path

    def run_dir(self, seed: int) -> Path:
        return self.directory / f"seed_{seed}"

    def seed_overrides(self, seed: int) -> list[str]:
        # last, so they win over the same keys in the user's overrides
        return [*self.overrides, f"seed={seed}", f"output_dir={self.run_dir(seed)}", "train.resume_from=auto"]

    def seed_config(self, seed: int) -> DictConfig:
        """What this sweep trains seed ``seed`` with (its run's config.yaml may hold older values)."""
        return load_config(self.config_file, self.seed_overrides(seed))


def plan_sweep(args: argparse.Namespace) -> Sweep:
    """Check the input before any training; the sweep's folder and seeds."""
    reserved = [item for item in args.overrides if item.split("=", 1)[0].strip() in SWEEP_SETS]
    if reserved:
        raise UserError(f"Override(s) {reserved} are set by the sweep itself: give the seeds with --seeds and the "
                        f"sweep's folder with --out (each seed trains in OUT/seed_S, resumed with "
                        f"train.resume_from=auto).")
    if args.config is None and not (args.report_only and args.out is not None):
        raise UserError("--config FILE is required (with --report-only, --out SWEEP_DIR is enough).")
    config = load_config(args.config, args.overrides) if args.config is not None else None
    directory = args.out if args.out is not None else Path(f"{config.output_dir}_sweep")
    seeds = args.seeds or (discovered_seeds(directory) if args.report_only else [])
    if not seeds:
        raise UserError(f"No seeds to {'report' if args.report_only else 'train'}: give them with --seeds, e.g. "
                        f"--seeds 0 1 2" + (f" (no seed_* folders in '{directory}')" if args.report_only else "") + ".")
    repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if repeated:
        raise UserError(f"--seeds lists {repeated} more than once; each seed is one run.")
    sweep = Sweep(args.config, list(args.overrides), seeds, directory)
    if config is not None and not args.report_only:
        for seed in seeds:  # every seed's config is valid before the first one trains
            sweep.seed_config(seed)
        if config.eval.every_epochs == 0 or "fid" not in config.eval.metrics:
            raise ConfigError("The sweep reports FID from the runs' evaluation records, but this config records none "
                              f"(eval.every_epochs={config.eval.every_epochs}, eval.metrics="
                              f"{list(config.eval.metrics)}). Set eval.every_epochs >= 1 and include fid in "
                              "eval.metrics.")
    return sweep


def discovered_seeds(directory: Path) -> list[int]:
    if not directory.is_dir():
        return []
    return sorted(int(match.group(1)) for path in directory.iterdir()
                  if path.is_dir() and (match := SEED_DIR.match(path.name)))


def run_progress(run_dir: Path, config: Optional[DictConfig] = None) -> tuple[int, Optional[int]]:
    """(iteration of the latest checkpoint, iterations ``config`` (default: the run's config.yaml) asks
    for); 0 and None when there is no checkpoint or config yet, or they cannot be read."""
    run = RunDir(run_dir)
    latest = run.latest_checkpoint()
    if latest is None or (config is None and not run.config_path.is_file()):
        return 0, None
    from gan_ignite.checkpoints import read_checkpoint  # brings torch: only where a run is there to read

    try:
        if config is None:
            config = load_config(run.config_path, ONE_PROCESS)
        trainer = read_checkpoint(latest, "")["trainer"]
    except (UserError, KeyError, TypeError):  # unreadable: the training process will say what is wrong
        return 0, None
    epoch_length = config.train.epoch_length or trainer.get("epoch_length")
    return int(trainer.get("iteration", 0)), (config.train.max_epochs * epoch_length if epoch_length else None)


def is_finished(run_dir: Path, config: Optional[DictConfig] = None) -> bool:
    done, total = run_progress(run_dir, config)
    return total is not None and done >= total


def train_seed(sweep: Sweep, seed: int, debug: bool) -> tuple[int, Optional[int]]:
    """Train (or resume) one seed in its own process; (exit code, signal the sweep received)."""
    command = [sys.executable, "-m", "gan_ignite.train", "--config", str(sweep.config_file),
               *(["--debug"] if debug else []), *sweep.seed_overrides(seed)]
    env = dict(os.environ)
    # the training runs the same gan_ignite as this sweep, wherever it was imported from
    package_root = str(Path(gan_ignite.__file__).resolve().parents[1])
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # its own session: a Ctrl-C reaches it once, forwarded by the sweep, not twice ("abort at once")
    process = subprocess.Popen(command, env=env, start_new_session=True)
    with Forward(lambda: [process], (signal.SIGINT, signal.SIGTERM)) as forwarded:
        while process.poll() is None:
            with contextlib.suppress(KeyboardInterrupt):  # a signal from before the handler was installed
                process.wait()
    return process.returncode, forwarded.received


def run_seeds(sweep: Sweep, debug: bool) -> tuple[dict[int, str], Optional[int]]:
    """Train the seeds in turn. (failed seeds -> why, exit code if the sweep must stop now)."""
    failed: dict[int, str] = {}
    for number, seed in enumerate(sweep.seeds, 1):
        run_dir, config = sweep.run_dir(seed), sweep.seed_config(seed)
        if is_finished(run_dir, config):
            print(f"seed {seed} ({number}/{len(sweep.seeds)}): already finished in {run_dir}, skipped", flush=True)
            continue
        resumed = RunDir(run_dir).latest_checkpoint() is not None
        print(f"seed {seed} ({number}/{len(sweep.seeds)}): {'resuming' if resumed else 'training'} in {run_dir}",
              flush=True)
        code, received = train_seed(sweep, seed, debug)
        if received is not None:
            print(f"The sweep was stopped by {signal.Signals(received).name} during seed {seed} (training exit code "
                  f"{code}). Run the same command again to continue: finished seeds are skipped, seed {seed} "
                  f"resumes from its latest checkpoint.", file=sys.stderr)
            return failed, code
        if code == EXIT_INPUT:
            print(f"error: seed {seed} stopped with an input error (above), which the other seeds would hit as well; "
                  f"the sweep stops. Fix it and run the same command again: finished seeds are skipped.",
                  file=sys.stderr)
            return failed, EXIT_INPUT
        if code != 0 or not is_finished(run_dir, config):
            done, total = run_progress(run_dir, config)
            failed[seed] = f"training {failure_words(code)} at iteration {done}" + (f" of {total}" if total else "")
            print(f"error: seed {seed}: {failed[seed]} (see the messages above); going on with the other seeds. "
                  f"It is left out of the report; run the same command again to retry it.", file=sys.stderr, flush=True)
    return failed, None


def failure_words(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"failed with exit code {code}" if code else "ended early"


@dataclass
class SeedSummary:
    seed: int
    run_dir: Path
    status: str
    finished: bool
    evals: list[dict] = field(default_factory=list)

    @property
    def fid_records(self) -> list[dict]:
        return [record for record in self.evals if isinstance(record.get("fid"), (int, float))]

    def row(self) -> dict[str, Any]:
        """The CSV row (missing values empty)."""
        row: dict[str, Any] = {"seed": self.seed, "status": self.status, "evaluations": len(self.evals),
                               "run_dir": str(self.run_dir)}
        if self.fid_records:
            best = min(self.fid_records, key=lambda record: record["fid"])
            row.update(best_fid=best["fid"], best_fid_iteration=best["iteration"])
        if self.evals:
            final = self.evals[-1]
            row.update(final_iteration=final.get("iteration"), **{key: final.get(key) for key in SETTINGS})
            row.update({f"final_{key}": final[key] for key, _ in registry_values(final)})
        return {column: "" if row.get(column) is None else row[column] for column in [*CSV_COLUMNS, *row]}


def registry_values(record: dict) -> list[tuple[str, str]]:
    """(key, label) of the labelled values of the metrics registry that ``record`` holds."""
    from gan_ignite.metrics.scores.factory import METRICS, feature_space

    space = feature_space(str(record.get("feature_network") or "inception"))
    labelled = [(template.format(space=space), label.format(space=space))
                for spec in METRICS.values() for template, label in spec.labels.items()]
    return [(key, label) for key, label in labelled if isinstance(record.get(key), (int, float))]


def metric_columns(summaries: Sequence[SeedSummary]) -> list[tuple[str, str]]:
    """(CSV column, label) of the values reported: best FID, the final :data:`ALWAYS_REPORTED`, then the
    registry's other values that some run's final evaluation recorded."""
    from gan_ignite.metrics.scores.factory import METRICS

    labels = {name: METRICS[name].labels[name] for name in ALWAYS_REPORTED}
    columns = {"best_fid": f"best {labels['fid']}"}
    columns.update({f"final_{name}": f"final {label}" for name, label in labels.items()})
    for summary in summaries:
        if summary.evals:
            columns.update({f"final_{key}": f"final {label}" for key, label in registry_values(summary.evals[-1])})
    return list(columns.items())


def csv_columns(summaries: Sequence[SeedSummary]) -> list[str]:
    extra = [column for column, _ in metric_columns(summaries) if column not in CSV_COLUMNS]
    position = CSV_COLUMNS.index("final_kid") + 1
    return [*CSV_COLUMNS[:position], *extra, *CSV_COLUMNS[position:]]


def summarize(seed: int, run_dir: Path, failure: Optional[str]) -> SeedSummary:
    history = RunDir(run_dir).history.lines()
    if history.bad_lines:
        print(f"note: {history.report()}", file=sys.stderr)
    evals = [record for record in history.records if record.get("kind") == "eval"]
    evals.sort(key=lambda record: record.get("iteration", 0))
    done, total = run_progress(run_dir)
    finished = failure is None and total is not None and done >= total
    if failure is not None:
        status = failure
    elif not run_dir.is_dir():
        status = "missing"
    elif finished:
        status = "finished"
    else:
        status = f"incomplete: iteration {done}" + (f" of {total}" if total else "")
    return SeedSummary(seed, run_dir, status, finished, evals)


@dataclass
class Spread:
    n: int
    mean: float
    sd: Optional[float]  # None for one value
    half_width: Optional[float]  # of the 95% confidence interval of the mean


def spread(values: Sequence[float]) -> Spread:
    """Mean, sample standard deviation and the Student-t 95% confidence half-width."""
    n, mean = len(values), statistics.mean(values)
    if n < 2:
        return Spread(n, mean, None, None)
    from scipy import stats

    sd = statistics.stdev(values)
    return Spread(n, mean, sd, float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n))


def number(value: Optional[float]) -> str:
    return "n/a" if value is None else format(value, ".6g")


def mixed_settings(summaries: Sequence[SeedSummary]) -> list[str]:
    """One line per setting whose value differs between (or within) the runs' eval records."""
    lines = []
    for key in SETTINGS:
        seeds_by_value: dict[str, list[int]] = {}
        for summary in summaries:
            for value in {str(record.get(key)) for record in summary.evals}:
                seeds_by_value.setdefault(value, []).append(summary.seed)
        if len(seeds_by_value) > 1:
            lines.append(f"- `{key}`: " + "; ".join(f"{value} (seeds {', '.join(map(str, seeds))})"
                                                  for value, seeds in seeds_by_value.items()))
    return lines


def write_report(sweep: Sweep, failed: dict[int, str]) -> list[Path]:
    summaries = [summarize(seed, sweep.run_dir(seed), failed.get(seed)) for seed in sweep.seeds]
    with_records = [summary for summary in summaries if summary.fid_records]
    if not with_records:
        raise UserError(f"No FID evaluation records to report in {sweep.directory} for seeds {sweep.seeds} (each run's "
                        f"history.jsonl has none yet). Train first (without --report-only), with eval.every_epochs "
                        f">= 1 and fid in eval.metrics.")
    included = [summary for summary in with_records if summary.finished]
    note = ""
    if not included:
        included = with_records
        note = "No seed has finished training: the statistics are over the runs as they are now."
    sweep.directory.mkdir(parents=True, exist_ok=True)
    paths = [sweep.directory / name for name in ("sweep.csv", "sweep.md", "sweep_fid.png")]
    write_csv(summaries, paths[0])
    write_text(paths[1], markdown(sweep, summaries, included, note))
    plot_fid(included, paths[2])
    return paths


def write_csv(summaries: Sequence[SeedSummary], path: Path) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=csv_columns(summaries), restval="", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(summary.row() for summary in summaries)
    write_text(path, text.getvalue())


def markdown(sweep: Sweep, summaries: Sequence[SeedSummary], included: Sequence[SeedSummary], note: str) -> str:
    rows = [summary.row() for summary in included]
    columns = metric_columns(summaries)
    lines = [f"# Seed sweep: {sweep.config_file or sweep.directory}", ""]
    if sweep.overrides:
        lines += [f"Overrides: `{' '.join(sweep.overrides)}`", ""]
    lines += [f"Seeds in the statistics: {len(included)} ({', '.join(str(s.seed) for s in included)})", ""]
    included_seeds = {summary.seed for summary in included}
    left_out = [summary for summary in summaries if summary.seed not in included_seeds]
    if left_out:
        lines += ["Left out: " + "; ".join(f"seed {s.seed} ({s.status})" for s in left_out), ""]
    if note:
        lines += [f"**Note:** {note}", ""]
    lines += ["| metric | seeds | mean | sd | 95% CI of the mean |", "| --- | --- | --- | --- | --- |"]
    for key, label in columns:
        values = [float(row[key]) for row in rows if row.get(key, "") != ""]
        if values:
            result = spread(values)
            interval = "n/a" if result.half_width is None else \
                f"{number(result.mean - result.half_width)} to {number(result.mean + result.half_width)} " \
                f"(± {number(result.half_width)})"
            lines.append(f"| {label} | {result.n} | {number(result.mean)} | {number(result.sd)} | {interval} |")
    lines += ["", "sd: sample standard deviation over the seeds; 95% CI: mean ± t(0.975, n-1) · sd / √n "
              "(Student t).", ""]
    mixed = mixed_settings(included)
    if mixed:
        lines += ["**Warning: not comparable.** The evaluation records differ in:", *mixed, ""]
    else:
        shared = included[0].evals[-1]
        settings = (f"{key}={shared[key]}" for key in SETTINGS if shared.get(key) is not None)
        lines += ["Scored with: " + ", ".join(settings), ""]
    if any(record.get("inception_weights") == "random" for summary in included for record in summary.evals):
        lines += ["**Warning:** scored with a random-init Inception (`inception_weights: random`, for tests): the "
                  "values are meaningless.", ""]
    labels = [f"{columns[0][1]} (iteration)", *(label for _, label in columns[1:])]
    lines += ["| seed | status | " + " | ".join(labels) + " |", "| --- " * (len(labels) + 2) + "|"]
    for summary in summaries:
        row = summary.row()
        cells = {key: "n/a" if row.get(key, "") == "" else number(row[key]) for key, _ in columns}
        if row["best_fid"] != "":
            cells["best_fid"] += f" ({row['best_fid_iteration']})"
        lines.append(f"| {summary.seed} | {summary.status} | " + " | ".join(cells.values()) + " |")
    return "\n".join(lines) + "\n"


def plot_fid(included: Sequence[SeedSummary], path: Path) -> None:
    """Every seed's FID per iteration; mean ± 95% CI where all seeds share an iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8, 5))
    curves = {summary.seed: {record["iteration"]: record["fid"] for record in summary.fid_records}
              for summary in included}
    for seed, curve in curves.items():
        iterations = sorted(curve)
        ax.plot(iterations, [curve[i] for i in iterations], marker="o", linewidth=1, alpha=0.6, label=f"seed {seed}")
    shared = sorted(set.intersection(*(set(curve) for curve in curves.values())))
    if len(curves) > 1 and shared:
        spreads = [spread([curve[i] for curve in curves.values()]) for i in shared]
        means = [s.mean for s in spreads]
        half = [s.half_width or 0.0 for s in spreads]
        ax.plot(shared, means, color="black", linewidth=2.2, label=f"mean of {len(curves)} seeds")
        ax.fill_between(shared, [m - h for m, h in zip(means, half)], [m + h for m, h in zip(means, half)],
                        color="black", alpha=0.15, label="mean ± 95% CI (Student t)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("iteration")
    ax.set_ylabel("FID")
    ax.set_title(f"FID of {len(curves)} seeds")
    ax.legend()
    if any(record.get("inception_weights") == "random" for summary in included for record in summary.evals):
        fig.suptitle("WARNING: random-init Inception (test weights): values are meaningless", color="red")
    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=120))
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="YAML config file, as for gan_ignite.train")
    parser.add_argument("--seeds", nargs="*", default=[], help="the seeds, e.g. --seeds 0 1 2")
    parser.add_argument("--out", type=Path, default=None,
                        help="the sweep's folder (default: the config's output_dir + '_sweep'); seed S trains in "
                             "OUT/seed_S")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report without training")
    parser.add_argument("--protocol", choices=[str(name) for name in ProtocolName], default=None,
                        help="the FID protocol of every seed's evaluations (= eval.protocol=...)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides for every seed, e.g. train.max_epochs=5")


def split_seeds(args: argparse.Namespace) -> None:
    """``--seeds`` takes every value after it, overrides too (argparse cannot tell them apart): an
    override always holds "=", a seed never does."""
    args.overrides = [*args.overrides, *(item for item in args.seeds if "=" in item),
                      *([f"eval.protocol={args.protocol}"] if args.protocol else [])]
    try:
        args.seeds = [int(item) for item in args.seeds if "=" not in item]
    except ValueError:
        raise UserError(f"--seeds {' '.join(args.seeds)}: seeds are integers, e.g. --seeds 0 1 2.") from None


def run(args: argparse.Namespace) -> int:
    split_seeds(args)
    sweep = plan_sweep(args)
    failed: dict[int, str] = {}
    if not args.report_only:
        failed, stop_code = run_seeds(sweep, args.debug)
        if stop_code is not None:
            return stop_code
    written = write_report(sweep, failed)
    print(f"wrote {', '.join(path.name for path in written)} to {sweep.directory}")
    if failed:
        raise RunStopped(1, f"{len(failed)} of {len(sweep.seeds)} seeds failed: "
                            + "; ".join(f"seed {seed}: {why}" for seed, why in failed.items()))
    return 0


main = main_for(__name__)

if __name__ == "__main__":
    sys.exit(main())
