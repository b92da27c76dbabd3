"""The documentation's generated pages: the configuration reference (from the typed schema in
gan_ignite/config.py) and the command-line reference (from each command's argparse parser).

mkdocs runs this file as a hook (``hooks:`` in mkdocs.yml): the site's pages are built from the code
of the checkout at every build, so they cannot drift from it. Copies are committed under
docs/reference/ so that the pages read on GitHub too; a stale copy fails ``mkdocs build --strict``
and tests/test_docs.py. Refresh the copies, or print one page:

    python scripts/docs_reference.py --write
    python scripts/docs_reference.py configuration     # or: cli
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import io
import os
import sys
import tokenize
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def use_this_checkout() -> None:
    """Import ``gan_ignite`` from this checkout, also where another copy is installed: mkdocs
    restores ``sys.path`` after loading a hook, so this runs again before each page is built."""
    if not sys.path or sys.path[0] != str(ROOT):
        sys.path.insert(0, str(ROOT))
    loaded = sys.modules.get("gan_ignite")
    if loaded is not None and Path(loaded.__file__).resolve().parent != ROOT / "gan_ignite":
        for name in [name for name in sys.modules if name == "gan_ignite" or name.startswith("gan_ignite.")]:
            del sys.modules[name]


use_this_checkout()

CONFIG_PAGE = "reference/configuration.md"
CLI_PAGE = "reference/cli.md"


# ----------------------------------------------------------------------------- configuration
def field_comments(source: str) -> dict[tuple[str, str], str]:
    """(class name, field name) -> the comment on the field's line and the comment lines just above it."""
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    lines = source.splitlines()
    found = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                above, line = [], item.lineno - 1
                while line >= 1 and lines[line - 1].strip().startswith("#"):
                    above.insert(0, comments[line])
                    line -= 1
                text = " ".join([*above, *([comments[item.lineno]] if item.lineno in comments else [])])
                found[(node.name, item.target.id)] = text
    return found


def type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union and type(None) in args:
        rest = [arg for arg in args if arg is not type(None)]
        return " or ".join(type_name(arg) for arg in rest) + " or null"
    if origin in (list, typing.List):
        return f"list of {type_name(args[0])}" if args else "list"
    if annotation is typing.Any:
        return "any"
    if enum_of(annotation) is not None:
        return "str"  # one of the names its row lists
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: dataclasses.Field) -> str:
    value = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(str(item) for item in value) + "]"
    return str(value)  # a name prints as itself


def allowed_values() -> dict[str, str]:
    """The keys whose values come from a registry or a fixed list in the code."""
    from gan_ignite import config
    from gan_ignite.metrics.options import FEATURE_NETWORKS

    def words(values) -> str:
        return ", ".join(f"`{value}`" for value in values)

    return {
        "data.image_size": words(config.IMAGE_SIZES),
        "eval.protocol": words(config.ProtocolName) + f" (null = `{config.DEFAULT_PROTOCOL}`)",
        "eval.feature_network": words(name if name == "inception" else f"{name}:PATH" for name in FEATURE_NETWORKS),
    }


def enum_of(annotation: Any) -> Any:
    """The Enum type of a name-valued field (also inside Optional[...] or List[...]), else None."""
    import enum

    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, enum.Enum):
            return candidate
    return None


def config_rows(schema: type, prefix: str, comments: dict, choices: dict) -> list[tuple[str, ...]]:
    rows = []
    hints = typing.get_type_hints(schema)
    for field in dataclasses.fields(schema):
        key = f"{prefix}{field.name}"
        annotation = hints[field.name]
        if dataclasses.is_dataclass(annotation):
            rows += config_rows(annotation, f"{key}.", comments, choices)
            continue
        doc = field.metadata.get("help") or comments.get((schema.__name__, field.name), "")
        names = enum_of(annotation)
        values = choices.get(key) or (", ".join(f"`{name}`" for name in names) if names else None)
        if values:
            doc = f"{doc.rstrip('.')}. Values: {values}." if doc else f"Values: {values}."
        rows.append((key, type_name(annotation), default_text(field), doc))
    return rows


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def configuration_reference() -> str:
    use_this_checkout()
    from gan_ignite import config

    comments = field_comments(Path(config.__file__).read_text(encoding="utf-8"))
    rows = config_rows(config.Config, "", comments, allowed_values())
    lines = ["# Configuration reference", "",
             "Generated at every documentation build from the typed schema in `gan_ignite/config.py` (its "
             "dataclasses, their defaults and the comment beside each field), so it lists exactly the keys the "
             "code accepts. How the file and the overrides combine, and what each part does, is in "
             "[Configuration](../configuration.md).", ""]
    section = None
    for key, kind, default, doc in rows:
        head = key.split(".")[0] if "." in key else "top level"
        if head != section:
            section = head
            lines += ["", f"## `{head}`" if head != "top level" else "## Top level", "",
                      "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        lines.append(f"| `{key}` | {cell(kind)} | `{cell(default)}` | {cell(doc)} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- command line


def action_row(action: argparse.Action) -> tuple[str, str, str]:
    if action.option_strings:
        names = ", ".join(action.option_strings)
        if action.nargs != 0:
            names += " " + (action.metavar or action.dest.upper())
    else:
        names = action.metavar or action.dest
        names += " ..." if action.nargs in ("*", "+") else ""
    help_text = (action.help or "") % {"default": action.default} if action.help else ""
    if action.choices:
        help_text += f" One of: {', '.join(str(choice) for choice in action.choices)}."
    if action.required and action.nargs not in ("*", "?"):
        default = "required"
    elif action.nargs == 0 or action.default in (None, [], "", argparse.SUPPRESS):
        default = ""
    else:
        default = f"`{action.default}`"
    return names, default, help_text.strip()


def usage(parser: argparse.ArgumentParser) -> str:
    """The usage lines, wrapped at 100 columns whatever the terminal (argparse reads COLUMNS)."""
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        return parser.format_usage().strip()
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before


def cli_reference() -> str:
    use_this_checkout()
    from gan_ignite.command import COMMANDS, build_parser

    lines = ["# Command-line reference", "",
             "Generated at every documentation build from the argparse parser of each command (its "
             "module's `add_arguments`), so every option and default here is the code's.", "",
             "Every command has three equivalent forms, with the same arguments and exit codes: a subcommand "
             "of `gan-ignite`, `python -m gan_ignite.<module>` and a `gan-ignite-<name>` script "
             "(`gan-ignite` and the scripts exist after `pip install -e .`; `python -m gan_ignite <subcommand>` "
             "works without installing the scripts).", "",
             "| command | `python -m` form | script | what it does |", "| --- | --- | --- | --- |"]
    for name, (module, summary) in COMMANDS.items():
        lines.append(f"| [`gan-ignite {name}`](#gan-ignite-{name}) | `python -m {module.removesuffix('.cli')}` "
                     f"| `gan-ignite-{name}` | {summary} |")
    lines += ["", "`gan-ignite --help` lists the subcommands; an unknown subcommand exits with code 2.", ""]
    for name, (module, _) in COMMANDS.items():
        parser = build_parser(importlib.import_module(module), f"gan-ignite {name}")
        lines += [f"## gan-ignite {name}", "", f"`python -m {module.removesuffix('.cli')}`, `gan-ignite-{name}`", "",
                  "```text", usage(parser), "```", ""]
        if parser.description:
            lines += ["```text", parser.description.strip(), "```", ""]
        lines += ["| argument | default | meaning |", "| --- | --- | --- |"]
        for action in parser._actions:
            names, default, help_text = action_row(action)
            lines.append(f"| `{cell(names)}` | {cell(default)} | {cell(help_text)} |")
        lines.append("")
    return "\n".join(lines)


PAGES = {CONFIG_PAGE: configuration_reference, CLI_PAGE: cli_reference}


# ----------------------------------------------------------------------------- mkdocs hook
def stale_pages(docs: Path) -> list[str]:
    """The committed pages that differ from what the code generates now."""
    return [path for path, build in PAGES.items()
            if not (docs / path).is_file() or (docs / path).read_text(encoding="utf-8") != build()]


def write_pages(docs: Path) -> list[str]:
    written = stale_pages(docs)
    for path in written:
        (docs / path).parent.mkdir(parents=True, exist_ok=True)
        (docs / path).write_text(PAGES[path](), encoding="utf-8")
    return written


def on_files(files, config):
    """Build the reference pages from the code (replacing the committed copies, which are there so
    that the pages also read on GitHub), and warn (an error under --strict) when a copy is stale."""
    import logging

    from mkdocs.structure.files import File

    docs = Path(config["docs_dir"])
    for path in stale_pages(docs):
        logging.getLogger("mkdocs.hooks.docs_reference").warning(
            f"docs/{path} differs from what the code generates: run python scripts/docs_reference.py --write")
    for path, build in PAGES.items():
        committed = files.get_file_from_path(path)
        if committed is not None:
            files.remove(committed)
        files.append(File.generated(config, path, content=build()))
    return files


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("page", nargs="?", choices=["configuration", "cli"], help="print this page")
    parser.add_argument("--write", action="store_true", help="write the stale pages under docs/")
    args = parser.parse_args(argv)
    if args.write:
        written = write_pages(ROOT / "docs")
        print("wrote " + ", ".join(f"docs/{path}" for path in written) if written else "up to date")
    if args.page:
        print({"configuration": configuration_reference, "cli": cli_reference}[args.page](), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
