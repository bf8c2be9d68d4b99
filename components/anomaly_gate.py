"""AnomalyGate: fails the run when ExampleValidator found anomalies or the labels drifted.

ExampleValidator only records anomalies and LabelDriftCheck only reports; neither stops a
pipeline. This component reads both and raises with a message naming each problem, so nothing
downstream (Transform, Trainer) runs on bad data.
"""


import os
from typing import Any

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils

from components import drift as drift_lib


class DataAnomaliesError(RuntimeError):
    """Raised when the data does not match the curated schema or its labels drifted."""


def describe_anomalies(anomalies_uri: str, split_names: list[str]) -> list[str]:
    """Reads ExampleValidator's output and describes each anomaly in one line.

    Args:
      anomalies_uri: the ExampleAnomalies artifact's URI.
      split_names: its splits.

    Returns:
      Lines like ``train: feature 'age': Out-of-range values (...)``; empty when clean.
    """
    found = []
    for split in split_names:
        path = os.path.join(anomalies_uri, f"Split-{split}", "SchemaDiff.pb")
        anomalies = anomalies_pb2.Anomalies()
        with tf.io.gfile.GFile(path, "rb") as f:
            anomalies.ParseFromString(f.read())
        for feature, info in sorted(anomalies.anomaly_info.items()):
            found.append(f"{split}: feature {feature!r}: {info.short_description} ({info.description})")
        if anomalies.HasField("dataset_anomaly_info"):
            info = anomalies.dataset_anomaly_info
            found.append(f"{split}: dataset: {info.short_description} ({info.description})")
    return found


def describe_drift(report: dict[str, Any] | None) -> list[str]:
    """Describes a label-drift report in one line when it says "drift"; empty otherwise.

    Args:
      report: the LabelDriftCheck report (components.drift.read_report), or None.

    Returns:
      ``["label drift: ..."]`` or ``[]``.
    """
    if report is None or report.get("status") != drift_lib.STATUS_DRIFT:
        return []
    return [f"label drift: {report['message']}"]


def check_data(anomalies_uri: str, split_names: list[str], drift_report: dict[str, Any] | None = None) -> None:
    """Raises DataAnomaliesError naming every anomaly and label drift; returns when the data is clean.

    Args:
      anomalies_uri: the ExampleAnomalies artifact's URI.
      split_names: its splits.
      drift_report: the LabelDriftCheck report, or None when there is none.

    Raises:
      DataAnomaliesError: the data has anomalies or its labels drifted.
    """
    found = describe_anomalies(anomalies_uri, split_names) + describe_drift(drift_report)
    if found:
        raise DataAnomaliesError(
            f"data validation found {len(found)} problem{'' if len(found) == 1 else 's'}; "
            "the run stops before Transform: " + "; ".join(found)
        )


@tfx.dsl.components.component
def AnomalyGate(
    anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
    drift: tfx.dsl.components.InputArtifact[drift_lib.LabelDriftReport] = None,
    code_version: tfx.dsl.components.Parameter[str] = "",
) -> None:
    """Raises DataAnomaliesError naming every problem; passes silently when there are none.

    ``code_version`` only keys the cache, so an edited gate is not served from it.
    """
    del code_version
    split_names = artifact_utils.decode_split_names(anomalies.split_names)
    check_data(anomalies.uri, split_names, drift_lib.read_report(drift.uri) if drift is not None else None)
