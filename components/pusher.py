"""Atomic, idempotent model publishing for the Pusher.

TFX's filesystem Pusher copies straight into ``<base>/<unix time>/`` (a reader can see a
half-copied model; a killed push leaves one behind) and silently skips the push when two
pushes fall in the same second. Here a version appears only complete: the model is copied
to a hidden staging folder beside the versions and renamed into place (atomic on a local
file system). Versions only grow, and a model that is already serving (same content
fingerprint) is not published twice, so a re-run after a crash never adds a duplicate.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from typing import Any

import tensorflow as tf
from tfx.components.pusher import component as tfx_pusher_component
from tfx.components.pusher import executor as tfx_pusher_executor
from tfx.dsl.components.base import executor_spec
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

logger = logging.getLogger(__name__)

PUSH_RECORD = "facepipe_push.json"  # written inside each version folder
_STAGING_PREFIX = ".staging-"
_LOCK_FILE = ".push.lock"


@dataclasses.dataclass(frozen=True)
class PushResult:
    """Where a model was published.

    Attributes:
      path: the version folder.
      version: its number.
      reused: True when the same model was already serving there (nothing new written).
    """

    path: str
    version: int
    reused: bool


def model_fingerprint(model_dir: str) -> str:
    """Hashes every file of a SavedModel folder (relative names and contents).

    Args:
      model_dir: the model folder.

    Returns:
      A hex sha256 digest.
    """
    digest = hashlib.sha256()
    for dirpath, _, filenames in sorted(tf.io.gfile.walk(model_dir)):
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            digest.update(os.path.relpath(path, model_dir).encode())
            with tf.io.gfile.GFile(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()


def existing_versions(base_dir: str) -> list[int]:
    """Returns the published version numbers under base_dir, ascending."""
    if not tf.io.gfile.isdir(base_dir):
        return []
    return sorted(int(n.rstrip("/")) for n in tf.io.gfile.listdir(base_dir) if n.rstrip("/").isdigit())


@contextlib.contextmanager
def _push_lock(base_dir: str) -> Iterator[None]:
    """Serializes pushes into one local base folder (no-op on object stores)."""
    if "://" in base_dir:
        yield
        return
    with open(os.path.join(base_dir, _LOCK_FILE), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_stale_staging(base_dir: str) -> None:
    """Deletes staging folders left by killed pushes (we hold the push lock: none is live)."""
    for name in tf.io.gfile.listdir(base_dir):
        if name.startswith(_STAGING_PREFIX):
            logger.info("removing staging folder %s left by an interrupted push", name)
            tf.io.gfile.rmtree(os.path.join(base_dir, name.rstrip("/")))


def _copy_tree(src: str, dst: str) -> None:
    if "://" not in src and "://" not in dst:
        shutil.copytree(src, dst)
        return
    for dirpath, _, filenames in tf.io.gfile.walk(src):
        target = os.path.join(dst, os.path.relpath(dirpath, src))
        tf.io.gfile.makedirs(target)
        for name in filenames:
            tf.io.gfile.copy(os.path.join(dirpath, name), os.path.join(target, name), overwrite=True)


def publish_model(model_dir: str, base_dir: str, source: dict[str, Any] | None = None) -> PushResult:
    """Publishes a SavedModel as a new version, atomically and at most once.

    Args:
      model_dir: the exported SavedModel folder.
      base_dir: the serving folder of this model; versions go to ``<base_dir>/<n>/``.
      source: provenance written into the version's push record (e.g. the model artifact id).

    Returns:
      The published (or already serving) version.
    """
    tf.io.gfile.makedirs(base_dir)
    fingerprint = model_fingerprint(model_dir)
    with _push_lock(base_dir):
        _remove_stale_staging(base_dir)
        versions = existing_versions(base_dir)
        for version in reversed(versions):
            record_path = os.path.join(base_dir, str(version), PUSH_RECORD)
            if tf.io.gfile.exists(record_path):
                with tf.io.gfile.GFile(record_path) as f:
                    if json.load(f).get("fingerprint") == fingerprint:
                        return PushResult(os.path.join(base_dir, str(version)), version, reused=True)
        # Unix time keeps TF Serving's "highest version wins" meaningful across machines;
        # max(...) + 1 guarantees it never collides or goes backwards.
        version = max(int(time.time()), (versions[-1] + 1) if versions else 0)
        staging = os.path.join(base_dir, f"{_STAGING_PREFIX}{version}-{uuid.uuid4().hex[:8]}")
        final = os.path.join(base_dir, str(version))
        try:
            _copy_tree(model_dir, staging)
            record = {"fingerprint": fingerprint, "version": version, "pushed_at": time.time(), **(source or {})}
            with tf.io.gfile.GFile(os.path.join(staging, PUSH_RECORD), "w") as f:
                json.dump(record, f, indent=2)
            tf.io.gfile.rename(staging, final)  # atomic on POSIX; see README for object stores
        except BaseException:
            if tf.io.gfile.exists(staging):
                tf.io.gfile.rmtree(staging)
            raise
    return PushResult(final, version, reused=False)


class Executor(tfx_pusher_executor.Executor):
    """Pusher executor that publishes blessed models with publish_model (filesystem only)."""

    def Do(
        self,
        input_dict: dict[str, list[Any]],
        output_dict: dict[str, list[Any]],
        exec_properties: dict[str, Any],
    ) -> None:
        model_push = artifact_utils.get_single_instance(output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            return
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
        if destination.WhichOneof("destination") != "filesystem":
            raise ValueError("facepipe's Pusher publishes to a filesystem push destination only")
        model = artifact_utils.get_single_instance(input_dict[standard_component_specs.MODEL_KEY])
        result = publish_model(
            self.GetModelPath(input_dict),
            destination.filesystem.base_directory,
            source={"model_artifact_id": model.id, "model_uri": model.uri},
        )
        logger.info(
            "model %s %s", "already serving as" if result.reused else "published to", result.path
        )
        self._MarkPushed(model_push, pushed_destination=result.path, pushed_version=str(result.version))
        model_push.set_int_custom_property("already_serving", int(result.reused))


class AtomicPusher(tfx_pusher_component.Pusher):
    """TFX's Pusher component with the atomic, idempotent executor above."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)
