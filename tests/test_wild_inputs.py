"""Inputs from the wild, round three: resource bombs, config files a parser chokes on, images that
are not images, impossible numbers, resumes that change what a run is. Each gets exit code 2 with one
paragraph naming the key or the file (or the correct result: a skipped image, a clamped 0), before
any work, never a traceback or a hang."""

from __future__ import annotations

import os

import pytest

from conftest import tiny_overrides
from gan_ignite.config import load_config
from gan_ignite.errors import ConfigError
from gan_ignite.train import main as train_main


def one_paragraph(text: str) -> bool:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return len(lines) >= 1 and lines[-1].startswith("error: ") and "Traceback" not in text


# ----------------------------------------------------------------------------- 1. resource bombs
@pytest.mark.parametrize("override, words", [
    ("data.num_workers=100000", "more than 64"),
    ("train.max_epochs=100000000000000000000000", "more than 1,000,000"),
    ("train.epoch_length=100000000000000000000", "more than 1,000,000,000"),
    ("eval.batch_size=100000000000000000000", "more than 65,536"),
    ("model.latent_dim=100000000", "more than 65,536"),
    ("model.g_features=100000", "more than 65,536"),
    ("train.batch_size=10000000", "more than 65,536"),
    ("eval.kid_subsets=100000000000000000000", "at most 100000"),
    ("train.lr=inf", "more than 1.0"),
    ("train.lr_d=inf", "more than 1.0"),
    ("train.lr=1e30", "more than 1.0"),
    ("train.lr=nan", "must be positive"),
    ("log.every_seconds=inf", "more than"),
])
def test_counts_sizes_and_rates_a_machine_cannot_run_are_refused(override, words):
    with pytest.raises(ConfigError) as caught:
        load_config(None, [override])
    key = override.split("=")[0]
    assert f"'{key}'" in str(caught.value) and words in str(caught.value)


HUGE = "100000000000000000000"


@pytest.mark.parametrize("command, argv, words", [
    ("metrics", ["--batch-size", HUGE], "at most 65,536"),
    ("metrics", ["--num-workers", "100000"], "at most 64"),
    ("metrics", ["--kid-subsets", HUGE], "at most 100000"),
    ("metrics", ["--kid-subset-size", HUGE], "at most 1e+06"),
    ("sample", ["--num", HUGE], "more than 1,000,000,000,000,000"),
    ("sample", ["--batch-size", HUGE], "more than 65,536"),
    ("train_classifier", ["--epochs", HUGE], "more than 1,000,000"),
    ("train_classifier", ["--batch-size", "0"], "must be positive"),
])
def test_command_options_a_machine_cannot_run_are_refused_before_any_work(command, argv, words, tmp_path, capsys):
    import importlib

    main = importlib.import_module(f"gan_ignite.{'metrics.cli' if command == 'metrics' else command}").main
    inputs = {"metrics": [str(tmp_path), str(tmp_path)], "train_classifier": ["--out", str(tmp_path / "c.pt")],
              "sample": ["--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "out")]}[command]
    assert main([*inputs, *argv]) == 2  # returns at once: no worker forked, no islice overflow, no traceback
    err = capsys.readouterr().err
    assert one_paragraph(err) and argv[0] in err and words in err and not (tmp_path / "out").exists()


def test_a_model_too_big_for_memory_is_refused_with_its_size_before_anything_is_written(
        tmp_path, image_folder, stats_cache, capsys):
    code = train_main(tiny_overrides(tmp_path / "run", image_folder, stats_cache, **{"model.g_features": 60000}))
    err = capsys.readouterr().err
    assert code == 2 and one_paragraph(err) and "would need about" in err and "TB of memory" in err
    assert "model.g_features=60000" in err and not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- 3. config files
def alias_bomb(path):
    lines, previous = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]'], "a"
    for name in "bcdefghi":
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
        previous = name
    path.write_text("\n".join(lines) + "\n")


CONFIG_FILES = {
    "alias_bomb": (alias_bomb, "alias bomb"),
    "deep_lists": (lambda path: path.write_text("seed: " + "[" * 100_000 + "]" * 100_000 + "\n"), "too deeply"),
    "deep_mappings": (lambda path: path.write_text("a:\n" + "".join(" " * i + "b:\n" for i in range(1, 60))),
                      "levels deep"),
    "latin1": (lambda path: path.write_bytes("output_dir: runs/caf\xe9\n".encode("latin-1")), "not UTF-8"),
    "binary": (lambda path: path.write_bytes(bytes(range(256)) * 4), "not UTF-8"),
    "fifo": (lambda path: os.mkfifo(path), "not a regular file"),
    "huge": (lambda path: path.write_text("# " + "x" * 2_000_000 + "\n"), "more than a config's"),
}


@pytest.mark.parametrize("name", sorted(CONFIG_FILES))
def test_a_config_file_a_parser_chokes_on_is_one_paragraph_at_once(name, tmp_path, capsys):
    write, words = CONFIG_FILES[name]
    path = tmp_path / f"{name}.yaml"
    write(path)
    assert train_main(["--config", str(path), f"output_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert one_paragraph(err) and str(path) in err and words in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override", ["seed=${oc.env:GAN_IGNITE_NO_SUCH_VARIABLE}", "seed=${no_such_key}",
                                      "output_dir=${output_dir}", "seed=${oc.env:HOME"])
def test_an_interpolation_that_cannot_be_resolved_names_its_key(override, tmp_path, capsys):
    assert train_main([f"output_dir={tmp_path / 'run'}", override]) == 2
    err = capsys.readouterr().err
    assert one_paragraph(err) and f"'{override.split('=')[0]}'" in err


@pytest.mark.parametrize("command", ["evaluate", "sample"])
def test_commands_that_read_a_runs_config_refuse_a_damaged_one(command, tmp_path, capsys):
    from gan_ignite.evaluate import main as evaluate_main
    from gan_ignite.sample import main as sample_main

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "checkpoint_1.pt").write_bytes(b"not read")
    alias_bomb(run / "config.yaml")
    main = evaluate_main if command == "evaluate" else sample_main
    extra = [] if command == "evaluate" else ["--out", str(tmp_path / "samples")]
    assert main(["--checkpoint", str(run / "checkpoints" / "checkpoint_1.pt"), *extra]) == 2
    err = capsys.readouterr().err
    assert one_paragraph(err) and "alias bomb" in err and not (tmp_path / "samples").exists()


# ----------------------------------------------------------------------------- 2. images from the wild
def wild_folder(root):
    """24 good images and every kind of file named like an image that is not one a decoder should open."""
    from conftest import make_shape_images
    from PIL import Image
    import numpy as np

    make_shape_images(root / "a", 24)
    (root / "a" / os.fsdecode(b"caf\xe9_not_utf8.png")).write_bytes((root / "a" / "img_0000.png").read_bytes())
    os.symlink(root / "nowhere.png", root / "a" / "dangling.png")
    os.mkfifo(root / "a" / "pipe.png")
    Image.fromarray(np.zeros((1, 3_000_000), np.uint8)).save(root / "a" / "wide.png")  # 8.8 KB, ~3 G pixels resized
    return root


def test_training_skips_links_fifos_and_bombs_and_names_no_utf8_trouble(tmp_path, stats_cache, capsys):
    from conftest import TRAIN_ONLY

    folder = wild_folder(tmp_path / "images")
    every_image = {**TRAIN_ONLY, "train.max_epochs": 1, "train.batch_size": 2}  # 26 files: no batch is dropped
    overrides = tiny_overrides(tmp_path / "run", folder, stats_cache, **every_image)
    assert train_main(overrides) == 0
    err = capsys.readouterr().err
    assert "not regular files" in err and "skipped 1 unreadable image" in err and "3000000 x 1" in err
    strict = tiny_overrides(tmp_path / "strict", folder, stats_cache, **{**every_image, "data.skip_bad_images": "false"})
    assert train_main(strict) == 2
    err = capsys.readouterr().err
    assert one_paragraph(err) and "wide.png" in err


@pytest.mark.slow
def test_the_metrics_command_neither_hangs_on_a_fifo_nor_reads_a_bomb(tmp_path, capsys):
    from gan_ignite.metrics.cli import main as metrics_main

    folder = wild_folder(tmp_path / "images")
    (folder / "a" / "wide.png").unlink()
    argv = [str(folder), str(folder), "--metrics", "fid", "--inception-weights", "random", "--num-workers", "0",
            "--json", str(tmp_path / "r.json")]
    assert metrics_main(argv) == 0  # the FIFO and the link are skipped: it returns, it does not hang
    assert "not regular files" in capsys.readouterr().err


# ----------------------------------------------------------------------------- 5. impossible numbers
@pytest.mark.slow
def test_a_folder_against_itself_gives_fid_0_not_a_negative_round_off(tmp_path, capsys):
    import json

    from conftest import make_shape_images
    from gan_ignite.metrics.cli import main as metrics_main

    make_shape_images(tmp_path / "images", 30)
    argv = [str(tmp_path / "images"), str(tmp_path / "images"), "--metrics", "fid", "--inception-weights", "random",
            "--num-workers", "0", "--json", str(tmp_path / "r.json")]
    assert metrics_main(argv) == 0
    assert "FID: 0.0000" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["fid"] == 0.0


def test_a_negative_fid_infinity_is_reported_with_its_meaning_never_as_a_number(tmp_path, capsys):
    import json

    import numpy as np

    from gan_ignite.metrics.cli import main as metrics_main
    from gan_ignite.metrics.scores.real_stats import RealStatistics

    # a set against itself: FD of a subset of N of its n samples ~ c (1/N - 1/n), a line through -c/n at 1/N = 0
    RealStatistics.from_features(np.random.default_rng(0).normal(size=(400, 8)).astype(np.float32)).save(
        tmp_path / "a.npz")
    code = metrics_main([str(tmp_path / "a.npz"), str(tmp_path / "a.npz"), "--metrics", "fid_inf", "--json",
                         str(tmp_path / "r.json")])
    out, err = capsys.readouterr()
    assert code == 0 and "extrapolates to -" in err and "below any distance" in err  # the warning says what it means
    assert "FID_inf: undefined (its line extrapolates below 0" in out and "FID_inf: -" not in out
    assert json.loads((tmp_path / "r.json").read_text())["fid_inf"] is None  # null, never a negative "FID"
    assert metrics_main([str(tmp_path / "a.npz"), str(tmp_path / "a.npz"), "--metrics", "fid"]) == 0
    assert "FID: 0.0000" in capsys.readouterr().out  # the plain distance of the same set is 0


# ----------------------------------------------------------------------------- 6. a resume keeps what a run is
@pytest.mark.parametrize("change, key", [({"data.image_size": 64}, "data.image_size"),
                                         ({"data.channels": 1}, "data.channels"),
                                         ({"data.name": "fashion_mnist"}, "data.name"),
                                         ("files", "data.root")])
def test_a_resume_that_changes_the_data_is_refused_and_a_fork_is_the_way(change, key, tmp_path, stats_cache, capsys):
    import shutil

    from conftest import TRAIN_ONLY, make_shape_images

    make_shape_images(tmp_path / "images" / "a", 24)
    run = tmp_path / "run"
    settings = {**TRAIN_ONLY, "train.max_epochs": 1}
    assert train_main(tiny_overrides(run, tmp_path / "images", stats_cache, **settings)) == 0
    before = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}
    data_root = tmp_path / "images"
    if change == "files":
        data_root = tmp_path / "other"
        shutil.copytree(tmp_path / "images", data_root)
        make_shape_images(data_root / "b", 4, seed=5)
        change = {}
    resumed = {**settings, "train.max_epochs": 2, "train.resume_from": "auto", **change}
    assert train_main(tiny_overrides(run, data_root, stats_cache, **resumed)) == 2
    err = capsys.readouterr().err
    assert one_paragraph(err) and f"'{key}'" in err and "fork" in err
    assert {path: path.read_bytes() for path in run.rglob("*") if path.is_file()} == before
    if key == "data.root":  # the same files elsewhere (copied, new times) are the same data
        moved = tmp_path / "moved"
        shutil.copytree(tmp_path / "images", moved)
        assert train_main(tiny_overrides(run, moved, stats_cache, **{**resumed, "train.max_epochs": 2})) == 0
    elif key in ("data.image_size", "data.channels"):
        fork = {**resumed, "train.resume_from": str(run / "checkpoints" / "checkpoint_3.pt")}
        assert train_main(tiny_overrides(tmp_path / "fork", data_root, stats_cache, **fork)) == 2
        assert "does not fit" in capsys.readouterr().err  # a fork may change the data; these models do not fit it


# ----------------------------------------------------------------------------- exact resume with loader workers
@pytest.mark.slow
def test_kill_9_mid_epoch_and_resume_with_two_loader_workers_is_bitwise_the_uninterrupted_run(
        tmp_path, image_folder, stats_cache):
    import random
    import time

    from conftest import TRAIN_ONLY, start, stderr_of, train_records, wait_for_iteration

    settings = {**TRAIN_ONLY, "train.max_epochs": 5, "data.num_workers": 2, "train.checkpoint_every_iters": 4}
    reference = tmp_path / "reference"
    assert train_main(tiny_overrides(reference, image_folder, stats_cache, **settings)) == 0
    run = tmp_path / "killed"
    overrides = tiny_overrides(run, image_folder, stats_cache, **{**settings, "train.resume_from": "auto"})
    rng, reached = random.Random(7), 0
    for _ in range(2):
        process = start(overrides)
        if wait_for_iteration(process, run, reached + rng.randint(5, 9)):  # epochs of 6 iterations: mid-epoch
            time.sleep(rng.uniform(0, 0.2))
            process.kill()
        process.wait()
        reached = train_records(run)[-1]["iteration"]
    final = start(overrides)
    assert final.wait(timeout=300) == 0, stderr_of(final)[-2000:]
    got, expected = train_records(run), train_records(reference)
    assert [record["iteration"] for record in got] == list(range(1, 31))
    assert [(r["Loss_G"], r["Loss_D"]) for r in got] == [(r["Loss_G"], r["Loss_D"]) for r in expected]
