"""The layout of gan_ignite/metrics: feature networks in networks/, scores in scores/, shared helpers at
the top; imports go one way (scores -> networks -> shared), never in a circle, never out of metrics;
the paths from before the split stay importable as the very same modules."""

from __future__ import annotations

import ast
import importlib
import subprocess
from pathlib import Path

import pytest
from conftest import PYTHON, cli_env

import gan_ignite.metrics

METRICS_DIR = Path(gan_ignite.metrics.__file__).parent
ROOT = METRICS_DIR.parents[1]
PACKAGE = "gan_ignite.metrics"
SHARED = {f"{PACKAGE}._base", f"{PACKAGE}.timing", f"{PACKAGE}.safe_files"}
# old path -> new path (the split of issue 25)
MOVED = {
    **{name: "networks" for name in
       ("inception", "preprocess", "features", "classifier", "dinov2", "clip", "images", "folder")},
    **{name: "scores" for name in
       ("fid", "inception_score", "kid", "prdc", "fd_infinity", "cmmd", "vendi", "authpct", "factory", "real_stats")},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


FILES = {module_name(path): path for path in sorted(METRICS_DIR.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """Every module ``name`` imports, at module level or inside functions (absolute or relative)."""
    path = FILES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module
            found.add(source)
            # "from package import module" imports the module
            found.update(f"{source}.{alias.name}" for alias in node.names if f"{source}.{alias.name}" in FILES)
    return found


def metrics_graph() -> dict[str, set[str]]:
    """Module -> the metrics modules it imports (the implicit import of parent packages left out)."""
    return {name: {target for target in imports_of(name) if target in FILES and target != name} for name in FILES}


def test_layout_has_the_expected_modules():
    for old, package in MOVED.items():
        assert f"{PACKAGE}.{package}.{old}" in FILES
        assert not (METRICS_DIR / f"{old}.py").exists(), f"{old}.py: an old path is an alias, not a file"
    assert f"{PACKAGE}.networks.files" in FILES
    top = {name for name in FILES if name.count(".") == 2}
    assert top == SHARED | {f"{PACKAGE}.{name}" for name in ("cli", "__main__", "networks", "scores")}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_paths_are_the_new_modules(old):
    new = importlib.import_module(f"{PACKAGE}.{MOVED[old]}.{old}")
    assert importlib.import_module(f"{PACKAGE}.{old}") is new
    namespace: dict = {}
    exec(f"from {PACKAGE}.{old} import __name__ as name", namespace)
    assert namespace["name"] == new.__name__


def test_patching_an_old_path_patches_the_new_module(monkeypatch):
    from gan_ignite.metrics.fid import FID
    from gan_ignite.metrics.scores import prdc

    assert FID is gan_ignite.metrics.scores.fid.FID
    monkeypatch.setattr("gan_ignite.metrics.prdc.knn_radii", "patched")
    assert prdc.knn_radii == "patched"


def test_one_way_imports_and_none_out_of_metrics():
    for name in FILES:
        for target in imports_of(name):
            if target == "gan_ignite" or target.startswith("gan_ignite."):
                assert target == PACKAGE or target.startswith(PACKAGE + "."), f"{name} imports {target}"
    networks, scores = f"{PACKAGE}.networks", f"{PACKAGE}.scores"
    for name, targets in metrics_graph().items():
        if name in SHARED:
            allowed = ()
        elif name.startswith(networks):
            allowed = (networks,)
        elif name.startswith(scores):
            allowed = (networks, scores)
        else:  # the package's __init__, __main__ and cli sit above both
            continue
        bad = sorted(target for target in targets if target not in SHARED and not target.startswith(allowed))
        assert not bad, f"{name} imports {bad}"


def test_no_import_circle():
    graph = metrics_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                circle = path[path.index(target):] + [target]
                pytest.fail("import circle: " + " -> ".join(circle))
            if target not in state:
                visit(target, path + [target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    # the graph does see the edges it must: features picks the networks, which read files through files.py
    assert {f"{PACKAGE}.networks.classifier", f"{PACKAGE}.networks.files"} <= graph[f"{PACKAGE}.networks.features"]
    assert f"{PACKAGE}.networks.files" in graph[f"{PACKAGE}.networks.classifier"]


def test_metrics_command_help():
    done = subprocess.run([PYTHON, "-m", "gan_ignite.metrics", "--help"], capture_output=True, text=True,
                          env=cli_env(), cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout
