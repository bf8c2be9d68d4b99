"""Container entrypoints from the compiled spec, executed here as subprocesses on tiny data, exactly
as the spec gives them."""

import json
import os
import subprocess
import sys

import pytest

from pipeline import runtime_params
from tests.kfp_helpers import (
    compile_flat_and_spans,
)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Compiles the pipeline twice: flat data folder, and span folders (spans="latest")."""
    return compile_flat_and_spans(tmp_path_factory.mktemp("kfp"))


# ---------------------------------------------------------------------------------------------
# Container entrypoints from the compiled spec, executed here on tiny data


def _executor_input(spec: dict, task_name: str, params: dict, out_dir) -> dict:
    """The ExecutorInput KFP's launcher would give the task: parameters from the spec, outputs under out_dir."""
    task = spec["root"]["dag"]["tasks"][task_name]
    component = spec["components"][task["componentRef"]["name"]]
    assert not task.get("inputs", {}).get("artifacts"), "helper handles tasks without input artifacts only"
    defaults = spec["root"]["inputDefinitions"]["parameters"]
    values = {}
    for key, source in task["inputs"]["parameters"].items():
        if "runtimeValue" in source:
            values[key] = source["runtimeValue"]["constant"]
        else:
            name = source["componentInputParameter"]
            values[key] = params.get(name, defaults[name]["defaultValue"])
    outputs = {
        key: {
            "artifacts": [
                {"name": f"{task_name}-{key}", "type": d["artifactType"], "uri": str(out_dir / key), "metadata": {}}
            ]
        }
        for key, d in component["outputDefinitions"]["artifacts"].items()
    }
    return {
        "inputs": {"parameterValues": values},
        "outputs": {"artifacts": outputs, "outputFile": str(out_dir / "executor_output.json")},
    }


def _run_entrypoint(command: dict, executor_input: dict, cwd) -> subprocess.CompletedProcess:
    """Runs a container command of the spec with this venv's Python, {{$}} replaced by the ExecutorInput."""
    assert command["command"][0] == "python"
    argv = [sys.executable, *command["command"][1:]]
    argv += [json.dumps(executor_input) if a == "{{$}}" else a for a in command["args"]]
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")  # as the Dockerfile sets
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=480, env=env, cwd=str(cwd))


def _read_executor_output(path):
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    with open(path) as f:
        return json_format.Parse(f.read(), pipeline_spec_pb2.ExecutorOutput())


@pytest.mark.slow
def test_example_gen_container_runs_on_a_tiny_image_folder(compiled, tmp_path):
    """The executor step as open-source KFP runs it (no driver step): data_root given at run time."""
    import tensorflow as tf

    from components import synthetic_data

    spec, _ = compiled["flat"]
    data = tmp_path / "faces"
    report = synthetic_data.generate(
        data, synthetic_data.SyntheticSpec(num_images=10, seed=3, image_size=48, malformed_fraction=0.0)
    )
    (data / "not_a_face_name.jpg").write_bytes(b"\xff\xd8 not an image")
    out = tmp_path / "ImageExampleGen"
    executor_input = _executor_input(spec, "ImageExampleGen", {runtime_params.DATA_ROOT: str(data)}, out)
    container = spec["deploymentSpec"]["executors"][spec["components"]["ImageExampleGen"]["executorLabel"]]["container"]

    result = _run_entrypoint(container, executor_input, tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]

    output = _read_executor_output(out / "executor_output.json")
    (artifact,) = output.artifacts["examples"].artifacts
    assert artifact.uri == str(out / "examples")
    assert json.loads(artifact.metadata["split_names"]) == ["train", "eval"]
    counts = {}
    for split in ("train", "eval"):
        files = tf.io.gfile.glob(str(out / "examples" / f"Split-{split}" / "*.gz"))
        counts[split] = sum(1 for _ in tf.data.TFRecordDataset(files, compression_type="GZIP"))
    assert sum(counts.values()) == report.written == 10 and min(counts.values()) > 0
    quarantine = (out / "examples" / "quarantine.jsonl").read_text().splitlines()
    assert len(quarantine) == 1 and "not_a_face_name.jpg" in quarantine[0]


@pytest.mark.slow
def test_example_gen_step_resolves_the_span_given_at_run_time(compiled, tmp_path):
    """No driver step on open-source KFP: the executor itself reads the span that range_config names."""
    from components import synthetic_data

    spec, _ = compiled["spans"]
    data = tmp_path / "faces"
    for span, n in ((1, 4), (2, 6)):
        synthetic_data.generate(
            data / f"span-{span}", synthetic_data.SyntheticSpec(num_images=n, seed=span, image_size=32,
                                                               malformed_fraction=0.0)
        )
    out = tmp_path / "ImageExampleGen"
    params = {
        runtime_params.DATA_ROOT: str(data),
        runtime_params.RANGE_CONFIG: json.dumps({"static_range": {"start_span_number": 1, "end_span_number": 1}}),
    }
    executor_input = _executor_input(spec, "ImageExampleGen", params, out)
    container = spec["deploymentSpec"]["executors"][spec["components"]["ImageExampleGen"]["executorLabel"]]["container"]

    result = _run_entrypoint(container, executor_input, tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]

    output = _read_executor_output(out / "executor_output.json")
    (artifact,) = output.artifacts["examples"].artifacts
    assert artifact.metadata["span"] == 1 and artifact.metadata["files_found"] == 4
    assert len(artifact.metadata["data_fingerprint"]) == 64
