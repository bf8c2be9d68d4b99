"""Evaluator: TFX's, except that an empty baseline (components.baseline) means "no baseline".

TFX's Evaluator evaluates whatever baseline artifact it is given. ServingBaseline always emits
one, empty when there is no model to compare with; this executor then drops it, and TFMA runs
the candidate alone: change thresholds (the regression gate) are skipped, as on a first run.
"""

from __future__ import annotations

from typing import Any

from tfx import v1 as tfx
from tfx.components.evaluator import executor as tfx_evaluator_executor
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_component_specs

from components import baseline


class Executor(tfx_evaluator_executor.Executor):
    """Evaluator executor that treats an empty baseline artifact as no baseline."""

    def Do(
        self,
        input_dict: dict[str, list[Any]],
        output_dict: dict[str, list[Any]],
        exec_properties: dict[str, Any],
    ) -> None:
        baselines = input_dict.get(standard_component_specs.BASELINE_MODEL_KEY) or []
        if baselines and baseline.is_empty(baselines[0]):
            input_dict = {k: v for k, v in input_dict.items() if k != standard_component_specs.BASELINE_MODEL_KEY}
        super().Do(input_dict, output_dict, exec_properties)


class Evaluator(tfx.components.Evaluator):
    """TFX's Evaluator component with the executor above."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
