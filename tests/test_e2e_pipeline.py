"""End to end: the real pipeline with LocalDagRunner on a few dozen generated images.

Checks through ML Metadata that each component ran once, that the pushed model answers
the raw-bytes signature, and that unchanged re-runs come from the cache (the second one
re-checks the serving folder, which the first run changed; the third is cached whole).
"""

import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from ml_metadata.proto import metadata_store_pb2

from components import synthetic_data
from components.base import labels
from pipeline import pipeline as pipeline_def
from pipeline.local_run import SUMMARY_FILE, run_local
from pipeline.run_summary import component_runs
from tests.conftest import E2E_NUM_IMAGES

pytestmark = pytest.mark.e2e

COMPONENTS = {
    pipeline_def.EXAMPLE_GEN,
    pipeline_def.STATISTICS_GEN,
    pipeline_def.SCHEMA_GEN,
    pipeline_def.EXAMPLE_VALIDATOR,
    pipeline_def.ANOMALY_GATE,
    pipeline_def.TRANSFORM,
    pipeline_def.TRAINER,
    pipeline_def.SERVING_BASELINE,
    pipeline_def.EVALUATOR,
    pipeline_def.EVALUATION_GATE,
    pipeline_def.PUSHER,
}
NUM_IMAGES = E2E_NUM_IMAGES


@pytest.fixture(scope="module")
def runs(e2e_runs):
    # The run itself lives in conftest.py: the report and prediction tests use the same one.
    return e2e_runs


def test_first_run_ran_every_component_once(runs):
    _, _, first, _, store = runs
    assert first["error"] is None
    executed = component_runs(store, first["run_id"])
    assert COMPONENTS <= set(executed)
    for node in COMPONENTS:
        assert executed[node].state == "complete", (node, executed[node].state)
    # Exactly one execution per component in that run.
    context = store.get_context_by_type_and_name("pipeline_run", first["run_id"])
    per_node = {}
    for execution in store.get_executions_by_context(context.id):
        for ctx in store.get_contexts_by_execution(execution.id):
            if ctx.name.startswith("facepipe-e2e."):
                per_node[ctx.name] = per_node.get(ctx.name, 0) + 1
    assert all(count == 1 for count in per_node.values()), per_node


def test_every_file_is_ingested_or_quarantined(runs):
    _, report, first, _, _ = runs
    assert first["ingested"] + first["quarantined"] == NUM_IMAGES
    assert first["quarantined"] == len(report.malformed) >= 3
    assert set(first["quarantined_by_reason"]) == {"name_mismatch"}


def test_pushed_model_answers_raw_bytes(runs):
    config, _, first, _, _ = runs
    assert first["blessed"] is True
    pushed = first["pushed_model"]
    assert pushed and pushed.startswith(os.path.join(config.serving_dir, config.pipeline_name))
    model = tf.saved_model.load(pushed)
    rng = np.random.default_rng(0)
    image = synthetic_data.render_face(rng, 30, 1, 2, 200)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    out = model.signatures["predict_images"](image_bytes=tf.constant([buffer.getvalue()]))
    for name in labels.LABEL_NAMES:
        value = float(out[name].numpy()[0])
        assert 0.0 < value < 1.0


def test_summary_file_has_named_metrics(runs):
    config, _, first, _, _ = runs
    with open(os.path.join(config.pipeline_root, SUMMARY_FILE)) as f:
        saved = json.load(f)
    for key in ("ingested", "quarantined", "blessed", "pushed_model", "macro_auc", "per_label_auc"):
        assert key in saved
    assert set(saved["per_label_auc"]) == set(labels.LABEL_NAMES)
    assert saved["macro_auc"] is not None and 0.0 <= saved["macro_auc"] <= 1.0


def test_unchanged_reruns_come_from_the_cache(runs):
    config, _, first, second, store = runs
    assert second["error"] is None
    executed = component_runs(store, second["run_id"])
    # The first run's push changed the serving folder, so the Pusher looks again (and finds its model serving).
    for node in COMPONENTS - {pipeline_def.PUSHER}:
        assert executed[node].state == "cached", (node, executed[node].state)
    assert executed[pipeline_def.PUSHER].state == "complete"
    pushed = executed[pipeline_def.PUSHER].outputs["pushed_model"][0]
    assert pushed.custom_properties["already_serving"].int_value == 1
    assert second["pushed_model"] == first["pushed_model"]
    assert len(store.get_artifacts_by_type("Model")) == 2  # one model, and one (empty) baseline artifact
    versions = os.listdir(os.path.join(config.serving_dir, config.pipeline_name))
    assert len([v for v in versions if v.isdigit()]) == 1  # nothing pushed twice
    states = {e.last_known_state for e in store.get_executions()}
    assert metadata_store_pb2.Execution.FAILED not in states

    third = run_local(config, out=io.StringIO())  # nothing changed since the second run: all cached
    executed = component_runs(store, third["run_id"])
    assert {executed[node].state for node in COMPONENTS} == {"cached"}, {n: executed[n].state for n in COMPONENTS}


