"""Trainer executor: TFX's GenericExecutor, plus a fingerprint of the model's training inputs.

The Pusher and the baseline step compare a candidate with the model serving now. A scheduled
run on Kubeflow retrains from scratch every night (its ExampleGen cannot be cached), and
retraining need not give bit-identical weights, so "the same model" is decided on the inputs
too: the data fingerprint of the examples (components.image_example_gen) and the Trainer's own
settings, which carry the trainer code's fingerprint. The digest goes on the Model artifact.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tfx.components.trainer import executor as tfx_trainer_executor
from tfx.types import artifact_utils, standard_component_specs

from components import artifact_properties
from components.base.executor_io import ArtifactDict, ExecProperties

# Execution properties that decide the model (module_file/module_path would be code we do not fingerprint).
_FINGERPRINTED_PROPERTIES = ("custom_config", "run_fn", "train_args", "eval_args")


def _canonical(value: Any) -> Any:
    """JSON strings parsed (so key order and spacing do not matter); other values as they are."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def model_inputs_fingerprint(input_dict: dict[str, list[Any]], exec_properties: dict[str, Any]) -> str:
    """Digest of what a Trainer run learns from, or "" when the data fingerprint is unknown.

    Args:
      input_dict: the Trainer's inputs (``examples`` must carry the data fingerprint).
      exec_properties: the Trainer's execution properties.

    Returns:
      A hex sha256 digest, or "" (an Examples artifact without a data fingerprint, or a
      Trainer with a module file).
    """
    examples = artifact_utils.get_single_instance(input_dict[standard_component_specs.EXAMPLES_KEY])
    data = examples.get_string_custom_property(artifact_properties.DATA_FINGERPRINT)
    if not data or exec_properties.get("module_file") or exec_properties.get("module_path"):
        return ""
    document = {
        "data": data,
        **{key: _canonical(exec_properties.get(key)) for key in _FINGERPRINTED_PROPERTIES},
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


class Executor(tfx_trainer_executor.GenericExecutor):
    """GenericExecutor that records ``facepipe_inputs`` on the Model artifact."""

    def Do(self, input_dict: ArtifactDict, output_dict: ArtifactDict, exec_properties: ExecProperties) -> None:
        super().Do(input_dict, output_dict, exec_properties)
        model = artifact_utils.get_single_instance(output_dict[standard_component_specs.MODEL_KEY])
        model.set_string_custom_property(
            artifact_properties.MODEL_INPUTS, model_inputs_fingerprint(input_dict, exec_properties)
        )
