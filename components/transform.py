"""Transform: the label vector and readable slice features, from the raw labels.

Image bytes pass through untouched (decoding happens in the model), so no pixel
tensors are materialized. Labels are computed from components.base.labels' declarative
definitions, the same ones the Python parser and the reports use.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from components.base import labels


def _dense(x: tf.Tensor | tf.SparseTensor) -> tf.Tensor:
    """[B, 1] dense or sparse feature -> [B] dense."""
    if isinstance(x, tf.SparseTensor):
        x = tf.sparse.to_dense(x)
    return tf.reshape(x, [-1])


def label_matrix(
    age: tf.Tensor, gender: tf.Tensor, race: tf.Tensor, label_defs: tuple[labels.LabelDef, ...] = labels.LABELS
) -> tf.Tensor:
    """Builds the multi-hot label matrix in the graph.

    Args:
      age, gender, race: int64 [B] tensors.
      label_defs: the label definitions, in output order.

    Returns:
      float32 [B, len(label_defs)].
    """
    fields = {labels.AGE_KEY: age, labels.GENDER_KEY: gender, labels.RACE_KEY: race}
    columns = []
    for label in label_defs:
        x = fields[label.field]
        value = tf.constant(label.value, dtype=x.dtype)
        columns.append(tf.equal(x, value) if label.op == "eq" else tf.greater_equal(x, value))
    return tf.cast(tf.stack(columns, axis=1), tf.float32)


def age_group_names(age: tf.Tensor) -> tf.Tensor:
    """Maps int ages [B] to age-group names [B] (components.base.labels.AGE_GROUPS)."""
    bounds = tf.constant([lower for lower, _ in labels.AGE_GROUPS[1:]], dtype=age.dtype)
    index = tf.searchsorted(bounds, age, side="right")
    return tf.gather(tf.constant([name for _, name in labels.AGE_GROUPS]), index)


def preprocessing_fn(inputs: dict[str, Any]) -> dict[str, tf.Tensor]:
    """tf.Transform preprocessing function.

    Args:
      inputs: raw features image_raw, age, gender, race, filename.

    Returns:
      image_raw and filename passed through; ``labels`` (float32 multi-hot, one column
      per components.base.labels.LABEL_NAMES); slice features age_group, gender_name, race_name.
    """
    age = _dense(inputs[labels.AGE_KEY])
    gender = _dense(inputs[labels.GENDER_KEY])
    race = _dense(inputs[labels.RACE_KEY])
    # Clipping keeps out-of-range values (already stopped by validation) from crashing gather.
    gender_index = tf.clip_by_value(gender, 0, len(labels.GENDER_NAMES) - 1)
    race_index = tf.clip_by_value(race, 0, len(labels.RACE_NAMES) - 1)
    return {
        labels.IMAGE_KEY: _dense(inputs[labels.IMAGE_KEY]),
        labels.FILENAME_KEY: _dense(inputs[labels.FILENAME_KEY]),
        labels.LABELS_KEY: label_matrix(age, gender, race),
        labels.AGE_GROUP_KEY: age_group_names(age),
        labels.GENDER_NAME_KEY: tf.gather(tf.constant(labels.GENDER_NAMES), gender_index),
        labels.RACE_NAME_KEY: tf.gather(tf.constant(labels.RACE_NAMES), race_index),
    }
