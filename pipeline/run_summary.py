"""What one pipeline run did, read back from ML Metadata and the artifacts it recorded."""

from __future__ import annotations

import collections
import dataclasses
import math
import os
from typing import Any

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from components.base import labels
from components.drift import read_report as read_drift_report
from components.evaluation.eval_config import MACRO_AUC
from components.evaluation.gates import read_gates
from components.evaluation.results import BASELINE
from components.image_example_gen.ingest import read_quarantine
from pipeline import mlmd
from pipeline import pipeline as pipeline_def

_STATE_NAMES = {v: k.lower() for k, v in metadata_store_pb2.Execution.State.items()}


@dataclasses.dataclass
class ComponentRun:
    """One component's execution in a run."""

    node_id: str
    state: str  # complete, cached, failed, running, ...
    outputs: dict[str, list[metadata_store_pb2.Artifact]]
    inputs: dict[str, list[metadata_store_pb2.Artifact]] = dataclasses.field(default_factory=dict)


def component_runs(store: metadata_store.MetadataStore, run_id: str) -> dict[str, ComponentRun]:
    """Returns each component's execution in one pipeline run, by node id.

    Args:
      store: the run's ML Metadata store.
      run_id: the pipeline run id (name of the pipeline_run context).

    Returns:
      node id -> ComponentRun; components that did not start are absent.
    """
    context = store.get_context_by_type_and_name("pipeline_run", run_id)
    if context is None:
        return {}
    executions = store.get_executions_by_context(context.id)
    node_names = {}
    for execution in executions:
        for ctx in store.get_contexts_by_execution(execution.id):
            if store.get_context_types_by_id([ctx.type_id])[0].name == "node":
                node_names[execution.id] = ctx.name.split(".", 1)[-1]
    result = {}
    for execution in sorted(executions, key=lambda e: e.id):
        node_id = node_names.get(execution.id)
        if node_id is None:
            continue
        events = store.get_events_by_execution_ids([execution.id])
        artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
        by_kind: dict[int, dict[str, list[metadata_store_pb2.Artifact]]] = {
            metadata_store_pb2.Event.OUTPUT: collections.defaultdict(list),
            metadata_store_pb2.Event.INPUT: collections.defaultdict(list),
        }
        for event in events:
            if event.type in by_kind and event.artifact_id in artifacts:
                key = event.path.steps[0].key if event.path.steps else ""
                by_kind[event.type][key].append(artifacts[event.artifact_id])
        result[node_id] = ComponentRun(
            node_id,
            _STATE_NAMES.get(execution.last_known_state, "unknown"),
            dict(by_kind[metadata_store_pb2.Event.OUTPUT]),
            dict(by_kind[metadata_store_pb2.Event.INPUT]),
        )
    return result


def _count_examples(statistics_uri: str) -> dict[str, int]:
    import tensorflow_data_validation as tfdv  # heavy; only when summarizing

    counts = {}
    for split in sorted(os.listdir(statistics_uri)) if os.path.isdir(statistics_uri) else []:
        path = os.path.join(statistics_uri, split, "FeatureStats.pb")
        if split.startswith("Split-") and os.path.exists(path):
            stats = tfdv.load_stats_binary(path)
            counts[split[len("Split-") :]] = int(stats.datasets[0].num_examples)
    return counts


def _overall_metrics(evaluation_uri: str) -> tuple[float | None, dict[str, float]]:
    import tensorflow_model_analysis as tfma

    macro, per_label = None, {}
    for slice_metrics in tfma.load_metrics(evaluation_uri):
        # The overall slice only: not a single slice, nor a cross-slice comparison (fairness gaps).
        if slice_metrics.slice_key.single_slice_keys or slice_metrics.HasField("cross_slice_key"):
            continue
        for key_and_value in slice_metrics.metric_keys_and_values:
            key, value = key_and_value.key, key_and_value.value
            # The candidate's values only: not the baseline model's, nor their differences.
            if key.is_diff or key.model_name == BASELINE or not value.HasField("double_value"):
                continue
            if key.name == MACRO_AUC:
                macro = value.double_value.value
            elif key.name == "auc" and key.sub_key.HasField("class_id"):
                per_label[labels.LABEL_NAMES[key.sub_key.class_id.value]] = value.double_value.value
    return macro, per_label


def _validation_reasons(evaluation_uri: str) -> list[str]:
    import tensorflow_model_analysis as tfma

    result = tfma.load_validation_result(evaluation_uri)
    reasons = []
    for per_slice in result.metric_validations_per_slice:
        for failure in per_slice.failures:
            name = failure.metric_key.name
            if failure.metric_key.is_diff:
                name = f"change in {name} vs the serving model"
            reasons.append(f"{name} = {_fmt(failure.metric_value)} fails {_threshold_text(failure.metric_threshold)}")
    if result.missing_thresholds:
        reasons.append("a gated metric could not be computed (e.g. a label with no positives in the eval split)")
    for missing in result.missing_slices:
        reasons.append(f"slice missing from the eval data: {missing}")
    return reasons


def _fmt(metric_value: Any) -> str:
    if metric_value.HasField("double_value"):
        return f"{metric_value.double_value.value:.4f}"
    return str(metric_value).strip()


def _threshold_text(threshold: Any) -> str:
    parts = []
    if threshold.HasField("value_threshold"):
        vt = threshold.value_threshold
        if vt.HasField("lower_bound"):
            parts.append(f">= {vt.lower_bound.value:g}")
        if vt.HasField("upper_bound"):
            parts.append(f"<= {vt.upper_bound.value:g}")
    if threshold.HasField("change_threshold"):
        parts.append(f"change >= {threshold.change_threshold.absolute.value:g}")
    return "the threshold " + " and ".join(parts) if parts else "its threshold"


def gates_record_of(runs: dict[str, ComponentRun]) -> dict[str, Any] | None:
    """EvaluationGate's record (gates.json) of a run, or None when it did not write one."""
    if (gate := runs.get(pipeline_def.EVALUATION_GATE)) and gate.outputs.get("blessing"):
        return read_gates(gate.outputs["blessing"][0].uri)
    return None


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """What the report and the index of runs read about one run: each read once."""

    runs: dict[str, ComponentRun]
    summary: dict[str, Any]
    gates_record: dict[str, Any] | None

    @property
    def states(self) -> dict[str, str]:
        return {node: run.state for node, run in self.runs.items()}


def load_run(store: metadata_store.MetadataStore, run_id: str) -> RunRecord:
    """A run's component executions, its summary and its gate record (one ML Metadata walk, one gates.json read)."""
    runs = component_runs(store, run_id)
    record = gates_record_of(runs)
    return RunRecord(runs, _summary(store, run_id, runs, record), record)


def summarize(store: metadata_store.MetadataStore, run_id: str) -> dict[str, Any]:
    """Builds the run summary written to last_run_summary.json.

    Args:
      store: the ML Metadata store.
      run_id: the pipeline run id.

    Returns:
      A JSON-able dict: run_id, components (node id -> state), ingested, ingested_by_split,
      quarantined, quarantined_by_reason, blessed, blessing_reasons, baseline_model (the serving
      version the candidate was compared with) and baseline_note (why that one, or why none), pushed_model,
      macro_auc, per_label_auc; files_found (ingested + quarantined), spans (first/last span read) and
      drift (the LabelDriftCheck report: status ok/drift/skipped, distances, message); gates (one dict
      per EvaluationGate gate: name, title, passed, value, threshold, summary, interval (95%, of the
      value), within_noise), whose verdict ``blessed`` is.
    """
    runs = component_runs(store, run_id)
    return _summary(store, run_id, runs, gates_record_of(runs))


def _summary(
    store: metadata_store.MetadataStore,
    run_id: str,
    runs: dict[str, ComponentRun],
    record: dict[str, Any] | None,
) -> dict[str, Any]:
    """summarize's work on a run's executions and gate record already read."""
    summary: dict[str, Any] = {
        "run_id": run_id,
        "components": {node: run.state for node, run in runs.items()},
        "ingested": None,
        "ingested_by_split": {},
        "quarantined": None,
        "quarantined_by_reason": {},
        "blessed": None,
        "blessing_reasons": [],
        "baseline_model": None,
        "baseline_note": None,
        "pushed_model": None,
        "macro_auc": None,
        "per_label_auc": {},
        "files_found": None,
        "spans": None,
        "drift": None,
        "gates": [],
    }
    if (gen := runs.get(pipeline_def.EXAMPLE_GEN)) and gen.outputs.get("examples"):
        entries = read_quarantine(gen.outputs["examples"][0].uri)
        summary["quarantined"] = len(entries)
        summary["quarantined_by_reason"] = dict(collections.Counter(e["reason"] for e in entries))
        examples = gen.outputs["examples"][0]
        summary["files_found"] = mlmd.property_value(examples, "files_found")
        first, last = (mlmd.property_value(examples, k) for k in ("first_span", "last_span"))
        if first is not None:
            summary["spans"] = [first, last]
    if (drift := runs.get(pipeline_def.LABEL_DRIFT)) and drift.outputs.get("report"):
        summary["drift"] = read_drift_report(drift.outputs["report"][0].uri)
    if (stats := runs.get(pipeline_def.STATISTICS_GEN)) and stats.outputs.get("statistics"):
        counts = _count_examples(stats.outputs["statistics"][0].uri)
        summary["ingested_by_split"] = counts
        summary["ingested"] = sum(counts.values())
    if (ev := runs.get(pipeline_def.EVALUATOR)) and ev.outputs.get("evaluation"):
        uri = ev.outputs["evaluation"][0].uri
        macro, per_label = _overall_metrics(uri)
        summary["macro_auc"] = None if macro is None or math.isnan(macro) else macro
        summary["per_label_auc"] = {k: (None if math.isnan(v) else v) for k, v in per_label.items()}
        blessing = ev.outputs.get("blessing", [None])[0]
        summary["blessed"] = bool(blessing is not None and mlmd.property_value(blessing, "blessed") == 1)
        summary["blessing_reasons"] = _validation_reasons(uri)
    if (base := runs.get(pipeline_def.SERVING_BASELINE)) and base.outputs.get("baseline_model"):
        baseline = base.outputs["baseline_model"][0]
        summary["baseline_model"] = mlmd.property_value(baseline, "baseline_path") or None
        summary["baseline_note"] = mlmd.property_value(baseline, "baseline_note")
        if base.state == "cached" and summary["baseline_note"]:
            # The evaluation this run reuses was decided then (e.g. before its own model was pushed).
            summary["baseline_note"] += " (when this evaluation first ran)"
    # The push decision is EvaluationGate's (every gate); the Evaluator's blessing covers TFMA's thresholds only.
    if record is not None:
        keys = ("name", "title", "passed", "value", "threshold", "summary")
        # interval / within_noise: absent from records written before the intervals existed.
        summary["gates"] = [{**{k: g[k] for k in keys}, "interval": g.get("interval"),
                             "within_noise": g.get("within_noise")} for g in record["gates"]]
        summary["blessed"] = bool(record["blessed"])
        failed = [g for g in record["gates"] if g["passed"] is False]
        summary["blessing_reasons"] = [f"{g['name']}: {g['summary']}" for g in failed]
    if (push := runs.get(pipeline_def.PUSHER)) and push.outputs.get("pushed_model"):
        pushed = push.outputs["pushed_model"][0]
        if mlmd.property_value(pushed, "pushed") == 1:
            summary["pushed_model"] = mlmd.property_value(pushed, "pushed_destination")
    return summary
