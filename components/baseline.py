"""ServingBaseline: hands the Evaluator the model serving now, as its baseline.

The regression gate compares a candidate with what users get today: the highest version in
``<serving-dir>/<pipeline-name>/`` (components.serving_folder), with its push record. This
step copies that version into an ordinary Model artifact (``<uri>/Format-Serving/``, the
layout the Evaluator loads), so one code path works on every orchestrator: no TFX Resolver
(Kubeflow's open-source backend cannot run one) and no ML Metadata query.

When there is nothing to compare with, the output is an *empty* Model artifact
(``baseline_version`` = 0, the reason in ``baseline_note``), and the Evaluator
(components.evaluator) runs without a baseline: the first run; a candidate that is already
serving (the same content or the same training inputs: comparing it with itself says
nothing); a serving folder whose top version is not ours. A version the Evaluator cannot run
(no ``transform_features`` signature: exported by an older facepipe) is skipped with a log
line, and the next lower version of ours is used.

Locally, a driver puts the selected version into the cache key, so an unchanged re-run is
served from the cache; on Kubeflow the step runs with caching off (pipeline.kubeflow).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import tensorflow as tf
from tfx.dsl.components.base import base_component, executor_spec
from tfx.dsl.components.base.base_executor import BaseExecutor
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.channel import Channel
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter
from tfx.utils import path_utils

from components import artifact_properties, pusher, serving_folder
from components.base import labels
from components.base.executor_io import ArtifactDict, ExecProperties
from components.cache_key_driver import CacheKeyDriver

logger = logging.getLogger(__name__)

CANDIDATE_KEY = "candidate"
BASELINE_KEY = "baseline_model"
SERVING_BASE_KEY = "serving_base"
CODE_VERSION_KEY = "code_version"
# Custom properties of the output Model artifact.
VERSION_PROPERTY = "baseline_version"  # 0: no baseline (an empty artifact)
NOTE_PROPERTY = "baseline_note"
PATH_PROPERTY = "baseline_path"  # the version folder it was copied from
SERVING_MODEL_DIR = "Format-Serving"  # where TFX's Evaluator looks (tfx.utils.path_utils)


@dataclasses.dataclass(frozen=True)
class Selection:
    """The baseline chosen from a serving folder.

    Attributes:
      version: our version to compare with, or None.
      note: one line saying why (shown in logs, the gate record and the report).
      skipped: (version number, why) for our versions passed over.
    """

    version: serving_folder.Version | None
    note: str
    skipped: tuple[tuple[int, str], ...] = ()

    @property
    def key(self) -> str:
        """What the Evaluator will compare with: ``none`` or ``v<number>:<content fingerprint>``."""
        return "none" if self.version is None else f"v{self.version.number}:{self.version.fingerprint}"


def has_signature(saved_model_dir: str, signature: str) -> bool:
    """Whether a SavedModel folder defines a signature (reads only saved_model.pb).

    Returns:
      True if any meta graph has that signature; False if none has, or the file cannot be read.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    try:
        with tf.io.gfile.GFile(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
            saved.ParseFromString(f.read())
    except (OSError, tf.errors.OpError, ValueError):
        return False
    return any(signature in graph.signature_def for graph in saved.meta_graphs)


def evaluable(version_dir: str) -> bool:
    """Whether the Evaluator can run a published model (it takes labels from transform_features)."""
    return has_signature(version_dir, labels.TRANSFORM_FEATURES_SIGNATURE)


def select_baseline(
    listing: serving_folder.Listing,
    candidate_fingerprint: str,
    candidate_inputs: str,
    can_evaluate: Any = evaluable,
) -> Selection:
    """Picks the baseline from a serving folder's listing (see the module docstring).

    Args:
      listing: the serving folder (serving_folder.list_serving_folder).
      candidate_fingerprint: the candidate SavedModel's content fingerprint (pusher.model_fingerprint).
      candidate_inputs: the candidate's training-inputs fingerprint ("" if unknown).
      can_evaluate: version folder -> whether the Evaluator can run it.

    Returns:
      The selection.
    """
    serving = listing.serving
    if serving is None:
        if listing.highest_numeric is None:
            return Selection(None, "no model in the serving folder yet")
        if not listing.versions:
            return Selection(None, f"no version of ours in the serving folder (its highest, "
                                   f"{listing.highest_numeric}, has no facepipe push record)")
        return Selection(None, f"the serving folder's highest version ({listing.highest_numeric}) is not one of "
                               "ours: TF Serving serves a model we cannot vouch for")
    if pusher.already_serving(listing, candidate_fingerprint, candidate_inputs):
        return Selection(None, f"the candidate is already serving as version {serving.number}")
    skipped: list[tuple[int, str]] = []
    for version in reversed(listing.versions):
        if can_evaluate(version.path):
            note = f"version {version.number}, serving now" if version is serving else (
                f"version {version.number} (the newest one the Evaluator can run; "
                f"{len(skipped)} newer skipped)"
            )
            return Selection(version, note, tuple(skipped))
        why = f"no {labels.TRANSFORM_FEATURES_SIGNATURE} signature (exported by an older facepipe)"
        logger.warning("serving version %d is not used as the baseline: %s", version.number, why)
        skipped.append((version.number, why))
    return Selection(None, "no version in the serving folder can be evaluated", tuple(skipped))


def _candidate_fingerprints(input_dict: dict[str, list[Any]]) -> tuple[str, str]:
    candidate = artifact_utils.get_single_instance(input_dict[CANDIDATE_KEY])
    return (
        pusher.model_fingerprint(path_utils.serving_model_path(candidate.uri)),
        candidate.get_string_custom_property(artifact_properties.MODEL_INPUTS),
    )


def select_for(input_dict: dict[str, list[Any]], exec_properties: dict[str, Any]) -> Selection:
    """The selection for one execution: the serving folder in exec_properties, the candidate in input_dict."""
    listing = serving_folder.list_serving_folder(exec_properties[SERVING_BASE_KEY])
    return select_baseline(listing, *_candidate_fingerprints(input_dict))


def is_empty(baseline: Any) -> bool:
    """Whether a ServingBaseline output holds no model (the Evaluator then runs without a baseline)."""
    return baseline.get_int_custom_property(VERSION_PROPERTY) == 0


class Executor(BaseExecutor):
    """Copies the selected version into the output Model artifact, or leaves it empty."""

    def Do(self, input_dict: ArtifactDict, output_dict: ArtifactDict, exec_properties: ExecProperties) -> None:
        selection = select_for(input_dict, exec_properties)
        output = artifact_utils.get_single_instance(output_dict[BASELINE_KEY])
        target = os.path.join(output.uri, SERVING_MODEL_DIR)
        tf.io.gfile.makedirs(output.uri)
        if selection.version is not None:
            pusher.copy_tree(selection.version.path, target)
            output.set_string_custom_property(PATH_PROPERTY, selection.version.path)
            output.set_string_custom_property(
                artifact_properties.MODEL_INPUTS, selection.version.input_fingerprint
            )
        output.set_int_custom_property(VERSION_PROPERTY, selection.version.number if selection.version else 0)
        output.set_string_custom_property(NOTE_PROPERTY, selection.note)
        logger.info("baseline: %s", selection.note)


class BaselineDriver(CacheKeyDriver):
    """Local cache key: the version the executor will copy (``none`` or ``v<n>:<fingerprint>``)."""

    def cache_key(self, input_dict: dict[str, list[Any]], exec_properties: dict[str, Any]) -> str:
        try:
            return select_for(input_dict, exec_properties).key
        except serving_folder.ServingFolderError as e:
            return f"error:{e}"  # the executor fails with the same message


class ServingBaselineSpec(ComponentSpec):
    """The candidate (to recognize it when it already serves) and the serving folder."""

    PARAMETERS = {
        SERVING_BASE_KEY: ExecutionParameter(type=str),
        CODE_VERSION_KEY: ExecutionParameter(type=str),
    }
    INPUTS = {CANDIDATE_KEY: ChannelParameter(type=standard_artifacts.Model)}
    OUTPUTS = {BASELINE_KEY: ChannelParameter(type=standard_artifacts.Model)}


class ServingBaseline(base_component.BaseComponent):
    """The model serving now as a Model artifact (empty when there is none to compare with)."""

    SPEC_CLASS = ServingBaselineSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)
    DRIVER_CLASS = BaselineDriver

    def __init__(self, candidate: Channel, serving_base: str, code_version: str):
        """Builds the component.

        Args:
          candidate: the Trainer's model.
          serving_base: ``<serving-dir>/<pipeline-name>``, where the Pusher publishes.
          code_version: fingerprint of this step's code (for the cache key).
        """
        super().__init__(
            spec=ServingBaselineSpec(
                candidate=candidate,
                serving_base=serving_base,
                code_version=code_version,
                baseline_model=Channel(type=standard_artifacts.Model),
            )
        )
