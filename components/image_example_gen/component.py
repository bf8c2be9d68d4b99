"""ImageExampleGen: a file-based ExampleGen for folders of labelled images."""

from __future__ import annotations

from tfx.components.example_gen import utils
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2, range_config_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.channel import Channel
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.image_example_gen import executor


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
        # Changes with the executor's source, so the cache never serves stale examples.
        executor.CODE_VERSION_KEY: ExecutionParameter(type=str),
    }
    INPUTS = {}
    OUTPUTS = {standard_component_specs.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples)}


class ImageExampleGen(FileBasedExampleGen):
    """Reads image files, parses labels from their names, writes tf.Examples.

    Output features: image_raw (bytes), age, gender, race (int64), filename (bytes).
    Subclasses FileBasedExampleGen so its driver (input fingerprint, spans) and the
    orchestrators' special handling of file-based ExampleGens apply unchanged.
    """

    SPEC_CLASS = ImageExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(
        self,
        input_base: str,
        filename_pattern: str,
        code_version: str,
        max_image_pixels: int,
        output_config: example_gen_pb2.Output,
        input_config: example_gen_pb2.Input | None = None,
        range_config: range_config_pb2.RangeConfig | None = None,
    ):
        """Builds the component.

        Args:
          input_base: the data folder (local or gs://).
          filename_pattern: regex with named groups age, gender, race.
          code_version: a fingerprint of the ingestion code (pipeline.config.code_fingerprint).
          max_image_pixels: images larger than this are quarantined undecoded.
          output_config: the split config (hash buckets over the file name).
          input_config: which files to read; all files by default.
          range_config: which spans to read; the latest by default.
        """
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
            code_version=code_version,
            examples=Channel(type=standard_artifacts.Examples),
        )
        super(FileBasedExampleGen, self).__init__(spec=spec)
