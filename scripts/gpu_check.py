"""Everything a GPU run must show, in one command with nothing downloaded:

    python scripts/gpu_check.py                       # on a GPU machine: about 6-8 minutes
    python scripts/gpu_check.py --device cpu --quick  # a dry run of every step (CI runs this)

1. ``scripts/benchmark.py`` for DCGAN-64 at batch 128: our trainer against the bare loop of the
   identical step, once per switch set (plain, ``--amp``, ``--channels-last``, ``--compile``), each in a
   process of its own; the evaluation against the FID Inception forward alone; one evaluation of
   50,000 samples (FID + IS) against cached reference statistics, its time and peak GPU memory.
2. Where a ratio misses its target (trainer >= 0.97x the bare loop, evaluation >= 0.85x Inception
   alone) the same benchmark again with ``--profile``: torch.profiler tables of where the time goes.
3. The test suite with CUDA visible (``python -m pytest``, the CUDA-only tests included), last, so a
   slow or failing suite cannot cost the measurements; it gets the time that is left.

Every figure, with the GPU's name and the torch, CUDA and cuDNN versions, goes to
``OUT/gpu.json`` and a markdown table to ``OUT/gpu.md`` (``--out``, default ``docs/benchmarks``;
written after every step, so an interrupted check keeps what it measured). Benchmarks use
random-init Inception networks, which cost what the real ones cost.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"train_ratio_vs_plain": 0.97, "eval_ratio_vs_inception": 0.85}
FULL_EVAL_TARGET_SECONDS = 60.0
SWITCHES = {"plain": [], "amp": ["--amp"], "channels_last": ["--channels-last"], "compile": ["--compile"]}


def settings(args: argparse.Namespace) -> dict[str, list[str]]:
    """benchmark.py arguments per step: the issue's sizes on a GPU, tiny ones for a dry run."""
    device = ["--device", args.device]
    if args.quick:
        size = ["--image-size", "32", "--width", "8", "--batch-size", "8", "--images", "32", "--num-workers", "0"]
        return {"train": [*device, *size, "--skip-eval", "--iters", "2", "--warmup", "1", "--repeats", "1"],
                "eval": [*device, *size, "--skip-train", "--eval-samples", "8", "--eval-batch-size", "4",
                         "--repeats", "1"],
                "full_eval": [*device, *size, "--skip-train", "--skip-eval", "--full-eval", "20",
                              "--eval-batch-size", "10"]}
    size = ["--image-size", "64", "--width", "64", "--batch-size", "128", "--images", "2048", "--num-workers", "8"]
    return {"train": [*device, *size, "--skip-eval", "--iters", "100", "--warmup", "20", "--repeats", "3"],
            "eval": [*device, *size, "--skip-train", "--eval-samples", "2048", "--eval-batch-size", "256",
                     "--repeats", "2"],
            "full_eval": [*device, *size, "--skip-train", "--skip-eval", "--full-eval", "50000",
                          "--eval-batch-size", "500"]}


def run_benchmark(arguments: list[str], timeout: float) -> dict[str, Any]:
    """One ``scripts/benchmark.py`` process; its JSON, or ``{"error": ...}`` if it failed."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        command = [sys.executable, str(ROOT / "scripts" / "benchmark.py"), *arguments, "--json", str(out)]
        print("$", " ".join(command[1:]), flush=True)
        started = time.perf_counter()
        try:
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        if done.returncode != 0 or not out.is_file():
            return {"error": f"exit code {done.returncode}: {done.stderr.strip()[-1500:]}"}
        result = json.loads(out.read_text())
        result["wall_seconds"] = time.perf_counter() - started
        return result


def run_tests(args: argparse.Namespace, timeout: float) -> dict[str, Any]:
    """The test suite (or, with ``--quick``, the GPU tests of tests/test_cuda.py, which skip without one)."""
    selection = ["tests/test_cuda.py"] if args.quick else []
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *selection]
    print("$", " ".join(command[1:]), flush=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=max(timeout, 1), env=env)
    except subprocess.TimeoutExpired as expired:
        output = (expired.stdout or b"").decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
        return {"exit_code": None, "summary": f"timed out after {timeout:.0f} s", "tail": output[-3000:]}
    lines = [line for line in done.stdout.strip().splitlines() if line.strip()]
    summary = lines[-1].strip("= ") if lines else ""
    counts = {kind: int(number) for number, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?)", summary)}
    failures = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    return {"exit_code": done.returncode, "summary": summary, "counts": counts, "failures": failures,
            "seconds": time.perf_counter() - started}


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
    for switch, result in report["training"].items():
        if "train_ratio_vs_plain" in result:
            value = result["train_ratio_vs_plain"]
            checks[f"train_ratio_vs_plain[{switch}]"] = {"value": value, "target": ">= 0.97", "met": value >= 0.97}
    evaluation = report.get("evaluation", {})
    if "eval_ratio_vs_inception" in evaluation:
        value = evaluation["eval_ratio_vs_inception"]
        checks["eval_ratio_vs_inception"] = {"value": value, "target": ">= 0.85", "met": value >= 0.85}
    full = report.get("full_evaluation", {})
    if "full_eval_seconds" in full:
        value = full["full_eval_seconds"]
        checks["full_eval_seconds"] = {"value": value, "target": f"< {FULL_EVAL_TARGET_SECONDS:.0f} s "
                                       f"({full['full_eval_samples']} samples)",
                                       "met": value < FULL_EVAL_TARGET_SECONDS}
    return checks


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [f"# GPU check: {env['gpu'] or env['device']}", "",
             f"torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, Python {env['python']}, "
             f"{env['cpu_count']} CPU cores, {env['date']}. Command: `{report['command']}`.", "",
             "| switches | our trainer (img/s) | bare loop (img/s) | ratio (target >= 0.97) |", "| --- | --- | --- | --- |"]
    for switch, result in report["training"].items():
        if "error" in result:
            lines.append(f"| {switch} | failed: {result['error'][:200]} | | |")
        else:
            lines.append(f"| {switch} | {result['train_img_per_s']:,.0f} | {result['plain_img_per_s']:,.0f} | "
                         f"{result['train_ratio_vs_plain']:.3f} |")
    evaluation, full = report.get("evaluation", {}), report.get("full_evaluation", {})
    lines += ["", "| evaluation | value |", "| --- | --- |"]
    if "eval_img_per_s" in evaluation:
        lines += [f"| ours, {evaluation['options']['eval_samples']} samples | {evaluation['eval_img_per_s']:,.0f} img/s |",
                  f"| FID Inception forward alone | {evaluation['inception_only_img_per_s']:,.0f} img/s |",
                  f"| ratio (target >= 0.85) | {evaluation['eval_ratio_vs_inception']:.3f} |",
                  f"| PyTorch-Ignite tutorial's pipeline | {evaluation['seed_eval_img_per_s']:,.0f} img/s "
                  f"(ours {evaluation['eval_speedup_vs_seed']:.1f}x faster) |"]
    elif "error" in evaluation:
        lines.append(f"| failed | {evaluation['error'][:300]} |")
    if "full_eval_seconds" in full:
        peak = full.get("full_eval_cuda_peak_mb")
        lines += [f"| {full['full_eval_samples']:,} samples, FID + IS (target < 60 s) | {full['full_eval_seconds']:.1f} s "
                  f"({full['full_eval_img_per_s']:,.0f} img/s), peak GPU memory "
                  f"{'n/a' if peak is None else f'{peak:,.0f} MB'} |"]
    elif "error" in full:
        lines.append(f"| full evaluation failed | {full['error'][:300]} |")
    checks = report.get("targets", {})
    if checks:
        lines += ["", "Targets: " + "; ".join(f"{name} {check['value']:.3g} ({check['target']}): "
                                              f"{'met' if check['met'] else 'MISSED'}" for name, check in checks.items())]
    tests = report.get("tests")
    if tests:
        lines += ["", f"Tests with CUDA visible: {tests['summary']} (exit code {tests['exit_code']})."]
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
    parser.add_argument("--budget", type=float, default=480.0, help="wall seconds for the whole check (default 8 min)")
    parser.add_argument("--switches", default=",".join(SWITCHES),
                        help=f"comma-separated switch sets to time the trainer with (default {','.join(SWITCHES)})")
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--only", choices=("train", "eval", "full_eval", "tests"), action="append",
                        help="rerun only these steps, keeping the other results already in OUT/gpu.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    switches = [name.strip() for name in args.switches.split(",") if name.strip()]
    unknown = [name for name in switches if name not in SWITCHES]
    if unknown or not switches:
        print(f"error: --switches {args.switches!r}: choose from {','.join(SWITCHES)}", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.budget
    steps = set(args.only or ("train", "eval", "full_eval", "tests"))
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
    report.setdefault("training", {})
    plan = settings(args)

    def left() -> float:
        return max(deadline - time.monotonic(), 1.0)

    if "train" in steps:
        for switch in switches:
            report["training"][switch] = run_benchmark([*plan["train"], *SWITCHES[switch]], left())
            write(report, args.out)
    if "eval" in steps:
        report["evaluation"] = run_benchmark(plan["eval"], left())
        write(report, args.out)
    if "full_eval" in steps:
        report["full_evaluation"] = run_benchmark(plan["full_eval"], left())
        write(report, args.out)
    profile_missed_targets(report, plan, args, left)
    if "tests" in steps and not args.skip_tests:
        report["tests"] = run_tests(args, left())
    write(report, args.out)
    print(markdown(report))
    failed = [name for name, check in report["targets"].items() if not check["met"]]
    broken = [name for name, result in (*report["training"].items(), ("evaluation", report.get("evaluation", {})),
                                        ("full_evaluation", report.get("full_evaluation", {}))) if "error" in result]
    tests_failed = bool(report.get("tests")) and report["tests"]["exit_code"] != 0
    if broken or tests_failed:
        return 1
    if failed and not args.quick:  # a dry run on a CPU is not held to GPU targets
        print(f"targets missed: {', '.join(failed)} (profiles in {args.out})", file=sys.stderr)
    return 0


def profile_missed_targets(report: dict[str, Any], plan: dict[str, list[str]], args: argparse.Namespace,
                           left) -> None:
    """Profile the trainer of each switch set and the evaluation that missed its ratio target."""
    if args.quick:
        return
    for switch, result in report["training"].items():
        if result.get("train_ratio_vs_plain", 1.0) < TARGETS["train_ratio_vs_plain"]:
            folder = args.out / f"profile_{switch}"
            run_benchmark([*plan["train"], *SWITCHES[switch], "--repeats", "1", "--profile", str(folder)], left())
            result["profile"] = str(folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder)
    evaluation = report.get("evaluation", {})
    if evaluation.get("eval_ratio_vs_inception", 1.0) < TARGETS["eval_ratio_vs_inception"]:
        folder = args.out / "profile_evaluation"
        run_benchmark([*plan["eval"], "--repeats", "1", "--profile", str(folder)], left())
        evaluation["profile"] = str(folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder)
    write(report, args.out)


if __name__ == "__main__":
    sys.exit(main())
