"""One typed configuration shared by every runner, and the code fingerprints of the cache keys.

Runners turn flags into a PipelineConfig; create_pipeline turns a PipelineConfig into
a TFX pipeline. PipelineConfig touches neither the file system nor the environment; the
fingerprint functions at the end read our own source files (and a weights file).
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib.util
import os
import pathlib
import re
from collections.abc import Iterable, Iterator
from typing import Any

from google.protobuf import json_format, message

from components.base import labels
from components.evaluation.settings import GateSettings
from components.image_example_gen import spans
from components.trainer.config import TrainerConfig

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_SCHEMA_PATH = REPO_ROOT / "schema" / "schema.pbtxt"

# No Beam args means Beam's default: the DirectRunner in in-memory mode, one worker. On 2 cores
# that is ~4x faster than multi-processing, where every Beam worker re-imports TensorFlow.
# Passing any args makes TFX build and attach a TFX sdist in every Beam component (~2 s each),
# which only remote runners need.
DEFAULT_BEAM_ARGS: tuple[str, ...] = ()

# Characters that Beam's, TFDV's and TFMA's file matching (fnmatch, tf.io.gfile.glob) read as a
# pattern. Our own code escapes them in input paths; those libraries do not in the output
# folders they write and read back, so such output folders are refused.
GLOB_CHARACTERS = "*?[]\\"


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Everything that decides what a pipeline run does.

    Attributes:
      data_dir: folder (local or gs://) holding the image files.
      pipeline_root: where TFX writes artifacts.
      serving_dir: blessed models go to <serving_dir>/<pipeline_name>/<version>/.
      metadata_path: SQLite ML Metadata file; None when the orchestrator provides MLMD (Kubeflow).
      pipeline_name: the pipeline's name in ML Metadata and in the serving folder.
      schema_path: the curated schema imported by ImportSchemaGen.
      filename_pattern: regex with named groups age, gender and race.
      spans: None for a flat data folder; "latest", "N" or "A-B" to read span-<N> folders as TFX spans.
      max_label_drift: largest allowed L-infinity distance between the label distributions
        (gender, race, age group) of the current and the previous span; above it the run stops.
      train_buckets / eval_buckets: hash-split ratio by file name (4:1 is 80/20).
      trainer: the Trainer's settings (components.trainer.config.TrainerConfig), passed to it as
        its custom_config.
      gates: the Evaluator's gate thresholds (components.evaluation.settings.GateSettings).
      max_tflite_auc_drop: model.tflite's macro AUC on the eval split may be at most this much
        below the SavedModel's (the Evaluator's); judged by EvaluationGate with --export-tflite.
      report_images: put thumbnails of the eval images the model got most wrong into local reports.
      enable_cache: reuse outputs of components whose inputs did not change.
      beam_pipeline_args: arguments for every Beam-based component.
      worker_check_timeout_s: before the Beam steps of a run on a remote runner, a canary job
        (pipeline.beam_canary) must find a worker within this many seconds; None: the default
        of the environment (120 s, DOCKER 600 s, Dataflow 900 s); 0: no check.
    """

    data_dir: str
    pipeline_root: str
    serving_dir: str
    metadata_path: str | None = None
    pipeline_name: str = "facepipe"
    schema_path: str = str(DEFAULT_SCHEMA_PATH)
    filename_pattern: str = labels.UTKFACE_PATTERN
    spans: str | None = None
    max_label_drift: float = 0.1
    train_buckets: int = 4
    eval_buckets: int = 1
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    gates: GateSettings = dataclasses.field(default_factory=GateSettings)
    max_tflite_auc_drop: float = 0.01
    report_images: bool = True
    enable_cache: bool = True
    beam_pipeline_args: tuple[str, ...] = DEFAULT_BEAM_ARGS
    worker_check_timeout_s: float | None = None

    def validate(self) -> None:
        """Checks values that do not need the file system (trainer and gate ranges: on their construction).

        Raises:
          ValueError: with a one-line message naming the bad setting.
        """
        labels.compile_pattern(self.filename_pattern)
        for what, folder in (("pipeline root", self.pipeline_root), ("serving folder", self.serving_dir)):
            found = sorted({c for c in folder if c in GLOB_CHARACTERS})
            if found:
                raise ValueError(
                    f"{what} {folder!r} contains {' '.join(found)}: Beam, TFDV and TFMA would read it as a "
                    "file pattern; choose a folder without the characters * ? [ ] \\"
                )
        # The name becomes a folder under the serving dir and a key in ML Metadata: keep it a plain name.
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", self.pipeline_name) or ".." in self.pipeline_name:
            raise ValueError(
                f"pipeline name {self.pipeline_name!r} must be 1-63 letters, digits, '_', '.' or '-' "
                "(starting with a letter or digit, no '..')"
            )
        if self.spans is not None:
            spans.parse_span_selection(self.spans)
        if not 0.0 <= self.max_label_drift <= 1.0:
            raise ValueError(f"max label drift must be within 0-1, got {self.max_label_drift}")
        if self.train_buckets < 1 or self.eval_buckets < 1:
            raise ValueError("train and eval hash buckets must both be >= 1")
        self.gates.validate(labels.LABEL_NAMES)  # label names; the trainer and gate settings check the rest
        if self.worker_check_timeout_s is not None and not self.worker_check_timeout_s >= 0:
            raise ValueError(
                f"worker check timeout must be >= 0 seconds (0: no check), got {self.worker_check_timeout_s}"
            )
        if not 0.0 <= self.max_tflite_auc_drop <= 1.0:
            raise ValueError(f"max TFLite AUC drop must be within 0-1, got {self.max_tflite_auc_drop}")


# Our own top-level packages: the only imports whose source is fingerprinted (the rest is pinned
# by the lock file).
OWN_PACKAGES: tuple[str, ...] = ("pipeline", "components")
_DOTTED_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+", flags=re.ASCII)


def _is_own(name: str, packages: tuple[str, ...]) -> bool:
    return name.split(".", 1)[0] in packages


def _find_module(dotted: str) -> str | None:
    """The longest importable module prefix of a dotted name (``pkg.mod.function`` -> ``pkg.mod``)."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        try:
            if importlib.util.find_spec(name) is not None:
                return name
        except (ImportError, ValueError):  # a parent that is a module, not a package
            continue
    return None


def _imports_of(name: str, packages: tuple[str, ...]) -> set[str]:
    """Modules of ours that module ``name`` imports anywhere in its source (functions included)."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        raise ValueError(f"cannot find the source of module {name!r} to fingerprint")
    is_package = spec.submodule_search_locations is not None
    tree = ast.parse(pathlib.Path(spec.origin).read_bytes(), filename=spec.origin)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's own package upwards
                package = name if is_package else name.rpartition(".")[0]
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                origin = f"{base}.{node.module}" if node.module else base
            else:
                origin = node.module or ""
            for alias in node.names:
                candidate = f"{origin}.{alias.name}"  # `from pkg import mod` imports a module
                found.add(candidate if _is_own(candidate, packages) and _find_module(candidate) == candidate
                          else origin)
    return {m for m in found if m and _is_own(m, packages)}


def _strings_in(value: Any) -> Iterator[str]:
    """Every string inside a config value: protos, mappings, sequences, dataclasses."""
    if isinstance(value, message.Message):
        value = json_format.MessageToDict(value, preserving_proto_field_name=True)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings_in(k)
            yield from _strings_in(v)
    elif isinstance(value, list | tuple | set | frozenset):
        for v in value:
            yield from _strings_in(v)


def component_modules(*entries: Any, config: Any = None, packages: tuple[str, ...] = OWN_PACKAGES) -> tuple[str, ...]:
    """Derives the modules of ours a component runs, for code_fingerprint.

    Starts from the entry points (a module name, a dotted function path such as a Trainer's
    ``run_fn``, or a class or function whose module is the entry), adds every module that any
    string in ``config`` names (TFMA loads an EvalConfig's metric classes by their ``module``
    field, not by import), then follows every import of our packages, transitively, read from
    the source with ast (imports inside functions count too). The packages whose ``__init__``
    runs on the way are included as ``<package>.__init__``.

    Args:
      entries: module names, dotted paths, or objects with a ``__module__``.
      config: a component's configuration (proto, dict, dataclass, ...); dotted names of ours in
        its strings are entries too.
      packages: the top-level packages that count as ours.

    Returns:
      Sorted module names (importable; ``pkg.__init__`` for a package's own file).

    Raises:
      ValueError: an entry names no module of ours.
    """
    pending: list[str] = []
    for entry in entries:
        dotted = entry if isinstance(entry, str) else getattr(entry, "__module__", None)
        module = _find_module(dotted) if isinstance(dotted, str) else None
        if module is None or not _is_own(module, packages):
            raise ValueError(f"{entry!r} names no module of {', '.join(packages)} to fingerprint")
        pending.append(module)
    for text in _strings_in(config):
        for dotted in _DOTTED_NAME.findall(text):
            module = _find_module(dotted) if _is_own(dotted, packages) else None
            if module is not None:
                pending.append(module)
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        pending.extend(_imports_of(name, packages) - seen)
    modules = set()
    for name in seen:
        spec = importlib.util.find_spec(name)
        parts = name.split(".")
        # The parent packages' __init__ runs whenever the module is imported.
        modules.update(f"{'.'.join(parts[:i])}.__init__" for i in range(1, len(parts)))
        modules.add(f"{name}.__init__" if spec is not None and spec.submodule_search_locations is not None else name)
    return tuple(sorted(modules))


def _module_files(name: str) -> list[tuple[str, pathlib.Path]]:
    """(label, file) pairs of one module name: a package covers all its .py files, ``pkg.__init__`` one."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ValueError(f"cannot find module {name!r} to fingerprint")
    path = pathlib.Path(spec.origin)
    depth = len(name.split("."))
    if path.name == "__init__.py" and not name.endswith(".__init__"):
        top = path.parents[depth]  # the folder holding the top-level package
        return [(str(f.relative_to(top)), f) for f in sorted(path.parent.rglob("*.py"))]
    return [(str(path.relative_to(path.parents[depth - 1])), path)]


_FILE_HASHES: dict[tuple[str, int, int, int, int], str] = {}


def file_fingerprint(path: str) -> str:
    """``name:size:sha256`` of a local file; the hash is kept per process while size, times and inode stay.

    A weights file changed in place gets a new fingerprint even when its size and mtime are
    restored (the change time and content still differ). A path that is remote or does not
    exist where the pipeline is built (a file inside a Kubeflow container, whose image is part
    of KFP's own cache key) is fingerprinted by its name and marked as not read.

    Args:
      path: the file.

    Returns:
      A short text for a cache key.
    """
    if "://" in path or not os.path.isfile(path):
        return f"{path}:not-read-where-the-pipeline-was-built"
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
    if key not in _FILE_HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _FILE_HASHES[key] = digest.hexdigest()
    return f"{path}:{stat.st_size}:{_FILE_HASHES[key]}"


def code_fingerprint(*module_names: str, files: Iterable[str | None] = ()) -> str:
    """Hashes the source of modules and packages (and data files) so caching sees their changes.

    Transform and Trainer reference their functions by dotted path and TFMA loads metric
    classes by module name, none of which TFX's cache key covers; putting this fingerprint into
    the components' parameters does. Derive the module list with component_modules.

    Args:
      module_names: importable module or package names; a package covers all its .py files,
        ``pkg.__init__`` only the package's own file.
      files: data files a component reads, such as a weights file (None entries are skipped).

    Returns:
      A short hex digest.
    """
    digest = hashlib.sha256()
    labelled = {label: file for name in module_names for label, file in _module_files(name)}
    for label in sorted(labelled):
        digest.update(label.encode())
        digest.update(labelled[label].read_bytes())
    for path in files:
        if path:
            digest.update(file_fingerprint(path).encode())
    return digest.hexdigest()[:16]
