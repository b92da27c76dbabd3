"""What a run prints and records, and when: history flushed once per period, readable logs in files."""

from __future__ import annotations

import io
import json
import subprocess

import pytest
import torch
from ignite.engine import Engine, Events

from conftest import PYTHON, ROOT, TRAIN_ONLY, cli_env, tiny_overrides
from gan_ignite import handlers as handlers_module
from gan_ignite.handlers import PlainProgress, TrainingLog, bounded_rate
from gan_ignite.run_dir import HistoryWriter


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
    assert log.diverged["iteration"] == 6 and trainer.state.iteration == 8  # caught at the period's end


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_tensorboard_holds_losses_metrics_grids_and_lr_and_a_resume_adds_no_duplicate_steps(tmp_path, image_folder,
                                                                                              stats_cache):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from gan_ignite.train import main

    run_dir = tmp_path / "tb_run"
    overrides = tiny_overrides(run_dir, image_folder, stats_cache, **{
        "log.tensorboard": "true", "log.every": 2, "train.checkpoint_every_iters": 4})
    assert main(overrides) == 0  # 2 epochs of 3 iterations, evaluated at 3 and 6, grids at 2, 4, 6
    # resume from the mid-epoch checkpoint: iterations 5 and 6 run (and are logged) a second time
    checkpoint = run_dir / "checkpoints" / "checkpoint_4.pt"
    assert main(overrides + ["train.max_epochs=3", f"train.resume_from={checkpoint}"]) == 0
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    for key in ("Loss_G", "Loss_D", "D_x", "D_G_z1", "D_G_z2"):
        assert [event.step for event in events.Scalars(f"train/{key}")] == list(range(1, 10)), key
    assert [event.step for event in events.Scalars("eval/fid")] == [3, 6, 9]
    assert [event.step for event in events.Images("fixed_noise")] == [2, 4, 6, 8, 9]
    learning_rates = [tag for tag in tags["scalars"] if "lr" in tag]
    assert len(learning_rates) == 2
    assert all(event.value == pytest.approx(2e-4) for event in events.Scalars(learning_rates[0]))
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    loss_g = {r["iteration"]: r["Loss_G"] for r in history if r["kind"] == "train"}
    assert [event.value for event in events.Scalars("train/Loss_G")] == pytest.approx([loss_g[i] for i in range(1, 10)])


def test_tensorboard_without_the_package_exits_2_with_the_install_command(tmp_path, image_folder, stats_cache,
                                                                           monkeypatch, capsys):
    import importlib.util

    from gan_ignite.train import main

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "tensorboard" else find_spec(name, *args))
    run_dir = tmp_path / "no_tb"
    assert main(tiny_overrides(run_dir, image_folder, stats_cache, **{"log.tensorboard": "true"})) == 2
    message = capsys.readouterr().err
    assert "log.tensorboard" in message and 'pip install -e ".[tb]"' in message
    assert not run_dir.exists()


def test_the_progress_bar_redraws_every_period_at_a_bounded_rate(monkeypatch):
    clock = {"now": 100.0}
    monkeypatch.setattr(handlers_module.time, "monotonic", lambda: clock["now"])
    passes = bounded_rate(every=2, min_seconds=0.5)
    engine = fake_step([1.0] * 10)
    engine.state.epoch_length = 10
    fired = []
    for iteration in range(1, 11):
        clock["now"] += 0.1  # 10 iterations a second
        if passes(engine, iteration):
            fired.append(iteration)
    # every 2nd iteration, at most every 0.5 s, and the epoch's last one whatever the clock
    assert fired == [2, 8, 10]
