"""Container entrypoint of every Kubeflow step, on open-source KFP 2.x and on Vertex AI alike.

Every step of the compiled spec runs ``python -m pipeline.kfp_entrypoint`` with TFX's own
arguments (``--executor_class_path``, ``--json_serialized_invocation_args`` = the
ExecutorInput, ``--json_serialized_inputs_spec_args``, Beam arguments). It hands them to TFX's
``kubeflow_v2_run_executor`` after making the ExecutorInput what that module expects, which is
what Vertex AI sends. The open-source backend differs (kubeflow/pipelines
``backend/src/v2``, read in 2026-08):

- input artifacts are rebuilt from ML Metadata by ``OutputArtifact.ToRuntimeArtifact()``, whose
  type is ``{instanceSchema: ""}`` (the schema is not recorded): TFX's parser then fails
  (``'NoneType' object has no attribute 'get'``). The step's inputs spec, which TFX passes in
  ``--json_serialized_inputs_spec_args``, declares each input's type: it is used for every
  input whose type is empty or a generic ``system.*`` title;
- the artifact ``metadata`` carries the backend's own ``display_name`` and
  ``store_session_info``; they are dropped (TFX would turn them into custom properties).
  Numbers arrive as floats; TFX's parser and our property readers convert them back;
- the driver adds an ``executor-logs`` output (``system.Artifact``) that is not a TFX output:
  outputs with ``system.*`` types are left to the launcher.

After the executor, zero-byte directory markers under ``gs://`` outputs are removed
(pipeline.gcs_markers). TFX's modules are not patched: this runs in the container only.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pipeline import gcs_markers

logger = logging.getLogger(__name__)

INVOCATION_FLAG = "--json_serialized_invocation_args"
INPUTS_SPEC_FLAG = "--json_serialized_inputs_spec_args"
# Metadata the open-source backend adds to every artifact it records; not TFX properties.
KFP_METADATA_KEYS = ("display_name", "store_session_info", "_kfp_workspace")
_SYSTEM_PREFIX = "system."


class EntrypointError(RuntimeError):
    """The step's arguments cannot be turned into a run of its executor."""


def type_title(type_schema: Any) -> str:
    """The title of an ArtifactTypeSchema (``tfx.Examples``, ``system.Artifact``), "" when it has none."""
    import yaml

    kind = type_schema.WhichOneof("kind")
    if kind == "schema_title":
        return type_schema.schema_title
    if kind == "instance_schema":
        try:
            data = yaml.safe_load(type_schema.instance_schema)
        except yaml.YAMLError:
            return ""
        return str(data.get("title") or "") if isinstance(data, dict) else ""
    return ""


def _needs_declared_type(title: str) -> bool:
    return not title or title.startswith(_SYSTEM_PREFIX)


def normalize_executor_input(executor_input: Any, inputs_spec: Any | None) -> list[str]:
    """Makes an open-source-KFP ExecutorInput look like Vertex AI's, in place.

    Args:
      executor_input: a kfp.pipeline_spec ExecutorInput proto.
      inputs_spec: the step's ComponentInputsSpec proto (None when not given).

    Returns:
      One line per change, for the log.

    Raises:
      EntrypointError: an input arrived untyped and the inputs spec does not declare its type.
    """
    changes: list[str] = []
    for key, artifact_list in executor_input.inputs.artifacts.items():
        declared = inputs_spec.artifacts.get(key) if inputs_spec is not None else None
        for artifact in artifact_list.artifacts:
            title = type_title(artifact.type)
            if _needs_declared_type(title):
                if declared is None or _needs_declared_type(type_title(declared.artifact_type)):
                    raise EntrypointError(
                        f"input artifact {key!r} (name {artifact.name!r}) arrived with type "
                        f"{title or 'empty'!r} and the step's inputs spec ({INPUTS_SPEC_FLAG}) declares no TFX "
                        "type for it; recompile the pipeline with pipeline spec 2.1"
                    )
                artifact.type.CopyFrom(declared.artifact_type)
                changes.append(f"input {key}: type {title or 'empty'!r} -> {type_title(declared.artifact_type)!r}")
            for name in KFP_METADATA_KEYS:
                if name in artifact.metadata.fields:
                    del artifact.metadata.fields[name]
    for key in list(executor_input.outputs.artifacts):
        titles = [type_title(a.type) for a in executor_input.outputs.artifacts[key].artifacts]
        if titles and all(t.startswith(_SYSTEM_PREFIX) for t in titles):
            del executor_input.outputs.artifacts[key]
            changes.append(f"output {key}: {titles[0]} is the backend's own; left to the launcher")
    return changes


def _flag_value(argv: Sequence[str], flag: str) -> tuple[int, str] | None:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return i + 1, argv[i + 1]
        if arg.startswith(flag + "="):
            return i, arg[len(flag) + 1:]
    return None


def rewrite_arguments(argv: Sequence[str]) -> tuple[list[str], Any]:
    """Returns TFX's arguments with the ExecutorInput normalized, and that ExecutorInput.

    Args:
      argv: the step's arguments, without the program name.

    Raises:
      EntrypointError: no ExecutorInput, or unparseable JSON.
    """
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    argv = list(argv)
    found = _flag_value(argv, INVOCATION_FLAG)
    if found is None:
        raise EntrypointError(f"{INVOCATION_FLAG} is missing")
    index, text = found
    executor_input = pipeline_spec_pb2.ExecutorInput()
    inputs_spec = None
    try:
        json_format.Parse(text, executor_input, ignore_unknown_fields=True)
        spec = _flag_value(argv, INPUTS_SPEC_FLAG)
        if spec is not None and spec[1]:
            inputs_spec = pipeline_spec_pb2.ComponentInputsSpec()
            json_format.Parse(spec[1], inputs_spec, ignore_unknown_fields=True)
    except json_format.ParseError as e:
        raise EntrypointError(f"cannot parse the step's JSON arguments: {e}") from e
    for line in normalize_executor_input(executor_input, inputs_spec):
        logger.info("open-source KFP input fixed: %s", line)
    rewritten = json_format.MessageToJson(executor_input, indent=None)
    argv[index] = rewritten if argv[index] == text else f"{INVOCATION_FLAG}={rewritten}"
    return argv, executor_input


def output_uris(executor_input: Any) -> list[str]:
    """The URIs of a step's output artifacts."""
    return [a.uri for artifacts in executor_input.outputs.artifacts.values() for a in artifacts.artifacts if a.uri]


def clean_outputs(uris: Sequence[str], remove: Callable[[str], int] | None = None) -> int:
    """Removes directory markers under every gs:// output URI; other stores make none.

    Raises:
      EntrypointError: the markers could not be removed (the next step's download would fail on them).
    """
    remove = remove or gcs_markers.remove_directory_markers
    removed = 0
    for uri in uris:
        if not uri.startswith("gs://"):
            continue
        try:
            removed += remove(uri)
        except Exception as e:  # any client error: say which output and why, in one line
            raise EntrypointError(f"cannot remove directory markers under {uri}: {type(e).__name__}: {e}") from e
    return removed


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one Kubeflow step: normalize the ExecutorInput, run TFX's executor entrypoint, clean outputs."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before TFX imports TensorFlow
    logging.basicConfig(level=logging.INFO)
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        rewritten, executor_input = rewrite_arguments(argv)
    except EntrypointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from absl import app
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_run_executor

    status = 0
    try:
        # Exactly how TFX's own module runs itself (absl app with its flag parser).
        app.run(kubeflow_v2_run_executor.main, argv=[sys.argv[0], *rewritten],
                flags_parser=kubeflow_v2_run_executor._parse_flags)  # noqa: SLF001
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    if status == 0:
        try:
            clean_outputs(output_uris(executor_input))
        except EntrypointError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
