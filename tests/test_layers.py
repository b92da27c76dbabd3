"""The package's layers (docs/architecture.md): every module imports only modules of lower layers, at
module level or inside functions, never in a circle; the metrics package imports nothing of the rest
but the base modules; the command line answers ``--help`` without torch."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

from conftest import PYTHON, ROOT, cli_env

PACKAGE_DIR = ROOT / "gan_ignite"
# top to bottom; a module may import the modules of its own layer (without a circle) and of lower ones
LAYERS = [
    ["gan_ignite.__main__", "gan_ignite.cli", "gan_ignite.metrics.__main__"],
    ["gan_ignite.train", "gan_ignite.evaluate", "gan_ignite.sample", "gan_ignite.sweep", "gan_ignite.train_classifier",
     "gan_ignite.metrics.cli"],
    ["gan_ignite.training"],
    ["gan_ignite.handlers", "gan_ignite.evaluation"],
    ["gan_ignite.checkpoints"],
    ["gan_ignite.run_dir", "gan_ignite.launch"],
    ["gan_ignite.cluster", "gan_ignite.signals"],
    ["gan_ignite.config"],
    ["gan_ignite.engines"],
    ["gan_ignite.networks"],
    ["gan_ignite.networks.dcgan", "gan_ignite.networks.resnet"],
    ["gan_ignite.data", "gan_ignite.losses", "gan_ignite.augment", "gan_ignite.ema", "gan_ignite.latents"],
    ["gan_ignite.metrics.compare"],
    ["gan_ignite.metrics.scores"],
    ["gan_ignite.metrics.networks"],
    ["gan_ignite.metrics", "gan_ignite.metrics._base", "gan_ignite.metrics.timing", "gan_ignite.metrics.options"],
    ["gan_ignite.command", "gan_ignite.io"],
    ["gan_ignite.errors", "gan_ignite"],
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def layer_of(name: str) -> int:
    """The layer a module belongs to: its own entry, else its package's (metrics.scores.fid: scores)."""
    candidates = [(index, entry) for index, entries in enumerate(LAYERS) for entry in entries
                  if name == entry or (name.startswith(entry + ".") and entry.count(".") >= 2)]
    assert candidates, f"{name} is in no layer: add it to LAYERS (and to docs/architecture.md)"
    return max(candidates, key=lambda item: len(item[1]))[0]


def imports_of(name: str) -> set[str]:
    """The package's modules that ``name`` imports, at module level or inside functions."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{source}" if source else base
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names if f"{source}.{alias.name}" in MODULES)
    return {target for target in found if target in MODULES and target != name}


GRAPH = {name: imports_of(name) for name in MODULES}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_a_module_imports_only_lower_layers(name):
    upward = sorted(target for target in GRAPH[name] if layer_of(target) < layer_of(name)
                    and not name.startswith(target + "."))  # a module imports its package implicitly
    assert not upward, f"{name} (layer {layer_of(name)}) imports {upward}, which sit above it"


def test_no_import_circle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(GRAPH[name]):
            if state.get(target) == 1:
                pytest.fail("import circle: " + " -> ".join(path[path.index(target):] + [target]))
            if target not in state:
                visit(target, path + [target])
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    # the graph sees the edges it must, function-level ones included
    assert "gan_ignite.training" in GRAPH["gan_ignite.train"]


def test_the_metrics_package_imports_only_the_base_modules_from_outside():
    for name, targets in GRAPH.items():
        if name.startswith("gan_ignite.metrics"):
            outside = sorted(target for target in targets if not target.startswith("gan_ignite.metrics")
                             and target not in ("gan_ignite.errors", "gan_ignite.io", "gan_ignite.command",
                                                "gan_ignite"))
            assert not outside, f"{name} imports {outside}"


def test_the_command_line_parses_without_torch():
    code = ("import sys, gan_ignite.cli as cli; cli.build_dispatcher(); "
            "print(sorted(m for m in ('torch', 'ignite', 'torchvision', 'numpy') if m in sys.modules))")
    result = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=cli_env(), cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_schemas_names_are_the_registries_names():
    from gan_ignite.augment import AUGMENTS
    from gan_ignite.config import Arch, Augment, Loss
    from gan_ignite.networks import ARCHITECTURES
    from gan_ignite.losses import LOSSES

    assert list(LOSSES) == [str(name) for name in Loss]
    assert list(ARCHITECTURES) == [str(name) for name in Arch]
    assert list(AUGMENTS) == [str(name) for name in Augment]
