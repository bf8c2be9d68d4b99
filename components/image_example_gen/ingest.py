"""Pure helpers of the image ExampleGen: find files, check one file, build its tf.Example.

Every file found is either turned into a tf.Example or into a quarantine entry that
says why it was not ingested, so no input is silently lost. Quarantine reasons
(machine-readable, snake_case):

  listing:   symlink_outside_data_dir, broken_symlink, symlinked_directory,
             not_a_regular_file, unreadable_directory, non_utf8_name, duplicate_name
  name:      hidden_file, name_mismatch, age_out_of_range, gender_out_of_range, race_out_of_range
  bytes:     unreadable_file, empty_file, file_too_large, not_an_image, unsupported_format,
             undecodable_image, image_too_large (components.images reads and normalises the bytes,
             the same way batch prediction does)
  contents:  duplicate (exact same bytes and labels as the file that was kept),
             conflicting_labels (exact same bytes as another file with other labels: every copy)

Relative paths are normalised to Unicode NFC before they are stored as the ``filename``
feature and hashed for the train/eval split, so a folder copied through macOS (which writes
NFD names) keeps every file's split. Two files whose relative paths are equal after that
normalisation are duplicates by name (``duplicate_name``): the first by path is kept.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import json
import os
import posixpath
import re
import stat
import unicodedata
from collections.abc import Callable, Iterable

import tensorflow as tf

from components import images
from components.base import labels
from components.images import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_IMAGE_PIXELS, is_remote

QUARANTINE_FILE = "quarantine.jsonl"
ALLOWED_FORMATS = images.ALLOWED_FORMATS
_GLOB_CHARACTERS = "*?["  # what fnmatch treats as a pattern


@dataclasses.dataclass(frozen=True)
class QuarantineEntry:
    """A file that was not ingested.

    Attributes:
      path: the file's path as found.
      reason: machine-readable reason, snake_case (e.g. ``name_mismatch``).
      message: a human sentence.
    """

    path: str
    reason: str
    message: str

    def to_json(self) -> str:
        """Returns the entry as one JSON line."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


@dataclasses.dataclass(frozen=True)
class FoundFile:
    """One entry found under the data folder.

    Attributes:
      path: full path (local or gs://).
      relative: path relative to its root (the data folder, or its span folder); stored as the
        ``filename`` feature and hashed for the train/eval split.
      issue: set when listing alone shows the file cannot be ingested (e.g. a symlink that
        leaves the data folder).
    """

    path: str
    relative: str
    issue: QuarantineEntry | None = None


def _join(folder: str, name: str) -> str:
    return posixpath.join(folder, name) if is_remote(folder) else os.path.join(folder, name)


def _is_within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def escape_glob(path: str) -> str:
    """Escapes the characters tf.io.gfile.glob (fnmatch) treats as a pattern, so ``path`` matches itself.

    Without it a data folder named ``faces[1]`` is read as the pattern ``faces1``.
    """
    return re.sub(r"([*?\[\\])", r"\\\1", path)


def _add(out: list[FoundFile], path: str, relative: str, issue: QuarantineEntry | None = None) -> None:
    """Adds one entry; a name that is not UTF-8 is quarantined whatever else it is."""
    if not images.is_utf8(relative):
        shown, shown_path = images.display_path(relative), images.display_path(path)
        # Its path is shown with \xNN escapes: the real one could not be written to JSON, TFRecords or
        # the report, and the entry is never opened again.
        out.append(FoundFile(shown_path, shown, QuarantineEntry(
            shown_path, "non_utf8_name",
            f"{shown!r} is not valid UTF-8 (undecodable bytes shown as \\xNN); rename it to ingest it")))
        return
    # NFC: the same name copied through macOS (NFD) keeps its filename feature and its split.
    out.append(FoundFile(path, unicodedata.normalize("NFC", relative), issue))


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"


def _walk_local(path: str, relative: str, real_data_dir: str, out: list[FoundFile]) -> None:
    """Lists a local entry and everything below it without following symlinks.

    (tf.io.gfile.walk loops forever on a link cycle.) Iterative, so that no nesting depth can
    exhaust Python's recursion limit.
    """
    stack = [(path, relative)]
    while stack:
        folder_path, folder_relative = stack.pop()
        children = _list_entry(folder_path, folder_relative, real_data_dir, out)
        stack.extend(reversed(children))


def _list_entry(path: str, relative: str, real_data_dir: str, out: list[FoundFile]) -> list[tuple[str, str]]:
    """Adds one entry to ``out``; returns the (path, relative) of its children when it is a folder.

    Nothing is opened here: a link is judged by what it points to (os.stat), so a link to a FIFO
    or a device is refused before anything could block on it.
    """
    shown = images.display_path(relative)
    if os.path.islink(path):
        target = os.path.realpath(path)
        shown_target = images.display_path(target)
        if not os.path.exists(target):
            _add(out, path, relative, QuarantineEntry(
                path, "broken_symlink",
                f"{shown!r} is a symbolic link to {images.display_path(os.readlink(path))!r}, which does not exist"))
        elif not _is_within(target, real_data_dir):
            _add(out, path, relative, QuarantineEntry(
                path, "symlink_outside_data_dir",
                f"{shown!r} is a symbolic link to {shown_target!r}, outside the data folder "
                f"{images.display_path(real_data_dir)!r}; links may only point inside the data folder"))
        elif os.path.isdir(target):
            _add(out, path, relative, QuarantineEntry(
                path, "symlinked_directory",
                f"{shown!r} is a symbolic link to the folder {shown_target!r}; linked folders are not followed "
                "(their files are read where they really are)"))
        else:  # a link to something inside the data folder: judged by what it points to
            _add_if_regular(out, path, relative, os.stat, f"{shown!r} is a symbolic link to {shown_target!r}, which is")
        return []
    if os.path.isdir(path):
        try:
            names = sorted(os.listdir(path))
        except OSError as e:
            _add(out, path, relative, QuarantineEntry(
                path, "unreadable_directory", f"folder {shown!r} could not be listed: {e}"))
            return []
        return [(os.path.join(path, name), f"{relative}/{name}" if relative else name) for name in names]
    _add_if_regular(out, path, relative, os.lstat, f"{shown!r} is")
    return []


def _add_if_regular(
    out: list[FoundFile], path: str, relative: str, stat_fn: Callable[[str], os.stat_result], shown_is: str
) -> None:
    """Adds a regular file; quarantines anything else, described as ``{shown_is} <its kind>``.

    Reading a FIFO would block forever; devices and sockets are not data.
    """
    try:
        mode = stat_fn(path).st_mode
    except OSError as e:
        shown = images.display_path(relative)
        _add(out, path, relative, QuarantineEntry(path, "unreadable_file", f"{shown!r} could not be read: {e}"))
        return
    if stat.S_ISREG(mode):
        _add(out, path, relative)
    else:
        _add(out, path, relative, QuarantineEntry(
            path, "not_a_regular_file", f"{shown_is} {_kind(mode)}; only regular files are read"))


def _match_local(root: str, pattern: str) -> list[str]:
    """The entries under ``root`` that ``pattern`` (``/``-separated globs) matches; ``root`` is literal.

    Listing with os.listdir (not a glob of the joined path) keeps glob characters in the data
    folder's own name literal and names that are not UTF-8 readable. ``*`` matches hidden
    names too, as tf.io.gfile.glob's does.
    """
    paths = [root]
    for part in (p for p in pattern.split("/") if p):
        matched = []
        for base in paths:
            if not any(c in part for c in _GLOB_CHARACTERS):
                candidate = os.path.join(base, part)
                if os.path.lexists(candidate):
                    matched.append(candidate)
                continue
            try:
                names = os.listdir(base)
            except (FileNotFoundError, NotADirectoryError):
                continue
            matched.extend(os.path.join(base, n) for n in names if fnmatch.fnmatchcase(n, part))
        paths = matched
    return sorted(paths)


def find_files(root: str, pattern: str = "*", data_dir: str | None = None) -> list[FoundFile]:
    """Finds every file under ``root`` matching ``pattern`` at the top level, recursively below.

    Local folders are walked without following symbolic links: a link to a regular file inside
    the data folder is read like a file, every other link is returned with an issue. Remote
    paths (``gs://``) are listed through tf.io.gfile and have no links. Glob characters in
    ``root`` itself are literal. Names that are not UTF-8 and names that collide after NFC
    normalisation come back with an issue.

    Args:
      root: the folder that relative paths are relative to (the data folder or a span folder).
      pattern: glob pattern of the top-level entries under ``root``.
      data_dir: the folder links must stay inside; ``root`` by default.

    Returns:
      FoundFile entries, sorted by path.
    """
    data_dir = data_dir or root
    if not images.is_utf8(root):
        raise ValueError(f"the folder {images.display_path(root)!r} has a path that is not valid UTF-8; rename it")
    out: list[FoundFile] = []
    if is_remote(root):
        root = root.rstrip("/")
        for match in sorted(tf.io.gfile.glob(_join(escape_glob(root), pattern))):
            if tf.io.gfile.isdir(match):
                for dirpath, _, filenames in tf.io.gfile.walk(match):
                    for name in filenames:
                        path = posixpath.join(dirpath.rstrip("/"), name)
                        _add(out, path, path[len(root) + 1 :])
            else:
                _add(out, match, match[len(root) + 1 :] if match.startswith(root + "/") else match)
    else:
        root = os.path.normpath(root)
        real_data_dir = os.path.realpath(data_dir)
        for match in _match_local(root, pattern):
            relative = (match[len(root) + 1 :] if match.startswith(root + os.sep) else match).replace(os.sep, "/")
            # The folder holding the entry may itself be reached through a link (a span folder, or
            # the root, linked elsewhere): what it holds is outside the data folder too.
            parent = os.path.realpath(os.path.dirname(match))
            if not _is_within(parent, real_data_dir):
                _add(out, match, relative, QuarantineEntry(
                    match, "symlink_outside_data_dir",
                    f"{images.display_path(relative)!r} is in {images.display_path(parent)!r}, outside the data "
                    f"folder {images.display_path(real_data_dir)!r}, through a symbolic link; not read"))
                continue
            _walk_local(match, relative, real_data_dir, out)
    return mark_duplicate_names(sorted(out, key=lambda f: f.path))


def mark_duplicate_names(found: list[FoundFile]) -> list[FoundFile]:
    """Gives every file whose relative path equals an earlier one's a ``duplicate_name`` issue.

    Relative paths are NFC-normalised, so two names that differ only in their Unicode form (or
    the same name in two span folders) would otherwise become two examples with one ``filename``.

    Args:
      found: entries sorted by path.

    Returns:
      The same entries in the same order; the first of each name is kept as it was.
    """
    kept: dict[str, str] = {}
    out = []
    for f in found:
        if f.issue is None and f.relative in kept:
            out.append(dataclasses.replace(f, issue=QuarantineEntry(
                f.path, "duplicate_name",
                f"{f.relative!r} ({f.path}) has the same name as {kept[f.relative]} (names are compared in "
                "Unicode NFC form); only that file is ingested")))
            continue
        if f.issue is None:
            kept[f.relative] = f.path
        out.append(f)
    return out


def check_name(path: str, relative_name: str, pattern: re.Pattern[str]) -> labels.ParsedName | QuarantineEntry:
    """Checks a file's name only: hidden files and folders, the file-name pattern, label ranges.

    Args:
      path: the file's full path (reported in quarantine entries).
      relative_name: the path relative to the data (or span) folder.
      pattern: compiled file-name pattern (components.base.labels.compile_pattern).

    Returns:
      The parsed labels, or a QuarantineEntry.
    """
    parts = relative_name.split("/")
    base = parts[-1]
    if base.startswith("."):
        return QuarantineEntry(path, "hidden_file", f"{base!r} is a hidden file; hidden files are not ingested")
    hidden_dirs = [p for p in parts[:-1] if p.startswith(".")]
    if hidden_dirs:
        return QuarantineEntry(
            path, "hidden_file", f"{relative_name!r} is inside the hidden folder {hidden_dirs[0]!r}; not ingested"
        )
    try:
        return labels.parse_filename(base, pattern)
    except labels.FilenameError as e:
        return QuarantineEntry(path, e.reason, e.message)


def check_file(
    path: str,
    relative_name: str,
    data: bytes,
    pattern: re.Pattern[str],
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> tf.train.Example | QuarantineEntry:
    """Turns one file into a tf.Example, or says why it cannot be ingested.

    Args:
      path: the file's full path (reported in quarantine entries).
      relative_name: the path relative to the data folder (or span folder); stored as
        ``filename`` and used for the stable hash split.
      data: the file's bytes.
      pattern: compiled file-name pattern (components.base.labels.compile_pattern).
      max_pixels: images with more pixels than this are refused undecoded.

    Returns:
      A tf.train.Example with image_raw (JPEG or PNG, 8-bit RGB; components.images.normalize_image),
      age, gender, race, filename; or a QuarantineEntry.
    """
    parsed = check_name(path, relative_name, pattern)
    if isinstance(parsed, QuarantineEntry):
        return parsed
    base = posixpath.basename(relative_name)
    try:
        image_bytes = images.normalize_image(data, max_pixels)
    except images.Rejected as e:
        return QuarantineEntry(path, e.reason, f"{base!r} {e.detail}")
    feature = {
        labels.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes])),
        labels.AGE_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[parsed.age])),
        labels.GENDER_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[parsed.gender])),
        labels.RACE_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[parsed.race])),
        labels.FILENAME_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[relative_name.encode()])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def read_bounded(path: str, relative_name: str, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes | QuarantineEntry:
    """Reads a whole file, but never more than ``max_bytes`` + 1 bytes of it, and never blocks.

    Args:
      path: local or remote path.
      relative_name: for messages.
      max_bytes: larger files are refused.

    Returns:
      The bytes, or a QuarantineEntry (unreadable_file, file_too_large, not_a_regular_file).
    """
    try:
        return images.read_file(path, max_bytes)
    except images.Rejected as e:
        shown = images.display_path(relative_name)
        return QuarantineEntry(images.display_path(path), e.reason, f"{shown!r} {e.detail}")


@functools.lru_cache(maxsize=8)
def _compiled(pattern: str) -> re.Pattern[str]:
    return labels.compile_pattern(pattern)


def duplicate_entries(copies: Iterable[tuple[str, str]], pattern: str) -> dict[str, QuarantineEntry]:
    """Judges files with identical bytes: which copies are quarantined, and why.

    Copies whose names give the same labels are one image: the smallest relative path is kept,
    the others are ``duplicate``. When the copies disagree on their labels, none of them can be
    trusted: every copy is ``conflicting_labels``.

    Args:
      copies: (relative path, full path) of each copy; their names passed check_name.
      pattern: the file-name pattern (text), to read each copy's labels.

    Returns:
      full path -> QuarantineEntry for each copy not kept (empty for a single copy).
    """
    ordered = sorted(copies)
    if len(ordered) < 2:
        return {}
    compiled = _compiled(pattern)
    parsed = {path: check_name(path, relative, compiled) for relative, path in ordered}
    distinct = {p for p in parsed.values() if isinstance(p, labels.ParsedName)}
    if len(distinct) > 1:
        described = "; ".join(
            f"{relative!r}: age {p.age}, gender {p.gender}, race {p.race}"
            for relative, path in ordered
            if isinstance(p := parsed[path], labels.ParsedName)
        )
        return {
            path: QuarantineEntry(
                path, "conflicting_labels",
                f"{relative!r} has exactly the same contents as {len(ordered) - 1} other file(s) whose names give "
                f"other labels ({described}); identical images that disagree on their labels are all quarantined",
            )
            for relative, path in ordered
        }
    (kept_relative, kept_path), others = ordered[0], ordered[1:]
    return {
        path: QuarantineEntry(
            path, "duplicate",
            f"{relative!r} has exactly the same contents as {kept_relative!r} ({kept_path}), which was kept",
        )
        for relative, path in others
    }


def read_quarantine(examples_uri: str) -> list[dict[str, str]]:
    """Reads the quarantine entries an ExampleGen run wrote into its output artifact.

    Args:
      examples_uri: the Examples artifact's URI.

    Returns:
      One dict (path, reason, message) per quarantined file.
    """
    path = posixpath.join(examples_uri, QUARANTINE_FILE)
    if not tf.io.gfile.exists(path):
        return []
    with tf.io.gfile.GFile(path) as f:
        return [json.loads(line) for line in f if line.strip()]
