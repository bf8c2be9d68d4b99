"""Baseline resolution: the latest blessed model that is not the current candidate.

TFX's LatestBlessedModelStrategy hands the Evaluator the latest blessed model even when that
is the candidate itself (an unchanged re-run): the model is then compared with itself, the
Evaluator and Pusher re-run instead of coming from the cache, and the same model is pushed
a second time. Excluding the candidate avoids all three.
"""

from __future__ import annotations

from typing import Any

from tfx import types
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import LatestBlessedModelStrategy
from tfx.types import standard_artifacts

CANDIDATE_KEY = "candidate"
MODEL_KEY = "model"
BLESSING_KEY = "model_blessing"


def latest_blessed_other_than(
    candidate_ids: set[int], models: list[types.Artifact], blessings: list[types.Artifact]
) -> tuple[types.Artifact | None, types.Artifact | None]:
    """Picks the newest blessed model whose id is not a candidate's.

    Args:
      candidate_ids: ids of the models being evaluated now.
      models: all Model artifacts of the pipeline.
      blessings: all ModelBlessing artifacts of the pipeline.

    Returns:
      (model, its blessing), or (None, None) when there is no such model.
    """
    blessed = {
        b.get_int_custom_property("current_model_id"): b
        for b in blessings
        if b.get_int_custom_property("blessed") == 1
    }
    for model in sorted(models, key=lambda a: a.id, reverse=True):
        if model.id in blessed and model.id not in candidate_ids:
            return model, blessed[model.id]
    return None, None


class LatestBlessedOtherModelStrategy(LatestBlessedModelStrategy):
    """Resolves ``model``/``model_blessing`` to the latest blessed model other than ``candidate``."""

    def resolve_artifacts(self, store: Any, input_dict: dict[str, list[types.Artifact]]):
        candidates = {a.id for a in input_dict.get(CANDIDATE_KEY, [])}
        models = [a for a in input_dict.get(MODEL_KEY, []) if isinstance(a, standard_artifacts.Model)]
        model, blessing = latest_blessed_other_than(candidates, models, input_dict.get(BLESSING_KEY, []))
        return {
            CANDIDATE_KEY: input_dict.get(CANDIDATE_KEY, []),
            MODEL_KEY: [model] if model else [],
            BLESSING_KEY: [blessing] if blessing else [],
        }
