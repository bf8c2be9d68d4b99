"""Executor of the image ExampleGen: image files -> tf.Examples + quarantine.jsonl.

The Beam graph, per input split:

  list files (outside Beam: names only) -> Reshuffle -> CheckName ----------------> CheckFile -> examples
                                                          \\-> HashFile -> GroupByKey -> duplicates (side input)

File bytes are read inside ParDos and dropped once the example is written, and examples are
written without the Reshuffle of TFX's WriteSplit (which holds every example in memory on the
DirectRunner), so memory does not grow with the number of images. Each file is read twice
(hash, then check); only small records (paths, hashes) are grouped.

The executor needs no driver: it resolves ``{SPAN}`` in the input pattern itself (the newest
``span-<N>`` folder, or the RangeConfig's span), because Kubeflow's open-source backend runs no
ExampleGen driver. It also records a *data fingerprint* on the Examples artifact: a digest of
every written example (its bytes and split) and of the quarantine list, so two runs that
ingested exactly the same data can be recognized whatever the file times.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from typing import Any

import apache_beam as beam
import tensorflow as tf
from tfx.components.example_gen import utils
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2, range_config_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components import artifact_properties, stored_gzip
from components.base import labels
from components.base.executor_io import ArtifactDict, ExecProperties
from components.image_example_gen import ingest, spans

FILENAME_PATTERN_KEY = "filename_pattern"
MAX_IMAGE_PIXELS_KEY = "max_image_pixels"
MAX_FILE_BYTES_KEY = "max_file_bytes"
CODE_VERSION_KEY = "code_version"
# "" for a flat data folder; "latest", "N" or "A-B" for a folder of span-<N> folders.
SPANS_KEY = "spans"

# Custom properties of the output Examples artifact.
FILES_FOUND_PROPERTY = "files_found"
QUARANTINED_PROPERTY = "quarantined"
FIRST_SPAN_PROPERTY = "first_span"
LAST_SPAN_PROPERTY = "last_span"
# What was read, for checks that look at the data folder again (LabelDriftCheck).
INPUT_BASE_PROPERTY = "input_base"
FILENAME_PATTERN_PROPERTY = "filename_pattern"

_TFRECORD_PREFIX = "data_tfrecord"  # the name TFX's own ExampleGens use
DATA_FINGERPRINT_FILE = "data_fingerprint.txt"  # inside the Examples artifact, beside quarantine.jsonl
_EXAMPLES_TAG = "examples"
_QUARANTINE_TAG = "quarantine"


def resolve_input_config(exec_properties: dict[str, Any]) -> tuple[example_gen_pb2.Input, int | None]:
    """The input config with ``{SPAN}`` resolved, and the span it resolved to (None without ``{SPAN}``).

    Args:
      exec_properties: the ImageExampleGen execution properties (input_base, input_config and the
        optional range_config: a static range of one span; "" or absent means the newest span).

    Returns:
      (input config, span number or None).

    Raises:
      ValueError: a range config that is not one static span, or no matching span folder.
    """
    input_config = example_gen_pb2.Input()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
    requested = None
    range_text = exec_properties.get(standard_component_specs.RANGE_CONFIG_KEY) or ""
    if range_text:
        range_config = range_config_pb2.RangeConfig()
        proto_utils.json_to_proto(range_text, range_config)
        static = range_config.static_range
        if range_config.WhichOneof("range") != "static_range" or static.start_span_number != static.end_span_number:
            raise ValueError(f"range_config must be a static range of one span, got {range_text}")
        requested = static.start_span_number
    span = None
    for split in input_config.splits:
        if "{SPAN}" in split.pattern:
            split.pattern, span = spans.resolve_single_span(
                exec_properties[standard_component_specs.INPUT_BASE_KEY], split.pattern, requested
            )
    return input_config, span


def _example_digest(serialized: bytes, split_name: str) -> int:
    """One example's share of the data fingerprint (its split and bytes), as an integer."""
    return int.from_bytes(hashlib.sha256(split_name.encode() + b"\0" + serialized).digest(), "big")


class _SumDigests(beam.CombineFn):
    """Order-independent combination of per-example digests: their sum modulo 2**256, and their count."""

    def create_accumulator(self) -> tuple[int, int]:
        return 0, 0

    def add_input(self, accumulator: tuple[int, int], digest: int) -> tuple[int, int]:
        return (accumulator[0] + digest) % (1 << 256), accumulator[1] + 1

    def merge_accumulators(self, accumulators) -> tuple[int, int]:
        total, count = 0, 0
        for a_total, a_count in accumulators:
            total, count = (total + a_total) % (1 << 256), count + a_count
        return total, count

    def extract_output(self, accumulator: tuple[int, int]) -> tuple[int, int]:
        return accumulator


def _fingerprint_line(examples: tuple[int, int], quarantine_lines: list[str], input_base: str) -> str:
    # Quarantined files count by their path inside the data folder and their reason: a copy of the
    # folder elsewhere is the same data (messages name full paths, so they are left out).
    base = input_base.rstrip("/") + "/"
    entries = sorted(
        f"{entry['path'][len(base):] if entry['path'].startswith(base) else entry['path']}\t{entry['reason']}"
        for entry in map(json.loads, quarantine_lines)
    )
    quarantine = hashlib.sha256("\n".join(entries).encode(errors="surrogateescape")).hexdigest()
    total, count = examples
    return hashlib.sha256(f"examples:{count}:{total:064x}\nquarantine:{quarantine}".encode()).hexdigest()


def resolve_roots(input_base: str, split_pattern: str, spans_text: str) -> list[tuple[str, str, int | None]]:
    """Turns the (span-resolved) split pattern into the folders to read.

    A pattern whose first folder is ``span-<N>`` (what resolve_input_config makes of ``span-{SPAN}/*``)
    reads that span; a range selection reads every span folder in the range; anything else
    reads the data folder itself.

    Args:
      input_base: the data folder.
      split_pattern: the input split's pattern with ``{SPAN}`` resolved (resolve_input_config)
        (e.g. ``*`` or ``span-3/*``).
      spans_text: the component's span selection ("" for a flat folder).

    Returns:
      (root folder, top-level glob under it, span number or None) per folder; file names are
      made relative to the root, so a file's split does not depend on which span holds it.

    Raises:
      ValueError: no span folder matches a range selection.
    """
    base = input_base.rstrip("/")
    sep = "/" if ingest.is_remote(input_base) else os.sep
    selection = spans.parse_span_selection(spans_text) if spans_text else None
    if selection is not None and selection.is_range:
        found = spans.find_spans(input_base)
        chosen = [n for n in sorted(found) if selection.first <= n <= selection.last]
        if not chosen:
            raise ValueError(
                f"no span folder for spans {selection} in {input_base} (span folders found: "
                f"{', '.join(found.values()) or 'none'})"
            )
        return [(f"{base}{sep}{found[n]}", "*", n) for n in chosen]
    folder, _, rest = split_pattern.partition("/")
    number = spans.span_number(folder)
    if number is not None and rest:
        return [(f"{base}{sep}{folder}", rest, number)]
    return [(input_base, split_pattern, None)]


class _CheckName(beam.DoFn):
    """Passes (path, relative) on when the name is acceptable; else a quarantine line."""

    def __init__(self, pattern: str):
        self._pattern_text = pattern
        self._pattern = None

    def setup(self) -> None:
        self._pattern = labels.compile_pattern(self._pattern_text)

    def process(self, element: tuple[str, str]):
        path, relative = element
        result = ingest.check_name(path, relative, self._pattern)
        if isinstance(result, ingest.QuarantineEntry):
            yield beam.pvalue.TaggedOutput(_QUARANTINE_TAG, result.to_json())
        else:
            yield element


class _HashFile(beam.DoFn):
    """Emits (sha256 of the bytes, (relative, path)); files that cannot be read are left to CheckFile."""

    def __init__(self, max_file_bytes: int):
        self._max_file_bytes = max_file_bytes

    def process(self, element: tuple[str, str]):
        path, relative = element
        data = ingest.read_bounded(path, relative, self._max_file_bytes)
        if isinstance(data, bytes) and data:  # empty files are all "equal" but are empty_file, not duplicates
            yield hashlib.sha256(data).hexdigest(), (relative, path)


def _duplicates(group: tuple[str, Any], pattern: str):
    """For one content hash, yields (path, quarantine JSON line) for every copy not kept."""
    _, copies = group
    for path, entry in ingest.duplicate_entries(copies, pattern).items():
        yield path, entry.to_json()


def _sorted_by_path(lines: list[str]) -> list[str]:
    """Quarantine JSON lines sorted by their path."""
    return sorted(lines, key=lambda line: json.loads(line)["path"])


class _CheckFile(beam.DoFn):
    """Reads one file and emits a tf.Example or a quarantine JSON line."""

    def __init__(self, pattern: str, max_pixels: int, max_file_bytes: int):
        self._pattern_text = pattern
        self._max_pixels = max_pixels
        self._max_file_bytes = max_file_bytes
        self._pattern = None

    def setup(self) -> None:
        self._pattern = labels.compile_pattern(self._pattern_text)

    def process(self, element: tuple[str, str], duplicates: dict[str, str]):
        path, relative = element
        if path in duplicates:
            yield beam.pvalue.TaggedOutput(_QUARANTINE_TAG, duplicates[path])
            return
        data = ingest.read_bounded(path, relative, self._max_file_bytes)
        result = data if isinstance(data, ingest.QuarantineEntry) else ingest.check_file(
            path, relative, data, self._pattern, self._max_pixels
        )
        if isinstance(result, ingest.QuarantineEntry):
            yield beam.pvalue.TaggedOutput(_QUARANTINE_TAG, result.to_json())
        else:
            yield result


class Executor(BaseExampleGenExecutor):
    """Turns a folder of labelled image files into tf.Examples.

    Every file found is either written as a tf.Example or listed with its reason in
    ``quarantine.jsonl`` inside the output Examples artifact; the artifact's custom properties
    ``files_found`` and ``quarantined`` say how many of each.
    """

    def __init__(self, context: Any = None):
        super().__init__(context)
        self._quarantine: list[beam.PCollection] = []
        self._files_found = 0
        self._spans_read: set[int] = set()

    def Do(self, input_dict: ArtifactDict, output_dict: ArtifactDict, exec_properties: ExecProperties) -> None:
        """Lists, checks and writes the examples; see the module docstring.

        Args:
          input_dict: unused (an ExampleGen has no inputs).
          output_dict: ``examples``: the output Examples artifact.
          exec_properties: the ImageExampleGen parameters (``{SPAN}`` is resolved here).
        """
        self._log_startup(input_dict, output_dict, exec_properties)
        self._quarantine, self._files_found, self._spans_read = [], 0, set()
        input_config, span = resolve_input_config(exec_properties)
        exec_properties = {
            **exec_properties,
            standard_component_specs.INPUT_CONFIG_KEY: proto_utils.proto_to_json(input_config),
        }
        output_config = example_gen_pb2.Output()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY], output_config)
        output = output_dict[standard_component_specs.EXAMPLES_KEY]
        examples = artifact_utils.get_single_instance(output)
        examples.split_names = artifact_utils.encode_split_names(
            utils.generate_output_split_names(input_config, output_config)
        )
        quarantine_path = posixpath.join(examples.uri, ingest.QUARANTINE_FILE)

        fingerprint_path = posixpath.join(examples.uri, DATA_FINGERPRINT_FILE)
        with self._make_beam_pipeline() as pipeline:
            digests = []
            for split_name, split in self.GenerateExamplesByBeam(pipeline, exec_properties).items():
                serialized = split | f"Serialize[{split_name}]" >> beam.Map(
                    lambda e: e.SerializeToString(deterministic=True)
                )
                # No Reshuffle before writing (unlike TFX's WriteSplit): the input paths were
                # already shuffled, and a Reshuffle of examples holds them all in memory.
                _ = serialized | f"Write[{split_name}]" >> stored_gzip.write_tfrecords_gzip(
                    os.path.join(artifact_utils.get_split_uri(output, split_name), _TFRECORD_PREFIX)
                )
                digests.append(serialized | f"Digest[{split_name}]" >> beam.Map(_example_digest, split_name))
            quarantine = (
                tuple(self._quarantine)
                | "FlattenQuarantine" >> beam.Flatten()
                | "CollectQuarantine" >> beam.combiners.ToList()
            )
            _ = (
                quarantine
                | "SortQuarantine" >> beam.FlatMap(_sorted_by_path)  # a stable file
                | "WriteQuarantine" >> beam.io.WriteToText(quarantine_path, shard_name_template="", num_shards=1)
            )
            _ = (
                tuple(digests)
                | "FlattenDigests" >> beam.Flatten()
                | "SumDigests" >> beam.CombineGlobally(_SumDigests())
                | "Fingerprint" >> beam.Map(
                    _fingerprint_line,
                    quarantine_lines=beam.pvalue.AsSingleton(quarantine),
                    input_base=exec_properties[standard_component_specs.INPUT_BASE_KEY],
                )
                | "WriteFingerprint" >> beam.io.WriteToText(fingerprint_path, shard_name_template="", num_shards=1)
            )

        examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
        examples_utils.set_file_format(examples, "tfrecords_gzip")
        examples.set_int_custom_property(QUARANTINED_PROPERTY, len(ingest.read_quarantine(examples.uri)))
        examples.set_int_custom_property(FILES_FOUND_PROPERTY, self._files_found)
        input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
        examples.set_string_custom_property(INPUT_BASE_PROPERTY, input_base)
        examples.set_string_custom_property(
            FILENAME_PATTERN_PROPERTY, exec_properties.get(FILENAME_PATTERN_KEY) or labels.UTKFACE_PATTERN
        )
        with tf.io.gfile.GFile(fingerprint_path) as f:
            examples.set_string_custom_property(artifact_properties.DATA_FINGERPRINT, f.read().strip())
        if self._spans_read:
            examples.set_int_custom_property(FIRST_SPAN_PROPERTY, min(self._spans_read))
            examples.set_int_custom_property(LAST_SPAN_PROPERTY, max(self._spans_read))
        # The span read, or the last one of a range: as the Examples type's property, and as the
        # custom property TFX's own ExampleGen driver writes (readers use either).
        examples.span = span if span is not None else max(self._spans_read, default=0)
        examples.set_int_custom_property(utils.SPAN_PROPERTY_NAME, examples.span)

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        """Returns the PTransform reading one input split (see the module docstring)."""
        executor = self

        @beam.ptransform_fn
        @beam.typehints.with_input_types(beam.Pipeline)
        @beam.typehints.with_output_types(tf.train.Example)
        def _ImageToExample(pipeline: beam.Pipeline, exec_properties: dict[str, Any], split_pattern: str):
            input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
            pattern = exec_properties.get(FILENAME_PATTERN_KEY) or labels.UTKFACE_PATTERN
            max_pixels = int(exec_properties.get(MAX_IMAGE_PIXELS_KEY) or ingest.DEFAULT_MAX_IMAGE_PIXELS)
            max_file_bytes = int(exec_properties.get(MAX_FILE_BYTES_KEY) or ingest.DEFAULT_MAX_FILE_BYTES)
            found: list[ingest.FoundFile] = []
            selection = exec_properties.get(SPANS_KEY) or ""
            for root, top_pattern, span in resolve_roots(input_base, split_pattern, selection):
                found.extend(ingest.find_files(root, top_pattern, data_dir=input_base))
                if span is not None:
                    executor._spans_read.add(span)
            if not found:
                raise ValueError(f"no files found under {input_base!r} matching {split_pattern!r}")
            executor._files_found += len(found)

            listed_issues = sorted(f.issue.to_json() for f in found if f.issue is not None)
            candidates = [(f.path, f.relative) for f in found if f.issue is None]
            named = (
                pipeline
                | "ListFiles" >> beam.Create(candidates, reshuffle=False)
                | "Reshuffle" >> beam.Reshuffle()
                | "CheckName" >> beam.ParDo(_CheckName(pattern)).with_outputs(_QUARANTINE_TAG, main="named")
            )
            duplicates = (
                named["named"]
                | "HashFile" >> beam.ParDo(_HashFile(max_file_bytes))
                | "GroupByContent" >> beam.GroupByKey()
                | "FindDuplicates" >> beam.FlatMap(_duplicates, pattern)
            )
            results = named["named"] | "CheckFile" >> beam.ParDo(
                _CheckFile(pattern, max_pixels, max_file_bytes), duplicates=beam.pvalue.AsDict(duplicates)
            ).with_outputs(_QUARANTINE_TAG, main=_EXAMPLES_TAG)
            executor._quarantine.extend([
                pipeline | "ListingIssues" >> beam.Create(listed_issues, reshuffle=False),
                named[_QUARANTINE_TAG],
                results[_QUARANTINE_TAG],
            ])
            return results[_EXAMPLES_TAG]

        return _ImageToExample


def run_on_folder(data_dir: str, out_dir: str, pattern: str = "*", **overrides: Any) -> Any:
    """Runs the executor directly on a folder, as the pipeline does for a flat folder.

    For tests, benchmarks and debugging: no orchestrator, no ML Metadata. The split is the
    pipeline's default 80/20 hash of the file name.

    Args:
      data_dir: the input folder.
      out_dir: the Examples artifact's URI.
      pattern: the input split pattern, relative to data_dir.
      overrides: exec properties to replace (e.g. ``max_image_pixels``).

    Returns:
      The filled-in Examples artifact.
    """
    from tfx.types import standard_artifacts

    examples = standard_artifacts.Examples()
    examples.uri = out_dir
    output_config = example_gen_pb2.Output(
        split_config=example_gen_pb2.SplitConfig(
            splits=[
                example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=4),
                example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=1),
            ],
            partition_feature_name=labels.FILENAME_KEY,
        )
    )
    exec_properties = {
        standard_component_specs.INPUT_BASE_KEY: data_dir,
        standard_component_specs.INPUT_CONFIG_KEY: proto_utils.proto_to_json(utils.make_default_input_config(pattern)),
        standard_component_specs.OUTPUT_CONFIG_KEY: proto_utils.proto_to_json(output_config),
        standard_component_specs.OUTPUT_DATA_FORMAT_KEY: example_gen_pb2.FORMAT_TF_EXAMPLE,
        standard_component_specs.OUTPUT_FILE_FORMAT_KEY: example_gen_pb2.FORMAT_TFRECORDS_GZIP,
        FILENAME_PATTERN_KEY: labels.UTKFACE_PATTERN,
        MAX_IMAGE_PIXELS_KEY: ingest.DEFAULT_MAX_IMAGE_PIXELS,
        MAX_FILE_BYTES_KEY: ingest.DEFAULT_MAX_FILE_BYTES,
        SPANS_KEY: "",
        CODE_VERSION_KEY: "direct",
        **overrides,
    }
    Executor().Do({}, {standard_component_specs.EXAMPLES_KEY: [examples]}, exec_properties)
    return examples
