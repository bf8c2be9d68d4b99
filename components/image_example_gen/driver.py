"""Local driver of the image ExampleGen: the data folder's state in the cache key.

The executor reads the data folder, which the cache key of a component without inputs does
not see: an image added, changed or removed would be missed by a cached run. This driver
(LocalDagRunner runs it before its cache lookup) fingerprints every file the executor will
read. Local folders: count, sizes and mtimes (one lstat per file). Remote folders: the listing
only (count and names), to avoid one request per object.

Kubeflow runs no custom driver; there the step runs with caching off (pipeline.kubeflow).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from tfx.types import standard_component_specs

from components.cache_key_driver import CacheKeyDriver
from components.image_example_gen import executor, ingest


def tree_fingerprint(roots: list[tuple[str, str]], data_dir: str) -> str:
    """Fingerprints every file found under the given roots.

    Args:
      roots: (root folder, top-level glob) pairs, as executor.resolve_roots returns them.
      data_dir: the data folder.

    Returns:
      ``tree:files:N,bytes:B,mtime_xor:X,mtime_sum:S,names:H`` (bytes and mtimes are 0 remotely).
    """
    names = hashlib.sha256()
    count = total = xor = summed = 0
    for root, pattern in roots:
        for found in ingest.find_files(root, pattern, data_dir=data_dir):
            count += 1
            names.update(found.path.encode(errors="surrogateescape") + b"\0")
            if not ingest.is_remote(found.path):
                try:
                    stat = os.lstat(found.path)
                except OSError:
                    continue
                total += stat.st_size
                xor ^= stat.st_mtime_ns
                summed += stat.st_mtime_ns
    return f"tree:files:{count},bytes:{total},mtime_xor:{xor},mtime_sum:{summed},names:{names.hexdigest()[:16]}"


def data_folder_key(exec_properties: dict[str, Any]) -> str:
    """What the executor will read, resolved the way the executor resolves it (spans included)."""
    input_config, span = executor.resolve_input_config(exec_properties)
    input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    selection = exec_properties.get(executor.SPANS_KEY) or ""
    roots = [
        (root, pattern)
        for split in input_config.splits
        for root, pattern, _ in executor.resolve_roots(input_base, split.pattern, selection)
    ]
    return f"span:{span}\n{tree_fingerprint(roots, input_base)}"


class DataFolderDriver(CacheKeyDriver):
    """Keys the local cache on the data folder's files (see the module docstring)."""

    def cache_key(self, input_dict: dict[str, list[Any]], exec_properties: dict[str, Any]) -> str:
        try:
            return data_folder_key(exec_properties)
        except ValueError as e:  # no span folder, ...: the executor fails with the same message
            return f"unresolved:{e}"
