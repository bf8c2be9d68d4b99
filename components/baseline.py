"""Baseline resolution: the latest blessed model that is not the current candidate.

TFX's LatestBlessedModelStrategy hands the Evaluator the latest blessed model even when that
is the candidate itself (an unchanged re-run): the model is then compared with itself, the
Evaluator and Pusher re-run instead of coming from the cache, and the same model is pushed
a second time. Excluding the candidate avoids all three.

The Evaluator takes labels and slice features from each model's ``transform_features``
signature. Models exported before that signature existed cannot be evaluated that way, so
they are skipped as baselines (logged): the first model after an upgrade runs without the
regression check instead of failing the Evaluator.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from tfx import types
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import LatestBlessedModelStrategy
from tfx.types import standard_artifacts

from pipeline import labels

logger = logging.getLogger(__name__)

CANDIDATE_KEY = "candidate"
MODEL_KEY = "model"
BLESSING_KEY = "model_blessing"


def has_signature(model_uri: str, signature: str) -> bool:
    """Whether a Trainer Model artifact's SavedModel defines a signature (reads only saved_model.pb).

    Args:
      model_uri: the Model artifact's URI (the SavedModel is under its Format-Serving folder).
      signature: the signature name.

    Returns:
      True if any meta graph of the SavedModel has that signature; False if it has none or the
      file cannot be read.
    """
    import tensorflow as tf  # noqa: PLC0415
    from tensorflow.core.protobuf import saved_model_pb2  # noqa: PLC0415
    from tfx.utils import path_utils  # noqa: PLC0415

    path = os.path.join(path_utils.serving_model_path(model_uri), "saved_model.pb")
    saved = saved_model_pb2.SavedModel()
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            saved.ParseFromString(f.read())
    except (OSError, tf.errors.OpError):
        return False
    return any(signature in graph.signature_def for graph in saved.meta_graphs)


def latest_blessed_other_than(
    candidate_ids: set[int],
    models: list[types.Artifact],
    blessings: list[types.Artifact],
    usable: Callable[[types.Artifact], bool] = lambda _: True,
) -> tuple[types.Artifact | None, types.Artifact | None]:
    """Picks the newest blessed model whose id is not a candidate's and that can be a baseline.

    Args:
      candidate_ids: ids of the models being evaluated now.
      models: all Model artifacts of the pipeline.
      blessings: all ModelBlessing artifacts of the pipeline.
      usable: whether a blessed model can be evaluated as the baseline; newer models that
        cannot are skipped (the predicate logs why).

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
            if usable(model):
                return model, blessed[model.id]
    return None, None


def _evaluable(model: types.Artifact) -> bool:
    """Whether the Evaluator can run a model as the baseline (it has the Transform signature)."""
    if has_signature(model.uri, labels.TRANSFORM_FEATURES_SIGNATURE):
        return True
    logger.warning("blessed model %d (%s) is not used as the baseline: it has no %s signature (exported "
                   "before it existed)", model.id, model.uri, labels.TRANSFORM_FEATURES_SIGNATURE)
    return False


class LatestBlessedOtherModelStrategy(LatestBlessedModelStrategy):
    """Resolves ``model``/``model_blessing`` to the latest blessed model other than ``candidate``."""

    def resolve_artifacts(self, store: Any, input_dict: dict[str, list[types.Artifact]]):
        candidates = {a.id for a in input_dict.get(CANDIDATE_KEY, [])}
        models = [a for a in input_dict.get(MODEL_KEY, []) if isinstance(a, standard_artifacts.Model)]
        model, blessing = latest_blessed_other_than(
            candidates, models, input_dict.get(BLESSING_KEY, []), usable=_evaluable
        )
        return {
            CANDIDATE_KEY: input_dict.get(CANDIDATE_KEY, []),
            MODEL_KEY: [model] if model else [],
            BLESSING_KEY: [blessing] if blessing else [],
        }
