"""Collects one pipeline run's numbers from ML Metadata and its artifacts into a JSON-able dict.

The same dict feeds report.json, the HTML page and the model card, so the three never disagree.
Everything is read back from what the run recorded (MLMD executions and artifacts), so a report
can be rebuilt for any past run.
"""

from __future__ import annotations

import collections
import datetime
import json
import os
import posixpath
from typing import Any

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from components import eval_table, evaluation, synthetic_data, uncertainty
from components.anomaly_gate import describe_anomalies
from components.base import labels
from components.image_example_gen.ingest import read_quarantine
from pipeline import mlmd, run_summary
from pipeline import pipeline as pipeline_def
from pipeline.report import eval_results, html, model_card, on_device, thumbnails

REPORTS_DIR = "reports"  # <pipeline_root>/reports/<run id>/
REPORT_JSON, REPORT_HTML, MODEL_CARD = "report.json", "report.html", "model_card.md"
FORMAT_VERSION = 2  # 2: intervals, decision thresholds, calibration, error thumbnails
MAX_LISTED_QUARANTINE = 200  # quarantined files listed one by one (all are counted by reason)


def _split_names(artifact: metadata_store_pb2.Artifact) -> list[str]:
    value = mlmd.property_value(artifact, "split_names")
    return list(json.loads(value)) if value else []


def label_frequencies(examples_uri: str, split_names: list[str]) -> dict[str, dict[str, Any]]:
    """Counts examples, label positives and group sizes per split from ExampleGen's tf.Examples.

    Args:
      examples_uri: the Examples artifact's URI.
      split_names: its splits.

    Returns:
      split -> {examples, label_positives: {label: n}, groups: {gender|race|age: {group: n}}}.
    """
    import tensorflow as tf

    spec = {key: tf.io.FixedLenFeature([], tf.int64) for key in labels.RAW_LABEL_KEYS}
    out: dict[str, dict[str, Any]] = {}
    for split in sorted(split_names, key=lambda s: ({"train": 0, "eval": 1}.get(s, 2), s)):
        files = sorted(tf.io.gfile.glob(posixpath.join(examples_uri, f"Split-{split}", "*")))
        positives = collections.Counter({name: 0 for name in labels.LABEL_NAMES})
        groups: dict[str, collections.Counter] = {k: collections.Counter() for k in ("gender", "race", "age")}
        count = 0
        if files:
            compression = "GZIP" if all(f.endswith(".gz") for f in files) else ""
            dataset = tf.data.TFRecordDataset(files, compression_type=compression).batch(512)
            for batch in dataset.map(lambda x: tf.io.parse_example(x, spec)).as_numpy_iterator():
                for age, gender, race in zip(
                    batch[labels.AGE_KEY], batch[labels.GENDER_KEY], batch[labels.RACE_KEY], strict=True
                ):
                    count += 1
                    vector = labels.label_vector(int(age), int(gender), int(race))
                    positives.update({n: v for n, v in zip(labels.LABEL_NAMES, vector, strict=True) if v})
                    groups["gender"][_name(labels.GENDER_NAMES, gender)] += 1
                    groups["race"][_name(labels.RACE_NAMES, race)] += 1
                    groups["age"][labels.age_group(int(age))] += 1
        out[split] = {
            "examples": count,
            "label_positives": dict(positives),
            "groups": {k: _ordered(v, k) for k, v in groups.items()},
        }
    return out


def _name(names: tuple[str, ...], index: Any) -> str:
    i = int(index)
    return names[i] if 0 <= i < len(names) else f"unknown ({i})"


def _ordered(counter: collections.Counter, kind: str) -> dict[str, int]:
    order = {"gender": labels.GENDER_NAMES, "race": labels.RACE_NAMES,
             "age": tuple(n for _, n in labels.AGE_GROUPS)}[kind]
    keys = [k for k in order if k in counter] + sorted(k for k in counter if k not in order)
    return {k: counter[k] for k in keys}


def _model_info(model_uri: str | None) -> dict[str, Any]:
    import tensorflow as tf

    info: dict[str, Any] = {"uri": model_uri}
    if model_uri:
        path = posixpath.join(model_uri, "Format-Serving", "assets.extra", "labels.json")
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path) as f:
                info.update(json.load(f))
    return info


def is_synthetic_data(data_dir: str | None) -> bool | None:
    """Whether a data folder is the generated synthetic set (its completion marker lies beside it).

    Returns:
      True / False for a local folder; None when unknown (no folder, or a remote one).
    """
    if not data_dir or "://" in data_dir or not os.path.isdir(data_dir):
        return None
    return synthetic_data.marker_path(os.path.abspath(data_dir)).exists()


def summarize_verdict(
    summary: dict[str, Any], gates_record: dict[str, Any] | None, states: dict[str, str]
) -> dict[str, Any]:
    """The run's verdict: status, headline, blessed, pushed/baseline model, gates, settings, incomplete components."""
    stopped = [n for n, s in states.items() if s not in ("complete", "cached")]
    gates = gates_record["gates"] if gates_record else []
    if gates_record is None and summary.get("pushed_model"):
        # A run from before EvaluationGate existed: the Evaluator's blessing decided, no gate was recorded.
        status = "pushed"
        headline = "PUSHED (this run predates EvaluationGate: blessed by the Evaluator, no gate results recorded)."
    elif gates_record is None:
        status = "not evaluated"
        where = (f"the run stopped at {', '.join(f'{n} ({states[n]})' for n in stopped)}" if stopped
                 else "no EvaluationGate output in this run")
        headline = f"NOT PUSHED: the model was not evaluated ({where})."
    elif summary.get("pushed_model"):
        status = "pushed"
        headline = "PUSHED: every gate passed; the model was pushed to serving."
    elif gates_record["blessed"]:
        status = "blessed, not pushed"
        headline = "BLESSED but NOT PUSHED: every gate passed, but Pusher did not publish the model."
    else:
        status = "not blessed"
        failed = [g["name"] for g in gates if g["passed"] is False]
        headline = f"NOT PUSHED: {len(failed)} gate(s) failed: {', '.join(failed)}."
    return {
        "status": status,
        "headline": headline,
        "blessed": None if gates_record is None else bool(gates_record["blessed"]),
        "pushed_model": summary.get("pushed_model"),
        "baseline_model": summary.get("baseline_model"),
        "baseline_note": summary.get("baseline_note"),
        "gates": gates,
        "settings": gates_record.get("settings") if gates_record else None,
        "incomplete_components": stopped,
    }


def build_report(store: metadata_store.MetadataStore, run_id: str, images: bool = True) -> dict[str, Any]:
    """Collects everything the report shows for one run.

    Args:
      store: the ML Metadata store.
      run_id: the pipeline run id.
      images: embed thumbnails of the most confident errors (False: file names and scores only).

    Returns:
      A JSON-able dict: format, generated_at, run, verdict, labels, model, evaluation (with
      intervals, decision and errors), data.

    Raises:
      ValueError: the store has no such run.
    """
    if store.get_context_by_type_and_name("pipeline_run", run_id) is None:
        raise ValueError(f"no pipeline run {run_id!r} in ML Metadata")
    run = run_summary.load_run(store, run_id)
    runs, summary, states, gates_record = run.runs, run.summary, run.states, run.gates_record
    trainer = runs.get(pipeline_def.TRAINER)
    model_uri = trainer.outputs["model"][0].uri if trainer and trainer.outputs.get("model") else None
    model = _model_info(model_uri)
    label_names = tuple(
        (gates_record or {}).get("label_names") or model.get("label_names") or labels.LABEL_NAMES
    )
    definitions = {d.name: d.description for d in labels.LABELS}

    report_eval: dict[str, Any] = {"available": False}
    gen = runs.get(pipeline_def.EXAMPLE_GEN)
    examples_uri = gen.outputs["examples"][0].uri if gen and gen.outputs.get("examples") else None
    results = None
    if (ev := runs.get(pipeline_def.EVALUATOR)) and ev.outputs.get("evaluation") and ev.state in ("complete", "cached"):
        uri = ev.outputs["evaluation"][0].uri
        results = evaluation.load_eval_results(uri, label_names)
        report_eval = {
            "available": True,
            "uri": uri,
            "has_baseline": results.has_baseline,
            "slices": eval_results.ordered_slices(results),
            "metrics": results.metrics,
            "cross_auc": results.to_dict()["cross_auc"],
            "tfma_validation_ok": results.validation_ok,
            **eval_results.curves(uri, label_names),
        }
        table = None
        try:
            table = eval_table.load_eval_table(uri, label_names)
        except ValueError as e:  # an evaluation from before the per-example rows: shown as missing, not hidden
            report_eval["rows_error"] = str(e)
        if gates_record and gates_record.get("uncertainty"):
            report_eval["intervals"] = gates_record["uncertainty"]
        elif table is not None:
            report_eval["intervals"] = uncertainty.gate_intervals(
                label_names, table.labels, table.predictions[eval_table.CANDIDATE],
                table.predictions.get(eval_table.BASELINE),
                {f: table.groups[f] for f in evaluation.FAIRNESS_GROUPS if f in table.groups},
            ).to_dict()
        report_eval["eval_examples"] = None if table is None else len(table)
        report_eval["decision"] = eval_results.decision_summary(model, table, label_names)
        if table is not None:
            report_eval["errors"] = thumbnails.error_gallery(
                table, {n: e["threshold"] for n, e in report_eval["decision"]["per_label"].items()},
                examples_uri, images=images,
            )

    data: dict[str, Any] = {
        "data_dir": mlmd.execution_property(store, run_id, pipeline_def.EXAMPLE_GEN, "input_base"),
        "files_found": summary.get("files_found"),
        "spans": summary.get("spans"),
        "splits": {},
        "quarantined": {"total": summary.get("quarantined"), "by_reason": summary.get("quarantined_by_reason", {}),
                        "files": []},
        "anomalies": None,
        "drift": summary.get("drift"),
    }
    data["synthetic"] = is_synthetic_data(data["data_dir"])
    if gen and gen.outputs.get("examples"):
        examples = gen.outputs["examples"][0]
        data["splits"] = label_frequencies(examples.uri, _split_names(examples))
        data["quarantined"]["files"] = read_quarantine(examples.uri)[:MAX_LISTED_QUARANTINE]
    if (validator := runs.get(pipeline_def.EXAMPLE_VALIDATOR)) and validator.outputs.get("anomalies"):
        anomalies = validator.outputs["anomalies"][0]
        data["anomalies"] = describe_anomalies(anomalies.uri, _split_names(anomalies))

    return {
        "format": FORMAT_VERSION,
        "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "run": {"run_id": run_id, "components": states},
        "verdict": summarize_verdict(summary, gates_record, states),
        "labels": [{"name": n, "definition": definitions.get(n, "")} for n in label_names],
        "model": model,
        "evaluation": report_eval,
        "on_device": on_device.collect(_output_uri(runs, pipeline_def.TFLITE_EVALUATOR, "evaluation"),
                                       gates_record, results),
        "data": data,
    }


def _output_uri(runs: dict[str, Any], node: str, key: str) -> str | None:
    """The URI of a completed component's output, or None."""
    run = runs.get(node)
    if run is None or run.state not in ("complete", "cached") or not run.outputs.get(key):
        return None
    return run.outputs[key][0].uri


def report_dir(pipeline_root: str, run_id: str) -> str:
    """Where a run's report files go: <pipeline_root>/reports/<run id>/.

    Raises:
      ValueError: the run id is not a plain folder name (it must not lead out of reports/).
    """
    if not run_id or run_id in (".", "..") or "/" in run_id or os.sep in run_id:
        raise ValueError(f"run id {run_id!r} cannot name a report folder")
    return os.path.join(pipeline_root, REPORTS_DIR, run_id)


def write_report(report: dict[str, Any], out_dir: str) -> dict[str, str]:
    """Writes report.json, report.html and model_card.md.

    Args:
      report: from build_report.
      out_dir: the folder (created if needed).

    Returns:
      {"json": path, "html": path, "model_card": path}.
    """
    os.makedirs(out_dir, exist_ok=True)
    paths = {
        "json": os.path.join(out_dir, REPORT_JSON),
        "html": os.path.join(out_dir, REPORT_HTML),
        "model_card": os.path.join(out_dir, MODEL_CARD),
    }
    # allow_nan=False: a NaN would make the JSON unreadable for strict parsers; NaNs are None already.
    with open(paths["json"], "w") as f:
        json.dump(report, f, indent=1, allow_nan=False)  # key order kept: splits train, eval, ...
    with open(paths["html"], "w", encoding="utf-8") as f:
        f.write(html.render_html(report))
    with open(paths["model_card"], "w", encoding="utf-8") as f:
        f.write(model_card.render_model_card(report))
    return paths


def generate_report(store: metadata_store.MetadataStore, pipeline_root: str, run_id: str | None = None,
                    pipeline_name: str | None = None, images: bool = True) -> dict[str, str]:
    """Builds and writes the report of one run (the latest by default).

    Args:
      store: the ML Metadata store (pipeline.mlmd.open_readonly).
      pipeline_root: the pipeline root; files go to <pipeline_root>/reports/<run id>/.
      run_id: the run; None for the latest run (of pipeline_name, when given).
      pipeline_name: restricts "latest" to this pipeline.
      images: embed thumbnails of the most confident errors.

    Returns:
      The written paths (see write_report) plus "run_id".

    Raises:
      ValueError: no such run.
    """
    if run_id is None:
        found = mlmd.run_ids(store, pipeline_name)
        if not found:
            raise ValueError("no pipeline runs recorded in ML Metadata"
                             + (f" for pipeline {pipeline_name!r}" if pipeline_name else ""))
        run_id = found[-1]
    paths = write_report(build_report(store, run_id, images=images), report_dir(pipeline_root, run_id))
    return {**paths, "run_id": run_id}
