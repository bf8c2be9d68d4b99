"""Zero-byte "directory marker" objects on Google Cloud Storage, and their removal.

TensorFlow 2.16's GCS file system writes an empty object named ``<folder>/`` for every folder
it creates. Kubeflow's launcher downloads a step's input artifacts object by object and writes
such a marker as a *file*, after which it cannot create the folder's children
(kubeflow/pipelines#13476). Every Kubeflow step therefore removes the markers under its
output artifacts before it ends (pipeline.kfp_entrypoint).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

logger = logging.getLogger(__name__)


class StorageClient(Protocol):
    """The part of google.cloud.storage.Client used here."""

    def list_blobs(self, bucket_or_name: Any, prefix: str | None = None) -> Any: ...


def split_gcs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> (``bucket``, ``a/b/``): the prefix ends in one ``/`` (or is empty)."""
    if not uri.startswith("gs://"):
        raise ValueError(f"not a gs:// URI: {uri!r}")
    bucket, _, prefix = uri[len("gs://"):].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def remove_directory_markers(uri: str, client: StorageClient | None = None) -> int:
    """Deletes the zero-byte objects whose names end in ``/`` under a gs:// folder (the folder's own included).

    Args:
      uri: ``gs://bucket/path`` of an artifact folder.
      client: a storage client (default: google.cloud.storage.Client() with the pod's credentials).

    Returns:
      How many markers were deleted.
    """
    bucket, prefix = split_gcs_uri(uri)
    if client is None:
        from google.cloud import storage

        client = storage.Client()
    markers = [blob for blob in client.list_blobs(bucket, prefix=prefix) if blob.name.endswith("/") and not blob.size]
    for blob in markers:
        blob.delete()
    if markers:
        logger.info("removed %d directory marker object(s) under %s", len(markers), uri)
    return len(markers)
