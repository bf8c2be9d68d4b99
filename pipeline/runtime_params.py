"""Runtime parameters of the Kubeflow pipeline: what a run or a schedule may change without recompiling.

create_pipeline(config, runtime_parameters=True) builds the components exactly as for a local
run, then replaces a few execution properties by string runtime parameters whose defaults are
the serialized values the components were built with. The compiled spec's defaults therefore
equal the local pipeline's values, and the local path never sees a runtime parameter.

| parameter      | component property          | value                                                  |
| -------------- | --------------------------- | ------------------------------------------------------ |
| data_root      | ImageExampleGen input_base  | data folder (gs://..., or a path in the pods)          |
| range_config   | ImageExampleGen range_config| RangeConfig JSON: one span to (re)read; "" = latest    |
| trainer_config | Trainer custom_config       | TrainerConfig JSON (epochs, batch size, ...)           |
| eval_config    | Evaluator eval_config       | tfma.EvalConfig JSON (blessing thresholds)             |

Spans: compiled with spans="latest", every run's ImageExampleGen executor picks the newest
``span-<N>`` folder by itself; range_config (a static range of one span) re-reads an older one.
The file pattern and the span mode (``spans``) stay compile-time settings.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format, message

DATA_ROOT = "data_root"
RANGE_CONFIG = "range_config"
TRAINER_CONFIG = "trainer_config"
EVAL_CONFIG = "eval_config"

# (component argument name, execution property key, runtime parameter name).
EXPOSED: tuple[tuple[str, str, str], ...] = (
    ("example_gen", "input_base", DATA_ROOT),
    ("example_gen", "range_config", RANGE_CONFIG),
    ("trainer", "custom_config", TRAINER_CONFIG),
    ("evaluator", "eval_config", EVAL_CONFIG),
)


def serialize(value: Any) -> str:
    """Turns an execution property value into the string a runtime parameter carries.

    Args:
      value: a str, a proto message, a JSON-able dict/list, or None.

    Returns:
      The string itself, a proto as one-line JSON, other values as sorted JSON; None as "".
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, message.Message):
        # One line (readable in the KFP UI); field names as in the proto, as TFX's own JSON.
        return json_format.MessageToJson(value, sort_keys=True, preserving_proto_field_name=True, indent=None)
    return json.dumps(value, sort_keys=True)


def expose_runtime_parameters(**components: Any) -> None:
    """Replaces the EXPOSED execution properties by string runtime parameters, in place.

    Each parameter defaults to the serialized value the component was built with. The
    components' executors read these properties as strings (JSON for protos and dicts), so
    a value given at run time is used the same way as the compiled one.

    Args:
      components: example_gen, trainer and evaluator components, by those names.

    Raises:
      KeyError: a component or property named in EXPOSED is missing.
    """
    from tfx import v1 as tfx

    for component_name, key, param_name in EXPOSED:
        properties = components[component_name].exec_properties
        if key not in properties:
            raise KeyError(f"{component_name} has no execution property {key!r}")
        properties[key] = tfx.dsl.experimental.RuntimeParameter(
            name=param_name, ptype=str, default=serialize(properties[key])
        )
