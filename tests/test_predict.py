"""Batch prediction: the latest pushed model over a folder of images, one CSV row per file.

A tiny exported model with known weights (the trainer's own export, predict_images signature)
makes the expected probabilities exact: label ``female`` follows the red channel, every other
label sits at sigmoid(-1).
"""

import contextlib
import csv
import inspect
import io
import json
import os
import shutil
import threading

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from PIL import Image

from components import predict
from components.base import labels
from components.trainer import export

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
    assert rows["empty.jpg"]["error"] == "the file is empty (0 bytes)"
    assert rows["notes.txt"]["error"].startswith("the file is not an image")
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
    from components import synthetic_data

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


# --- the same preparation as ingestion, and hostile folders ------------------------------------------


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def _rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    pixels = np.random.default_rng(3).integers(0, 255, (20, 40, 3), dtype=np.uint8)
    return _encode(Image.fromarray(pixels), "JPEG", exif=exif)


def _transparent_png() -> bytes:
    rgba = np.zeros((24, 32, 4), np.uint8)
    rgba[:12, :, :] = (200, 10, 10, 255)  # opaque top half, fully transparent black bottom half
    return _encode(Image.fromarray(rgba, "RGBA"), "PNG")


def _gray16_png() -> bytes:
    ramp = (np.arange(24 * 32, dtype=np.uint32).reshape(24, 32) * 80).astype(np.uint16)  # up to 61,360
    return _encode(Image.fromarray(ramp, "I;16"), "PNG")


def _palette_png() -> bytes:
    pixels = np.random.default_rng(2).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    return _encode(Image.fromarray(pixels).convert("P"), "PNG", transparency=0)


@pytest.mark.parametrize(
    ("data", "check"),
    [
        (_rotated_jpeg(), lambda px: px.shape == (40, 20, 3)),  # upright: 40 high
        (_transparent_png(), lambda px: px[16:].min() > 240),  # white behind transparency, not black
        (_gray16_png(), lambda px: 0 < px.max() < 255 and len(np.unique(px)) > 100),  # scaled, not saturated
        (_palette_png(), lambda px: px.shape == (24, 32, 3)),
    ],
    ids=["exif-rotated-jpeg", "transparent-png", "gray16-png", "palette-png"],
)
def test_prediction_gives_the_model_the_pixels_ingestion_gives_it(tmp_path, data, check):
    from components.image_example_gen import ingest

    path = tmp_path / "image"
    path.write_bytes(data)
    name = "30_1_2_20170116174525125.jpg.chip.jpg"
    example = ingest.check_file(str(path), name, data, labels.compile_pattern(labels.UTKFACE_PATTERN))
    trained_on = tf.io.decode_image(example.features.feature[labels.IMAGE_KEY].bytes_list.value[0], channels=3)
    predicted_on = tf.io.decode_image(predict.image_bytes(str(path)), channels=3)
    np.testing.assert_array_equal(predicted_on.numpy(), trained_on.numpy())
    assert check(predicted_on.numpy())


def test_formats_ingestion_refuses_never_reach_their_decoders(tmp_path, monkeypatch):
    from PIL import EpsImagePlugin

    calls = []

    def ghostscript(*args, **kwargs):
        calls.append(args)
        raise OSError("Ghostscript must not run")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    eps = tmp_path / "drawing.jpg"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n%%EndComments\nshowpage\n%%EOF\n")
    tiff = tmp_path / "scan.jpg"
    tiff.write_bytes(_encode(Image.new("RGB", (8, 8)), "TIFF"))
    for path, fmt in ((eps, "EPS"), (tiff, "TIFF")):
        with pytest.raises(ValueError, match=f"is a {fmt} image; accepted formats are"):
            predict.image_bytes(str(path))
    assert calls == []


def test_size_limits_are_ingestions(serving, tmp_path):
    from components import images

    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "big.jpg").write_bytes(_jpeg((255, 0, 0), size=(300, 300)))
    out = tmp_path / "p.csv"
    predict.predict_folder(str(serving / "facepipe" / "12"), str(folder), str(out), max_file_bytes=1000)
    assert "larger than the 1000-byte limit" in _rows(out)["big.jpg"]["error"]
    predict.predict_folder(str(serving / "facepipe" / "12"), str(folder), str(out), max_pixels=300 * 299)
    assert "too large to decode safely" in _rows(out)["big.jpg"]["error"]
    signature = inspect.signature(predict.image_bytes)
    assert signature.parameters["max_pixels"].default == images.DEFAULT_MAX_IMAGE_PIXELS
    assert signature.parameters["max_bytes"].default == images.DEFAULT_MAX_FILE_BYTES


def test_fifos_and_links_to_them_are_error_rows_not_a_hang(serving, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "red.jpg").write_bytes(_jpeg((255, 0, 0)))
    os.mkfifo(folder / "pipe.jpg")
    os.symlink(folder / "pipe.jpg", folder / "link.jpg")
    out = tmp_path / "p.csv"
    finished = []
    worker = threading.Thread(
        target=lambda: finished.append(predict.predict_folder(str(serving / "facepipe" / "12"), str(folder), str(out))),
        daemon=True,
    )
    worker.start()
    worker.join(timeout=120)
    try:
        assert not worker.is_alive(), "prediction blocked on a FIFO"
        rows = _rows(out)
        assert rows["red.jpg"]["error"] == ""
        assert "pipe" in rows["pipe.jpg"]["error"] and "pipe" in rows["link.jpg"]["error"]
        assert (finished[0].files, finished[0].errors) == (3, 2)
    finally:
        with contextlib.suppress(OSError):  # lets a reader blocked before the fix return
            os.close(os.open(folder / "pipe.jpg", os.O_WRONLY | os.O_NONBLOCK))


def test_names_that_could_run_as_spreadsheet_formulas_are_neutralised(serving, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    names = ["=HYPERLINK(\"https:x\",\"y\").jpg", "+1+1.jpg", "-2+3.jpg", "@SUM(A1).jpg", "\tx.jpg", "\rx.jpg"]
    for name in names:
        (folder / name).write_bytes(_jpeg((255, 0, 0)))
    (folder / "=broken.jpg").write_bytes(b"not an image")
    (folder / "plain.jpg").write_bytes(_jpeg((0, 0, 255)))
    out = tmp_path / "p.csv"
    predict.predict_folder(str(serving / "facepipe" / "12"), str(folder), str(out))
    with open(out, newline="", encoding="utf-8") as f:
        cells = [row[0] for row in csv.reader(f)][1:]
    assert sorted(cells) == sorted(["plain.jpg", *("'" + n for n in [*names, "=broken.jpg"])])
    assert all(not c.startswith(predict.FORMULA_PREFIXES) for c in cells)
    assert _rows(out)["'=broken.jpg"]["error"].startswith("the file is not an image")


def test_a_name_that_is_not_utf8_is_an_error_row_and_the_csv_is_complete(serving, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(_jpeg((255, 0, 0)))
    with open(os.fsencode(folder) + b"/b\xff.jpg", "wb") as f:
        f.write(_jpeg((0, 0, 255)))
    (folder / "c.jpg").write_bytes(_jpeg((0, 0, 255)))
    out = tmp_path / "p.csv"
    summary = predict.predict_folder(str(serving / "facepipe" / "12"), str(folder), str(out), batch_size=1)
    rows = _rows(out)
    assert sorted(rows) == ["a.jpg", "b\\xff.jpg", "c.jpg"]
    assert "not valid UTF-8" in rows["b\\xff.jpg"]["error"] and rows["c.jpg"]["error"] == ""
    assert (summary.files, summary.errors) == (3, 1)


def test_a_failed_run_leaves_the_previous_csv_and_no_partial_file(serving, images, tmp_path, monkeypatch):
    out = tmp_path / "out" / "predictions.csv"
    out.parent.mkdir()
    out.write_text("previous results\n")
    calls = []
    real = predict.predict_items

    def fail_on_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the model server went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(predict, "predict_items", fail_on_second_batch)
    with pytest.raises(RuntimeError, match="went away"):
        predict.predict_folder(str(serving / "facepipe" / "12"), str(images), str(out), batch_size=2)
    assert out.read_text() == "previous results\n"
    assert os.listdir(out.parent) == ["predictions.csv"]


def test_a_fifo_in_place_of_the_models_label_list_is_an_error_not_a_hang(serving, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(serving / "facepipe" / "12", model_dir)
    labels_file = model_dir / "assets.extra" / "labels.json"
    labels_file.unlink()
    os.mkfifo(labels_file)
    outcome = []

    def read() -> None:
        try:
            predict.model_metadata(str(model_dir))
        except ValueError as e:
            outcome.append(str(e))

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(timeout=20)
    try:
        assert not worker.is_alive() and "not a regular file" in outcome[0]
    finally:
        with contextlib.suppress(OSError):
            os.close(os.open(labels_file, os.O_WRONLY | os.O_NONBLOCK))
