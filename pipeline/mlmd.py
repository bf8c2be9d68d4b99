"""Reading a pipeline's ML Metadata: the store opened read-only, its runs, and property values.

Light on purpose (ml_metadata only, no TFX): ``python -m pipeline.report --list`` needs nothing else.
The run summary (pipeline.run_summary) and the report (pipeline.report) read ML Metadata through here.
"""

from __future__ import annotations

import os
from typing import Any

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2


def open_readonly(metadata_path: str) -> metadata_store.MetadataStore:
    """Opens a SQLite ML Metadata store read-only.

    Raises:
      ValueError: there is no such file.
    """
    if not os.path.exists(metadata_path):
        raise ValueError(f"no ML Metadata store at {metadata_path}")
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def property_value(node: metadata_store_pb2.Artifact | metadata_store_pb2.Execution, name: str) -> Any:
    """The plain value of an artifact's or execution's property (custom properties first); None when absent."""
    for props in (node.custom_properties, node.properties):
        if name in props:
            value = props[name]
            return getattr(value, value.WhichOneof("value"))
    return None


def run_ids(store: metadata_store.MetadataStore, pipeline_name: str | None = None) -> list[str]:
    """Pipeline run ids recorded in ML Metadata, oldest first.

    Args:
      store: the ML Metadata store.
      pipeline_name: only runs of this pipeline (None: all).

    Returns:
      Run ids (names of pipeline_run contexts) that have at least one execution.
    """
    contexts = store.get_contexts_by_type("pipeline_run")
    if pipeline_name is None:
        chosen = [c for c in contexts if store.get_executions_by_context(c.id)]
    else:
        pipeline_ctx = store.get_context_by_type_and_name("pipeline", pipeline_name)
        if pipeline_ctx is None:
            return []
        ids = {e.id for e in store.get_executions_by_context(pipeline_ctx.id)}
        chosen = [c for c in contexts if any(e.id in ids for e in store.get_executions_by_context(c.id))]
    return [c.name for c in sorted(chosen, key=lambda c: (c.create_time_since_epoch, c.id))]


def execution_property(store: metadata_store.MetadataStore, run_id: str, node_id: str, name: str) -> Any:
    """A property of one node's execution in a run (None when absent)."""
    context = store.get_context_by_type_and_name("pipeline_run", run_id)
    if context is None:
        return None
    for execution in store.get_executions_by_context(context.id):
        nodes = [c.name for c in store.get_contexts_by_execution(execution.id)]
        if any(n.endswith(f".{node_id}") for n in nodes):
            value = property_value(execution, name)
            if value is not None:
                return value
    return None
