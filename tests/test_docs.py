"""The README a newcomer reads first, and the documentation site's pages and generated references."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import re

import pytest
import yaml

from conftest import ROOT
from gan_ignite.command import build_parser
from gan_ignite.config import Config

README = ROOT / "README.md"
DOCS = ROOT / "docs"
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def load_reference_module():
    spec = importlib.util.spec_from_file_location("docs_reference", ROOT / "scripts" / "docs_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def schema_keys(schema: type = Config, prefix: str = "") -> list[str]:
    keys = []
    for field in dataclasses.fields(schema):
        kind = schema.__dataclass_fields__[field.name].default_factory
        if field.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(kind()):
            keys += schema_keys(type(kind()), f"{prefix}{field.name}.")
        else:
            keys.append(f"{prefix}{field.name}")
    return keys


def ci_test_command() -> str:
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    return next(line for line in lines if line.startswith("python -m pytest"))


def test_readme_is_short_and_its_first_screen_has_install_quickstart_and_tests():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250
    first_screen = "\n".join(lines[:40])
    assert "pip install -e ." in first_screen
    assert "python -m gan_ignite.train --config configs/fashion_mnist.yaml" in first_screen
    assert 'pip install -e ".[test]"' in first_screen
    assert ci_test_command() == "python -m pytest -q" and ci_test_command() in first_screen


def test_readme_quickstart_config_and_picture_are_shipped():
    text = README.read_text()
    assert (ROOT / "configs" / "fashion_mnist.yaml").is_file()
    pictures = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert pictures and all((ROOT / picture).is_file() for picture in pictures)


@pytest.mark.parametrize("page", [README, *sorted(DOCS.rglob("*.md"))], ids=lambda path: path.name)
def test_relative_links_point_to_files_that_exist(page):
    for target, _anchor in LINK.findall(page.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to missing {target}"


def test_every_page_of_the_site_navigation_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def pages(entries):
        for entry in entries:
            for value in entry.values():
                yield from (pages(value) if isinstance(value, list) else [value])

    listed = list(pages(config["nav"]))
    assert all((DOCS / page).is_file() for page in listed), listed
    for topic in ("getting-started.md", "configuration.md", "data.md", "metrics.md", "protocols.md", "recipes.md",
                  "performance.md", "multi-gpu.md", "fault-tolerance.md", "tools.md",
                  "reference/configuration.md", "reference/cli.md"):
        assert topic in listed
    assert "scripts/docs_reference.py" in config["hooks"]  # the references are rebuilt at every build


def test_generated_reference_pages_are_up_to_date():
    reference = load_reference_module()
    assert reference.stale_pages(DOCS) == [], "run python scripts/docs_reference.py --write"


def test_configuration_reference_lists_every_key_with_type_default_and_meaning():
    page = (DOCS / "reference" / "configuration.md").read_text()
    rows = {line.split("|")[1].strip().strip("`"): [cell.strip() for cell in line.split("|")[2:5]]
            for line in page.splitlines() if line.startswith("| `")}
    assert sorted(rows) == sorted(schema_keys())
    assert rows["train.batch_size"][:2] == ["int", "`128`"]
    assert rows["eval.metrics"][:2] == ["list of str", "`[fid, is]`"]
    assert rows["data.max_train_size"][:2] == ["int or null", "`null`"]
    assert all(meaning for _, _, meaning in rows.values()), [key for key, row in rows.items() if not row[2]]
    assert "`hinge`" in rows["train.loss"][2] and "`clean-fid`" in rows["eval.protocol"][2]


def test_configuration_page_names_only_keys_the_schema_has_and_every_one_of_them():
    page = (DOCS / "configuration.md").read_text()
    named = {key for line in page.splitlines() if line.startswith("| `")
             for key in re.findall(r"`([a-z_]+(?:\.[a-z_0-9]+)?)`", line.split("|")[1])}
    assert named and named <= set(schema_keys())
    # the hand table says what every key does (an earlier version's eval.resize is named in eval.protocol's row)
    assert [key for key in schema_keys() if f"`{key}`" not in page] == []


@pytest.mark.parametrize("command, module", [
    ("train", "gan_ignite.train"), ("evaluate", "gan_ignite.evaluate"), ("metrics", "gan_ignite.metrics.cli"),
    ("sample", "gan_ignite.sample"), ("sweep", "gan_ignite.sweep"), ("train-classifier", "gan_ignite.train_classifier")])
def test_cli_reference_lists_every_option_of_every_command(command, module):
    page = (DOCS / "reference" / "cli.md").read_text()
    section = page.split(f"## gan-ignite {command}\n", 1)[1].split("\n## ", 1)[0]
    parser: argparse.ArgumentParser = build_parser(importlib.import_module(module), f"gan-ignite {command}")
    for action in parser._actions:
        for name in action.option_strings or [action.metavar or action.dest]:
            assert f"`{name}" in section or f", {name}" in section, (command, name)
    assert f"| `gan-ignite {command}`" in page or f"[`gan-ignite {command}`]" in page


def test_readme_command_table_holds_every_subcommand():
    from gan_ignite.cli import COMMANDS

    rows = [line for line in README.read_text().splitlines() if line.startswith("| `gan-ignite ")]
    assert [row.split("`")[1].split()[1] for row in rows] == list(COMMANDS)


def test_the_home_page_points_to_every_page_of_the_site():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def pages(entries):
        for entry in entries:
            for value in entry.values():
                yield from (pages(value) if isinstance(value, list) else [value])

    linked = {target for target, _anchor in LINK.findall((DOCS / "index.md").read_text())}
    assert [page for page in pages(config["nav"]) if page != "index.md" and page not in linked] == []


# ----------------------------------------------------------------------------- what a user reads is true anywhere
USER_FACING = [README, ROOT / "data" / "README.md", *sorted(DOCS.rglob("*.md")), *sorted((ROOT / "configs").glob("*.yaml"))]


@pytest.mark.parametrize("path", USER_FACING, ids=lambda path: str(path.relative_to(ROOT)))
def test_user_facing_text_names_no_path_that_exists_only_on_the_projects_machines(path):
    """The project's own machines keep datasets in ../shared/datasets; a user has data/ (or their own
    /path/to/datasets). Tests and benchmarks may look there, what a user reads may not."""
    text = path.read_text()
    assert "../shared" not in text and "shared/datasets" not in text, path.relative_to(ROOT)


def test_no_help_names_a_path_that_exists_only_on_the_projects_machines():
    from gan_ignite.command import COMMANDS

    for name, (module, _) in COMMANDS.items():
        text = build_parser(importlib.import_module(module), f"gan-ignite {name}").format_help()
        assert "../shared" not in text and "shared/datasets" not in text, name


def test_the_docs_quote_no_test_suite_count():
    """The suite's count and time change with every version: pytest prints them, the docs do not."""
    for path in [README, *sorted(DOCS.rglob("*.md"))]:
        found = re.findall(r"\b\d[\d,]* (?:passed|skipped|failed)\b", path.read_text())
        assert not found, (path.relative_to(ROOT), found)
