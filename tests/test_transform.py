"""preprocessing_fn, run through tf.Transform with Beam's DirectRunner."""

import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import schema_utils

from components import transform
from pipeline import labels

PEOPLE = [  # (age, gender, race)
    (0, 0, 0), (12, 1, 1), (13, 0, 2), (19, 1, 3), (20, 0, 4),
    (39, 1, 0), (40, 0, 1), (59, 1, 2), (60, 0, 3), (116, 1, 4),
]


@pytest.fixture(scope="module")
def transformed():
    feature_spec = {
        labels.IMAGE_KEY: tf.io.FixedLenFeature([1], tf.string),
        labels.FILENAME_KEY: tf.io.FixedLenFeature([1], tf.string),
        labels.AGE_KEY: tf.io.FixedLenFeature([1], tf.int64),
        labels.GENDER_KEY: tf.io.FixedLenFeature([1], tf.int64),
        labels.RACE_KEY: tf.io.FixedLenFeature([1], tf.int64),
    }
    rows = [
        {
            labels.IMAGE_KEY: [f"jpeg-bytes-{i}".encode()],
            labels.FILENAME_KEY: [f"{a}_{g}_{r}_x.jpg".encode()],
            labels.AGE_KEY: [a],
            labels.GENDER_KEY: [g],
            labels.RACE_KEY: [r],
        }
        for i, (a, g, r) in enumerate(PEOPLE)
    ]
    metadata = schema_utils.schema_from_feature_spec(feature_spec)
    from tensorflow_transform.tf_metadata import dataset_metadata

    with tft_beam.Context(temp_dir=tempfile.mkdtemp()):
        (out, out_metadata), _ = (rows, dataset_metadata.DatasetMetadata(metadata)) | (
            tft_beam.AnalyzeAndTransformDataset(transform.preprocessing_fn)
        )
    return out, out_metadata


def test_label_vector_matches_python_definition(transformed):
    out, _ = transformed
    got = np.array([row[labels.LABELS_KEY] for row in out])
    want = np.array([labels.label_vector(*p) for p in PEOPLE], dtype=np.float32)
    np.testing.assert_array_equal(got, want)
    assert got.shape == (len(PEOPLE), len(labels.LABEL_NAMES))


def test_slice_features_are_readable_names(transformed):
    out, _ = transformed
    assert [row[labels.AGE_GROUP_KEY].decode() for row in out] == [labels.age_group(a) for a, _, _ in PEOPLE]
    assert [row[labels.GENDER_NAME_KEY].decode() for row in out] == [labels.GENDER_NAMES[g] for _, g, _ in PEOPLE]
    assert [row[labels.RACE_NAME_KEY].decode() for row in out] == [labels.RACE_NAMES[r] for _, _, r in PEOPLE]


def test_image_bytes_pass_through_unchanged(transformed):
    out, out_metadata = transformed
    assert [row[labels.IMAGE_KEY] for row in out] == [f"jpeg-bytes-{i}".encode() for i in range(len(PEOPLE))]
    spec = out_metadata.schema  # no pixel tensors are materialized: image stays one string per example
    image = next(f for f in spec.feature if f.name == labels.IMAGE_KEY)
    assert image.type == 1  # BYTES
