"""Model building, freezing, head training on cached embeddings, and the exported signatures."""

import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components.trainer import backbones, export, model, train
from pipeline import labels

IMAGE_SIZE = 64
N_LABELS = len(labels.LABEL_NAMES)


def _jpeg(rng: np.random.Generator, fmt: str = "JPEG", mode: str = "RGB") -> bytes:
    pixels = rng.integers(0, 255, size=(48, 40, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


@pytest.fixture(scope="module")
def parts():
    train.skip_autograph_for_tf_keras()
    backbone = model.freeze(backbones.build_backbone("efficientnet_lite0", IMAGE_SIZE))
    extractor = model.build_feature_extractor(backbone)
    head = model.build_head(extractor.output_shape[-1], N_LABELS, hidden_units=16, dropout=0.1)
    return backbone, extractor, head


@pytest.fixture(scope="module")
def dataset():
    rng = np.random.default_rng(0)
    n = 24
    images = [_jpeg(rng) for _ in range(n)]
    y = rng.integers(0, 2, size=(n, N_LABELS)).astype(np.float32)
    names = [f"img_{i}.jpg" for i in range(n)]
    ds = tf.data.Dataset.from_tensor_slices(
        {labels.IMAGE_KEY: images, labels.LABELS_KEY: y, labels.FILENAME_KEY: names}
    ).batch(8)
    return ds, y


def _weights(m):
    return [w.numpy().copy() for w in m.weights]


def test_full_model_has_only_head_trainable(parts):
    backbone, extractor, head = parts
    full = model.build_model(extractor, head)
    assert backbone.trainable_weights == []
    assert len(full.trainable_weights) == len(head.trainable_weights) == 4
    assert full.output_shape == (None, N_LABELS)
    assert full.layers[-1].layers[-1].activation.__name__ == "sigmoid"


def test_backbone_weights_unchanged_by_training(parts, dataset):
    """Trains the whole model end to end (the plain way): the frozen backbone must not move."""
    backbone, extractor, head = parts
    full = model.build_model(extractor, head)
    before_backbone, before_head = _weights(backbone), _weights(head)
    ds, _ = dataset
    from components.trainer.data import decode_images

    images = ds.map(lambda b: (decode_images(b[labels.IMAGE_KEY], IMAGE_SIZE), b[labels.LABELS_KEY]))
    import tf_keras

    full.compile(optimizer=tf_keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    full.fit(images, epochs=1, verbose=0)
    after_backbone, after_head = _weights(backbone), _weights(head)
    assert all(
        np.array_equal(a, b) for a, b in zip(before_backbone, after_backbone, strict=True)
    )  # incl. BN moving stats
    assert not all(np.array_equal(a, b) for a, b in zip(before_head, after_head, strict=True))


def test_embed_once_then_train_head(parts, dataset):
    backbone, extractor, head = parts
    ds, y = dataset
    embedded = train.embed(extractor, ds, IMAGE_SIZE)
    assert embedded.embeddings.shape == (len(y), extractor.output_shape[-1])
    np.testing.assert_array_equal(embedded.labels, y)
    before = _weights(backbone)
    history = train.train_head(head, embedded, None, train.TrainParams(epochs=3, batch_size=8))
    assert len(history.history["loss"]) == 3
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert {f"auc_{n}" for n in labels.LABEL_NAMES} <= set(history.history)
    assert all(np.array_equal(a, b) for a, b in zip(before, _weights(backbone), strict=True))


def test_validation_mask_is_stable():
    names = np.array([f"{i}_0_0_x.jpg" for i in range(200)])
    mask = train.validation_mask(names, 10)
    np.testing.assert_array_equal(mask, train.validation_mask(names, 10))
    assert 5 <= mask.sum() <= 40


def test_export_signatures(parts, tmp_path):
    _, extractor, head = parts
    full = model.build_model(extractor, head)
    export_dir = export.export_model(full, str(tmp_path / "model"), IMAGE_SIZE)
    loaded = tf.saved_model.load(export_dir)
    rng = np.random.default_rng(1)
    batch = [_jpeg(rng), _jpeg(rng, "PNG"), _jpeg(rng, "PNG", "L"), _jpeg(rng, "PNG", "RGBA")]

    out = loaded.signatures[export.IMAGES_SIGNATURE](image_bytes=tf.constant(batch))
    assert set(labels.LABEL_NAMES) <= set(out)
    probs = out[labels.PROBABILITIES_KEY].numpy()
    assert probs.shape == (4, N_LABELS)
    assert ((probs > 0) & (probs < 1)).all()
    for i, name in enumerate(labels.LABEL_NAMES):
        np.testing.assert_allclose(out[name].numpy(), probs[:, i])
    # Same numbers as the Keras model on the same decoded pixels.
    from components.trainer.data import decode_images

    np.testing.assert_allclose(full(decode_images(tf.constant(batch), IMAGE_SIZE)).numpy(), probs, atol=1e-5)

    example = tf.train.Example(
        features=tf.train.Features(
            feature={labels.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[batch[0]]))}
        )
    ).SerializeToString()
    served = loaded.signatures[export.SERVING_SIGNATURE](examples=tf.constant([example]))
    np.testing.assert_allclose(served[labels.PROBABILITIES_KEY].numpy()[0], probs[0], atol=1e-5)

    assert [n.decode() for n in loaded.label_names.numpy()] == list(labels.LABEL_NAMES)
    with open(os.path.join(export_dir, "assets.extra", export.LABELS_FILE)) as f:
        assert json.load(f) == {"label_names": list(labels.LABEL_NAMES), "image_size": IMAGE_SIZE}


def test_unknown_backbone_is_refused():
    with pytest.raises(ValueError, match="unknown backbone"):
        backbones.build_backbone("alexnet", 64)
