"""Score one checkpoint three ways: the live generator, the EMA generator as averaged (its
BatchNorm running statistics copied from the live generator: "naive"), and the EMA generator
with BatchNorm recalibrated on seeded latents (what gan_ignite scores and samples).

    python scripts/ema_batchnorm.py --checkpoint runs/x/checkpoints/checkpoint_1000.pt [overrides]

The run must have been trained with ``train.ema_decay``. All three use the run's eval settings
(same latents, reference statistics, feature network), so the numbers are directly comparable.
Prints one line per model and a JSON line with all values.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from gan_ignite import data as data_module
from gan_ignite.checkpoints import MODEL_KEYS, read_checkpoint
from gan_ignite.command import outcome, report
from gan_ignite.evaluation import prepare_for_scoring, setup_evaluation
from gan_ignite.metrics._base import resolve_device
from gan_ignite.networks import build
from gan_ignite.run_dir import load_run_config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. eval.num_samples=10000")
    args = parser.parse_args()
    code, text = outcome(lambda: score_three_ways(args))
    report(text)
    return code


def score_three_ways(args: argparse.Namespace) -> int:
    _, config = load_run_config(args.checkpoint, args.overrides)
    device = resolve_device(args.device)
    state = read_checkpoint(args.checkpoint, "Pass a checkpoint written by gan_ignite.train.")
    if MODEL_KEYS["ema"] not in state:
        print(f"{args.checkpoint} holds no EMA generator (train.ema_decay was null)", file=sys.stderr)
        return 2
    dataset = data_module.load_dataset_everywhere(config.data)
    # one generator module and one evaluation (feature network, reference statistics, latents);
    # each variant loads its weights and buffers into it and is scored with the same everything else
    generator = build(config, "generator").to(device)
    evaluation = setup_evaluation(config, dataset, generator, device)
    results = {}
    for label, key, recalibrate in (("live", "generator", False), ("ema_naive", "ema", False),
                                    ("ema_recalibrated", "ema", True)):
        generator.load_state_dict(state[MODEL_KEYS[key]])
        # prepare_for_scoring recalibrates BatchNorm for "ema" only; "generator" just sets eval mode
        prepare_for_scoring(generator, config, key if recalibrate else "generator", device)
        started = time.perf_counter()
        values = evaluation.run()
        results[label] = {name: value for name, value in values.items() if isinstance(value, float)}
        print(f"{label:>17}: " + ", ".join(f"{name} {value:.4g}" for name, value in results[label].items())
              + f"  ({time.perf_counter() - started:.1f} s)", flush=True)
    print(json.dumps({"checkpoint": str(args.checkpoint), **results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
