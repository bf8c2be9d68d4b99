"""Driver of the image ExampleGen: TFX's file-based driver plus a fingerprint of every file below.

TFX's FileBasedDriver resolves ``{SPAN}`` and fingerprints the entries its pattern matches
(``*``: the top-level files and folders, by size and modification time). A folder's mtime only
changes when entries are added to or removed from it directly, so an image added two folders
deep would leave that fingerprint, and therefore the cache key, unchanged: the run would reuse
the old examples and miss the file. This driver appends a fingerprint of every file the
executor will walk. Local folders: count, sizes and mtimes (one lstat per file). Remote
folders: the listing only (count and names), to avoid one request per object.

LocalDagRunner uses this driver; KubeflowV2 runs its own FileBasedExampleGen driver (TFX's
fingerprint only) for every FileBasedExampleGen, so there a changed file deep in a sub-folder
needs a new span or a run without cache.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from tfx.components.example_gen import driver, utils
from tfx.proto import example_gen_pb2
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

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
            names.update(found.path.encode() + b"\0")
            if not ingest.is_remote(found.path):
                try:
                    stat = os.lstat(found.path)
                except OSError:
                    continue
                total += stat.st_size
                xor ^= int(stat.st_mtime)
                summed += int(stat.st_mtime)
    return f"tree:files:{count},bytes:{total},mtime_xor:{xor},mtime_sum:{summed},names:{names.hexdigest()[:16]}"


class ImageFileDriver(driver.FileBasedDriver):
    """FileBasedDriver whose input fingerprint also covers files in sub-folders."""

    def resolve_exec_properties(self, exec_properties: dict[str, Any], pipeline_info: Any, component_info: Any):
        """Resolves spans as TFX does, then extends the input fingerprint (see the module docstring).

        Args:
          exec_properties: the component's execution properties.
          pipeline_info: passed to FileBasedDriver.
          component_info: passed to FileBasedDriver.

        Returns:
          The resolved execution properties.
        """
        exec_properties = super().resolve_exec_properties(exec_properties, pipeline_info, component_info)
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
        input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
        selection = exec_properties.get(executor.SPANS_KEY) or ""
        roots = [
            (root, pattern)
            for split in input_config.splits
            for root, pattern, _ in executor.resolve_roots(input_base, split.pattern, selection)
        ]
        fingerprint = exec_properties.get(utils.FINGERPRINT_PROPERTY_NAME) or ""
        exec_properties[utils.FINGERPRINT_PROPERTY_NAME] = f"{fingerprint}\n{tree_fingerprint(roots, input_base)}"
        return exec_properties
