"""The serving folder's layout: which entries are model versions, which of them are ours, which one serves.

``<serving-dir>/<pipeline-name>/`` is read by TF Serving, which loads the highest number it
finds among the folder names, and written by our Pusher. This module is the one definition
of that layout, shared by the Pusher, the baseline step and batch prediction:

- a *numeric folder* is any entry whose name is ASCII digits (``0099`` included: TF Serving
  reads it as 99). New versions are numbered above every numeric folder, whoever made it, or
  TF Serving would keep serving the higher one;
- a *version* of ours is a real folder (not a symbolic link) whose name is a canonical number
  (ASCII digits, no leading zeros) holding a readable push record (``facepipe_push.json``)
  whose ``version`` equals that number: complete, because the record is written last inside
  the staging folder before the rename publishes it;
- *foreign* numeric folders (pushed by other tools, or damaged) are versions to TF Serving:
  they are never deleted and never treated as ours;
- everything else (``.staging-*``, lock files, ``²``, ``v2``) is ignored, and logged.

The model *serving now* is the highest numeric folder, when it is one of our versions.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from typing import Any

logger = logging.getLogger(__name__)

PUSH_RECORD = "facepipe_push.json"  # written inside each version folder, last
STAGING_PREFIX = ".staging-"

_NUMERIC_RE = re.compile(r"[0-9]+", re.ASCII)
_CANONICAL_RE = re.compile(r"0|[1-9][0-9]*", re.ASCII)


class ServingFolderError(RuntimeError):
    """The serving folder holds something we must not touch (a symbolic link where a version belongs)."""


@dataclasses.dataclass(frozen=True)
class Version:
    """One of our published versions.

    Attributes:
      number: the version number (the folder's name).
      path: the version folder.
      record: its push record (fingerprint, input_fingerprint, version, pushed_at, provenance).
    """

    number: int
    path: str
    record: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        """Content fingerprint of the published SavedModel (components.pusher.model_fingerprint)."""
        return str(self.record.get("fingerprint") or "")

    @property
    def input_fingerprint(self) -> str:
        """Fingerprint of what the model was trained from (data, code, config); "" if unknown."""
        return str(self.record.get("input_fingerprint") or "")


@dataclasses.dataclass(frozen=True)
class Listing:
    """What a serving folder holds.

    Attributes:
      versions: our complete versions, ascending.
      highest_numeric: the highest numeric folder's number (ours or not), None when there is none.
      ignored: (name, why) for every other entry that is not a staging folder or lock file.
    """

    versions: tuple[Version, ...]
    highest_numeric: int | None
    ignored: tuple[tuple[str, str], ...]

    @property
    def serving(self) -> Version | None:
        """Our version that TF Serving serves now: the highest numeric folder, when it is ours."""
        if self.versions and self.versions[-1].number == self.highest_numeric:
            return self.versions[-1]
        return None

    def next_version(self, now: int) -> int:
        """A number above every numeric folder: Unix time, bumped past the highest existing one."""
        return max(now, (self.highest_numeric + 1) if self.highest_numeric is not None else 0)


def is_remote(path: str) -> bool:
    """Whether a path is a URI of an object store (gs://, s3://, ...) rather than a local path."""
    return "://" in path


def numeric_value(name: str) -> int | None:
    """The number TF Serving reads from a folder name (ASCII digits only), else None."""
    name = name.rstrip("/")
    return int(name) if _NUMERIC_RE.fullmatch(name) else None


def is_link(path: str) -> bool:
    """Whether a local path is a symbolic link (object stores have none)."""
    return not is_remote(path) and os.path.islink(path)


def read_record(version_dir: str) -> dict[str, Any] | None:
    """A version folder's push record, or None when it is missing, unreadable or malformed."""
    import tensorflow as tf

    path = os.path.join(version_dir, PUSH_RECORD)
    if not is_remote(path) and os.path.islink(path):
        return None
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            record = json.loads(f.read(1 << 20).decode("utf-8"))
    except (OSError, tf.errors.OpError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("fingerprint"), str):
        return None
    return record


def list_serving_folder(base_dir: str) -> Listing:
    """Lists a model's serving folder (see the module docstring for the rules).

    Args:
      base_dir: ``<serving-dir>/<pipeline-name>``, local or on an object store.

    Returns:
      The listing; empty when the folder does not exist.

    Raises:
      ServingFolderError: a numeric entry is a symbolic link (following it could read or
        overwrite a folder outside the serving folder).
    """
    import tensorflow as tf

    if not tf.io.gfile.isdir(base_dir):
        return Listing((), None, ())
    versions: list[Version] = []
    ignored: list[tuple[str, str]] = []
    highest: int | None = None
    for entry in sorted(tf.io.gfile.listdir(base_dir)):
        name = entry.rstrip("/")
        path = os.path.join(base_dir, name)
        number = numeric_value(name)
        if number is None:
            if not name.startswith((STAGING_PREFIX, ".")):
                ignored.append((name, "not a version number (ASCII digits)"))
            continue
        if is_link(path):
            raise ServingFolderError(
                f"{path} is a symbolic link where a model version belongs; refusing to use the serving "
                "folder until it is removed"
            )
        highest = number if highest is None else max(highest, number)
        if not tf.io.gfile.isdir(path):
            ignored.append((name, "a file, not a folder"))
            continue
        if not _CANONICAL_RE.fullmatch(name):
            ignored.append((name, f"zero-padded version number (TF Serving reads it as {number})"))
            continue
        record = read_record(path)
        if record is None:
            ignored.append((name, f"no readable {PUSH_RECORD} (pushed by another tool, or incomplete)"))
            continue
        if record.get("version") != number:
            ignored.append((name, f"its {PUSH_RECORD} names version {record.get('version')!r}"))
            continue
        versions.append(Version(number, path, record))
    for name, why in ignored:
        logger.info("serving folder %s: ignoring %r: %s", base_dir, name, why)
    versions.sort(key=lambda v: v.number)
    return Listing(tuple(versions), highest, tuple(ignored))


def served_model_dir(base_dir: str) -> str | None:
    """The folder TF Serving serves: the highest numeric folder holding a SavedModel, by its real name.

    Versions pushed by other tools count (TF Serving serves them too); symbolic links, files
    and folders without ``saved_model.pb`` do not. None when there is none.
    """
    import tensorflow as tf

    if not tf.io.gfile.isdir(base_dir):
        return None
    candidates = []
    for entry in tf.io.gfile.listdir(base_dir):
        name = entry.rstrip("/")
        number = numeric_value(name)
        path = os.path.join(base_dir, name)
        if number is None or is_link(path) or not tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
            continue
        candidates.append((number, path))
    return max(candidates)[1] if candidates else None
