"""Everything a GPU run must show, in one command with nothing downloaded:

    python scripts/gpu_check.py                       # on a GPU machine: budgeted to 6 minutes
    python scripts/gpu_check.py --device cpu --quick  # a dry run of every step (CI runs this)

Steps, in this order, each a process of its own with its own timeout, each phase's wall time kept:

1. ``train``: ``scripts/benchmark.py`` for DCGAN-64 at batch 128, our trainer against the bare loop
   of the identical step for every switch set (plain, amp, channels_last, compile, all three) in
   one process (imports, data and the CUDA context paid once), and the trainer's host overhead
   per iteration around a no-op step.
2. ``eval``: one evaluation of 2,048 samples against the FID Inception alone on the same prepared
   images, in every protocol.
3. ``full_eval``: one evaluation of 50,000 samples (FID + IS) against cached reference statistics,
   against the Inception alone on as many images.
4. ``torchrun``: a 1-process ``torchrun`` + NCCL run of ``configs/celeba.yaml`` for one epoch on a
   generated folder of 20,000 178x218 JPEGs: time per iteration, the evaluation's time and parts,
   and the delay from "End of run" to the process's exit.
5. ``peers``: the FID of two folders of 10,000 64x64 JPEGs by our metrics CLI (pytorch-fid,
   torch-fidelity and clean-fid protocols) and by those packages, whole processes, at fp32 and at
   TF32 (each side alike: ``peer_speedup_min``; fp32 alone with ``--device cpu``, which has no TF32).
6. ``tests``: the test suite with CUDA visible (``--test-workers`` pytest-xdist processes), last,
   with the time that is left.

A step that cannot fit in what is left of ``--budget`` is skipped and says so (rerun it with
``--only STEP``, which keeps the other results in OUT/gpu.json). Every figure, the targets and
``check_seconds`` (the whole check's wall time) go to ``OUT/gpu.json`` and a markdown table to
``OUT/gpu.md`` (``--out``, default ``docs/benchmarks``; written after every step). Benchmarks use
random-init Inception networks, which cost what the real ones cost.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("train", "eval", "full_eval", "torchrun", "peers", "tests")
SWITCH_SETS = ("plain", "amp", "channels_last", "compile", "all")
PROTOCOLS = ("tutorial", "pytorch-fid", "torch-fidelity", "clean-fid")
PEER_PROTOCOLS = ("pytorch-fid", "torch-fidelity", "clean-fid")
# seconds a step needs at least on a GPU (estimates: imports ~9 s, torch.compile ~40 s per set); a step
# is skipped when less than this is left
MIN_SECONDS = {"train": 60, "eval": 30, "full_eval": 30, "torchrun": 30, "peers": 60, "tests": 60}
TARGETS = {"train_ratio_vs_plain": 0.97, "host_overhead_us_per_iteration": 300.0,
           "eval_ratio_vs_inception": {"tutorial": 0.8, "clean-fid": 0.8, "pytorch-fid": 0.95,
                                       "torch-fidelity": 0.95},
           "full_eval_time_vs_inception": 1.1, "torchrun_eval_time_vs_network": 1.2, "exit_delay_seconds": 5.0,
           "peer_speedup_min": 1.1, "check_seconds": 360.0}


def plan(args: argparse.Namespace, data_dir: Path) -> dict[str, list[str]]:
    """benchmark.py arguments per step: the issue's sizes on a GPU, tiny ones for a dry run."""
    device = ["--device", args.device, "--data-dir", str(data_dir)]
    # TF32 exists on NVIDIA GPUs only: on a CPU both precisions compute fp32, so the peers run once
    precisions = ["fp32", "tf32"] if args.device == "cuda" else ["fp32"]
    if args.quick:
        size = ["--image-size", "32", "--width", "8", "--batch-size", "8", "--images", "32", "--num-workers", "0"]
        return {"train": [*device, *size, "--skip-eval", "--iters", "2", "--warmup", "1", "--repeats", "1",
                          "--switch-sets", *args.switches],
                "eval": [*device, *size, "--skip-train", "--eval-samples", "8", "--eval-batch-size", "4",
                         "--repeats", "1", "--protocols", *args.protocols],
                "full_eval": [*device, *size, "--skip-train", "--skip-eval", "--full-eval", "20",
                              "--eval-batch-size", "10"],
                "peers": [*device, *size, "--skip-train", "--skip-eval", "--peers", "--peer-images", "8",
                          "--repeats", "1", "--eval-batch-size", "4", "--peer-protocols", "torch-fidelity",
                          "--peer-precisions", *precisions]}
    size = ["--image-size", "64", "--width", "64", "--batch-size", "128", "--images", "2048", "--num-workers", "8"]
    return {"train": [*device, *size, "--skip-eval", "--iters", "100", "--warmup", "20", "--repeats", "2",
                      "--switch-sets", *args.switches],
            "eval": [*device, *size, "--skip-train", "--eval-samples", "2048", "--eval-batch-size", "256",
                     "--repeats", "2", "--protocols", *args.protocols],
            "full_eval": [*device, *size, "--skip-train", "--skip-eval", "--full-eval", "50000",
                          "--eval-batch-size", "500"],
            "peers": [*device, *size, "--skip-train", "--skip-eval", "--peers", "--peer-images", "10000",
                      "--repeats", "1", "--eval-batch-size", "250", "--num-workers", "12",
                      "--peer-protocols", *PEER_PROTOCOLS, "--peer-precisions", *precisions]}


def run_benchmark(arguments: list[str], timeout: float) -> dict[str, Any]:
    """One ``scripts/benchmark.py`` process; its JSON (with ``wall_seconds``), or ``{"error": ...}``."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        command = [sys.executable, str(ROOT / "scripts" / "benchmark.py"), *arguments, "--json", str(out)]
        print("$", " ".join(command[1:]), flush=True)
        started = time.perf_counter()
        try:
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=_env())
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s", "wall_seconds": time.perf_counter() - started}
        if done.returncode != 0 or not out.is_file():
            return {"error": f"exit code {done.returncode}: {done.stderr.strip()[-1500:]}",
                    "wall_seconds": time.perf_counter() - started}
        result = json.loads(out.read_text())
        result["wall_seconds"] = time.perf_counter() - started
        return result


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra}


# ----------------------------------------------------------------------------- torchrun + NCCL
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
SPEED = re.compile(r"iteration (\d+)/\d+ .* ([\d.]+) img/s")


def run_torchrun(args: argparse.Namespace, work: Path, timeout: float) -> dict[str, Any]:
    """``torchrun --standalone --nproc_per_node=1 -m gan_ignite.train --config configs/celeba.yaml``
    on a generated JPEG folder for one epoch: img/s, the evaluation's record and the exit delay."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from benchmark import synthetic_folder

    started = time.perf_counter()
    count = 64 if args.quick else 20_000
    images = synthetic_folder(work / "celeba", count, 178, seed=5, height=218)
    data_seconds = time.perf_counter() - started
    run_dir = work / "celeba_run"
    overrides = [f"output_dir={run_dir}", "data.name=celeba", f"data.root={images}", "train.max_epochs=1",
                 "eval.inception_weights=random", f"eval.stats_cache_dir={work / 'celeba_cache'}",
                 "train.checkpoint_every_iters=null"]
    env = _env()
    if args.quick:
        overrides += ["train.batch_size=16", "data.num_workers=2", "eval.num_samples=32", "eval.batch_size=16",
                      "model.g_features=8", "model.d_features=8", "data.image_size=32", "dist.backend=gloo",
                      "log.every=1"]
        env["CUDA_VISIBLE_DEVICES"] = ""
    else:
        overrides += ["dist.backend=nccl"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m",
               "gan_ignite.train", "--config", "configs/celeba.yaml", *overrides]
    print("$", " ".join(command[1:]), flush=True)
    log = work / "torchrun.log"
    with log.open("w") as stream:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stream, text=True)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            return {"error": f"timed out after {timeout:.0f} s", "log_tail": log.read_text()[-2000:]}
    exited = datetime.datetime.now()
    text = log.read_text()
    if process.returncode != 0:
        return {"error": f"exit code {process.returncode}", "log_tail": text[-2000:]}
    ends = [line for line in text.splitlines() if line.rstrip().endswith("End of run") and LOG_TIME.match(line)]
    end = datetime.datetime.strptime(LOG_TIME.match(ends[-1])[1], "%Y-%m-%d %H:%M:%S,%f") if ends else None
    speeds = [float(match[2]) for match in SPEED.finditer(text) if int(match[1]) > 1]
    records = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    evaluation = [record for record in records if record["kind"] == "eval"][-1]
    seconds = evaluation.get("seconds", {})
    result = {"images": count, "data_seconds": data_seconds, "wall_seconds": time.perf_counter() - started,
              "train_img_per_s": max(speeds) if speeds else None,
              "eval_samples": evaluation["num_samples"], "eval_seconds_parts": seconds,
              "exit_delay_seconds": (exited - end).total_seconds() if end else None}
    if seconds.get("network"):
        result["eval_time_vs_network"] = seconds["total"] / seconds["network"]
    return result


# ----------------------------------------------------------------------------- tests
def run_tests(args: argparse.Namespace, timeout: float) -> dict[str, Any]:
    """The test suite with CUDA visible (with ``--quick``, tests/test_cuda.py alone), in parallel
    pytest-xdist workers (every test keeps to its own folders and ports)."""
    selection = ["tests/test_cuda.py"] if args.quick else []
    parallel = ["-n", "0" if args.quick else str(args.test_workers)]
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *parallel, *selection]
    print("$", " ".join(command[1:]), flush=True)
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=max(timeout, 1), env=_env())
    except subprocess.TimeoutExpired as expired:
        output = (expired.stdout or b"").decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
        return {"exit_code": None, "summary": f"timed out after {timeout:.0f} s", "tail": output[-3000:],
                "wall_seconds": time.perf_counter() - started}
    lines = [line for line in done.stdout.strip().splitlines() if line.strip()]
    summary = lines[-1].strip("= ") if lines else ""
    counts = {kind: int(number) for number, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?)", summary)}
    failures = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    return {"exit_code": done.returncode, "summary": summary, "counts": counts, "failures": failures,
            "wall_seconds": time.perf_counter() - started}


# ----------------------------------------------------------------------------- report
def environment(device: str) -> dict[str, Any]:
    import torch

    gpu = torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else None
    return {"gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "python": platform.python_version(), "cpu_count": os.cpu_count(), "device": device,
            "date": time.strftime("%Y-%m-%d")}


def verdicts(report: dict[str, Any]) -> dict[str, Any]:
    """Each target against what was measured: ``{name: {"value", "target", "met"}}``."""
    checks: dict[str, Any] = {}

    def check(name: str, value: Any, target: float, at_most: bool = False) -> None:
        if isinstance(value, (int, float)):
            checks[name] = {"value": value, "target": f"{'<=' if at_most else '>='} {target:g}",
                            "met": value <= target if at_most else value >= target}

    for switch, result in report.get("training", {}).items():
        check(f"train_ratio_vs_plain[{switch}]", result.get("train_ratio_vs_plain"), TARGETS["train_ratio_vs_plain"])
        check(f"host_overhead_us_per_iteration[{switch}]", result.get("host_overhead_us_per_iteration"),
              TARGETS["host_overhead_us_per_iteration"], at_most=True)
    for protocol, values in report.get("evaluation", {}).get("eval_by_protocol", {}).items():
        check(f"eval_ratio_vs_inception[{protocol}]", values.get("eval_ratio_vs_inception"),
              TARGETS["eval_ratio_vs_inception"][protocol])
    check("full_eval_time_vs_inception", report.get("full_evaluation", {}).get("full_eval_time_vs_inception"),
          TARGETS["full_eval_time_vs_inception"], at_most=True)
    torchrun = report.get("torchrun", {})
    check("exit_delay_seconds", torchrun.get("exit_delay_seconds"), TARGETS["exit_delay_seconds"], at_most=True)
    check("torchrun_eval_time_vs_network", torchrun.get("eval_time_vs_network"),
          TARGETS["torchrun_eval_time_vs_network"], at_most=True)
    for precision, values in report.get("peers", {}).get("peers_by_precision", {}).items():
        check(f"peer_speedup_min[{precision}]", values.get("peer_speedup_min"), TARGETS["peer_speedup_min"])
    check("check_seconds", report.get("check_seconds"), TARGETS["check_seconds"], at_most=True)
    return checks


def _number(value: Any, digits: str = ",.0f") -> str:
    return format(value, digits) if isinstance(value, (int, float)) else "n/a"


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [f"# GPU check: {env['gpu'] or env['device']}", "",
             f"torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, Python {env['python']}, "
             f"{env['cpu_count']} CPU cores, {env['date']}. Command: `{report['command']}`; the whole check took "
             f"{_number(report.get('check_seconds'))} s.", "",
             "| switches | our trainer (img/s) | bare loop (img/s) | ratio (>= 0.97) | host overhead (us/iteration, "
             "<= 300) | phases (s) |", "| --- | --- | --- | --- | --- | --- |"]
    for switch, result in report.get("training", {}).items():
        if "error" in result:
            lines.append(f"| {switch} | failed: {result['error'][:200]} | | | | |")
            continue
        phases = ", ".join(f"{name} {value:.1f}" for name, value in result.get("phase_seconds", {}).items())
        lines.append(f"| {switch} | {_number(result['train_img_per_s'])} | {_number(result['plain_img_per_s'])} | "
                     f"{result['train_ratio_vs_plain']:.3f} | {_number(result.get('host_overhead_us_per_iteration'))} "
                     f"| {phases} |")
    evaluation = report.get("evaluation", {})
    lines += ["", "| evaluation | ours (img/s) | Inception alone (img/s) | ratio | parts (s) |",
              "| --- | --- | --- | --- | --- |"]
    for protocol, values in evaluation.get("eval_by_protocol", {}).items():
        parts = ", ".join(f"{name} {value:.2f}" for name, value in values.get("eval_seconds_parts", {}).items())
        target = TARGETS["eval_ratio_vs_inception"][protocol]
        lines.append(f"| {protocol} | {_number(values['eval_img_per_s'])} | "
                     f"{_number(values['inception_only_img_per_s'])} | {values['eval_ratio_vs_inception']:.3f} "
                     f"(>= {target}) | {parts} |")
    for name, result in (("evaluation", evaluation), ("full evaluation", report.get("full_evaluation", {})),
                         ("torchrun", report.get("torchrun", {})), ("peers", report.get("peers", {}))):
        if "error" in result or "skipped" in result:
            lines.append(f"| {name}: {result.get('error') or result.get('skipped')} | | | | |"[:400])
    full = report.get("full_evaluation", {})
    if "full_eval_seconds" in full:
        lines += ["", f"{full['full_eval_samples']:,} samples, FID + IS: {full['full_eval_seconds']:.1f} s "
                      f"({_number(full['full_eval_img_per_s'])} img/s), {full['full_eval_time_vs_inception']:.2f}x the "
                      f"Inception alone on as many images (<= 1.1); peak GPU memory "
                      f"{_number(full.get('full_eval_cuda_peak_mb'))} MB."]
    torchrun = report.get("torchrun", {})
    if "exit_delay_seconds" in torchrun:
        lines += ["", f"torchrun, 1 process, configs/celeba.yaml, {torchrun['images']:,} JPEGs: "
                      f"{_number(torchrun.get('train_img_per_s'))} img/s; evaluation of {torchrun['eval_samples']} "
                      f"samples {_number(torchrun['eval_seconds_parts'].get('total'), '.1f')} s "
                      f"({_number(torchrun.get('eval_time_vs_network'), '.2f')}x its network time, <= 1.2); "
                      f"exit {_number(torchrun['exit_delay_seconds'], '.1f')} s after 'End of run' (<= 5)."]
    for precision, values in report.get("peers", {}).get("peers_by_precision", {}).items():
        lines += ["", f"FID of two folders of {values['peer_images']:,} images at {precision}, whole processes (s): "
                      + "; ".join(f"{name}: ours {values['ours_seconds'][name]:.1f}, package "
                                  f"{values['peer_seconds'].get(name, float('nan')):.1f}"
                                  for name in values["ours_seconds"])
                      + f". peer_speedup_min {values['peer_speedup_min']:.2f} (>= 1.1)."]
    checks = report.get("targets", {})
    if checks:
        lines += ["", "Targets: " + "; ".join(f"{name} {check['value']:.3g} ({check['target']}): "
                                              f"{'met' if check['met'] else 'MISSED'}" for name, check in checks.items())]
    tests = report.get("tests")
    if tests:
        lines += ["", f"Tests with CUDA visible: {tests.get('summary') or tests.get('skipped')} "
                      f"(exit code {tests.get('exit_code')})."]
        lines += [f"- {failure}" for failure in tests.get("failures", [])]
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    report["targets"] = verdicts(report)
    for name, text in (("gpu.json", json.dumps(report, indent=2) + "\n"), ("gpu.md", markdown(report))):
        temporary = out / f".{name}.tmp"
        temporary.write_text(text)
        os.replace(temporary, out / name)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes and only the CUDA tests: a dry run")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    parser.add_argument("--budget", type=float, default=360.0, help="wall seconds for the whole check (default 6 min)")
    parser.add_argument("--switches", nargs="+", default=list(SWITCH_SETS), choices=SWITCH_SETS,
                        help="switch sets the trainer is timed with (default: all five)")
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS,
                        help="protocols the evaluation is timed in (default: all four)")
    parser.add_argument("--test-workers", type=int, default=8, help="pytest-xdist workers for the suite")
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--only", choices=STEPS, action="append",
                        help="run only these steps, keeping the other results already in OUT/gpu.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    deadline = started + args.budget
    steps = [step for step in STEPS if step in (args.only or STEPS) and not (step == "tests" and args.skip_tests)]
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda but no CUDA device is visible; use --device cpu --quick for a dry run",
                  file=sys.stderr)
            return 2
    previous = args.out / "gpu.json"
    report: dict[str, Any] = json.loads(previous.read_text()) if args.only and previous.is_file() else {}
    report.update(environment=environment(args.device), command=" ".join(["python scripts/gpu_check.py",
                                                                          *(argv if argv is not None else sys.argv[1:])]))

    def left() -> float:
        return deadline - time.monotonic()

    with tempfile.TemporaryDirectory(prefix="gan_ignite_gpu_check_") as folder:
        work = Path(folder)
        benchmarks = plan(args, work / "images")
        runners: dict[str, Callable[[float], dict[str, Any]]] = {
            "train": lambda timeout: run_benchmark(benchmarks["train"], timeout),
            "eval": lambda timeout: run_benchmark(benchmarks["eval"], timeout),
            "full_eval": lambda timeout: run_benchmark(benchmarks["full_eval"], timeout),
            "torchrun": lambda timeout: run_torchrun(args, work, timeout),
            "peers": lambda timeout: run_benchmark(benchmarks["peers"], timeout),
            "tests": lambda timeout: run_tests(args, timeout)}
        keys = {"train": "training", "eval": "evaluation", "full_eval": "full_evaluation"}
        for step in steps:
            if not args.quick and left() < MIN_SECONDS[step]:
                report[keys.get(step, step)] = {"skipped": f"{left():.0f} s of the --budget left; rerun with --only "
                                                           f"{step}"}
                continue
            result = runners[step](max(left(), MIN_SECONDS[step]) if not args.quick else 600.0)
            if step == "train":  # one entry per switch set
                result = result.get("training") or {"all": {"error": result.get("error", "no training results")}}
            report[keys.get(step, step)] = result
            report["check_seconds"] = time.monotonic() - started
            write(report, args.out)
    report["check_seconds"] = time.monotonic() - started
    write(report, args.out)
    print(markdown(report))
    broken = [name for name, result in report.items() if isinstance(result, dict) and "error" in result]
    broken += [name for name, result in report.get("training", {}).items() if "error" in result]
    tests_failed = bool(report.get("tests")) and report["tests"].get("exit_code") not in (0, None) or \
        (report.get("tests", {}).get("summary", "").startswith("timed out"))
    if broken or tests_failed:
        print(f"failed steps: {', '.join(broken) or 'tests'}", file=sys.stderr)
        return 1
    missed = [name for name, check in report["targets"].items() if not check["met"]]
    if missed and not args.quick:  # a dry run on a CPU is not held to GPU targets
        print(f"targets missed: {', '.join(missed)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
