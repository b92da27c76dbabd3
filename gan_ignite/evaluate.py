"""Score a saved generator: ``python -m gan_ignite.evaluate --checkpoint CKPT [--num-samples N]``.

The config is read from the checkpoint's run directory (``RUN_DIR/config.yaml``): the run's own
``eval.*`` settings, latents and reference set are used, so without overrides the result equals
the ``history.jsonl`` record written when the checkpoint was saved. ``--num-samples`` and dotted
overrides change the evaluation (e.g. ``--num-samples 50000 eval.num_real=all``). Runs under
``torchrun`` or with ``dist.nproc_per_node=N`` (the same result as one process). The metrics are
printed and appended as one JSON line to ``RUN_DIR/evaluations.jsonl`` (a file of its own, so a
run that is still training keeps sole ownership of ``history.jsonl``; it only reads the run and
takes no lock). Non-finite values are not printed: the command says which checkpoint gave them
and exits with code 1.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from gan_ignite.command import main_for
from gan_ignite.config import ScoredModel
from gan_ignite.metrics.options import Precision, ProtocolName

# round-off between processes, batch compositions and BLAS threads stays far below these
REPRODUCE_RTOL, REPRODUCE_ATOL = 1e-6, 1e-9
COMPARED_FIELDS = ("num_samples", "num_real", "real_subset_seed", "feature_network", "protocol", "inception_precision",
                   "inception_weights", "reference_stats_sha256")
INTERRUPTED = "Interrupted by Ctrl-C; nothing was written."


def evaluate_checkpoint(local_rank: int, config: Any, checkpoint: Path, model: str, device_name: Optional[str],
                        allowed: set[str]) -> None:
    """On every rank: score ``checkpoint``; rank 0 prints and appends the record."""
    import ignite.distributed as idist

    from gan_ignite import data as data_module
    from gan_ignite.errors import RunStopped
    from gan_ignite.evaluation import load_generator, setup_evaluation, warn_if_random
    from gan_ignite.io import append_text
    from gan_ignite.metrics._base import resolve_device
    from gan_ignite.metrics.timing import describe_seconds
    from gan_ignite.run_dir import history_record, jsonl, run_directory

    distributed = idist.get_world_size() > 1
    device = idist.device() if distributed or device_name is None else resolve_device(device_name)
    generator, trainer_state = load_generator(config, checkpoint, device, model, allowed)
    dataset = data_module.load_dataset_everywhere(config.data)
    evaluation = setup_evaluation(config, dataset, generator, device, model=model)
    warn_if_random(evaluation.record_fields)
    values = evaluation.run()
    if idist.get_rank() != 0:
        return
    iteration, epoch_length = trainer_state.get("iteration"), trainer_state.get("epoch_length")
    epoch = iteration // epoch_length if iteration is not None and epoch_length else None
    record = {"checkpoint": str(checkpoint), "epoch": epoch, "iteration": iteration, **values}
    not_finite = [name for name, value in values.items() if isinstance(value, float) and not math.isfinite(value)]
    if not_finite:
        raise RunStopped(1, f"The evaluation of '{checkpoint}' gave non-finite {', '.join(not_finite)}: its "
                            f"{model}'s images are not finite numbers (a diverged checkpoint?). Nothing was "
                            f"recorded; evaluate an earlier checkpoint of the run.")
    for name, value in values.items():
        if isinstance(value, float):
            print(f"{name}: {value:.6g}")
    print(f"seconds: {describe_seconds(values['seconds'])}")
    run_dir = run_directory(checkpoint)
    history = run_dir.history.lines()
    if history.bad_lines:
        print(f"note: {history.report()}")
    compare_with_history(record, history_record(history.records, iteration, model))
    append_text(run_dir.evaluations_path, jsonl([record]),
                "The values above are not recorded there; the file keeps its earlier records.")


def compare_with_history(record: dict[str, Any], reference: Optional[dict[str, Any]]) -> None:
    """Say whether this result reproduces the training-time record of the same checkpoint."""
    if reference is None:
        return
    if any(reference.get(field) != record.get(field) for field in COMPARED_FIELDS):
        print(f"note: history.jsonl has a record of iteration {record['iteration']} with other settings "
              f"({', '.join(f'{f}={reference.get(f)}' for f in COMPARED_FIELDS if reference.get(f) != record.get(f))})"
              "; the values are not comparable.")
        return
    shared = [key for key, value in reference.items() if isinstance(value, float) and key in record]
    same = all(math.isclose(record[key], reference[key], rel_tol=REPRODUCE_RTOL, abs_tol=REPRODUCE_ATOL)
               for key in shared)
    worst = max((abs(record[key] - reference[key]) / abs(reference[key]) for key in shared
                 if math.isfinite(reference[key]) and abs(reference[key]) > REPRODUCE_ATOL), default=0.0)
    print(f"{'reproduces' if same else 'DIFFERS FROM'} the history.jsonl record of iteration {record['iteration']} "
          f"(largest relative difference {worst:.1e})")


def require_protocol_with_reference_stats(overrides: Sequence[str]) -> None:
    """``eval.reference_stats=FILE`` given here needs the protocol FILE was computed with, given here
    too (``--protocol`` or ``eval.protocol=``), as training requires: the run's own protocol says
    how the run's reference images were preprocessed, nothing about FILE."""
    from gan_ignite.errors import ConfigError

    given = {override.partition("=")[0].strip(): override.partition("=")[2].strip() for override in overrides}
    if given.get("eval.reference_stats", "") not in ("", "null", "None") and not given.get("eval.protocol"):
        raise ConfigError("eval.reference_stats needs the protocol its statistics were computed with, given explicitly "
                          "(--protocol NAME or eval.protocol=NAME; e.g. torch-fidelity for TTUR's files, pytorch-fid "
                          "for pytorch-fid's, clean-fid for clean-fid's), as training requires: FIDs of different "
                          "protocols are not comparable. Nothing was evaluated.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=Path, help="checkpoint_<iteration>.pt of a run")
    parser.add_argument("--num-samples", type=int, default=None,
                        help="generated images to score (default: the run's eval.num_samples, as in training); "
                             "10,000 to choose checkpoints, 50,000 for numbers comparable with papers")
    parser.add_argument("--model", choices=[str(name) for name in ScoredModel], default=None,
                        help="the live generator or its EMA (default: what the run evaluated, eval.model)")
    parser.add_argument("--protocol", choices=[str(name) for name in ProtocolName], default=None,
                        help="the FID protocol (= eval.protocol=...; default: the run's)")
    parser.add_argument("--precision", choices=[str(name) for name in Precision], default=None,
                        help="the FID Inception's precision (= eval.precision=...; default: the run's): fp32, or "
                             "tf32 on a GPU (what pytorch-fid, torch-fidelity and clean-fid compute there)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--allow-import", action="append", default=[], metavar="MODULE",
                        help="let the run's config import MODULE for its own generator (model.generator): only for "
                             "runs you trust, since importing a module runs its code")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. eval.metrics=[fid,is,kid,prdc]")


def run(args: argparse.Namespace) -> int:
    from gan_ignite.config import scored_model
    from gan_ignite.launch import launch
    from gan_ignite.metrics._base import resolve_device
    from gan_ignite.networks import allowed_modules
    from gan_ignite.run_dir import load_run_config

    # one process unless asked for more (dist.nproc_per_node=N, or torchrun)
    overrides = list(args.overrides)
    for key, value in (("num_samples", args.num_samples), ("protocol", args.protocol), ("precision", args.precision)):
        if value is not None:
            overrides.append(f"eval.{key}={value}")
    require_protocol_with_reference_stats(overrides)
    _, config = load_run_config(args.checkpoint, overrides)
    if args.device is not None:
        resolve_device(args.device)
    worker = functools.partial(evaluate_checkpoint, checkpoint=args.checkpoint,
                               model=args.model or scored_model(config), device_name=args.device,
                               allowed=allowed_modules(args.overrides, args.allow_import))
    launch(worker, config, args.debug, interrupted=INTERRUPTED)
    return 0


main = main_for(__name__)

if __name__ == "__main__":
    sys.exit(main())
