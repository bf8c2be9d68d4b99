"""The on-device model: model.tflite's contract, parity with the SavedModel, int8, the gate, predict --tflite.

Cost on the shared 2-core machine: about 1.5 minutes (one EfficientNet-Lite0 + head at 64 px,
exported as a SavedModel, a float and an int8 model.tflite, shared by the module).
"""

import csv
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from PIL import Image

from components import predict, tflite_gate
from components.base import labels
from components.evaluation.gates import GATE_MACRO
from components.tflite_predict import TFLiteImages
from components.trainer import backbones, data, export, model, tflite_engine, tflite_export, train
from pipeline.report import on_device

SIZE = 64


def _image(rng, size, fmt="JPEG", mode="RGB") -> bytes:
    pixels = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    # Smooth images (like faces, unlike noise) so that int8 is judged on realistic activations.
    image = Image.fromarray(pixels).resize((4, 4)).resize(size, Image.BILINEAR).convert(mode)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A version folder: SavedModel + float model.tflite; and an int8 model.tflite beside it."""
    train.skip_autograph_for_tf_keras()
    tf_keras.utils.set_random_seed(1)
    extractor = model.build_feature_extractor(model.freeze(backbones.build_backbone("efficientnet_lite0", SIZE)))
    head = model.build_head(1280, len(labels.LABEL_NAMES), hidden_units=16, dropout=0.0)
    full = model.build_model(extractor, head)
    rng = np.random.default_rng(4)
    training = [_image(rng, (48, 40)) for _ in range(24)]
    version = tmp_path_factory.mktemp("serving") / "facepipe" / "5"
    export.export_model(full, str(version), SIZE)
    float_record = tflite_export.export_tflite(
        full, str(version / tflite_export.TFLITE_FILE), SIZE, labels.LABEL_NAMES, "float", (), training[:8]
    )
    int8_path = version.parent / "int8.tflite"
    int8_record = tflite_export.export_tflite(
        full, str(int8_path), SIZE, labels.LABEL_NAMES, "int8",
        [data.decode_pixels(b).numpy() for b in training], training[:8],
    )
    images = [
        _image(rng, (48, 40)), _image(rng, (48, 40)), _image(rng, (200, 200)),
        _image(rng, (70, 60), "PNG"), _image(rng, (50, 50), "JPEG", "L"),
    ]
    return version, int8_path, float_record, int8_record, images


def _savedmodel_probabilities(version, images):
    signature = tf.saved_model.load(str(version)).signatures[export.IMAGES_SIGNATURE]
    return np.stack([signature(image_bytes=tf.constant([b]))[labels.PROBABILITIES_KEY].numpy()[0] for b in images])


def test_float_tflite_predicts_like_the_savedmodel(exported):
    version, _, record, _, images = exported
    expected = _savedmodel_probabilities(version, images)
    got = TFLiteImages(str(version), num_threads=1)(tf.constant(images))
    assert got[labels.PROBABILITIES_KEY].shape == (len(images), len(labels.LABEL_NAMES))
    diff = np.abs(got[labels.PROBABILITIES_KEY].numpy() - expected).max()
    assert diff <= 0.02  # the contract (issue 15); measured ~1e-6
    assert diff < 1e-4
    np.testing.assert_allclose(got["female"].numpy(), got[labels.PROBABILITIES_KEY].numpy()[:, 0])
    assert record["check"]["images"] == 8 and record["check"]["max_abs_diff"] < tflite_export.FLOAT_MAX_PROBABILITY_DIFF


def test_model_tflite_states_its_contract_in_the_file(exported):
    version, _, record, _, _ = exported
    content = (version / tflite_export.TFLITE_FILE).read_bytes()
    meta = tflite_export.read_metadata(content)
    assert meta["label_names"] == list(labels.LABEL_NAMES) and meta["image_size"] == SIZE
    assert meta["quantization"] == "float" and meta["input"]["dtype"] == "uint8" and "inside" in meta["input"]["resize"]
    interpreter = tf.lite.Interpreter(model_content=content)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert inp["dtype"] == np.uint8 and list(inp["shape_signature"]) == [-1, -1, -1, 3]
    assert out["dtype"] == np.float32 and list(out["shape_signature"]) == [-1, len(labels.LABEL_NAMES)]
    assert record["bytes"] == len(content)
    with pytest.raises(ValueError, match="no 'facepipe' metadata"):
        tflite_export.read_metadata(tflite_engine.convert_feature_extractor(
            model.build_feature_extractor(backbones.build_backbone("efficientnet_lite0", 32, weights=None)), 32
        ))


def test_int8_is_full_integer_and_takes_raw_pixels(exported):
    version, int8_path, _, record, images = exported
    content = int8_path.read_bytes()
    interpreter = tf.lite.Interpreter(model_content=content)
    (inp,) = interpreter.get_input_details()
    assert inp["dtype"] == np.uint8 and inp["quantization"] == (1.0, 0)  # raw pixels, as the float model
    (out,) = interpreter.get_output_details()
    inner = [t for t in interpreter.get_tensor_details() if t["index"] not in (inp["index"], out["index"])]
    assert inner and {t["dtype"] for t in inner} <= {np.int8, np.int32}  # full-integer: no float tensor inside
    assert out["dtype"] == np.float32  # dequantized probabilities, as the float model's
    assert tflite_export.read_metadata(content)["quantization"] == "int8" and record["check"]["images"] == 8
    got = tflite_export.TFLitePredictor(content).predict([data.decode_pixels(b).numpy() for b in images])
    expected = _savedmodel_probabilities(version, images)
    assert got.shape == expected.shape and np.all((got >= 0) & (got <= 1))
    assert np.abs(got - expected).max() < 0.1  # quantized, but the same model
    assert len(content) < (version / tflite_export.TFLITE_FILE).stat().st_size / 2


def test_the_tflite_gate_refuses_a_worse_or_unscored_on_device_model():
    record = {"macro_auc": 0.80, "quantization": "int8", "examples": 100, "per_label_auc": {}}
    passed = tflite_gate.tflite_gate({**record, "macro_auc": 0.815}, 0.82, 0.01, True)
    failed = tflite_gate.tflite_gate(record, 0.82, 0.01, True)
    assert passed.passed is True and abs(passed.value - 0.005) < 1e-9 and passed.name == tflite_gate.GATE_TFLITE
    assert failed.passed is False and "drop 0.0200 > 0.01" in failed.summary
    assert tflite_gate.tflite_gate(None, 0.82, 0.01, model_has_tflite=False) is None
    unscored = tflite_gate.tflite_gate(None, 0.82, 0.01, model_has_tflite=True)
    assert unscored.passed is False and "no TFLiteEvaluator" in unscored.summary
    gates = {"blessed": True, "gates": [{"name": GATE_MACRO, "value": 0.82, "passed": True}]}
    assert tflite_gate.savedmodel_macro_auc(gates) == 0.82
    judged = tflite_gate.apply(gates, failed)
    assert judged["blessed"] is False and judged["gates"][-1]["name"] == tflite_gate.GATE_TFLITE


def test_the_report_section_shows_both_models():
    section = on_device.section_html({
        "quantization": "float", "examples": 58, "tflite_macro_auc": 0.81, "savedmodel_macro_auc": 0.8103,
        "per_label": [{"label": "female", "tflite_auc": 0.9, "savedmodel_auc": 0.91}],
        "auc_method": "exact <ranks>", "gate": {"passed": True, "summary": "drop 0.0003 <= 0.01"},
    })
    assert "On-device model (model.tflite)" in section and "0.8103" in section and "-0.0100" in section
    assert "&lt;ranks&gt;" in section and "<b>pass</b>" in section
    assert on_device.section_html(None) == ""


def _read(path):
    with open(path) as f:
        return {row["file"]: row for row in csv.DictReader(f)}


def test_predict_tflite_matches_the_savedmodel_and_reports_bad_files(exported, tmp_path):
    version, _, _, _, images = exported
    folder = tmp_path / "images"
    folder.mkdir()
    for i, b in enumerate(images):
        (folder / f"{i}.img").write_bytes(b)
    (folder / "notes.txt").write_text("not an image")
    saved = predict.predict_folder(str(version), str(folder), str(tmp_path / "saved.csv"))
    lite = predict.predict_folder(str(version), str(folder), str(tmp_path / "lite.csv"), tflite=True, batch_size=2)
    assert (saved.predicted, saved.errors) == (lite.predicted, lite.errors) == (len(images), 1)
    a, b = _read(tmp_path / "saved.csv"), _read(tmp_path / "lite.csv")
    assert a.keys() == b.keys() and b["notes.txt"]["error"]
    diffs = [abs(float(a[f][n]) - float(b[f][n])) for f in a if not a[f]["error"] for n in labels.LABEL_NAMES]
    assert max(diffs) <= 0.02


def test_predict_tflite_needs_a_model_tflite(exported, tmp_path, capsys):
    import predict as predict_cli

    _, _, _, _, images = exported
    bare = tmp_path / "7"  # a version exported without --export-tflite: no model.tflite
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(images[0])
    os.makedirs(bare / "assets.extra")
    (bare / "assets.extra" / "labels.json").write_text(json.dumps({"label_names": list(labels.LABEL_NAMES)}))
    status = predict_cli.main(["--images", str(tmp_path / "images"), "--model-dir", str(bare), "--tflite",
                               "--output", str(tmp_path / "out.csv")])
    assert status == 2 and "has no on-device model" in capsys.readouterr().err
