"""What a run prints and records, and when: history flushed once per period, readable logs in files."""

from __future__ import annotations

import io
import subprocess

import torch
from ignite.engine import Engine, Events

from conftest import PYTHON, ROOT, TRAIN_ONLY, cli_env, tiny_overrides
from gan_ignite.handlers import HistoryWriter, PlainProgress, TrainingLog


def fake_step(values):
    """A trainer whose step outputs the next of ``values`` as a 0-d tensor loss."""
    stream = iter(values)

    def step(engine, batch):
        value = torch.tensor(next(stream))
        return {"Loss_G": value, "Loss_D": value * 2}

    return Engine(step)


def test_history_is_written_once_per_period_and_stops_at_the_first_non_finite_value(tmp_path):
    writer = HistoryWriter(tmp_path / "history.jsonl")
    trainer = fake_step([0.5, 0.6, 0.7, 0.8, 0.9, float("nan"), 1.0, 1.1])
    log = TrainingLog(writer, every=4)
    log.attach(trainer)
    seen = []

    @trainer.on(Events.ITERATION_COMPLETED)
    def _watch(engine):
        seen.append(len(writer.read()))

    trainer.run(range(8), max_epochs=1)
    assert seen[:4] == [0, 0, 0, 4]  # nothing written until the period's end, then the 4 records at once
    records = writer.read()
    assert [r["iteration"] for r in records] == [1, 2, 3, 4, 5]  # up to the last finite one
    assert records[1]["Loss_D"] == torch.tensor(0.6).double().item() * 2
    assert trainer.state.diverged["iteration"] == 6 and trainer.state.iteration == 8  # caught at the period's end


def test_plain_progress_lines_come_every_period_with_speed_and_eta():
    stream = io.StringIO()
    trainer = fake_step([1.0] * 10)
    trainer.state.metrics = {}

    @trainer.on(Events.ITERATION_COMPLETED)
    def _metrics(engine):
        engine.state.metrics.update(Loss_G=torch.tensor(1.5), Loss_D=torch.tensor(0.25))

    PlainProgress(every=4, every_seconds=3600, batch_size=8, stream=stream).attach(trainer)
    trainer.run(range(5), max_epochs=2)
    lines = stream.getvalue().splitlines()
    assert [line.split("  ")[1] for line in lines] == ["iteration 4/10", "iteration 8/10", "iteration 10/10"]
    assert all("Loss_G 1.5000" in line and "Loss_D 0.2500" in line and "img/s" in line and "ETA" in line
               for line in lines)


def test_a_1000_iteration_run_logging_to_a_file_stays_small(tmp_path, image_folder, stats_cache):
    run_dir = tmp_path / "long"
    overrides = tiny_overrides(run_dir, image_folder, stats_cache, **{
        **TRAIN_ONLY, "train.epoch_length": 100, "train.max_epochs": 10, "train.checkpoint_every": 5})
    log_path = tmp_path / "run.log"
    with open(log_path, "w") as log:  # a file, as under SLURM or nohup: no terminal, no progress bar
        result = subprocess.run([PYTHON, "-m", "gan_ignite.train", *overrides], stdout=log, stderr=subprocess.STDOUT,
                                env=cli_env(), cwd=ROOT, timeout=600)
    text = log_path.read_text()
    assert result.returncode == 0, text[-3000:]
    assert "\r" not in text and log_path.stat().st_size < 20_000
    progress = [line for line in text.splitlines() if "img/s" in line]
    assert len(progress) >= 20 and "iteration 1000/1000" in progress[-1]
    assert len(HistoryWriter(run_dir / "history.jsonl").read()) == 1000
