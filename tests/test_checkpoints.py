"""Pruning and the best checkpoint are ignite's Checkpoint, and both survive a resume: the resumed
run keeps the last train.n_saved checkpoints and the best-FID one of the whole run."""

from __future__ import annotations

import torch
from ignite.engine import Engine, Events

from gan_ignite.checkpoints import (attach_best_checkpoint, attach_checkpoints, best_checkpoint, periodic_checkpoint,
                                    read_checkpoint, restore_savers)
from gan_ignite.run_dir import RunDir


def savers(run_dir: RunDir, n_saved: int) -> tuple[Engine, Engine, dict, callable]:
    """A trainer and an evaluator with both savers attached, as a run (or its resume) sets them up."""
    trainer, evaluator = Engine(lambda *_: None), Engine(lambda *_: None)
    to_save = {"generator": torch.nn.Linear(2, 2)}
    best = best_checkpoint(to_save, run_dir, evaluator, trainer)
    to_save["best_checkpointer"] = best
    attach_best_checkpoint(evaluator, best)
    periodic = periodic_checkpoint(to_save, run_dir, n_saved)
    save = attach_checkpoints(trainer, periodic, every_epochs=1, every_iters=None, before_save=lambda _: True)
    return trainer, evaluator, {"checkpointer": periodic, "best_checkpointer": best}, save


def step(trainer: Engine, evaluator: Engine, save: callable, iteration: int, fid: float) -> None:
    trainer.state.iteration = iteration
    evaluator.state.metrics = {"fid": fid}
    evaluator.fire_event(Events.COMPLETED)  # the evaluation, then the epoch's checkpoint
    save(trainer)


def names(run_dir: RunDir) -> list[str]:
    return sorted(path.name for path in run_dir.checkpoint_dir.iterdir())


def test_a_resumed_run_prunes_and_keeps_its_best_across_the_resume(tmp_path):
    run_dir = RunDir(tmp_path)
    trainer, evaluator, _, save = savers(run_dir, n_saved=2)
    for iteration, fid in ((10, 50.0), (20, 30.0), (30, 40.0)):
        step(trainer, evaluator, save, iteration, fid)
    assert names(run_dir) == ["best_checkpoint_20_neg_fid=-30.0000.pt", "checkpoint_20.pt", "checkpoint_30.pt"]

    # a new process resumes from checkpoint_30.pt: fresh savers, their lists from the checkpoint
    trainer, evaluator, resumed, save = savers(run_dir, n_saved=2)
    restore_savers(resumed, read_checkpoint(run_dir.checkpoint_dir / "checkpoint_30.pt", ""), run_dir, n_saved=2)
    step(trainer, evaluator, save, 40, 35.0)  # worse than the best before the resume: it stays
    assert names(run_dir) == ["best_checkpoint_20_neg_fid=-30.0000.pt", "checkpoint_30.pt", "checkpoint_40.pt"]
    step(trainer, evaluator, save, 50, 25.0)  # better: replaces it
    assert names(run_dir) == ["best_checkpoint_50_neg_fid=-25.0000.pt", "checkpoint_40.pt", "checkpoint_50.pt"]


def test_a_lowered_n_saved_prunes_at_the_resume(tmp_path):
    run_dir = RunDir(tmp_path)
    trainer, evaluator, _, save = savers(run_dir, n_saved=3)
    for iteration in (10, 20, 30):
        step(trainer, evaluator, save, iteration, 50.0)
    _, _, resumed, _ = savers(run_dir, n_saved=1)
    restore_savers(resumed, read_checkpoint(run_dir.checkpoint_dir / "checkpoint_30.pt", ""), run_dir, n_saved=1)
    assert [path.name for _, path in run_dir.checkpoints()] == ["checkpoint_30.pt"]
