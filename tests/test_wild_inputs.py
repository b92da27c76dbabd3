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
