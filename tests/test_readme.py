"""The README stays true to the code: its flags table is runner_local.py's parser, its links resolve.

Fast: builds the runner's argparse parser (no TensorFlow import) and reads Markdown files.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
README = REPO_ROOT / "README.md"
MAX_README_LINES = 320  # issue 16: a user guide of at most about 300 lines


def _load_flags_table():
    spec = importlib.util.spec_from_file_location("flags_table", REPO_ROOT / "scripts" / "flags_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


flags_table = _load_flags_table()


@pytest.fixture(scope="module")
def parser():
    return flags_table.runner_parser()


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text(encoding="utf-8")


def _readme_table(readme: str) -> str:
    assert flags_table.BEGIN in readme and flags_table.END in readme, "README.md lacks the flags table's markers"
    return readme.split(flags_table.BEGIN + "\n", 1)[1].split(flags_table.END, 1)[0]


def test_flags_table_names_exactly_the_parsers_flags(parser, readme):
    in_table = set(re.findall(r"^\| `(--[a-z0-9-]+)", _readme_table(readme), flags=re.MULTILINE))
    in_parser = set(flags_table.flag_actions(parser))
    assert in_parser, "no flags found in runner_local.py's parser"
    missing = sorted(in_parser - in_table)
    unknown = sorted(in_table - in_parser)
    assert not missing, f"runner_local.py flags missing from README's table: {missing}"
    assert not unknown, f"README's table names flags runner_local.py does not have: {unknown}"


def test_flags_table_is_the_generated_one(parser, readme):
    assert _readme_table(readme) == flags_table.table(parser), (
        "README's flags table differs from the parser's; regenerate it: .venv/bin/python scripts/flags_table.py --write"
    )


def test_every_flag_of_a_runner_local_command_exists(parser, readme):
    known = set(flags_table.flag_actions(parser)) | {"--help"}
    used = set()
    for line in readme.splitlines():
        if "runner_local.py" in line and not line.startswith("|"):
            used.update(flag.split("=")[0] for flag in re.findall(r"(?<=[\s`])--[a-z][a-z0-9-]*(?:=\S*)?", line))
    assert used, "the README shows no runner_local.py command with a flag"
    assert used <= known, f"README runs runner_local.py with flags it lacks: {sorted(used - known)}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


@pytest.mark.parametrize(
    "path",
    ["README.md", "docs/design.md", "docs/performance.md", "tests/README.md", "CHANGELOG.md"],
)
def test_relative_links_resolve(path):
    text = (REPO_ROOT / path).read_text(encoding="utf-8")
    anchors = {_slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)}
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if "://" in target:
            continue
        file_part, _, anchor = target.partition("#")
        if file_part:
            resolved = (REPO_ROOT / path).parent / file_part
            assert resolved.exists(), f"{path} links to {target}, which does not exist"
            if anchor and resolved.suffix == ".md":
                other = resolved.read_text(encoding="utf-8")
                other_anchors = {_slug(h) for h in re.findall(r"^#+ (.+)$", other, flags=re.MULTILINE)}
                assert anchor in other_anchors, f"{path} links to {target}: no such heading"
        else:
            assert anchor in anchors, f"{path} links to #{anchor}: no such heading"


def test_readme_links_the_other_documents(readme):
    for target in ("docs/design.md", "docs/performance.md", "tests/README.md", "CHANGELOG.md"):
        assert f"]({target}" in readme, f"README.md does not link {target}"


def test_readme_is_a_short_user_guide(readme):
    lines = len(readme.splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; keep it a user guide (design notes: docs/)"
