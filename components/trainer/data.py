"""Reading examples and decoding images, shared by training and serving."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from components.base import labels


def decode_pixels(data: tf.Tensor) -> tf.Tensor:
    """Decodes one encoded image (JPEG, PNG, GIF, BMP) to uint8 RGB [H, W, 3], at its own size.

    The first half of decode_images; the on-device model (model.tflite) takes these pixels and
    resizes them inside with resize_pixels, so both models see the same values.
    """
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def resize_pixels(pixels: tf.Tensor, image_size: int) -> tf.Tensor:
    """uint8 (or float) RGB [..., H, W, 3] -> float32 [..., image_size, image_size, 3], values 0-255 (bilinear)."""
    return tf.image.resize(tf.cast(pixels, tf.float32), [image_size, image_size])


def decode_images(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    """Decodes a batch of encoded images (JPEG, PNG, GIF, BMP) to float RGB.

    Args:
      image_bytes: string [B] of encoded images.
      image_size: output height and width.

    Returns:
      float32 [B, image_size, image_size, 3] with values 0-255.
    """

    def _one(data: tf.Tensor) -> tf.Tensor:
        return resize_pixels(decode_pixels(data), image_size)

    return tf.map_fn(
        _one, image_bytes, fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32)
    )


def without_autotune(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Turns tf.data's autotuning model off for a dataset that is read to the end.

    With it on (TF 2.16), destroying a finished iterator sometimes waits about 25 s with idle
    CPUs (native stack: ``RootDataset::Iterator::~Iterator`` waiting in
    ``UnboundedThreadPool::LogicalThreadWrapper``): 3 of 8 bare passes over 24,000 images took
    83 s instead of 58 s, and Keras makes a new iterator every epoch. Without it, 4 of 4 took
    58 s. ``AUTOTUNE`` parallelism then means one call per core, and prefetch buffers keep
    their own (legacy) autotuning.

    Args:
      dataset: any dataset.

    Returns:
      The dataset with ``autotune.enabled = False``.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def example_files(file_pattern: str | list[str]) -> list[str]:
    """The files of one or more globs, sorted."""
    patterns = [file_pattern] if isinstance(file_pattern, str) else file_pattern
    return sorted(f for p in patterns for f in tf.io.gfile.glob(p))


def count_examples(file_pattern: str | list[str]) -> int:
    """Records in gzipped TFRecord files, read without parsing (the embedding engine's choice)."""
    dataset = tf.data.TFRecordDataset(example_files(file_pattern), compression_type="GZIP", buffer_size=1 << 20)
    return int(without_autotune(dataset).reduce(np.int64(0), lambda n, _: n + 1).numpy())


def read_examples(file_pattern: str | list[str], feature_spec: dict, batch_size: int) -> tf.data.Dataset:
    """Reads gzipped tf.Example TFRecords in file order (deterministic).

    Args:
      file_pattern: glob(s) of example files.
      feature_spec: how to parse them: tft.TFTransformOutput.raw_feature_spec() for the pipeline's
        raw examples (the Trainer applies the Transform graph outside tf.data: see embeddings.embed),
        or a spec with image_raw, labels and filename for examples that hold the labels.
      batch_size: batch size.

    Returns:
      A dataset of dicts of the spec's features, [B, ...] each.
    """
    return (
        tf.data.TFRecordDataset(example_files(file_pattern), compression_type="GZIP")
        .batch(batch_size)
        .map(lambda x: tf.io.parse_example(x, feature_spec), num_parallel_calls=tf.data.AUTOTUNE)
    )


def with_labels(dataset: tf.data.Dataset, filenames: np.ndarray, label_matrix: np.ndarray) -> tf.data.Dataset:
    """Labels batches of raw examples by looking their file names up.

    The labels come from the embedding pass (embeddings.embed applies the Transform graph there), so
    fine-tuning trains on exactly the labels the head trained on.

    Args:
      dataset: batches of dicts with filename [B].
      filenames: (N,) file names.
      label_matrix: (N, L) their label vectors.

    Returns:
      Batches of image_raw [B], filename [B] and labels [B, L]; a file name not in
      ``filenames`` fails the gather.
    """
    # One key per name: a span range can hold the same relative name in two span folders (two
    # examples, the same labels, since labels come from the name), and a hash table refuses a
    # key given twice with different values.
    names, first = np.unique(filenames.astype(str), return_index=True)
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(names), tf.range(len(names), dtype=tf.int64)),
        default_value=-1,
    )
    matrix = tf.constant(label_matrix[first], tf.float32)

    def add(batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        names = tf.reshape(batch[labels.FILENAME_KEY], [-1])  # raw features are [B, 1]
        return {
            labels.IMAGE_KEY: tf.reshape(batch[labels.IMAGE_KEY], [-1]),
            labels.FILENAME_KEY: names,
            labels.LABELS_KEY: tf.gather(matrix, table.lookup(names)),
        }

    return dataset.map(add, num_parallel_calls=tf.data.AUTOTUNE)
