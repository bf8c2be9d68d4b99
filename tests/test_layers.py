"""Dependencies point one way: runners -> pipeline -> components -> components.base.

Every import of every module under the layers is read with ``ast``, at module level and inside
functions alike, so a lazy import cannot hide an upward dependency. tests/, bench/ and scripts/
are outside the layers and may import anything.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
BASE, COMPONENTS, PIPELINE, RUNNERS = 0, 1, 2, 3
LAYER_NAMES = {BASE: "components.base", COMPONENTS: "components", PIPELINE: "pipeline", RUNNERS: "runners"}
# The command-line entry points at the top level of the repository are the top layer.
TOP_LEVEL_SCRIPTS = ("runner_*.py", "predict.py")


def module_layer(module: str) -> int | None:
    """The layer of a dotted module name of ours; None for anything else (the standard library, TFX, ...)."""
    if module == "components.base" or module.startswith("components.base."):
        return BASE
    if module == "components" or module.startswith("components."):
        return COMPONENTS
    if module == "pipeline" or module.startswith("pipeline."):
        return PIPELINE
    if (module.startswith("runner_") and "." not in module) or module == "predict":
        return RUNNERS
    return None


def module_name(path: pathlib.Path) -> str:
    """The dotted name of a source file of the repository (``pkg.__init__`` for a package's own file)."""
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


def imported_modules(node: ast.Import | ast.ImportFrom, importer: str) -> list[str]:
    """The modules one import statement names, relative imports resolved against ``importer``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = importer.split(".")[:-1]  # the importer's package (``pkg.__init__`` -> ``pkg``)
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    # ``from pipeline import report`` may name a submodule: the submodule decides the layer.
    return [f"{base}.{alias.name}" if alias.name != "*" else base for alias in node.names]


def violations(source: str, importer: str, filename: str) -> list[str]:
    """Each import in ``source`` of a layer above the importer's: ``file:line: importer (layer) imports ...``."""
    own = module_layer(importer.removesuffix(".__init__"))
    assert own is not None, f"{filename} is in no layer"
    found = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        for module in imported_modules(node, importer):
            layer = module_layer(module)
            if layer is not None and layer > own:
                found.append(f"{filename}:{node.lineno}: {LAYER_NAMES[own]} module {importer} imports {module} "
                             f"({LAYER_NAMES[layer]}): `{ast.unparse(node)}`")
    return found


def layered_files() -> list[pathlib.Path]:
    files = [p for pattern in TOP_LEVEL_SCRIPTS for p in REPO.glob(pattern)]
    for package in ("components", "pipeline"):
        files += (REPO / package).rglob("*.py")
    return sorted(files)


def test_the_layers_hold_files():
    files = {str(p.relative_to(REPO)) for p in layered_files()}
    assert {"runner_local.py", "runner_kfp.py", "pipeline/cli.py", "components/base/labels.py"} <= files
    assert any(f.startswith("pipeline/report/") for f in files)


def test_no_module_imports_a_higher_layer():
    found = []
    for path in layered_files():
        found += violations(path.read_text(encoding="utf-8"), module_name(path), str(path.relative_to(REPO)))
    assert not found, "imports against the layers (runners -> pipeline -> components -> components.base):\n" + (
        "\n".join(found)
    )


def test_the_base_imports_nothing_of_ours_outside_it():
    for path in sorted((REPO / "components" / "base").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for module in imported_modules(node, module_name(path)):
                    assert module_layer(module) in (None, BASE), f"{path.relative_to(REPO)}:{node.lineno}: {module}"


def test_the_synthetic_data_generator_needs_only_the_base():
    """components.synthetic_data is imported by the report and the runners and run by data/generate.py:
    it stays a library of drawing and files, with nothing of ours but components.base beneath it."""
    package = REPO / "components" / "synthetic_data"
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for module in imported_modules(node, module_name(path)):
                    if module_layer(module) is not None:
                        assert module.startswith(("components.base", "components.synthetic_data")), (
                            f"{path.relative_to(REPO)}:{node.lineno}: {module}"
                        )


# --- the check itself can fail ---------------------------------------------------------------------

PLANTED = """\
import os

from components.base import labels


def helper():
    from pipeline import config  # a lazy import is read too
    return config, labels, os
"""


def test_a_planted_upward_import_is_reported_with_file_line_and_import():
    found = violations(PLANTED, "components.drift", "components/drift.py")
    assert found == [
        "components/drift.py:7: components module components.drift imports pipeline.config (pipeline): "
        "`from pipeline import config`"
    ]


@pytest.mark.parametrize(
    ("source", "importer", "bad"),
    [
        ("import pipeline.cli\n", "components.base.labels", "pipeline.cli"),
        ("from components import drift\n", "components.base.labels", "components.drift"),
        ("from components.report import build\n", "components.base.__init__", "components.report.build"),
        ("import runner_local\n", "pipeline.local_run", "runner_local"),
        ("from .. import drift\n", "components.base.labels", "components.drift"),  # relative: resolved
        ("if True:\n    from pipeline.report import build\n", "components.evaluation", "pipeline.report.build"),
    ],
)
def test_each_kind_of_upward_import_is_caught(source, importer, bad):
    found = violations(source, importer, "planted.py")
    assert len(found) == 1 and f" imports {bad} " in found[0]


def test_relative_imports_resolve_against_the_package():
    assert imported_modules(ast.parse("from ..report import build").body[0], "pipeline.report.__init__") == [
        "pipeline.report.build"
    ]
    assert imported_modules(ast.parse("from . import spans").body[0], "components.image_example_gen.driver") == [
        "components.image_example_gen.spans"
    ]


def test_downward_and_outside_imports_pass():
    source = "import os\nimport tensorflow as tf\nfrom components.base import labels\nfrom components import drift\n"
    assert violations(source, "pipeline.cli", "pipeline/cli.py") == []
    assert violations("from pipeline import cli\n", "runner_local", "runner_local.py") == []
