"""The tools after training: sampling a checkpoint, the training-progress GIF, the multi-seed sweep
and the console entry points. One tiny trained run is shared by the sampling tests, one tiny
2-seed sweep by the sweep tests."""

from __future__ import annotations

import csv
import json
import math
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence
from scipy import stats

from conftest import PYTHON, ROOT, cli_env, tiny_overrides
from gan_ignite.config import load_config
from gan_ignite.metrics.networks.folder import list_images
from gan_ignite.metrics.networks.preprocess import to_uint8
from gan_ignite.networks.dcgan import Generator
from gan_ignite.evaluation import load_generator
from gan_ignite.latents import sample_latents, walk_latents
from gan_ignite.run_dir import RunDir
from gan_ignite.sample import main as sample_main
from gan_ignite.sweep import main as sweep_main
from gan_ignite.train import main as train_main


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, image_folder, stats_cache) -> Path:
    run_dir = tmp_path_factory.mktemp("tools") / "tiny"
    assert train_main(tiny_overrides(run_dir, image_folder, stats_cache)) == 0
    return run_dir


@pytest.fixture(scope="module")
def checkpoint(finished_run) -> Path:
    return finished_run / "checkpoints" / "checkpoint_6.pt"


def png_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.glob("*.png"))}


# ----------------------------------------------------------------------------- sampling
@pytest.mark.slow
def test_sample_writes_numbered_pngs_as_the_evaluator_converts_them(checkpoint, tmp_path, capsys):
    out = tmp_path / "samples"
    assert sample_main(["--checkpoint", str(checkpoint), "--out", str(out), "--num", "5", "--device", "cpu"]) == 0
    assert "wrote 5 32x32 RGB images (000000.png to 000004.png)" in capsys.readouterr().out
    assert [path.name for path in list_images(out)] == [f"{index:06d}.png" for index in range(5)]
    # the pixels are G(z) of seed 0's latents, converted to uint8 exactly as the evaluator converts them
    config = load_config(checkpoint.parent.parent / "config.yaml")
    generator, _ = load_generator(config, checkpoint, torch.device("cpu"))
    with torch.no_grad():
        expected = to_uint8(generator(sample_latents(5, config.model.latent_dim, seed=0)))
    for index in range(5):
        with Image.open(out / f"{index:06d}.png") as image:
            assert image.mode == "RGB" and image.size == (32, 32)
            assert torch.equal(torch.from_numpy(np.array(image)).permute(2, 0, 1), expected[index])


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM", "SIGKILL"])
@pytest.mark.slow
def test_sample_stopped_mid_write_leaves_only_complete_pngs(stop, checkpoint, tmp_path):
    import signal
    import time

    from conftest import start, stderr_of

    out = tmp_path / "samples"
    process = start(["--checkpoint", str(checkpoint), "--out", str(out), "--num", "200000", "--batch-size", "1",
                     "--device", "cpu"], module="gan_ignite.sample")
    deadline = time.monotonic() + 120
    while len(list(out.glob("*.png"))) < 20 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(getattr(signal, stop))
    code = process.wait(timeout=60)
    assert code in {"SIGINT": (130,), "SIGTERM": (-15, 143), "SIGKILL": (-9,)}[stop], stderr_of(process)[-2000:]
    written = list_images(out)
    assert len(written) >= 20
    for path in written:  # each image is complete: what a later `metrics REAL DIR` reads
        with Image.open(path) as image:
            image.load()
            assert image.size == (32, 32)
    # nothing else a folder reader would take for an image: a killed write leaves at most a hidden .tmp
    assert all(path.suffix == ".png" or (path.name.startswith(".") and path.suffix == ".tmp") for path in out.iterdir())


def test_same_seed_gives_the_same_files_whatever_the_batch_size(checkpoint, tmp_path):
    runs = {"batch2": ["--batch-size", "2"], "batch7": ["--batch-size", "7"], "seed1": ["--seed", "1"]}
    for name, options in runs.items():
        assert sample_main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / name), "--num", "7",
                            *options]) == 0
    assert png_bytes(tmp_path / "batch2") == png_bytes(tmp_path / "batch7")
    other = png_bytes(tmp_path / "seed1")
    assert all(other[name] != data for name, data in png_bytes(tmp_path / "batch2").items())


def test_truncation_keeps_latents_within_bound_and_changes_images(checkpoint, tmp_path):
    plain = sample_latents(300, 16, seed=3)
    truncated = sample_latents(300, 16, seed=3, truncation=0.5)
    assert truncated.abs().max() <= 0.5
    inside = plain.abs() <= 0.5
    assert torch.equal(truncated[inside], plain[inside])  # only the components outside were redrawn
    assert not torch.equal(truncated, plain) and torch.equal(truncated, sample_latents(300, 16, 3, truncation=0.5))
    assert sample_latents(50, 16, seed=3, truncation=1e-3).abs().max() <= 1e-3  # small T: still fast, still bounded
    for name, options in {"plain": [], "truncated": ["--truncation", "0.5"]}.items():
        assert sample_main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / name), "--num", "4",
                            *options]) == 0
    assert png_bytes(tmp_path / "plain") != png_bytes(tmp_path / "truncated")


def test_grid_and_grayscale_model(tmp_path, image_folder, stats_cache, capsys):
    """A 1-channel model writes mode-L PNGs; --grid writes one image, ceil(sqrt(N)) per row."""
    run_dir = tmp_path / "gray"
    config = load_config(None, tiny_overrides(run_dir, image_folder, stats_cache, **{"data.channels": 1}))
    (run_dir / "checkpoints").mkdir(parents=True)
    RunDir(run_dir).write_config(config)
    generator = Generator(config.model.latent_dim, 1, 32, config.model.g_features)
    gray_checkpoint = run_dir / "checkpoints" / "checkpoint_1.pt"
    torch.save({"generator": generator.state_dict()}, gray_checkpoint)
    assert sample_main(["--checkpoint", str(gray_checkpoint), "--out", str(tmp_path / "gray_samples"),
                        "--num", "3"]) == 0
    for path in list_images(tmp_path / "gray_samples"):
        with Image.open(path) as image:
            assert image.mode == "L" and image.size == (32, 32)
    grid = tmp_path / "grid.png"
    assert sample_main(["--checkpoint", str(gray_checkpoint), "--out", str(grid), "--grid", "--num", "10"]) == 0
    assert f"wrote a grid of 10 32x32 L images to {grid}" in capsys.readouterr().out
    with Image.open(grid) as image:  # 4 columns x 3 rows of 32 px with torchvision's 2-px padding
        assert image.size == (4 * 32 + 5 * 2, 3 * 32 + 4 * 2)


def test_latent_walk_gif_loops_through_the_sampled_latents(checkpoint, tmp_path, capsys):
    keys = sample_latents(3, 16, seed=0)
    walk = walk_latents(keys, 4)
    assert len(walk) == 12 and all(torch.allclose(walk[4 * k], keys[k]) for k in range(3))
    # slerp between two vectors of equal norm stays on the sphere (linear interpolation would not)
    unit = keys / keys.flatten(1).norm(dim=1).view(-1, 1)
    assert walk_latents(unit, 4).flatten(1).norm(dim=1) == pytest.approx([1.0] * 12, rel=1e-5)
    gif = tmp_path / "walk.gif"
    assert sample_main(["--checkpoint", str(checkpoint), "--num", "3", "--interpolate", "4", "--gif", str(gif)]) == 0
    assert "12-frame latent walk" in capsys.readouterr().out
    with Image.open(gif) as image:
        frames = list(ImageSequence.Iterator(image))
        assert len(frames) == 12 and image.info["loop"] == 0 and image.size == (128, 128)


@pytest.mark.parametrize("options, message", [
    (["--checkpoint", "{tmp}/missing.pt", "--out", "{tmp}/o"], "does not exist"),
    (["--out", "{tmp}/o", "--truncation", "0"], "--truncation 0.0 must be positive"),
    (["--out", "{tmp}/o", "--truncation", "-1"], "must be positive"),
    (["--out", "{tmp}/a_file/o"], "Cannot write the images"),
    (["--out", "{tmp}/o", "--interpolate", "8"], "--interpolate STEPS needs --gif"),
    (["--out", "{tmp}/o", "--num", "0"], "--num 0"),
])
def test_sample_input_errors_exit_2_with_one_paragraph(checkpoint, tmp_path, capsys, options, message):
    (tmp_path / "a_file").write_text("not a folder")
    argv = [item.format(tmp=tmp_path) for item in options]
    if "--checkpoint" not in argv:
        argv = ["--checkpoint", str(checkpoint), *argv]
    assert sample_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not list(tmp_path.rglob("*.png"))


# ----------------------------------------------------------------------------- training progress GIF
@pytest.mark.slow
def test_plot_curves_writes_training_progress_gif(finished_run):
    result = subprocess.run([PYTHON, str(ROOT / "scripts" / "plot_curves.py"), str(finished_run)],
                            capture_output=True, text=True, env=cli_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    grids = sorted((finished_run / "images").glob("fixed_noise_iter_*.png"))
    assert len(grids) == 3
    with Image.open(finished_run / "plots" / "training_progress.gif") as gif:
        assert gif.n_frames == len(grids) and gif.info["loop"] == 0
        with Image.open(grids[0]) as grid:
            assert gif.width == grid.width and gif.height > grid.height  # the grid under a label strip
    for name in ("loss_curves.png", "metrics.png", "real_vs_fake.png"):
        assert (finished_run / "plots" / name).is_file()


@pytest.mark.parametrize("grid_size", [(274, 274), (530, 530), (530, 274)])
def test_real_vs_fake_panel_titles_lie_inside_the_figure(grid_size):
    """The titles of real_vs_fake.png were clipped at the top edge (tight_layout left them no room)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("plot_curves", ROOT / "scripts" / "plot_curves.py")
    plot_curves = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot_curves)
    real, fake = Image.new("RGB", grid_size, "white"), Image.new("RGB", grid_size, "gray")
    fig = plot_curves.real_vs_fake_figure(real, fake, 600)
    try:
        renderer = fig.canvas.get_renderer()
        fig.draw(renderer)
        titles = [ax.title for ax in fig.axes]
        assert [title.get_text() for title in titles] == ["Real Images", "Fake Images (iteration 600)"]
        for title in titles:
            box = title.get_window_extent(renderer)
            assert 0 <= box.x0 and box.x1 <= fig.bbox.x1 and 0 <= box.y0 and box.y1 <= fig.bbox.y1, box
            assert box.y0 >= title.axes.get_window_extent(renderer).y1 - 1  # above its image, not over it
    finally:
        plot_curves.plt.close(fig)


# ----------------------------------------------------------------------------- sweep
SWEEP_SETTINGS = {"train.epoch_length": 2, "eval.num_samples": 12, "eval.batch_size": 12,
                  "eval.metrics": "[fid,is,kid]", "eval.kid_subsets": 5, "eval.kid_subset_size": 6}


@pytest.fixture(scope="module")
def sweep_setup(tmp_path_factory, image_folder, stats_cache) -> tuple[Path, list[str], Path]:
    """(config file, overrides, sweep folder) of a 2-seed sweep that has run once."""
    root = tmp_path_factory.mktemp("sweep")
    config_file = root / "tiny.yaml"
    config_file.write_text(f"output_dir: {root / 'tiny'}\n")
    overrides = [item for item in tiny_overrides(root, image_folder, stats_cache, **SWEEP_SETTINGS)
                 if not item.startswith("output_dir=")] + ["--protocol", "tutorial"]
    assert sweep_main(["--config", str(config_file), "--seeds", "0", "1", *overrides]) == 0
    return config_file, overrides, root / "tiny_sweep"  # the default folder: output_dir + _sweep


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def eval_records(run_dir: Path) -> list[dict]:
    return [record for line in (run_dir / "history.jsonl").read_text().splitlines()
            if (record := json.loads(line))["kind"] == "eval"]


@pytest.mark.slow
def test_sweep_report_holds_per_seed_values_and_their_mean_sd_and_t_interval(sweep_setup):
    _, _, sweep_dir = sweep_setup
    rows = read_csv(sweep_dir / "sweep.csv")
    assert [row["seed"] for row in rows] == ["0", "1"] and {row["status"] for row in rows} == {"finished"}
    for row in rows:
        records = eval_records(sweep_dir / f"seed_{row['seed']}")
        assert [record["iteration"] for record in records] == [2, 4]
        best = min(records, key=lambda record: record["fid"])
        assert float(row["best_fid"]) == best["fid"] and int(row["best_fid_iteration"]) == best["iteration"]
        assert (float(row["final_fid"]), float(row["final_is"]), float(row["final_kid"])) == \
            (records[-1]["fid"], records[-1]["is"], records[-1]["kid"])
    report = (sweep_dir / "sweep.md").read_text()
    assert "Seeds in the statistics: 2 (0, 1)" in report and "not comparable" not in report
    assert {record["protocol"] for row in rows for record in eval_records(sweep_dir / f"seed_{row['seed']}")} == \
        {"tutorial"} and "protocol=tutorial" in report  # --protocol reached every seed's evaluations
    for key, label in (("best_fid", "best FID"), ("final_fid", "final FID"), ("final_kid", "final KID")):
        values = [float(row[key]) for row in rows]
        mean, sd = statistics.mean(values), statistics.stdev(values)
        half = stats.t.ppf(0.975, len(values) - 1) * sd / math.sqrt(len(values))
        assert (f"| {label} | 2 | {mean:.6g} | {sd:.6g} | {mean - half:.6g} to {mean + half:.6g} (± {half:.6g}) |"
                in report), label
    with Image.open(sweep_dir / "sweep_fid.png") as plot:
        assert plot.size[0] > 500


def test_sweep_rerun_skips_finished_seeds(sweep_setup, capsys):
    config_file, overrides, sweep_dir = sweep_setup
    # the train CLI rewrites config.yaml whenever it starts: unchanged files mean no training process ran
    watched = [sweep_dir / f"seed_{seed}" / name for seed in (0, 1) for name in ("history.jsonl", "config.yaml")]
    before = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in watched}
    assert sweep_main(["--config", str(config_file), "--seeds", "0", "1", *overrides]) == 0
    printed = capsys.readouterr().out
    assert "seed 0 (1/2): already finished" in printed and "seed 1 (2/2): already finished" in printed
    assert {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in watched} == before


@pytest.mark.slow
def test_sweep_with_more_epochs_resumes_the_finished_seeds(sweep_setup, tmp_path):
    config_file, overrides, sweep_dir = sweep_setup
    shutil.copytree(sweep_dir / "seed_0", tmp_path / "seed_0")
    assert sweep_main(["--config", str(config_file), "--seeds", "0", "--out", str(tmp_path), *overrides,
                       "train.max_epochs=3"]) == 0
    assert [record["iteration"] for record in eval_records(tmp_path / "seed_0")] == [2, 4, 6]
    assert read_csv(tmp_path / "sweep.csv")[0]["final_iteration"] == "6"


def test_sweep_report_only_rebuilds_the_report_and_warns_about_mixed_settings(sweep_setup, tmp_path):
    _, _, sweep_dir = sweep_setup
    expected_csv = (sweep_dir / "sweep.csv").read_text()
    for name in ("sweep.csv", "sweep.md", "sweep_fid.png"):
        (sweep_dir / name).unlink()
    assert sweep_main(["--report-only", "--out", str(sweep_dir)]) == 0  # seeds found from the seed_* folders
    assert (sweep_dir / "sweep.csv").read_text() == expected_csv and (sweep_dir / "sweep_fid.png").is_file()
    # a copy of seed 1 scored with other sample counts makes the report warn
    mixed_dir = tmp_path / "mixed"
    for seed in (0, 1):
        (mixed_dir / f"seed_{seed}").mkdir(parents=True)
        for name in ("history.jsonl", "config.yaml", "checkpoints"):
            source = sweep_dir / f"seed_{seed}" / name
            target = mixed_dir / f"seed_{seed}" / name
            target.symlink_to(source, target_is_directory=source.is_dir())
    (mixed_dir / "seed_1" / "history.jsonl").unlink()
    records = [json.loads(line) for line in (sweep_dir / "seed_1" / "history.jsonl").read_text().splitlines()]
    (mixed_dir / "seed_1" / "history.jsonl").write_text(
        "".join(json.dumps({**r, "num_samples": 48} if r["kind"] == "eval" else r) + "\n" for r in records))
    assert sweep_main(["--report-only", "--out", str(mixed_dir), "--seeds", "0", "1"]) == 0
    report = (mixed_dir / "sweep.md").read_text()
    assert "not comparable" in report and "`num_samples`: 12 (seeds 0); 48 (seeds 1)" in report


@pytest.mark.parametrize("options, message", [
    (["--config", "{config}"], "No seeds to train"),
    (["--config", "{tmp}/missing.yaml", "--seeds", "0"], "does not exist"),
    (["--report-only", "--out", "{tmp}/empty", "--seeds", "0", "1"], "No FID evaluation records"),
    (["--config", "{config}", "--seeds", "0", "seed=3"], "set by the sweep itself"),
])
def test_sweep_input_errors_exit_2_with_one_paragraph(sweep_setup, tmp_path, capsys, options, message):
    config_file, _, _ = sweep_setup
    argv = [item.format(tmp=tmp_path, config=config_file) for item in options]
    assert sweep_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


@pytest.mark.slow
def test_sweep_stops_at_a_seed_with_an_input_error(sweep_setup, tmp_path, capsys):
    """An unreadable checkpoint in a seed's folder: the training says why, the sweep stops (exit 2)
    instead of failing the same way for every later seed."""
    config_file, overrides, _ = sweep_setup
    broken = tmp_path / "sweep" / "seed_5" / "checkpoints"
    broken.mkdir(parents=True)
    (broken / "checkpoint_3.pt").write_text("not a checkpoint")
    assert sweep_main(["--config", str(config_file), "--seeds", "5", "6", "--out", str(tmp_path / "sweep"),
                       *overrides]) == 2
    assert "seed 5 stopped with an input error" in capsys.readouterr().err
    assert not (tmp_path / "sweep" / "seed_6").exists() and not (tmp_path / "sweep" / "sweep.md").exists()


# ----------------------------------------------------------------------------- entry points
def test_console_entry_point_runs_the_sample_cli():
    script = Path(sys.executable).parent / "gan-ignite-sample"
    if not script.is_file():
        pytest.skip("gan-ignite-sample is not installed (pip install -e .)")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, env=cli_env(), timeout=120)
    assert result.returncode == 0 and "--checkpoint" in result.stdout and "--truncation" in result.stdout
