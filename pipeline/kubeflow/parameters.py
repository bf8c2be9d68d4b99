"""A compiled package read back: its run-time parameters, and values for them from ``--param NAME=VALUE``."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.kubeflow.compiling import check_package_path


def load_pipeline_spec(path: str) -> Any:
    """Loads a package strictly into KFP's PipelineSpec proto (unknown fields are errors).

    Args:
      path: a .yaml package.

    Returns:
      kfp.pipeline_spec.pipeline_spec_pb2.PipelineSpec.

    Raises:
      ValueError: not a readable pipeline spec.
    """
    import yaml
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    check_package_path(path)
    try:
        with open(path) as f:
            doc = next(iter(yaml.safe_load_all(f)), None)
        if not isinstance(doc, dict):
            raise ValueError("empty or not a mapping")
        return json_format.ParseDict(doc, pipeline_spec_pb2.PipelineSpec())
    except (OSError, yaml.YAMLError, json_format.ParseError, ValueError) as e:
        raise ValueError(f"{path} is not a KFP pipeline spec: {str(e).splitlines()[0] if str(e) else e}") from e


@dataclasses.dataclass(frozen=True)
class ParameterInfo:
    """A pipeline input parameter: its KFP type name and default (None when it has none)."""

    type: str
    default: Any


def pipeline_parameters(spec: Any) -> dict[str, ParameterInfo]:
    """Lists a PipelineSpec's input parameters.

    Args:
      spec: a PipelineSpec proto.

    Returns:
      {name: ParameterInfo}.
    """
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    result = {}
    for name, p in spec.root.input_definitions.parameters.items():
        default = json_format.MessageToDict(p.default_value) if p.HasField("default_value") else None
        result[name] = ParameterInfo(pipeline_spec_pb2.ParameterType.ParameterTypeEnum.Name(p.parameter_type), default)
    return result


def _convert(name: str, kind: str, text: str) -> Any:
    try:
        if kind == "NUMBER_INTEGER":
            return int(text)
        if kind == "NUMBER_DOUBLE":
            return float(text)
        if kind == "BOOLEAN":
            if text.lower() not in ("true", "false"):
                raise ValueError("expected true or false")
            return text.lower() == "true"
        if kind in ("LIST", "STRUCT"):
            return json.loads(text)
    except ValueError as e:
        raise ValueError(f"--param {name}: {text!r} is not a valid {kind} ({e})") from e
    return text


def resolve_params(parameters: Mapping[str, ParameterInfo], assignments: Iterable[str]) -> dict[str, Any]:
    """Turns ``NAME=VALUE`` strings into the values a run or schedule passes to KFP.

    A string parameter whose default is a JSON object (trainer_config, eval_config, ...) takes a
    JSON object that is merged into the default key by key (top level), so
    ``trainer_config={"epochs": 20}`` changes the epochs and keeps everything else.

    Args:
      parameters: the spec's parameters (pipeline_parameters).
      assignments: ``NAME=VALUE`` strings.

    Returns:
      {name: value} for the assigned parameters only (the rest keep their defaults).

    Raises:
      ValueError: malformed assignment, unknown name, a value of the wrong type.
    """
    values: dict[str, Any] = {}
    for item in assignments:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--param must be NAME=VALUE, got {item!r}")
        if name not in parameters:
            raise ValueError(f"unknown runtime parameter {name!r}; the pipeline has: {', '.join(sorted(parameters))}")
        info = parameters[name]
        value = _convert(name, info.type, text)
        default_obj = _json_object(info.default) if info.type == "STRING" else None
        if default_obj is not None:
            given = _json_object(text)
            if given is None:
                raise ValueError(f"--param {name}: expected a JSON object (merged into the default), got {text!r}")
            unknown = sorted(set(given) - set(default_obj))
            if unknown:
                raise ValueError(
                    f"--param {name}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(default_obj))}"
                )
            value = json.dumps({**default_obj, **given}, sort_keys=True)
        values[name] = value
    return values


def _json_object(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, str) or not text.lstrip().startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
