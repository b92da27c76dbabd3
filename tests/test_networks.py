"""Bring your own networks: a generator and discriminator the package has never seen train, resume
exactly, are evaluated, sampled and swept through the documented keys; the built-in ResNet trains; a
broken contract or class path is one paragraph; a run's class path is never imported unless named."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import textwrap

import pytest

from conftest import (PYTHON, ROOT, TRAIN_ONLY, cli_env, start, stderr_of, tiny_overrides, train_records,
                      wait_for_iteration)
from gan_ignite.evaluate import main as evaluate_main
from gan_ignite.sample import main as sample_main
from gan_ignite.sweep import main as sweep_main
from gan_ignite.train import main as train_main

PAGE = ROOT / "docs" / "networks.md"


def page_example() -> tuple[str, str]:
    """(my_nets.py, the training command) as docs/networks.md shows them."""
    text = PAGE.read_text()
    module = re.search(r'```python title="my_nets.py"\n(.*?)```', text, re.S).group(1)
    command = re.search(r"```bash\n(PYTHONPATH=\. python -m gan_ignite\.train .*?)```", text, re.S).group(1)
    return module, " ".join(command.replace("\\\n", " ").split())


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """A folder holding the page's my_nets.py, and a module that leaves a marker file when imported."""
    folder = tmp_path_factory.mktemp("nets")
    (folder / "my_nets.py").write_text(page_example()[0])
    marker = folder / "imported.marker"
    (folder / "marked_nets.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('imported')\nfrom my_nets import *\n")
    return folder


def env_with(folder) -> dict[str, str]:
    env = cli_env()
    env["PYTHONPATH"] = f"{folder}{os.pathsep}{env['PYTHONPATH']}"
    return env


def one_paragraph(err: str) -> bool:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return bool(lines) and lines[-1].startswith("error: ") and "Traceback" not in err


@pytest.fixture
def importable(nets, monkeypatch):
    monkeypatch.syspath_prepend(str(nets))
    return nets


OWN = ["model.generator=my_nets:Generator", "model.generator_kwargs={width: 16}",
       "model.discriminator=my_nets:Discriminator", "model.discriminator_kwargs={width: 8}"]


@pytest.mark.slow
def test_the_pages_example_trains_evaluates_and_samples(nets, tmp_path, image_folder, stats_cache):
    _, command = page_example()
    words = shlex.split(command)[1:]  # after PYTHONPATH=.
    words[words.index("configs/fashion_mnist.yaml")] = str(ROOT / "configs" / "fashion_mnist.yaml")
    words = [word for word in words if not word.startswith("output_dir=")]
    run = tmp_path / "run"
    tiny = tiny_overrides(run, image_folder, stats_cache, **{"eval.num_samples": 24})
    done = subprocess.run([PYTHON, *words[1:], *tiny], cwd=nets, env=env_with(nets), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Total params" in done.stdout  # torchsummary's tables of both networks
    checkpoint = str(run / "checkpoints" / "checkpoint_6.pt")
    for args in (["-m", "gan_ignite.evaluate", "--checkpoint", checkpoint, "--allow-import", "my_nets"],
                 ["-m", "gan_ignite.sample", "--checkpoint", checkpoint, "--out", str(tmp_path / "grid.png"), "--grid",
                  "--allow-import", "my_nets"]):
        done = subprocess.run([PYTHON, *args], cwd=nets, env=env_with(nets), capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    assert "reproduces the history.jsonl record" in subprocess.run(
        [PYTHON, "-m", "gan_ignite.evaluate", "--checkpoint", checkpoint, "model.generator=my_nets:Generator"],
        cwd=nets, env=env_with(nets), capture_output=True, text=True, timeout=300).stdout
    assert (tmp_path / "grid.png").is_file()


@pytest.mark.slow
def test_a_runs_own_class_is_never_imported_unless_the_command_line_names_it(nets, tmp_path, image_folder,
                                                                          stats_cache, capsys):
    run = tmp_path / "run"
    overrides = tiny_overrides(run, image_folder, stats_cache, **{"model.generator": "marked_nets:Generator",
                                                                  "model.generator_kwargs": "{width: 16}"})
    done = subprocess.run([PYTHON, "-m", "gan_ignite.train", *overrides], cwd=ROOT, env=env_with(nets),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    marker, checkpoint = nets / "imported.marker", str(run / "checkpoints" / "checkpoint_6.pt")
    marker.unlink()
    for main, extra in ((evaluate_main, []), (sample_main, ["--out", str(tmp_path / "samples")])):
        assert main(["--checkpoint", checkpoint, "--device", "cpu", *extra]) == 2
        err = capsys.readouterr().err
        assert one_paragraph(err) and "marked_nets" in err and "--allow-import" in err
        assert not marker.exists() and not (tmp_path / "samples").exists()
    # a fork or a resume of that checkpoint with the built-in generator is refused, naming the module
    fork = tiny_overrides(tmp_path / "fork", image_folder, stats_cache, **{"train.resume_from": checkpoint,
                                                                          "train.max_epochs": 3})
    assert train_main(fork) == 2
    err = capsys.readouterr().err
    assert one_paragraph(err) and "marked_nets" in err and not marker.exists()


@pytest.mark.parametrize("code, words", [
    ("class Generator(nn.Module):\n    def forward(self, z):\n        return torch.tanh(z[:, :3].view(-1, 3, 1, 1))",
     "to (2, 3, 1, 1), but this run's images have shape (2, 3, 32, 32)"),
    ("class Generator(nn.Module):\n    def forward(self, z):\n        return 3 * torch.ones(len(z), 3, 32, 32)",
     "values in [3, 3]"),
    ("class Discriminator(nn.Module):\n    def forward(self, x):\n        return x.mean(dim=(2, 3))",
     "to (2, 3), but a discriminator returns one logit per image"),
])
def test_a_broken_contract_is_one_paragraph_before_anything_is_written(code, words, importable, tmp_path,
                                                                     image_folder, stats_cache, capsys):
    name = f"broken_{abs(hash(code)) % 10**8}"
    (importable / f"{name}.py").write_text("import torch\nfrom torch import nn\n\n\n" + textwrap.dedent(code) + "\n")
    role = "generator" if "Generator" in code else "discriminator"
    overrides = tiny_overrides(tmp_path / "run", image_folder, stats_cache, **{
        f"model.{role}": f"{name}:{role.capitalize()}"})
    assert train_main(overrides) == 2
    err = capsys.readouterr().err
    assert one_paragraph(err) and words in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("path, words", [("no_such_package.nets:Generator", "does not import"),
                                         ("my_nets:Missing", "not found"), ("os:sep", "not an nn.Module class"),
                                         ("/tmp/nets.py:Generator", "never a file path")])
def test_a_class_path_that_does_not_name_a_module_class_is_refused(path, words, importable, tmp_path, image_folder,
                                                                 stats_cache, capsys):
    assert train_main(tiny_overrides(tmp_path / "run", image_folder, stats_cache,
                                     **{"model.generator": path})) == 2
    err = capsys.readouterr().err
    assert one_paragraph(err) and "model.generator" in err and words in err


@pytest.mark.slow
def test_own_networks_with_ema_ada_and_channels_last_resume_exactly_after_kill_9(nets, tmp_path, image_folder,
                                                                                stats_cache):
    recipe = {**TRAIN_ONLY, "train.max_epochs": 4, "train.ema_decay": 0.9, "train.augment": "ada",
              "train.ada_speed_images": 64, "train.ada_interval": 1, "train.channels_last": "true",
              "train.checkpoint_every_iters": 4}
    own = dict(item.split("=", 1) for item in OWN)
    reference = tmp_path / "reference"
    done = subprocess.run([PYTHON, "-m", "gan_ignite.train",
                           *tiny_overrides(reference, image_folder, stats_cache, **recipe, **own)],
                          cwd=ROOT, env=env_with(nets), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "killed"
    overrides = tiny_overrides(run, image_folder, stats_cache, **recipe, **own, **{"train.resume_from": "auto"})
    process = start(overrides, env=env_with(nets))
    if wait_for_iteration(process, run, 9):
        process.kill()
    process.wait()
    final = start(overrides, env=env_with(nets))
    assert final.wait(timeout=300) == 0, stderr_of(final)[-2000:]
    got, expected = train_records(run), train_records(reference)
    assert [(r["Loss_G"], r["Loss_D"], r["ada_p"]) for r in got] == \
        [(r["Loss_G"], r["Loss_D"], r["ada_p"]) for r in expected]


@pytest.mark.slow
def test_own_networks_evaluate_the_same_with_two_gloo_processes(importable, tmp_path, image_folder, stats_cache,
                                                                capsys):
    run = tmp_path / "run"
    overrides = tiny_overrides(run, image_folder, stats_cache, **dict(item.split("=", 1) for item in OWN))
    assert train_main(overrides) == 0
    checkpoint = str(run / "checkpoints" / "checkpoint_6.pt")
    done = subprocess.run([PYTHON, "-m", "gan_ignite.evaluate", "--checkpoint", checkpoint, "--allow-import",
                           "my_nets", "dist.nproc_per_node=2", "dist.backend=gloo"], cwd=ROOT, env=env_with(importable),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "reproduces the history.jsonl record" in done.stdout
    record = json.loads((run / "evaluations.jsonl").read_text().splitlines()[-1])
    assert record["world_size"] == 2


@pytest.mark.slow
def test_the_resnet_architecture_trains(tmp_path, image_folder, stats_cache):
    assert train_main(tiny_overrides(tmp_path / "run", image_folder, stats_cache, **{
        "model.arch": "resnet", "model.g_features": 16, "model.d_features": 16})) == 0
    assert (tmp_path / "run" / "checkpoints" / "checkpoint_6.pt").is_file()


FLAT_GENERATOR = '''
from torch import nn


class Generator(nn.Module):
    """No BatchNorm: an EMA of it has no statistics to recalibrate."""

    def __init__(self, latent_dim, channels, image_size):
        super().__init__()
        self.shape = (channels, image_size, image_size)
        self.body = nn.Sequential(nn.Linear(latent_dim, channels * image_size * image_size), nn.Tanh())

    def forward(self, latent):
        return self.body(latent).view(-1, *self.shape)
'''


@pytest.mark.slow
def test_own_networks_sweep_with_diffaugment_amp_and_the_ema_of_a_generator_without_batchnorm(
        nets, tmp_path, image_folder, stats_cache, monkeypatch):
    """The sweep trains each seed in a process of its own, which imports the named classes there; DiffAugment
    and bf16 autocast wrap them like the DCGAN; the EMA of a generator without BatchNorm is scored as it is."""
    (nets / "flat_nets.py").write_text(FLAT_GENERATOR)
    monkeypatch.setenv("PYTHONPATH", env_with(nets)["PYTHONPATH"])
    sweep_dir = tmp_path / "sweep"
    overrides = tiny_overrides(tmp_path / "unused", image_folder, stats_cache, **{
        "model.generator": "flat_nets:Generator", "model.discriminator": "my_nets:Discriminator",
        "model.discriminator_kwargs": "{width: 8}", "train.augment": "diffaugment", "train.amp": "true",
        "train.ema_decay": 0.9})
    overrides = [item for item in overrides if not item.startswith("output_dir=")]
    config_file = tmp_path / "own.yaml"
    config_file.write_text(f"output_dir: {tmp_path / 'unused'}\n")
    assert sweep_main(["--config", str(config_file), "--seeds", "0", "1", "--out", str(sweep_dir), *overrides]) == 0
    for seed in (0, 1):
        records = [json.loads(line) for line in (sweep_dir / f"seed_{seed}" / "history.jsonl").read_text().splitlines()]
        evaluations = [record for record in records if record["kind"] == "eval"]
        assert [record["iteration"] for record in evaluations] == [3, 6]
        assert all(record["model"] == "ema" and record["fid"] > 0 for record in evaluations), evaluations
    assert "fid" in (sweep_dir / "sweep.md").read_text().lower()
