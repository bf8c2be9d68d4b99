"""ImageExampleGen: a file-based ExampleGen for folders of labelled images."""

from __future__ import annotations

from tfx.components.example_gen import utils
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import example_gen_pb2, range_config_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.channel import Channel
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.image_example_gen import driver, executor, ingest
from components.image_example_gen import spans as span_layout


class ImageExampleGenSpec(ComponentSpec):
    """FileBasedExampleGen's parameters plus the file-name pattern and limits."""

    PARAMETERS = {
        standard_component_specs.INPUT_BASE_KEY: ExecutionParameter(type=str),
        standard_component_specs.INPUT_CONFIG_KEY: ExecutionParameter(type=example_gen_pb2.Input),
        standard_component_specs.OUTPUT_CONFIG_KEY: ExecutionParameter(type=example_gen_pb2.Output),
        standard_component_specs.OUTPUT_DATA_FORMAT_KEY: ExecutionParameter(type=int),
        standard_component_specs.OUTPUT_FILE_FORMAT_KEY: ExecutionParameter(type=int),
        standard_component_specs.CUSTOM_CONFIG_KEY: ExecutionParameter(
            type=example_gen_pb2.CustomConfig, optional=True
        ),
        standard_component_specs.RANGE_CONFIG_KEY: ExecutionParameter(
            type=range_config_pb2.RangeConfig, optional=True
        ),
        executor.FILENAME_PATTERN_KEY: ExecutionParameter(type=str),
        executor.MAX_IMAGE_PIXELS_KEY: ExecutionParameter(type=int),
        executor.MAX_FILE_BYTES_KEY: ExecutionParameter(type=int),
        executor.SPANS_KEY: ExecutionParameter(type=str),
        # Changes with the executor's source, so the cache never serves stale examples.
        executor.CODE_VERSION_KEY: ExecutionParameter(type=str),
    }
    INPUTS = {}
    OUTPUTS = {standard_component_specs.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples)}


class ImageExampleGen(base_beam_component.BaseBeamComponent):
    """Reads image files, parses labels from their names, writes tf.Examples.

    Output features: image_raw (bytes), age, gender, race (int64), filename (bytes).
    It takes FileBasedExampleGen's parameters but is not one on purpose: Kubeflow's compiler
    gives every FileBasedExampleGen TFX's driver as a ``preCacheCheck`` hook, which Vertex AI
    runs and the open-source KFP backend ignores. The executor resolves spans itself, so both
    read the same data; locally, a driver only adds the data folder's state to the cache key.

    Spans: with ``spans`` set, the data folder holds ``span-<N>`` folders. "latest" and "N" use
    TFX's ``span-{SPAN}/*`` pattern (the executor picks the newest span folder, or the range
    config's); a range "A-B" matches every span folder and the executor keeps those in the range.
    """

    SPEC_CLASS = ImageExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
    # Local runs only: the cache key covers every file the executor will read.
    DRIVER_CLASS = driver.DataFolderDriver

    def __init__(
        self,
        input_base: str,
        filename_pattern: str,
        code_version: str,
        max_image_pixels: int,
        output_config: example_gen_pb2.Output,
        input_config: example_gen_pb2.Input | None = None,
        range_config: range_config_pb2.RangeConfig | None = None,
        spans: str | None = None,
        max_file_bytes: int = ingest.DEFAULT_MAX_FILE_BYTES,
    ):
        """Builds the component.

        Args:
          input_base: the data folder (local or gs://).
          filename_pattern: regex with named groups age, gender, race.
          code_version: a fingerprint of the ingestion code (pipeline.config.code_fingerprint).
          max_image_pixels: images larger than this are quarantined undecoded.
          output_config: the split config (hash buckets over the file name).
          input_config: which files to read; all files by default. Not with ``spans``.
          range_config: which spans to read; the latest by default. Not with ``spans``.
          spans: None for a flat data folder; "latest", "N" or "A-B" for a folder of
            ``span-<N>`` folders.
          max_file_bytes: files larger than this are quarantined unread.

        Raises:
          ValueError: ``spans`` is malformed or combined with input_config/range_config.
        """
        if spans is not None:
            if input_config is not None or range_config is not None:
                raise ValueError("pass either spans or input_config/range_config, not both")
            input_config, range_config = span_input_config(spans)
        input_config = input_config or utils.make_default_input_config()
        spec = ImageExampleGenSpec(
            input_base=input_base,
            input_config=input_config,
            output_config=output_config,
            output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
            output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
            range_config=range_config,
            filename_pattern=filename_pattern,
            max_image_pixels=max_image_pixels,
            max_file_bytes=max_file_bytes,
            spans=spans or "",
            code_version=code_version,
            examples=Channel(type=standard_artifacts.Examples),
        )
        super().__init__(spec=spec)


def span_input_config(
    selection: str,
) -> tuple[example_gen_pb2.Input, range_config_pb2.RangeConfig | None]:
    """Builds the ExampleGen input and range config that read the selected spans.

    Args:
      selection: "latest", "N" or "A-B".

    Returns:
      (input_config, range_config or None).
    """
    parsed = span_layout.parse_span_selection(selection)
    if parsed.is_range:
        return utils.make_default_input_config(span_layout.ALL_SPANS_PATTERN), None
    input_config = utils.make_default_input_config(span_layout.SINGLE_SPAN_PATTERN)
    if parsed.is_latest:
        return input_config, None
    return input_config, range_config_pb2.RangeConfig(
        static_range=range_config_pb2.StaticRange(start_span_number=parsed.first, end_span_number=parsed.first)
    )
