"""TFX's Transform executor, writing its transformed examples as stored-block gzip.

TFX 1.16 writes transformed examples with Beam's gzip at deflate level 6, with no option to
change it. Our examples are JPEG bytes that deflate does not shrink: at 24,000 images that
compression was about 5 s of Transform's 13 s. This executor runs TFX's own executor unchanged
and swaps only the final TFRecord write (``TransformProcessor._EncodeAndWrite``) for
components.stored_gzip's writer while it runs. The files stay ``.gz`` and valid gzip, so the
Trainer, the Evaluator and any other reader of the artifact read them as before.

The swap replaces a private static method of the pinned TFX (1.16.0), for the duration of
``Do`` only (the local and Kubeflow runners execute one component per process or one at a
time). ``tests/test_transform.py`` runs this executor and checks that the swap is still in
place and that its output is stored gzip; if a TFX upgrade renames the method, those tests fail.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from tfx.components.transform import component as tfx_transform_component
from tfx.components.transform import executor as tfx_transform_executor
from tfx.components.transform import labels as transform_labels
from tfx.dsl.components.base import executor_spec

from components import stored_gzip

_Processor = tfx_transform_executor.TransformProcessor
_ORIGINAL_ENCODE_AND_WRITE = _Processor.__dict__["_EncodeAndWrite"]  # the staticmethod object
_SWAP_LOCK = threading.Lock()


@beam.ptransform_fn
def encode_and_write(pcoll: beam.PCollection, schema: Any, file_format: str, output_path: str) -> Any:
    """TFX's _EncodeAndWrite with stored-gzip TFRecords (other formats: TFX's own code).

    Args:
      pcoll: transformed RecordBatches and unary pass-through features.
      schema: the transformed data's schema.
      file_format: TFX's output format name.
      output_path: prefix of the output files.

    Returns:
      The write's result.
    """
    if file_format != transform_labels.FORMAT_TFRECORD:
        return pcoll | _ORIGINAL_ENCODE_AND_WRITE.__func__(schema, file_format, output_path)
    return (
        pcoll
        | "EncodeAndSerialize" >> beam.ParDo(_Processor._RecordBatchToExamplesFn(schema))
        | "ExtractExamples" >> beam.Values()
        | "WriteToTFRecord" >> stored_gzip.write_tfrecords_gzip(output_path)
    )


@contextlib.contextmanager
def stored_gzip_output() -> Iterator[None]:
    """While active, TFX's Transform writes stored-gzip TFRecords."""
    with _SWAP_LOCK:
        _Processor._EncodeAndWrite = staticmethod(encode_and_write)
        try:
            yield
        finally:
            _Processor._EncodeAndWrite = _ORIGINAL_ENCODE_AND_WRITE


class Executor(tfx_transform_executor.Executor):
    """TFX's Transform executor; transformed examples are written as stored-block gzip."""

    def Do(
        self, input_dict: dict[str, list[Any]], output_dict: dict[str, list[Any]], exec_properties: dict[str, Any]
    ) -> None:
        """Runs TFX's Transform with the stored-gzip writer (see the module docstring)."""
        with stored_gzip_output():
            super().Do(input_dict, output_dict, exec_properties)


class Transform(tfx_transform_component.Transform):
    """TFX's Transform component (same inputs, outputs and parameters) running the Executor above."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
