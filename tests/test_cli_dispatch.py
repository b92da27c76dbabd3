"""One command, `gan-ignite <subcommand>`, equivalent to each `python -m gan_ignite.<module>`."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import PYTHON, ROOT, cli_env, make_shape_images
from gan_ignite.command import build_parser

SUBCOMMANDS = ["train", "evaluate", "metrics", "sample", "sweep", "train-classifier"]
MODULES = {"train": "gan_ignite.train", "evaluate": "gan_ignite.evaluate", "metrics": "gan_ignite.metrics",
           "sample": "gan_ignite.sample", "sweep": "gan_ignite.sweep", "train-classifier": "gan_ignite.train_classifier"}


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", *args], capture_output=True, text=True, env=cli_env(), cwd=cwd,
                          timeout=300)


def test_help_lists_every_subcommand():
    result = run("gan_ignite", "--help")
    assert result.returncode == 0
    assert "usage: gan-ignite <subcommand>" in result.stdout
    listed = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ") and
              not line.strip().startswith("-")]
    assert listed == SUBCOMMANDS


def test_unknown_subcommand_exits_2_with_one_paragraph():
    result = run("gan_ignite", "trian", "--config", "configs/fashion_mnist.yaml")
    assert result.returncode == 2
    assert result.stdout == "" and "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert "\n" not in message and "'trian' is not a gan-ignite subcommand" in message
    assert all(name in message for name in SUBCOMMANDS)
    assert run("gan_ignite").returncode == 2  # no subcommand: the usage, on stderr


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_subcommand_help_is_the_modules_help(name, capsys):
    """In this process (a subprocess per subcommand cost ~8 s of imports each): the dispatcher's
    help for NAME is the module's own parser's help, exit code 0."""
    from gan_ignite import cli

    try:
        code = cli.main([name, "--help"])
    except SystemExit as stop:
        code = stop.code
    assert code in (0, None)
    dispatched = capsys.readouterr().out
    module = MODULES[name] + (".cli" if name == "metrics" else "")  # python -m gan_ignite.metrics runs metrics.cli
    assert dispatched == build_parser(importlib.import_module(module), f"gan-ignite {name}").format_help()
    assert f"usage: gan-ignite {name} " in dispatched


def test_each_module_names_the_command_typed_in_its_usage():
    for name, module in MODULES.items():
        result = run(module, "--help")
        assert result.returncode == 0 and result.stdout.startswith(f"usage: python -m {module} "), result.stdout[:200]


@pytest.mark.slow
@pytest.mark.parametrize("argv, code", [(["--help"], 0), (["--no-such-option"], 2)])
def test_help_and_argument_errors_answer_without_importing_torch(argv, code):
    """torch takes seconds to import on a small CPU: --help and a mistyped option must not wait for it."""
    for module in MODULES.values():
        result = subprocess.run([PYTHON, "-X", "importtime", "-m", module, *argv], capture_output=True, text=True,
                                env=cli_env(), cwd=ROOT, timeout=120)
        imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
        assert result.returncode == code and "torch" not in imported and "ignite" not in imported, \
            (module, result.stderr[-500:])


def test_subcommand_returns_the_modules_exit_code_and_message(tmp_path):
    args = ["--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "samples")]
    dispatched, direct = run("gan_ignite", "sample", *args), run("gan_ignite.sample", *args)
    assert dispatched.returncode == direct.returncode == 2
    assert dispatched.stderr == direct.stderr and "missing.pt" in dispatched.stderr
    assert not (tmp_path / "samples").exists()


@pytest.mark.slow
def test_metrics_subcommand_scores_two_folders(tmp_path):
    make_shape_images(tmp_path / "a", 8, seed=0)
    make_shape_images(tmp_path / "b", 8, seed=1)
    out = tmp_path / "scores.json"
    result = run("gan_ignite", "metrics", str(tmp_path / "a"), str(tmp_path / "b"), "--metrics", "fid",
                 "--inception-weights", "random", "--device", "cpu", "--num-workers", "0", "--json", str(out))
    assert result.returncode == 0, result.stderr
    scores = json.loads(out.read_text())
    assert scores["fid"] > 0 and (scores["num_a"], scores["num_b"]) == (8, 8)


def test_importing_the_dispatcher_imports_no_command_line_module():
    code = ("import sys, gan_ignite.cli; "
            "print(sorted(m for m in sys.modules if m in {'gan_ignite.train', 'gan_ignite.evaluate', "
            "'gan_ignite.metrics.cli', 'gan_ignite.sample', 'gan_ignite.sweep', 'gan_ignite.train_classifier'}))")
    result = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=cli_env(), cwd=ROOT)
    assert result.stdout.strip() == "[]", result.stderr


def test_installed_console_command_lists_the_subcommands():
    script = shutil.which("gan-ignite", path=str(Path(PYTHON).parent))
    if script is None:
        pytest.skip("gan-ignite is installed by pip install -e . (as .ci/run does); not in this environment")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, env=cli_env(), cwd=ROOT)
    assert result.returncode == 0 and all(name in result.stdout for name in SUBCOMMANDS)
