"""The reviewer's evidence in reports: intervals, tuned thresholds, error thumbnails, and the index of runs.

Fast tests render hand-made data; the e2e tests read the three runs of the shared e2e pipeline root
(two default runs, then one refused with a macro-AUC floor of 0.99).
"""

import base64
import copy
import io
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from components import eval_table
from pipeline.report import html, index, model_card, thumbnails
from tests.test_report import _report, _text

HOSTILE = '<img src=x onerror=alert(1)>"&.jpg'  # a file name is data: it must never become markup


def _jpeg(color, size=(200, 200)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="JPEG")
    return out.getvalue()


def _table() -> eval_table.EvalTable:
    """Eight examples, two labels; scores chosen so the most confident errors are known."""
    ids = np.array([f"{i}.jpg" for i in range(7)] + [HOSTILE], dtype=object)
    labels = np.array([[0, 1], [0, 0], [0, 1], [1, 0], [1, 1], [1, 0], [0, 0], [0, 1]], dtype=np.int8)
    cat = np.array([0.95, 0.80, 0.80, 0.10, 0.30, 0.90, 0.40, 0.99])  # threshold 0.5
    dog = np.array([0.20, 0.60, 0.90, 0.70, 0.10, 0.30, 0.05, 0.50])  # threshold 0.65
    return eval_table.EvalTable(("cat", "dog"), ids, {"race_name": np.array(["x"] * 8, dtype=object)}, labels,
                                {eval_table.CANDIDATE: np.c_[cat, dog]})


def test_most_confident_errors_are_the_highest_scoring_negatives_and_lowest_scoring_positives():
    errors = thumbnails.most_confident_errors(_table(), {"cat": 0.5, "dog": 0.65}, per_kind=2)
    cat, dog = errors["cat"], errors["dog"]
    # cat negatives scoring >= 0.5: HOSTILE 0.99, 0.jpg 0.95, 1.jpg 0.80, 2.jpg 0.80 -> the top two.
    assert [e["id"] for e in cat["false_positives"]] == [HOSTILE, "0.jpg"]
    # cat positives below 0.5: 3.jpg 0.10, 4.jpg 0.30 (lowest first).
    assert [(e["id"], e["score"]) for e in cat["false_negatives"]] == [("3.jpg", 0.10), ("4.jpg", 0.30)]
    assert cat["counts"] == {"false_positives": 4, "false_negatives": 2, "positives": 3, "negatives": 5}
    assert cat["false_negatives"][1]["labels"] == ["cat", "dog"]
    # dog at its own threshold 0.65: negatives 1.jpg 0.60 (below), 3.jpg 0.70 (above) -> one false positive.
    assert [e["id"] for e in dog["false_positives"]] == ["3.jpg"]
    assert [e["id"] for e in dog["false_negatives"]] == ["4.jpg", "0.jpg"]
    ties = thumbnails.most_confident_errors(_table(), {"cat": 0.5, "dog": 0.65}, per_kind=4)["cat"]
    assert [e["id"] for e in ties["false_positives"]][2:] == ["1.jpg", "2.jpg"]  # equal scores: by id


def test_thumbnails_are_small_jpeg_data_uris_read_from_the_eval_split(tmp_path):
    import tensorflow as tf

    split = tmp_path / "Split-eval"
    split.mkdir()
    with tf.io.TFRecordWriter(str(split / "data.gz"), options="GZIP") as writer:
        for name, color in (("0.jpg", "red"), (HOSTILE, "blue"), ("9.jpg", "green")):
            feature = {"filename": tf.train.Feature(bytes_list=tf.train.BytesList(value=[name.encode()])),
                       "image_raw": tf.train.Feature(bytes_list=tf.train.BytesList(value=[_jpeg(color)]))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    found = thumbnails.read_images(str(tmp_path), "eval", {"0.jpg", HOSTILE, "missing.jpg"})
    assert set(found) == {"0.jpg", HOSTILE}
    uri = thumbnails.thumbnail_data_uri(found["0.jpg"])
    assert uri.startswith("data:image/jpeg;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert image.format == "JPEG" and image.size == (64, 64) and len(uri) < 4000
    assert thumbnails.thumbnail_data_uri(b"not an image") is None
    gallery = thumbnails.error_gallery(_table(), {"cat": 0.5, "dog": 0.65}, str(tmp_path))
    assert gallery["per_label"]["cat"]["false_positives"][0]["thumbnail"].startswith("data:image/jpeg")
    assert gallery["per_label"]["cat"]["false_negatives"][0]["thumbnail"] is None  # 3.jpg is not in the split
    private = thumbnails.error_gallery(_table(), {"cat": 0.5, "dog": 0.65}, str(tmp_path), images=False)
    assert not private["images"] and all(e["thumbnail"] is None for entry in private["per_label"].values()
                                         for e in entry["false_positives"] + entry["false_negatives"])


def _interval(lo, hi, est=None):
    est = (lo + hi) / 2 if est is None else est
    return {"estimate": est, "se": (hi - lo) / 3.92, "lower": lo, "upper": hi, "level": 0.95, "method": "delong"}


def evidence_report(pushed: bool = True, images: bool = True) -> dict:
    """tests.test_report._report with intervals, decision thresholds and error thumbnails (used by the browser test)."""
    report = copy.deepcopy(_report(pushed))
    report["format"] = 2
    for gate in report["verdict"]["gates"]:
        gate["interval"] = _interval(gate["value"] - 0.05, gate["value"] + 0.05) if gate["value"] else None
        gate["within_noise"] = gate["name"] == "macro_auc_floor"
    pair = report["verdict"]["gates"][3]["details"][0]["pairs"][0]
    pair.update(interval=_interval(0.18, 0.44, 0.31), within_noise=False)
    report["evaluation"]["intervals"] = {
        "label_auc": {"cat": _interval(0.87, 0.94), "dog": _interval(0.64, 0.77)},
        "macro_auc": _interval(0.77, 0.85, 0.81), "label_change": {"cat": _interval(-0.01, 0.03)},
        "macro_change": _interval(-0.004, 0.024, 0.01), "group_auc": {},
    }
    choice = {"policy": "f1", "threshold": 0.42, "tuned": True, "reason": "highest F1 out of fold (0.700)",
              "positives": 300, "negatives": 500,
              "at_threshold": {"precision": 0.6, "recall": 0.8, "f1": 0.7}, "at_default": {"precision": 0.7,
                                                                                          "recall": 0.5, "f1": 0.58},
              "calibration_error": {"before": 0.2, "after": 0.03}}
    kept = {**choice, "threshold": 0.5, "tuned": False, "reason": "kept 0.5: only 12 positives / 788 negatives out "
            "of fold (fewer than 20)"}
    report["evaluation"]["decision"] = {
        "available": True, "policies": {"cat": "f1", "dog": "f1"}, "min_positives": 20, "calibration_method": "platt",
        "folds": 5, "out_of_fold_examples": 800, "epochs": 10, "skipped": None,
        "per_label": {
            name: {"threshold": c["threshold"], "stored": True, "choice": c,
                   "calibration": {"method": "platt", "slope": 0.8, "intercept": -1.0, "reason": "fitted"},
                   "eval": {"at_threshold": {"precision": 0.61, "recall": 0.79, "f1": 0.69},
                            "at_default": {"precision": 0.72, "recall": 0.51, "f1": 0.6},
                            "calibration_error": {"before": 0.21, "after": 0.04}, "positives": 100,
                            "negatives": 100}}
            for name, c in (("cat", choice), ("dog", kept))},
    }
    colors = ("red", "green", "blue", "orange", "purple", "gray")
    thumb = [thumbnails.thumbnail_data_uri(_jpeg(c)) if images else None for c in colors]
    errors = {}
    for name in ("cat", "dog"):
        fp = [{"id": HOSTILE if i == 0 else f"{name}_fp_{i}.jpg", "score": 0.9 - i / 20, "labels": ["dog"],
               "thumbnail": thumb[i]} for i in range(6)]
        fn = [{"id": f"{name}_fn_{i}.jpg", "score": 0.05 * i, "labels": [name], "thumbnail": thumb[i]}
              for i in range(3)]
        errors[name] = {"threshold": 0.5, "false_positives": fp, "false_negatives": fn,
                        "counts": {"false_positives": 20, "false_negatives": 3, "positives": 100, "negatives": 100}}
    report["evaluation"]["errors"] = {"images": images, "per_label": errors}
    return report


def test_html_shows_intervals_thresholds_and_thumbnails_and_never_markup_from_names():
    page = html.render_html(evidence_report())
    text = _text(page)
    assert "95% interval" in text and "0.760 to 0.860" in text  # macro gate interval
    assert "[0.870, 0.940]" in text and "[0.770, 0.850]" in text  # per-label and macro AUC intervals
    assert "within noise" in text and "+0.180 to +0.440" in text  # the fairness pair's signed interval
    assert "-0.004 to +0.024" in text  # paired macro change
    assert "Decision thresholds and calibration" in text and "0.420" in text and "highest F1 out of fold" in text
    assert "kept 0.5: only 12 positives" in text and "0.610 / 0.790 / 0.690" in text and "0.720 / 0.510 / 0.600" in text
    assert "0.210 &rarr; 0.040" in page or "0.210 → 0.040" in text
    assert page.count('src="data:image/jpeg;base64,') == 2 * 9
    assert "<img src=x onerror" not in page and "&lt;img src=x onerror=alert(1)&gt;&quot;&amp;.jpg" in page
    # No URL but the thumbnails' data: URIs (the plots' href="#id" point inside the page).
    assert not re.search(r"(href|src)=\"(?!data:image/jpeg;base64,|#)", page)
    private = html.render_html(evidence_report(images=False))
    assert "<img" not in private and "left out of this report" in private and "cat_fn_2.jpg" in private


def test_model_card_has_intervals_and_thresholds():
    card = model_card.render_model_card(evidence_report())
    assert "AUC 95% interval" in card and "0.870 to 0.940" in card and "0.770 to 0.850" in card
    assert "### Decision thresholds" in card and "| `cat` | f1 | 0.420 | yes |" in card
    assert "no: kept 0.5: only 12 positives" in card
    assert "within noise" in card and "paired 95% interval): -0.004 to +0.024" in card
    assert "+0.180 to +0.440" in card  # the largest judged fairness gap's interval


def _entry(run_id, started, status, macro=None, interval=None, **extra):
    return {"run_id": run_id, "started": started, "data_dir": "/data/<b>faces</b>", "spans": [2, 3], "examples": 1490,
            "eval_examples": 324, "macro_auc": macro, "macro_auc_interval": interval,
            "label_auc": {} if macro is None else {"cat": macro + 0.05, "dog": macro - 0.05}, "status": status,
            "headline": "", "failed_gates": [], "failed_components": [], "error": None, "pushed_version": None,
            "pushed_model": None, "report": f"{run_id}/report.html", **extra}


def test_index_lists_runs_newest_first_escapes_names_and_plots_the_trend():
    entries = [
        _entry("r1", "2026-01-01T00:00:00+00:00", "pushed", 0.88, _interval(0.85, 0.91), pushed_version="17"),
        _entry("r2", "2026-01-02T00:00:00+00:00", "not evaluated", failed_components=["AnomalyGate"],
               error="DataAnomaliesError: <script>x</script>"),
        _entry("r3", "2026-01-03T00:00:00+00:00", "not blessed", 0.87, _interval(0.84, 0.90),
               failed_gates=["macro_auc_floor"]),
    ]
    page = index.render_index(entries, "/root/<i>")
    rows = re.findall(r'<tr data-run="([^"]+)">(.*?)</tr>', page)
    assert [r for r, _ in rows] == ["r3", "r2", "r1"]
    assert "failed gate: macro_auc_floor" in rows[0][1] and "stopped at: AnomalyGate" in rows[1][1]
    assert "0.880" in rows[2][1] and "[0.850, 0.910]" in rows[2][1] and ">17<" in rows[2][1]
    assert "<script>" not in page and "&lt;script&gt;" in page and "<b>faces" not in page and "<i>" not in page
    assert 'href="r1/report.html"' in page and "spans 2-3" in page
    svg = page[page.index("<svg"):page.index("</svg>")]
    assert svg.count("<polyline") == 3  # macro and two labels, joining runs 1 and 3 (run 2 has no AUC)
    assert "macro AUC, run 3: 0.870" in svg and "http" not in svg


# --- from the real runs ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(e2e_runs):
    """(config, first, second, third: the refused run's summary, store); later tests may add runs."""
    from pipeline import mlmd
    from pipeline.run_summary import summarize

    config, _, first, second, store = e2e_runs
    ids = mlmd.run_ids(store, config.pipeline_name)
    assert ids[:2] == [first["run_id"], second["run_id"]]
    return config, first, second, summarize(store, ids[2]), store


@pytest.mark.e2e
def test_index_lists_the_three_runs_in_order_and_the_refused_one_says_why(runs):
    from pipeline import mlmd

    config, first, second, third, store = runs
    assert third["blessed"] is False and third["pushed_model"] is None
    path = os.path.join(config.pipeline_root, "reports", "index.html")
    page = open(path).read()
    rows = re.findall(r'<tr data-run="([^"]+)">(.*?)</tr>', page)
    ids = mlmd.run_ids(store, config.pipeline_name)
    assert [r for r, _ in rows] == ids[::-1]  # every run, newest first
    oldest = rows[::-1][:3]
    assert [r for r, _ in oldest] == [first["run_id"], second["run_id"], third["run_id"]]
    assert "not blessed" in oldest[2][1] and "failed gate: macro_auc_floor" in oldest[2][1]
    assert "pushed" in oldest[0][1] and os.path.basename(first["pushed_model"]) in oldest[0][1]
    for run_id in ids:
        assert os.path.exists(os.path.join(config.pipeline_root, "reports", run_id, "report.html"))
        assert f'href="{run_id}/report.html"' in page
    # Rebuilt from ML Metadata alone: the same rows.
    from pipeline.report.__main__ import main

    os.remove(path)
    assert main(["--pipeline-root", config.pipeline_root, "--index"]) == 0
    rebuilt = open(path).read()
    assert re.findall(r'<tr data-run="([^"]+)">', rebuilt) == [r for r, _ in rows]
    assert "<svg" in rebuilt


@pytest.mark.e2e
def test_gate_records_carry_intervals_from_the_evaluators_own_rows(runs):
    from components import uncertainty
    from components.base import labels
    from components.evaluation.gates import read_gates
    from pipeline import pipeline as pipeline_def
    from pipeline.run_summary import component_runs

    config, first, _, third, store = runs
    component = component_runs(store, first["run_id"])
    record = read_gates(component[pipeline_def.EVALUATION_GATE].outputs["blessing"][0].uri)
    table = eval_table.load_eval_table(component[pipeline_def.EVALUATOR].outputs["evaluation"][0].uri,
                                       labels.LABEL_NAMES)
    assert record["eval_examples"] == len(table) == first["ingested_by_split"]["eval"]
    macro = record["uncertainty"]["macro_auc"]
    assert macro["lower"] <= macro["estimate"] <= macro["upper"]
    exact = uncertainty.exact_aucs(table.labels, table.predictions[eval_table.CANDIDATE])
    for k, name in enumerate(labels.LABEL_NAMES):
        if not np.isnan(exact[k]):  # TFMA bins scores into 1,000 thresholds; DeLong uses the exact AUC
            assert first["per_label_auc"][name] == pytest.approx(exact[k], abs=0.02)
    gates = {g["name"]: g for g in record["gates"]}
    assert gates["macro_auc_floor"]["interval"] == macro and gates["macro_auc_floor"]["within_noise"] is not None
    refused = {g["name"]: g for g in third["gates"]}
    assert refused["macro_auc_floor"]["passed"] is False


@pytest.mark.e2e
def test_pushed_model_stores_thresholds_and_calibration_that_predict_applies(runs, tmp_path):
    from components import predict
    from components.base import labels

    config, first, _, _, _ = runs
    meta = predict.model_metadata(first["pushed_model"])
    assert set(meta["thresholds"]) == set(labels.LABEL_NAMES) == set(meta["calibration"])
    assert all(0.0 <= t <= 1.0 for t in meta["thresholds"].values())
    assert meta["decision"]["folds"] == 5 and set(meta["decision"]["per_label"]) == set(labels.LABEL_NAMES)
    images = tmp_path / "images"
    images.mkdir()
    data_files = sorted(os.listdir(config.data_dir))[:6]
    for name in data_files:
        (images / name).write_bytes((open(os.path.join(config.data_dir, name), "rb")).read())
    out = tmp_path / "p.csv"
    predict.predict_folder(first["pushed_model"], str(images), str(out))
    import csv

    for row in csv.DictReader(open(out)):
        if row["error"]:
            continue
        expected = [n for n in labels.LABEL_NAMES if float(row[n]) >= meta["thresholds"][n]]
        assert (row["predicted_labels"].split(";") if row["predicted_labels"] else []) == expected


@pytest.mark.e2e
def test_real_report_has_evidence_and_stays_small(runs):
    config, first, _, _, _ = runs
    report = json.load(open(os.path.join(os.path.dirname(first["report"]), "report.json")))
    evidence = report["evaluation"]
    assert evidence["intervals"]["macro_auc"] and evidence["decision"]["per_label"]
    thumbs = [e for entry in evidence["errors"]["per_label"].values()
              for e in entry["false_positives"] + entry["false_negatives"]]
    assert thumbs and all(e["thumbnail"] and e["thumbnail"].startswith("data:image/jpeg;base64,") for e in thumbs)
    assert os.path.getsize(first["report"]) < 3_000_000


def test_model_card_shows_no_auc_for_a_slice_without_positives():
    report = evidence_report()
    report["evaluation"]["metrics"]["candidate"]["race=y"]["dog"].update(mean_label=0.0, auc=0.0)
    card = model_card.render_model_card(report)
    row = next(line for line in card.splitlines() if line.startswith("| race=y |"))
    assert row.split("|")[3:5] == [" 0.910 ", " n/a "]  # cat's AUC, then dog's: undefined, not TFMA's 0
