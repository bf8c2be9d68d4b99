"""Executor of the image ExampleGen: image files -> tf.Examples + quarantine.jsonl."""

from __future__ import annotations

import os
import posixpath
from typing import Any

import apache_beam as beam
import tensorflow as tf
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.types import artifact_utils, standard_component_specs

from components.image_example_gen import ingest
from pipeline import labels

FILENAME_PATTERN_KEY = "filename_pattern"
MAX_IMAGE_PIXELS_KEY = "max_image_pixels"
CODE_VERSION_KEY = "code_version"

_EXAMPLES_TAG = "examples"
_QUARANTINE_TAG = "quarantine"


class _CheckFile(beam.DoFn):
    """Reads one file and emits a serialized tf.Example or a quarantine JSON line."""

    def __init__(self, input_base: str, pattern: str, max_pixels: int):
        self._input_base = input_base.rstrip("/")
        self._pattern_text = pattern
        self._max_pixels = max_pixels
        self._pattern = None

    def setup(self) -> None:
        self._pattern = labels.compile_pattern(self._pattern_text)

    def process(self, path: str):
        relative = path[len(self._input_base) + 1 :] if path.startswith(self._input_base + "/") else path
        try:
            with tf.io.gfile.GFile(path, "rb") as f:
                data = f.read()
        except (tf.errors.OpError, OSError) as e:
            entry = ingest.QuarantineEntry(path, "unreadable_file", f"{relative!r} could not be read: {e}")
            yield beam.pvalue.TaggedOutput(_QUARANTINE_TAG, entry.to_json())
            return
        result = ingest.check_file(path, relative, data, self._pattern, self._max_pixels)
        if isinstance(result, ingest.QuarantineEntry):
            yield beam.pvalue.TaggedOutput(_QUARANTINE_TAG, result.to_json())
        else:
            yield result


class Executor(BaseExampleGenExecutor):
    """Turns a folder of labelled image files into tf.Examples.

    Files whose names do not parse, or whose bytes are not a decodable image, are not
    ingested; each is written with its reason to ``quarantine.jsonl`` inside the output
    Examples artifact.
    """

    _quarantine_path: str | None = None

    def Do(
        self,
        input_dict: dict[str, list[Any]],
        output_dict: dict[str, list[Any]],
        exec_properties: dict[str, Any],
    ) -> None:
        examples = artifact_utils.get_single_instance(output_dict[standard_component_specs.EXAMPLES_KEY])
        self._quarantine_path = posixpath.join(examples.uri, ingest.QUARANTINE_FILE)
        super().Do(input_dict, output_dict, exec_properties)
        quarantined = ingest.read_quarantine(examples.uri)
        examples.set_int_custom_property("quarantined", len(quarantined))

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        quarantine_path = self._quarantine_path

        @beam.ptransform_fn
        @beam.typehints.with_input_types(beam.Pipeline)
        @beam.typehints.with_output_types(tf.train.Example)
        def _ImageToExample(pipeline: beam.Pipeline, exec_properties: dict[str, Any], split_pattern: str):
            input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
            pattern = exec_properties.get(FILENAME_PATTERN_KEY) or labels.UTKFACE_PATTERN
            max_pixels = int(exec_properties.get(MAX_IMAGE_PIXELS_KEY) or ingest.DEFAULT_MAX_IMAGE_PIXELS)
            matches = sorted(tf.io.gfile.glob(os.path.join(input_base, split_pattern)))
            paths: list[str] = []
            for match in matches:
                paths.extend(ingest.list_files(match) if tf.io.gfile.isdir(match) else [match])
            if not paths:
                raise ValueError(f"no files found under {input_base!r} matching {split_pattern!r}")
            results = (
                pipeline
                | "ListFiles" >> beam.Create(paths, reshuffle=False)
                | "Reshuffle" >> beam.Reshuffle()
                | "CheckFile" >> beam.ParDo(_CheckFile(input_base, pattern, max_pixels)).with_outputs(
                    _QUARANTINE_TAG, main=_EXAMPLES_TAG
                )
            )
            if quarantine_path:
                _ = results[_QUARANTINE_TAG] | "WriteQuarantine" >> beam.io.WriteToText(
                    quarantine_path, shard_name_template="", num_shards=1
                )
            return results[_EXAMPLES_TAG]

        return _ImageToExample
