"""preprocessing_fn, run through tf.Transform with Beam's DirectRunner."""

import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import schema_utils

from components import transform
from components.base import labels

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


def _jpeg(seed: int) -> bytes:
    import io

    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, size=(24, 24, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG")
    return out.getvalue()


@pytest.fixture(scope="module")
def transform_run(tmp_path_factory):
    """TFX's Transform executor as the pipeline runs it (no materialized output) on ExampleGen's output."""
    import os
    import shutil

    from tfx.components.transform import executor as tfx_transform_executor
    from tfx.types import standard_artifacts, standard_component_specs

    from components.image_example_gen.executor import run_on_folder

    tmp_path = tmp_path_factory.mktemp("transform")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for i, (age, gender, race) in enumerate(PEOPLE * 3):
        (data_dir / f"{age}_{gender}_{race}_2017011617452{i:04d}.jpg.chip.jpg").write_bytes(_jpeg(i))
    examples = run_on_folder(str(data_dir), str(tmp_path / "examples"))
    schema = standard_artifacts.Schema()
    schema.uri = str(tmp_path / "schema")
    os.makedirs(schema.uri)
    shutil.copy(os.path.join(os.path.dirname(__file__), "..", "schema", "schema.pbtxt"), schema.uri)
    graph = standard_artifacts.TransformGraph()
    graph.uri = str(tmp_path / "graph")
    tfx_transform_executor.Executor().Do(
        {standard_component_specs.EXAMPLES_KEY: [examples], standard_component_specs.SCHEMA_KEY: [schema]},
        {standard_component_specs.TRANSFORM_GRAPH_KEY: [graph]},
        {
            standard_component_specs.PREPROCESSING_FN_KEY: "components.transform.preprocessing_fn",
            standard_component_specs.DISABLE_STATISTICS_KEY: 1,
            standard_component_specs.FORCE_TF_COMPAT_V1_KEY: 0,
        },
    )
    files = tf.io.gfile.glob(os.path.join(examples.uri, "Split-*", "*.gz"))
    return data_dir, files, graph.uri


def _expected(name: str) -> tuple[np.ndarray, str, str, str]:
    age, gender, race = (int(x) for x in name.split("_")[:3])
    return (
        np.array(labels.label_vector(age, gender, race), np.float32),
        labels.age_group(age),
        labels.GENDER_NAMES[gender],
        labels.RACE_NAMES[race],
    )


def test_trainer_labels_raw_examples_with_the_transform_graph(transform_run):
    """What the Trainer sees: ExampleGen's raw examples, labelled by the Transform graph in the embedding
    pass, and the same labels attached by file name for fine-tuning."""
    import tensorflow_transform as tft
    import tf_keras

    from components.trainer import data, train
    from components.trainer.batches import image_batches
    from components.trainer.embeddings import embed

    data_dir, files, graph = transform_run
    output = tft.TFTransformOutput(graph)
    extractor = tf_keras.Sequential([tf_keras.layers.Input((16, 16, 3)), tf_keras.layers.GlobalAveragePooling2D()])
    embedded = embed(
        extractor, data.read_examples(files, output.raw_feature_spec(), 4), 16,
        transform=output.transform_raw_features,
    )
    assert sorted(embedded.filenames) == sorted(p.name for p in data_dir.iterdir())
    for name, vector in zip(embedded.filenames, embedded.labels, strict=True):
        np.testing.assert_array_equal(vector, _expected(name)[0])
    assert embedded.embeddings.shape == (len(embedded), 3)

    labelled = data.with_labels(data.read_examples(files, output.raw_feature_spec(), 5), embedded.filenames,
                                embedded.labels)
    seen = 0
    for batch in labelled:
        for name, vector in zip(batch[labels.FILENAME_KEY].numpy(), batch[labels.LABELS_KEY].numpy(),
                                strict=True):
            np.testing.assert_array_equal(vector, _expected(name.decode())[0])
            seen += 1
    assert seen == len(embedded)
    # Fine-tuning's input: decoded images with those labels, split like head training.
    held = train.validation_mask(embedded.filenames, 3)
    for flag in (True, False):
        pairs = list(image_batches(labelled, 16, 4, flag, 3))
        assert sum(len(y) for _, y in pairs) == (held if flag else ~held).sum()
        assert all(x.shape[1:] == (16, 16, 3) and y.shape[1] == len(labels.LABEL_NAMES) for x, y in pairs)
    unknown = data.with_labels(data.read_examples(files, output.raw_feature_spec(), 5), embedded.filenames[:1],
                               embedded.labels[:1])
    with pytest.raises(tf.errors.InvalidArgumentError):  # a file without labels fails, never gets a wrong row
        list(unknown)


def test_exported_model_carries_the_transform_for_the_evaluator(transform_run, tmp_path):
    """The transform_features signature (TFMA's preprocessing function) gives labels and slices from raw examples."""
    import tf_keras

    from components.trainer import export

    data_dir, files, graph = transform_run
    model = tf_keras.Sequential(
        [
            tf_keras.layers.Input((16, 16, 3)),
            tf_keras.layers.GlobalAveragePooling2D(),
            tf_keras.layers.Dense(len(labels.LABEL_NAMES), activation="sigmoid"),
        ]
    )
    export.export_model(model, str(tmp_path / "model"), 16, transform_output=graph)
    loaded = tf.saved_model.load(str(tmp_path / "model"))
    assert set(loaded.signatures) == {
        export.SERVING_SIGNATURE, export.IMAGES_SIGNATURE, labels.TRANSFORM_FEATURES_SIGNATURE
    }
    serialized = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    out = loaded.signatures[labels.TRANSFORM_FEATURES_SIGNATURE](examples=tf.constant(serialized))
    assert set(out) == set(labels.EVAL_FEATURE_KEYS)
    names = [tf.train.Example.FromString(r).features.feature[labels.FILENAME_KEY].bytes_list.value[0].decode()
             for r in serialized]
    for i, name in enumerate(names):
        vector, age_group, gender, race = _expected(name)
        np.testing.assert_array_equal(out[labels.LABELS_KEY].numpy()[i], vector)
        assert out[labels.AGE_GROUP_KEY].numpy()[i].decode() == age_group
        assert out[labels.GENDER_NAME_KEY].numpy()[i].decode() == gender
        assert out[labels.RACE_NAME_KEY].numpy()[i].decode() == race
    probabilities = loaded.signatures[export.SERVING_SIGNATURE](examples=tf.constant(serialized))
    assert probabilities[labels.PROBABILITIES_KEY].shape == (len(serialized), len(labels.LABEL_NAMES))
