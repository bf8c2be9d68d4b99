"""End to end with the on-device model: --export-tflite float, then int8, on 50 generated images.

The float run forces the TFLite embedding engine as well. Checks: the pushed version holds
model.tflite, gated (tflite_auc) and reported (the report's on-device section), and
``predict.py --tflite`` matches the SavedModel's probabilities within 0.02; the int8 run is
scored and judged by the same gate, and pushed only when blessed.

Cost on the shared 2-core machine: about 4 minutes (two pipeline runs; the second re-runs the
Trainer and everything after it).
"""

import csv
import dataclasses
import glob
import io
import os

import pytest

from components import synthetic_data
from components.base import labels
from components.evaluation.settings import GateSettings
from components.trainer import tflite_export
from components.trainer.config import TrainerConfig
from pipeline.config import PipelineConfig
from pipeline.local_run import run_local
from tests.conftest import E2E_NUM_IMAGES, run_paths

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def tflite_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e-tflite")
    data_dir = root / "data"
    synthetic_data.generate(data_dir, synthetic_data.SyntheticSpec(num_images=E2E_NUM_IMAGES, seed=7, balanced=True))
    config = PipelineConfig(
        data_dir=str(data_dir),
        **run_paths(root),
        pipeline_name="facepipe-tflite",
        train_buckets=1,
        eval_buckets=1,
        trainer=TrainerConfig(
            image_size=64, epochs=3, embedding_engine="tflite", tflite_cache_dir=str(root / "tflite_cache"),
            export_tflite="float",
        ),
        # the int8 run is compared with the float run's model; not what is tested here
        gates=GateSettings(min_macro_auc=0.0, max_auc_regression=1.0),
    )
    float_run = run_local(config, out=io.StringIO())
    int8_config = dataclasses.replace(config, trainer=dataclasses.replace(config.trainer, export_tflite="int8"))
    int8_run = run_local(int8_config, out=io.StringIO())
    return config, float_run, int8_run


def _gate(summary, name="tflite_auc"):
    return next((g for g in summary["gates"] if g["name"] == name), None)


def test_float_model_tflite_is_pushed_gated_and_reported(tflite_runs):
    config, run, _ = tflite_runs
    assert run["error"] is None and run["blessed"] is True
    gate = _gate(run)
    assert gate is not None and gate["passed"] is True and gate["value"] <= 0.01
    pushed = run["pushed_model"]
    with open(os.path.join(pushed, tflite_export.TFLITE_FILE), "rb") as f:
        assert tflite_export.read_metadata(f.read())["label_names"] == list(labels.LABEL_NAMES)
    (report,) = glob.glob(os.path.join(config.pipeline_root, "reports", run["run_id"], "report.html"))
    with open(report) as f:
        page = f.read()
    assert "On-device model (model.tflite)" in page and "tflite_auc" in page


def test_the_trainer_embedded_with_tflite_after_checking_it(tflite_runs):
    config, run, _ = tflite_runs
    with open(os.path.join(config.pipeline_root, "logs", f"{run['run_id']}.log")) as f:
        log = f.read()
    assert "embedding engine: TFLite" in log and "embedding check on" in log and ": passed" in log
    assert "with tflite (" in log  # the "embedded N training images ... with tflite" line


def test_predict_tflite_matches_the_savedmodel_within_0_02(tflite_runs, tmp_path):
    import predict

    config, run, _ = tflite_runs
    outputs = {}
    for name, extra in (("saved", []), ("tflite", ["--tflite"])):
        outputs[name] = tmp_path / f"{name}.csv"
        assert predict.main(["--images", config.data_dir, "--model-dir", run["pushed_model"],
                             "--output", str(outputs[name]), *extra]) == 0
    rows = {}
    for name, path in outputs.items():
        with open(path) as f:
            rows[name] = {r["file"]: r for r in csv.DictReader(f)}
    assert rows["saved"].keys() == rows["tflite"].keys() and len(rows["saved"]) == E2E_NUM_IMAGES
    diffs = [
        abs(float(a[n]) - float(rows["tflite"][f][n]))
        for f, a in rows["saved"].items() if not a["error"] for n in labels.LABEL_NAMES
    ]
    assert diffs and max(diffs) <= 0.02


def test_int8_runs_and_is_gated(tflite_runs):
    _, first, run = tflite_runs
    assert run["error"] is None
    gate = _gate(run)
    assert gate is not None and gate["passed"] in (True, False)  # judged, not skipped
    assert "(int8)" in gate["summary"]
    if run["blessed"]:
        assert run["pushed_model"] and run["pushed_model"] != first["pushed_model"]
        with open(os.path.join(run["pushed_model"], tflite_export.TFLITE_FILE), "rb") as f:
            assert tflite_export.read_metadata(f.read())["quantization"] == "int8"
    else:
        assert not run["pushed_model"]


def test_kubeflow_spec_runs_the_tflite_evaluator_before_the_gate(tmp_path):
    """--export-tflite compiles for Kubeflow too: the same graph as locally, TFLiteEvaluator feeding the gate."""
    from pipeline import kubeflow
    from pipeline import pipeline as pipeline_def
    from tests.kfp_helpers import IMAGE, kfp_config, kfp_graph, local_graph

    config = kfp_config(trainer=TrainerConfig(epochs=7, export_tflite="int8"))
    spec = kubeflow.compile_pipeline(config, IMAGE, str(tmp_path / "facepipe.yaml"))
    kfp_edges, kfp_wiring = kfp_graph(spec)
    nodes, edges, wiring = local_graph(dataclasses.replace(config, metadata_path=None))
    assert pipeline_def.TFLITE_EVALUATOR in spec["root"]["dag"]["tasks"] and set(spec["root"]["dag"]["tasks"]) == nodes
    assert (kfp_edges, kfp_wiring) == (edges, wiring)
    assert (pipeline_def.EVALUATION_GATE, "tflite_evaluation", pipeline_def.TFLITE_EVALUATOR, "evaluation") in wiring
    assert kubeflow.unsupported_on_kfp(spec) == []
