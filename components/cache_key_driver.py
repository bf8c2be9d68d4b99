"""A driver that adds a cache key to a component's execution properties (LocalDagRunner only).

TFX's local launcher runs a component's custom driver before it looks in the cache, and the
cache key covers the execution properties the driver returns. Components that read outside
the artifact store (the data folder, the serving folder) use this to put what they will read
into the key, so that a changed folder re-runs them and an unchanged one is served from the
cache. Kubeflow runs no custom driver; there those steps run with caching off
(pipeline.kubeflow), and their executors never rely on the key.
"""

from __future__ import annotations

import abc
from typing import Any

from tfx.dsl.components.base import base_driver
from tfx.orchestration import data_types_utils
from tfx.orchestration.portable import base_driver as ir_base_driver
from tfx.proto.orchestration import driver_output_pb2

CACHE_KEY_PROPERTY = "cache_key"


class CacheKeyDriver(base_driver.BaseDriver, ir_base_driver.BaseDriver):
    """Adds ``cache_key`` (from ``cache_key()``) to the execution properties; changes nothing else."""

    def __init__(self, metadata_handle: Any):
        base_driver.BaseDriver.__init__(self, metadata_handle)
        ir_base_driver.BaseDriver.__init__(self, metadata_handle)

    @abc.abstractmethod
    def cache_key(self, input_dict: dict[str, list[Any]], exec_properties: dict[str, Any]) -> str:
        """What the executor will read outside the artifact store, as a string."""

    def run(self, execution_info: Any) -> driver_output_pb2.DriverOutput:
        """Called by TFX's local launcher before its cache lookup."""
        result = driver_output_pb2.DriverOutput()
        key = self.cache_key(dict(execution_info.input_dict), dict(execution_info.exec_properties))
        data_types_utils.set_metadata_value(result.exec_properties[CACHE_KEY_PROPERTY], key)
        return result
