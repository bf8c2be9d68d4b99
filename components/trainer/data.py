"""Reading examples and decoding images, shared by training and serving."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from pipeline import labels


def decode_images(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    """Decodes a batch of encoded images (JPEG, PNG, GIF, BMP) to float RGB.

    Args:
      image_bytes: string [B] of encoded images.
      image_size: output height and width.

    Returns:
      float32 [B, image_size, image_size, 3] with values 0-255.
    """

    def _one(data: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return tf.image.resize(tf.cast(image, tf.float32), [image_size, image_size])

    return tf.map_fn(
        _one, image_bytes, fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32)
    )


def read_examples(
    file_pattern: str | list[str],
    feature_spec: dict,
    batch_size: int,
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> tf.data.Dataset:
    """Reads gzipped tf.Example TFRecords in file order (deterministic).

    Args:
      file_pattern: glob(s) of example files.
      feature_spec: how to parse them: the raw feature spec when ``transform`` is given
        (tft.TFTransformOutput.raw_feature_spec()), else a spec with image_raw, labels, filename.
      batch_size: batch size.
      transform: applied to each parsed batch (tft.TFTransformOutput.transform_raw_features),
        for the pipeline's raw examples; None for examples that already hold the labels.

    Returns:
      A dataset of dicts with image_raw [B], labels [B, L] and filename [B].
    """
    files = tf.io.gfile.glob(file_pattern) if isinstance(file_pattern, str) else sorted(
        f for p in file_pattern for f in tf.io.gfile.glob(p)
    )
    keys = (labels.IMAGE_KEY, labels.LABELS_KEY, labels.FILENAME_KEY)

    def parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        features = tf.io.parse_example(serialized, feature_spec)
        if transform is not None:
            features = transform(features)
        return {k: features[k] for k in keys}

    return (
        tf.data.TFRecordDataset(sorted(files), compression_type="GZIP")
        .batch(batch_size)
        .map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    )
