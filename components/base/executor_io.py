"""Names for the arguments of a TFX executor's ``Do``, so that every executor states them the same way."""

from __future__ import annotations

from typing import Any

from tfx import types

ArtifactDict = dict[str, list[types.Artifact]]
"""``input_dict`` and ``output_dict``: channel key -> the artifacts on that channel."""

ExecProperties = dict[str, Any]
"""``exec_properties``: execution property name -> value."""
