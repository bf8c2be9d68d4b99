"""The evaluation report: rendering (fast, from a hand-made report) and building from a real run (e2e)."""

import json
import os
import re

import pytest

from components.evaluation.eval_config import AGGREGATE, MACRO_AUC
from components.evaluation.results import BASELINE, CANDIDATE, DIFF
from pipeline.report import html, model_card

LABELS2 = ("cat", "dog")


def _gate(name, passed, value, threshold, summary, details=()):
    return {"name": name, "title": name.replace("_", " "), "passed": passed, "value": value, "threshold": threshold,
            "summary": summary, "details": list(details)}


def _report(pushed: bool) -> dict:
    """A small but complete report: two labels, a race and a gender x race slice, a baseline."""
    slices = [
        {"name": "overall", "group": "overall", "features": {}, "example_count": 200.0},
        {"name": "race=x", "group": "race", "features": {"race_name": "x"}, "example_count": 120.0},
        {"name": "race=y", "group": "race", "features": {"race_name": "y"}, "example_count": 80.0},
        {"name": "gender=female, race=x", "group": "gender x race",
         "features": {"gender_name": "female", "race_name": "x"}, "example_count": 60.0},
    ]
    candidate = {}
    for s in slices:
        candidate[s["name"]] = {
            AGGREGATE: {"example_count": s["example_count"], MACRO_AUC: 0.81,
                                   "micro_auc": 0.83},
            "cat": {"auc": 0.91, "auc_precision_recall": 0.8, "precision": 0.7, "recall": 0.6, "f1_score": 0.65,
                    "mean_label": 0.5, "mean_prediction": 0.45},
            "dog": {"auc": 0.71, "auc_precision_recall": 0.5, "precision": 0.4, "recall": 0.3, "f1_score": 0.35,
                    "mean_label": 0.25, "mean_prediction": 0.4},
        }
    fairness_details = [{"label": "cat", "status": "failed", "max_gap": 0.31, "pairs": [
        {"groups": ["x", "y"], "auc": [0.95, 0.64], "positives": [60, 40], "negatives": [60, 40], "gap": 0.31,
         "judged": True, "tfma_failed": True, "passed": False}]},
        {"label": "dog", "status": "not judged", "max_gap": None, "pairs": [
            {"groups": ["x", "y"], "auc": [0.7, 0.72], "positives": [30, 8], "negatives": [90, 72], "gap": 0.02,
             "judged": False, "tfma_failed": False, "passed": None}]}]
    gates = [
        _gate("macro_auc_floor", True, 0.81, 0.7, "macro AUC 0.810 >= floor 0.7"),
        _gate("label_auc_floors", True, 0.71, 0.6, "all 2 labels at or above their floor"),
        _gate("no_regression", True, 0.01, -0.02, "change in macro_auc vs the serving model 0.0100"),
        _gate("fairness_race", pushed, 0.31, 0.15,
              "largest gap 0.02" if pushed else "gap above 0.15: cat: race x 0.950 vs y 0.640 (gap 0.310)",
              fairness_details),
    ]
    return {
        "format": 1,
        "generated_at": "2026-01-01T00:00:00+00:00",
        "run": {"run_id": "RUN-1", "components": {"Evaluator": "complete"}},
        "verdict": {
            "status": "pushed" if pushed else "not blessed",
            "headline": "PUSHED: every gate passed." if pushed else "NOT PUSHED: 1 gate(s) failed: fairness_race.",
            "blessed": pushed, "pushed_model": "/serving/7" if pushed else None, "baseline_model": "/models/3",
            "gates": gates, "settings": {"fairness_min_count": 20, "max_fairness_gap": 0.15},
            "incomplete_components": [],
        },
        "labels": [{"name": "cat", "definition": "has a cat"}, {"name": "dog", "definition": "has a dog"}],
        "model": {"uri": "/models/4", "label_names": list(LABELS2), "image_size": 64},
        "evaluation": {
            "available": True, "has_baseline": True, "slices": slices,
            "metrics": {
                CANDIDATE: candidate,
                BASELINE: {"overall": {AGGREGATE: {MACRO_AUC: 0.8},
                                                  "cat": {"auc": 0.9}, "dog": {"auc": 0.7}}},
                DIFF: {"overall": {AGGREGATE: {MACRO_AUC: 0.01},
                                              "cat": {"auc": 0.01}, "dog": {"auc": 0.01}}},
            },
            "per_label": {name: {CANDIDATE: {
                "roc": [[0.0, 0.5], [0.2, 0.8], [1.0, 1.0]], "pr": [[0.5, 0.9], [1.0, 0.5]],
                "calibration": [[0.0, 0.5, 100, 0.2, 0.25], [0.5, 1.0, 100, 0.8, 0.7]]}} for name in LABELS2},
            "co_prediction": {"threshold": 0.5, "rates": [[0.6, 0.2], [0.3, 0.3]]},
        },
        "data": {
            "data_dir": "/data/faces", "synthetic": True, "files_found": 210, "spans": None,
            "splits": {"train": {"examples": 800, "label_positives": {"cat": 400, "dog": 200},
                                 "groups": {"race": {"x": 480, "y": 320}}},
                       "eval": {"examples": 200, "label_positives": {"cat": 100, "dog": 50},
                                "groups": {"race": {"x": 120, "y": 80}}}},
            "quarantined": {"total": 10, "by_reason": {"name_mismatch": 9, "undecodable_image": 1},
                            "files": [{"path": "/data/faces/bad name.jpg", "reason": "name_mismatch",
                                       "message": "file name 'bad name.jpg' does not match"},
                                      # File names are data: this one must be shown, not run.
                                      {"path": "/data/faces/<img src=x onerror=alert(1)>.jpg",
                                       "reason": "name_mismatch", "message": "does not match"}]},
            "anomalies": ["eval: feature 'age': Out-of-range values"],
            "drift": None,
        },
    }


def _text(page: str) -> str:
    return re.sub(r"<[^>]+>", " ", page)


def test_html_puts_the_verdict_first_and_names_every_label_and_slice():
    page = html.render_html(_report(pushed=False))
    assert page.index('id="verdict"') < page.index("Labels x slices") < page.index("ROC")
    text = _text(page)
    assert "NOT PUSHED" in text and "fairness_race" in text and "gap above 0.15" in text
    for name in ("cat", "dog", "race=x", "race=y", "gender=female, race=x", "name_mismatch", "Out-of-range"):
        assert name in text, name
    assert "class_id" not in page and "class 0" not in text
    # A FAIL badge for the failed gate, PASS badges for the others.
    assert page.count('class="badge fail"') >= 2 and page.count('class="badge pass"') >= 3
    assert "synthetic data set" in text


def test_html_is_self_contained():
    page = html.render_html(_report(pushed=True))
    assert "http://" not in page and "https://" not in page and "//cdn" not in page
    assert not re.search(r"<(script|link|img|iframe)\b", page)
    assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in page
    assert page.count("<svg") == 3  # ROC, PR, calibration
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))  # the inline SVGs do not clash


def test_slices_with_few_positives_are_marked_and_aucs_of_one_class_slices_are_not_shown():
    report = _report(pushed=True)
    report["evaluation"]["metrics"][CANDIDATE]["race=y"]["dog"].update(mean_label=0.0, auc=0.0)
    page = html.render_html(report)
    row = re.search(r"<tr><td class=\"l\">race=y</td>.*?</tr>", page).group(0)  # first table: AUC
    assert "0 positives / 80 negatives" in row and ">n/a<" in row and ">0.000<" not in row


def test_model_card_covers_use_data_labels_slices_fairness_and_limitations():
    card = model_card.render_model_card(_report(pushed=True))
    for heading in ("## Intended use", "## Data", "## Labels", "## Metrics", "### AUC per slice", "## Fairness",
                    "## Gates", "## Limitations"):
        assert heading in card, heading
    assert "| `cat` | has a cat | 400 (50%) | 100 (50%) |" in card
    assert "| gender=female, race=x | 60 | 0.910 | 0.710 |" in card
    assert "synthetic" in card.lower() and "0.310" in card


# --- built from a real run -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def first_report(e2e_runs):
    config, _, first, _, _ = e2e_runs
    with open(os.path.join(os.path.dirname(first["report"]), "report.json")) as f:
        return config, first, json.load(f)


@pytest.mark.e2e
def test_run_writes_report_json_html_and_model_card(first_report):
    config, first, report = first_report
    folder = os.path.dirname(first["report"])
    assert folder == os.path.join(config.pipeline_root, "reports", first["run_id"])
    assert sorted(os.listdir(folder)) == ["index_entry.json", "model_card.md", "report.html", "report.json"]
    assert first["report_error"] is None


@pytest.mark.e2e
def test_report_numbers_come_from_the_real_evaluator_output(first_report, e2e_runs):
    from components.base import labels

    config, first, report = first_report
    assert [lb["name"] for lb in report["labels"]] == list(labels.LABEL_NAMES)
    names = {s["name"] for s in report["evaluation"]["slices"]}
    assert {"overall", "gender=female", "race=white", "age=20-39", "gender=male, race=asian"} <= names
    overall = report["evaluation"]["metrics"]["candidate"]["overall"]
    for name, auc in first["per_label_auc"].items():
        assert overall[name]["auc"] == pytest.approx(auc)
        for metric in ("auc_precision_recall", "precision", "recall", "f1_score", "mean_label", "mean_prediction"):
            assert metric in overall[name], (name, metric)
        assert report["evaluation"]["per_label"][name]["candidate"]["roc"]
    assert overall[AGGREGATE]["micro_auc"] is not None
    gates = {g["name"]: g for g in report["verdict"]["gates"]}
    assert set(gates) == {"macro_auc_floor", "label_auc_floors", "no_regression", "fairness_race", "fairness_gender"}
    assert gates["macro_auc_floor"]["passed"] is True and gates["no_regression"]["passed"] is None
    assert [g["name"] for g in first["gates"]] == [g["name"] for g in report["verdict"]["gates"]]
    assert report["verdict"]["status"] == "pushed" and report["verdict"]["pushed_model"] == first["pushed_model"]
    data = report["data"]
    assert sum(s["examples"] for s in data["splits"].values()) == first["ingested"]
    assert data["quarantined"]["by_reason"] == first["quarantined_by_reason"]
    assert data["anomalies"] == []
    eval_positives = data["splits"]["eval"]["label_positives"]
    count = overall[AGGREGATE]["example_count"]
    for name in labels.LABEL_NAMES:  # the same eval split seen by the data summary and by TFMA
        assert eval_positives[name] == round(overall[name]["mean_label"] * count)


@pytest.mark.e2e
def test_evaluation_gate_blessing_drives_the_push(e2e_runs):
    from pipeline import pipeline as pipeline_def
    from pipeline.run_summary import component_runs

    _, _, first, second, store = e2e_runs
    runs = component_runs(store, first["run_id"])
    blessing = runs[pipeline_def.EVALUATION_GATE].outputs["blessing"][0]
    model = runs[pipeline_def.TRAINER].outputs["model"][0]
    assert blessing.custom_properties["blessed"].int_value == 1
    assert blessing.custom_properties["current_model_id"].int_value == model.id
    assert runs[pipeline_def.PUSHER].inputs["model_blessing"][0].id == blessing.id
    assert component_runs(store, second["run_id"])[pipeline_def.EVALUATION_GATE].state == "cached"
    assert second["report"] and os.path.exists(second["report"])


@pytest.mark.e2e
def test_report_command_regenerates_any_past_run(e2e_runs, capsys):
    from pipeline.report.__main__ import main

    config, _, first, second, _ = e2e_runs
    html_path = first["report"]
    os.remove(html_path)
    assert main(["--pipeline-root", config.pipeline_root, "--run-id", first["run_id"]]) == 0
    assert os.path.exists(html_path) and "facepipe evaluation report" in open(html_path).read()
    assert main(["--pipeline-root", config.pipeline_root]) == 0  # default: the latest run
    latest = capsys.readouterr().out
    assert main(["--pipeline-root", config.pipeline_root, "--list"]) == 0
    listed = capsys.readouterr().out.split()  # oldest first (test_e2e_pipeline may have added a third run)
    assert listed[:2] == [first["run_id"], second["run_id"]] and listed[-1] in latest
    assert main(["--pipeline-root", config.pipeline_root, "--run-id", "no-such-run"]) == 2
    assert "no pipeline run 'no-such-run'" in capsys.readouterr().err


@pytest.mark.e2e
def test_console_summary_prints_gates_and_report_path(e2e_runs):
    from pipeline.local_run import format_summary

    config, _, first, _, _ = e2e_runs
    text = format_summary(first, config)
    assert f"report: {first['report']}" in text
    assert "gates:" in text and "pass macro_auc_floor" in text and "fairness_race" in text


def test_a_run_stopped_before_evaluation_still_gets_a_report():
    report = _report(pushed=False)
    report["evaluation"] = {"available": False}
    report["verdict"].update(status="not evaluated", gates=[], settings=None, incomplete_components=["AnomalyGate"],
                             headline="NOT PUSHED: the model was not evaluated (the run stopped at AnomalyGate).")
    text = _text(html.render_html(report))
    assert "stopped at AnomalyGate" in text and "No evaluation" in text and "Out-of-range" in text
    card = model_card.render_model_card(report)
    assert "not evaluated in this run" in card and "## Limitations" in card


def test_model_card_shows_paths_and_anomalies_as_text_not_markdown():
    report = _report(pushed=True)
    report["data"]["data_dir"] = "/data/`[click](https://example.com)`<img src=x onerror=alert(1)>"
    report["data"]["anomalies"] = ["value '[x](https://example.com)' <b>not</b> in the schema"]
    card = model_card.render_model_card(report)
    folder_line = next(line for line in card.splitlines() if line.startswith("- Data folder:"))
    shown = "/data/`[click](https://example.com)`<img src=x onerror=alert(1)>"
    assert folder_line.startswith(f"- Data folder: `` {shown} `` ")  # a code span no backtick inside can end
    anomaly_line = next(line for line in card.splitlines() if line.startswith("- Schema anomalies:"))
    assert "\\[x\\]\\(https://example.com\\)" in anomaly_line and "\\<b\\>" in anomaly_line


def test_the_report_finds_the_synthetic_data_marker_where_the_generator_writes_it(tmp_path, monkeypatch):
    from components import synthetic_data
    from pipeline.report import build

    folder = tmp_path / "faces"
    folder.mkdir()
    assert build.is_synthetic_data(str(folder)) is False
    synthetic_data.marker_path(folder).write_text("{}")
    assert build.is_synthetic_data(str(folder)) is True
    assert build.is_synthetic_data(str(folder) + os.sep) is True
    monkeypatch.chdir(folder)
    assert build.is_synthetic_data(".") is True  # a relative path names the same folder
    assert build.is_synthetic_data("gs://bucket/faces") is None and build.is_synthetic_data(None) is None
