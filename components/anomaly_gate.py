"""AnomalyGate: fails the run when ExampleValidator found anomalies.

ExampleValidator only records anomalies; it never stops a pipeline. This component
reads them and raises with a message naming each one, so nothing downstream runs on
bad data.
"""


import os

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils


class DataAnomaliesError(RuntimeError):
    """Raised when the data does not match the curated schema."""


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


@tfx.dsl.components.component
def AnomalyGate(anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies]) -> None:
    """Raises DataAnomaliesError naming every anomaly; passes silently when there are none."""
    split_names = artifact_utils.decode_split_names(anomalies.split_names)
    found = describe_anomalies(anomalies.uri, split_names)
    if found:
        raise DataAnomaliesError(
            f"data validation found {len(found)} anomal{'y' if len(found) == 1 else 'ies'}; "
            "the run stops before Transform: " + "; ".join(found)
        )
