"""Batch prediction: the latest pushed model over a folder of images, one CSV row per file.

A tiny exported model with known weights (the trainer's own export, predict_images signature)
makes the expected probabilities exact: label ``female`` follows the red channel, every other
label sits at sigmoid(-1).
"""

import csv
import io
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from PIL import Image

from components import predict
from components.trainer import export
from pipeline import labels

SIZE = 32


def _model(bias: float) -> tf_keras.Model:
    model = tf_keras.Sequential([
        tf_keras.layers.Input((SIZE, SIZE, 3)),
        tf_keras.layers.Rescaling(1 / 255.0),
        tf_keras.layers.GlobalAveragePooling2D(),
        tf_keras.layers.Dense(len(labels.LABEL_NAMES), activation="sigmoid"),
    ])
    kernel = np.zeros((3, len(labels.LABEL_NAMES)), np.float32)
    kernel[0, 0] = 8.0  # female <- mean red
    biases = np.full(len(labels.LABEL_NAMES), bias, np.float32)
    biases[0] = -4.0
    model.layers[-1].set_weights([kernel, biases])
    return model


@pytest.fixture(scope="module")
def serving(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    export.export_model(_model(bias=5.0), str(root / "facepipe" / "7"), image_size=SIZE)  # older: predicts all
    export.export_model(_model(bias=-1.0), str(root / "facepipe" / "12"), image_size=SIZE)
    (root / "facepipe" / "notes").mkdir()  # not a version
    return root


def _jpeg(color, size=(40, 50)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="JPEG", quality=95)
    return out.getvalue()


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    (folder / "red.jpg").write_bytes(_jpeg((255, 0, 0)))
    (folder / "sub" / "blue.jpg").write_bytes(_jpeg((0, 0, 255)))
    Image.new("L", (20, 20), 255).save(folder / "gray.png")  # converted to RGB: red channel 1.0
    Image.new("RGBA", (20, 20), (255, 0, 0, 128)).save(folder / "rgba.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(_jpeg((255, 0, 0), size=(400, 400))[:600])
    return folder


def _rows(path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {row["file"]: row for row in csv.DictReader(f)}


def test_latest_version_is_the_highest_number(serving, tmp_path):
    assert predict.latest_model_dir(str(serving), "facepipe") == str(serving / "facepipe" / "12")
    with pytest.raises(FileNotFoundError, match="no pushed model"):
        predict.latest_model_dir(str(tmp_path), "facepipe")


def test_latest_version_keeps_a_padded_name_and_skips_links_and_incomplete_folders(serving, tmp_path):
    base = tmp_path / "facepipe"
    shutil.copytree(serving / "facepipe" / "7", base / "0099")  # TF Serving reads 99
    (base / "500").mkdir()  # no saved_model.pb: not servable
    os.symlink(serving / "facepipe" / "12", base / "900")  # a link is never followed
    assert predict.latest_model_dir(str(tmp_path), "facepipe") == str(base / "0099")


def test_csv_has_a_row_per_file_probabilities_per_label_and_errors_for_bad_files(serving, images, tmp_path):
    out = tmp_path / "out" / "predictions.csv"
    summary = predict.predict_folder(predict.latest_model_dir(str(serving), "facepipe"), str(images), str(out),
                                     batch_size=2)
    assert (summary.files, summary.predicted, summary.errors) == (7, 4, 3)
    with open(out, newline="") as f:
        header = next(csv.reader(f))
    assert header == ["file", *labels.LABEL_NAMES, "predicted_labels", "error"]
    rows = _rows(out)
    assert sorted(rows) == ["empty.jpg", "gray.png", "notes.txt", "red.jpg", "rgba.png", "sub/blue.jpg",
                            "truncated.jpg"]
    red, blue = rows["red.jpg"], rows["sub/blue.jpg"]
    assert float(red["female"]) == pytest.approx(1 / (1 + np.exp(-4)), abs=0.02)
    assert float(blue["female"]) == pytest.approx(1 / (1 + np.exp(4)), abs=0.01)
    assert float(red["age_60_plus"]) == pytest.approx(1 / (1 + np.exp(1)), abs=1e-4)
    assert red["predicted_labels"] == "female" and blue["predicted_labels"] == "" and red["error"] == ""
    assert rows["gray.png"]["predicted_labels"] == "female" and rows["rgba.png"]["error"] == ""
    assert rows["empty.jpg"]["error"] == "empty file"
    assert rows["notes.txt"]["error"].startswith("not an image")
    assert "truncated" in rows["truncated.jpg"]["error"].lower()
    assert all(rows[n]["female"] == "" for n in ("empty.jpg", "notes.txt", "truncated.jpg"))


def test_thresholds_from_flags_and_from_the_model(serving, images, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(serving / "facepipe" / "12", model_dir)
    meta_path = model_dir / "assets.extra" / "labels.json"
    meta = json.loads(meta_path.read_text())
    meta["thresholds"] = {"age_60_plus": 0.2}  # sigmoid(-1) = 0.27: now predicted
    meta_path.write_text(json.dumps(meta))
    out = tmp_path / "p.csv"
    predict.predict_folder(str(model_dir), str(images), str(out), threshold_overrides={"female": 0.99})
    red = _rows(out)["red.jpg"]
    assert red["predicted_labels"] == "age_60_plus"
    with pytest.raises(ValueError, match="unknown label"):
        predict.resolve_thresholds(labels.LABEL_NAMES, overrides={"cat": 0.5})
    with pytest.raises(ValueError, match="within 0-1"):
        predict.resolve_thresholds(labels.LABEL_NAMES, overrides={"female": 1.5})


def test_a_batch_the_model_cannot_decode_costs_only_the_bad_image(serving):
    signature = tf.saved_model.load(predict.latest_model_dir(str(serving), "facepipe")).signatures["predict_images"]
    items = [("good.jpg", _jpeg((255, 0, 0))), ("garbage.jpg", b"\xff\xd8 not really a jpeg"),
             ("also_good.jpg", _jpeg((0, 0, 255)))]
    results = predict.predict_items(signature, items, labels.LABEL_NAMES, batch_size=3)
    assert isinstance(results["garbage.jpg"], str) and "could not decode" in results["garbage.jpg"]
    assert results["good.jpg"][0] > 0.9 and results["also_good.jpg"][0] < 0.1


def test_command_line(serving, images, tmp_path, capsys):
    import predict as command  # the top-level predict.py

    out = tmp_path / "cli.csv"
    status = command.main(["--images", str(images), "--serving-dir", str(serving), "--output", str(out),
                           "--threshold", "female=0.99"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "7 files: 4 predicted, 3 not images" in printed and str(serving / "facepipe" / "12") in printed
    assert _rows(out)["red.jpg"]["predicted_labels"] == ""
    assert command.main(["--images", str(tmp_path / "missing"), "--serving-dir", str(serving)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert command.main(["--images", str(images), "--serving-dir", str(tmp_path / "none")]) == 2


@pytest.mark.e2e
def test_pipeline_pushed_model_predicts_a_folder(e2e_runs, tmp_path):
    from pipeline import synthetic_data

    config, _, first, _, _ = e2e_runs
    folder = tmp_path / "faces"
    synthetic_data.generate(folder, synthetic_data.SyntheticSpec(num_images=6, seed=99))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    model_dir = predict.latest_model_dir(config.serving_dir, config.pipeline_name)
    assert model_dir == first["pushed_model"]
    out = tmp_path / "faces.csv"
    summary = predict.predict_folder(model_dir, str(folder), str(out))
    assert (summary.files, summary.errors) == (7, 1)
    rows = _rows(out)
    assert rows["broken.jpg"]["error"]
    for name, row in rows.items():
        if name != "broken.jpg":
            assert all(0.0 < float(row[label]) < 1.0 for label in labels.LABEL_NAMES)
    assert os.path.getsize(out) > 0
