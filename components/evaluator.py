"""Evaluator: TFX's, except that an empty baseline (components.baseline) means "no baseline",
and with a code fingerprint in its execution properties.

TFX's Evaluator evaluates whatever baseline artifact it is given. ServingBaseline always emits
one, empty when there is no model to compare with; this executor then drops it, and TFMA runs
the candidate alone: change thresholds (the regression gate) are skipped, as on a first run.

TFMA imports the metric classes an EvalConfig names by module (``components.fast_metrics``).
TFX's cache key covers the EvalConfig's text but not that code, so an edited metric module was
served from the cache. A ``code_version`` execution property (pipeline.config.code_fingerprint
of those modules) is part of the cache key.
"""

from __future__ import annotations

from typing import Any

from tfx import v1 as tfx
from tfx.components.evaluator import executor as tfx_evaluator_executor
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_component_specs

from components import baseline
from components.base.executor_io import ArtifactDict, ExecProperties

CODE_VERSION_KEY = "code_version"


class Executor(tfx_evaluator_executor.Executor):
    """Evaluator executor that treats an empty baseline artifact as no baseline."""

    def Do(self, input_dict: ArtifactDict, output_dict: ArtifactDict, exec_properties: ExecProperties) -> None:
        baselines = input_dict.get(standard_component_specs.BASELINE_MODEL_KEY) or []
        if baselines and baseline.is_empty(baselines[0]):
            input_dict = {k: v for k, v in input_dict.items() if k != standard_component_specs.BASELINE_MODEL_KEY}
        super().Do(input_dict, output_dict, exec_properties)


class Evaluator(tfx.components.Evaluator):
    """TFX's Evaluator component with the executor above and a ``code_version`` property (cache key only)."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(self, *, code_version: str, **kwargs: Any):
        """Builds the Evaluator.

        Args:
          code_version: fingerprint of the code the Evaluator loads (the EvalConfig's metric modules).
          kwargs: tfx.components.Evaluator's arguments.
        """
        super().__init__(**kwargs)
        # Set after construction, as TFX itself adds module_path to this component (udf_utils):
        # TFX's EvaluatorSpec is built inside Evaluator.__init__ and cannot take the extra key.
        # The local and KubeflowV2 compilers copy every execution property; the executor ignores it.
        self.exec_properties[CODE_VERSION_KEY] = code_version
