"""Atomic, idempotent model publishing for the Pusher.

TFX's filesystem Pusher copies straight into ``<base>/<unix time>/`` (a reader can see a
half-copied model; a killed push leaves one behind) and silently skips the push when two
pushes fall in the same second. Here a version appears only complete: the model is copied
to a hidden staging folder beside the versions, its push record written last, and the folder
renamed into place (atomic on a local file system). The layout rules (what a version is,
which one serves) are components.serving_folder's.

"Already serving" means the highest version in the serving folder (the one TF Serving
serves) is ours and holds the same model: the same content, or the same inputs (data, code
and config: a scheduled re-run retrains from the same inputs, which need not give
bit-identical weights). Such a model is not published again. A model equal to an older,
lower version is published as a new highest version, so that a rollback takes effect.

One writer per pipeline: pushes into one local folder are serialized by a lock file; on
object stores a version number is claimed with a create-if-absent marker (Google Cloud
Storage preconditions), and a staging folder is removed only once it is older than
``STALE_STAGING_SECONDS``, never while another push may still use it.
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
from typing import Any, Protocol

import tensorflow as tf
from tfx.components.pusher import component as tfx_pusher_component
from tfx.components.pusher import executor as tfx_pusher_executor
from tfx.dsl.components.base import executor_spec
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import path_utils, proto_utils

from components import artifact_properties, serving_folder
from components.base.executor_io import ArtifactDict, ExecProperties
from components.cache_key_driver import CacheKeyDriver
from components.serving_folder import PUSH_RECORD, STAGING_PREFIX, ServingFolderError, is_link, is_remote

logger = logging.getLogger(__name__)

__all__ = ["PUSH_RECORD", "AtomicPusher", "PushResult", "publish_model", "ServingFolderError"]

_LOCK_FILE = ".push.lock"
_CLAIMS_DIR = ".facepipe-claims"
# A staging folder this old belongs to a push that died: no live push takes an hour to copy a model.
STALE_STAGING_SECONDS = 3600


@dataclasses.dataclass(frozen=True)
class PushResult:
    """Where a model was published.

    Attributes:
      path: the version folder.
      version: its number.
      reused: True when the model was already serving there (nothing new written).
      same_as_version: an older version holding the same model (a rollback), else None.
    """

    path: str
    version: int
    reused: bool
    same_as_version: int | None = None


class VersionClaims(Protocol):
    """Claims a version number for one push, so that two writers never publish the same number."""

    def claim(self, base_dir: str, version: int) -> bool:
        """True when this push now owns ``version``; False when another push (or folder) has it."""


class LocalClaims:
    """A local folder: the push lock is held, so a number is free when no entry has that name."""

    def claim(self, base_dir: str, version: int) -> bool:
        return not os.path.lexists(os.path.join(base_dir, str(version)))


class GcsClaims:
    """Google Cloud Storage: an empty marker object created only if absent (``if_generation_match=0``).

    Args:
      client: a google.cloud.storage.Client (or anything with ``bucket(name).blob(path)``).
    """

    def __init__(self, client: Any):
        self._client = client

    def claim(self, base_dir: str, version: int) -> bool:
        from google.api_core import exceptions

        if tf.io.gfile.exists(os.path.join(base_dir, str(version))):
            return False
        bucket_name, _, prefix = base_dir.removeprefix("gs://").partition("/")
        name = "/".join(p for p in (prefix.strip("/"), _CLAIMS_DIR, str(version)) if p)
        try:
            self._client.bucket(bucket_name).blob(name).upload_from_string(b"", if_generation_match=0)
        except exceptions.PreconditionFailed:
            return False
        return True


def default_claims(base_dir: str) -> VersionClaims:
    """The claim mechanism for a serving folder: local, Google Cloud Storage, or existence only."""
    if base_dir.startswith("gs://"):
        from google.cloud import storage

        return GcsClaims(storage.Client())
    if is_remote(base_dir):
        logger.warning("no atomic version claims on %s: keep to one writer per pipeline", base_dir)
    return LocalClaims()


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
            if name == PUSH_RECORD:  # a version folder's own record is not part of the model
                continue
            path = os.path.join(dirpath, name)
            digest.update(os.path.relpath(path, model_dir).encode())
            with tf.io.gfile.GFile(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()


def existing_versions(base_dir: str) -> list[int]:
    """Our complete published version numbers under base_dir, ascending."""
    return [v.number for v in serving_folder.list_serving_folder(base_dir).versions]


def already_serving(listing: serving_folder.Listing, fingerprint: str, input_fingerprint: str) -> bool:
    """Whether the version serving now holds this model (same content, or same inputs)."""
    serving = listing.serving
    return serving is not None and (
        serving.fingerprint == fingerprint or bool(input_fingerprint) and serving.input_fingerprint == input_fingerprint
    )


@contextlib.contextmanager
def _push_lock(base_dir: str) -> Iterator[None]:
    """Serializes pushes into one local base folder (no-op on object stores: see GcsClaims)."""
    if is_remote(base_dir):
        yield
        return
    lock_path = os.path.join(base_dir, _LOCK_FILE)
    if os.path.islink(lock_path):
        raise ServingFolderError(f"{lock_path} is a symbolic link; refusing to push until it is removed")
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _staging_created(name: str) -> int | None:
    """The creation time in a staging folder's name (``.staging-<unix time>-<random>``)."""
    stamp = name.removeprefix(STAGING_PREFIX).split("-", 1)[0]
    return int(stamp) if stamp.isascii() and stamp.isdigit() else None


def _remove_stale_staging(base_dir: str, now: float) -> None:
    """Deletes staging folders of pushes that died, never one a live push may still be writing.

    Raises:
      ServingFolderError: a staging name is a symbolic link (removing "its" contents would
        delete whatever it points to).
    """
    for entry in tf.io.gfile.listdir(base_dir):
        name = entry.rstrip("/")
        if not name.startswith(STAGING_PREFIX):
            continue
        path = os.path.join(base_dir, name)
        if is_link(path):
            raise ServingFolderError(
                f"{path} is a symbolic link where a staging folder belongs; refusing to push until it is removed"
            )
        created = _staging_created(name)
        if created is None or now - created < STALE_STAGING_SECONDS:
            continue
        logger.info("removing staging folder %s left by an interrupted push", name)
        tf.io.gfile.rmtree(path)


def copy_tree(src: str, dst: str) -> None:
    """Copies a folder (local or on an object store); symbolic links inside are copied, never followed."""
    if not is_remote(src) and not is_remote(dst):
        shutil.copytree(src, dst, symlinks=True)  # a link inside a model is copied as a link, never followed
        return
    for dirpath, _, filenames in tf.io.gfile.walk(src):
        target = os.path.join(dst, os.path.relpath(dirpath, src))
        tf.io.gfile.makedirs(target)
        for name in filenames:
            tf.io.gfile.copy(os.path.join(dirpath, name), os.path.join(target, name), overwrite=True)


def publish_model(
    model_dir: str,
    base_dir: str,
    source: dict[str, Any] | None = None,
    input_fingerprint: str = "",
    claims: VersionClaims | None = None,
    clock: Any = time.time,
) -> PushResult:
    """Publishes a SavedModel as a new version, atomically, unless it is already serving.

    Args:
      model_dir: the exported SavedModel folder.
      base_dir: the serving folder of this model; versions go to ``<base_dir>/<n>/``.
      source: provenance written into the version's push record (e.g. the model artifact id).
      input_fingerprint: what the model was trained from (data, code, config); "" if unknown.
      claims: how a version number is claimed (default: default_claims(base_dir)).
      clock: returns the current Unix time (tests pass their own).

    Returns:
      The published (or already serving) version.

    Raises:
      ServingFolderError: a symbolic link where a version or staging folder belongs.
    """
    tf.io.gfile.makedirs(base_dir)
    fingerprint = model_fingerprint(model_dir)
    claims = claims or default_claims(base_dir)
    with _push_lock(base_dir):
        now = clock()
        _remove_stale_staging(base_dir, now)
        listing = serving_folder.list_serving_folder(base_dir)
        if already_serving(listing, fingerprint, input_fingerprint):
            serving = listing.serving
            return PushResult(serving.path, serving.number, reused=True)
        if listing.highest_numeric is not None and listing.serving is None:
            logger.warning("the highest version folder in %s (%d) is not one of ours; publishing above it",
                           base_dir, listing.highest_numeric)
        same_as = next(
            (v.number for v in reversed(listing.versions)
             if v.fingerprint == fingerprint or (input_fingerprint and v.input_fingerprint == input_fingerprint)),
            None,
        )
        staging = os.path.join(base_dir, f"{STAGING_PREFIX}{int(now)}-{uuid.uuid4().hex[:12]}")
        try:
            copy_tree(model_dir, staging)
            version = listing.next_version(int(now))
            while not claims.claim(base_dir, version):
                version += 1
            record = {
                "fingerprint": fingerprint,
                "input_fingerprint": input_fingerprint,
                "version": version,
                "pushed_at": now,
                **({"same_as_version": same_as} if same_as is not None else {}),
                **(source or {}),
            }
            with tf.io.gfile.GFile(os.path.join(staging, PUSH_RECORD), "w") as f:
                json.dump(record, f, indent=2)
            final = os.path.join(base_dir, str(version))
            tf.io.gfile.rename(staging, final)  # atomic on POSIX; a copy on object stores
        except BaseException:
            if tf.io.gfile.exists(staging) and not is_link(staging):
                tf.io.gfile.rmtree(staging)
            raise
    if same_as is not None:
        logger.info("model equals version %d; published again as %d so that it serves (rollback)", same_as, version)
    return PushResult(final, version, reused=False, same_as_version=same_as)


def _is_blessed(input_dict: dict[str, list[Any]]) -> bool:
    blessings = input_dict.get(standard_component_specs.MODEL_BLESSING_KEY) or []
    return bool(blessings) and blessings[0].get_int_custom_property("blessed") == 1


def _base_directory(exec_properties: dict[str, Any]) -> str:
    destination = pusher_pb2.PushDestination()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
    if destination.WhichOneof("destination") != "filesystem":
        raise ValueError("facepipe's Pusher publishes to a filesystem push destination only")
    return destination.filesystem.base_directory


class Executor(tfx_pusher_executor.Executor):
    """Pusher executor that publishes blessed models with publish_model (filesystem only)."""

    def Do(self, input_dict: ArtifactDict, output_dict: ArtifactDict, exec_properties: ExecProperties) -> None:
        model_push = artifact_utils.get_single_instance(output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            return
        model = artifact_utils.get_single_instance(input_dict[standard_component_specs.MODEL_KEY])
        input_fingerprint = model.get_string_custom_property(artifact_properties.MODEL_INPUTS)
        result = publish_model(
            self.GetModelPath(input_dict),
            _base_directory(exec_properties),
            source={"model_artifact_id": model.id, "model_uri": model.uri},
            input_fingerprint=input_fingerprint,
        )
        logger.info("model %s %s", "already serving as" if result.reused else "published to", result.path)
        self._MarkPushed(model_push, pushed_destination=result.path, pushed_version=str(result.version))
        model_push.set_int_custom_property("already_serving", int(result.reused))
        if result.same_as_version is not None:
            model_push.set_int_custom_property("same_as_version", result.same_as_version)


class PusherDriver(CacheKeyDriver):
    """Local cache key: whether the blessed model already serves, read from the serving folder.

    A push that is needed gets a key that never matches (the folder may have lost the version
    an earlier identical run published); "already serving as version N" and "not blessed" are
    stable, so an unchanged re-run is served from the cache.
    """

    def cache_key(self, input_dict: dict[str, list[Any]], exec_properties: dict[str, Any]) -> str:
        if not _is_blessed(input_dict):
            return "not-blessed"
        model = artifact_utils.get_single_instance(input_dict[standard_component_specs.MODEL_KEY])
        model_dir = path_utils.serving_model_path(model.uri)
        fingerprint = model_fingerprint(model_dir)
        inputs = model.get_string_custom_property(artifact_properties.MODEL_INPUTS)
        try:
            listing = serving_folder.list_serving_folder(_base_directory(exec_properties))
        except ServingFolderError:
            return f"publish:{uuid.uuid4().hex}"  # the executor reports the problem
        if already_serving(listing, fingerprint, inputs):
            return f"serving:{listing.serving.number}:{listing.serving.fingerprint}"
        return f"publish:{uuid.uuid4().hex}"


class AtomicPusher(tfx_pusher_component.Pusher):
    """TFX's Pusher component with the atomic, idempotent executor above."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)
    DRIVER_CLASS = PusherDriver
