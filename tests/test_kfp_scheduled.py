"""A scheduled Kubeflow pipeline, run here through every compiled step's real container command.

tests/kfp_emulator.py stands in for open-source KFP's driver and launcher (and, once, for
Vertex AI): it builds each task's ExecutorInput as the backend does, substitutes the
placeholders, runs the task's command from the compiled spec (``python -m
pipeline.kfp_entrypoint ...``) with this repository standing in for the image, records the
outputs the way the launcher records them, and reuses outputs under KFP's cache key.

The scenario on one tiny data root: run 1 pushes a model; images are added; run 2 ingests
them and is compared with the serving model; run 3, with nothing changed, publishes nothing.
Then run 1 again on a fresh root with Vertex-style typed inputs. The commands are started from
a warm interpreter (tests/forkserver.py) to keep the cost in CI down; the command line and
everything after interpreter start-up is the container's.
"""

import concurrent.futures
import json
import os
import time

import pytest

from components import synthetic_data
from components.evaluation.settings import GateSettings
from components.trainer.config import TrainerConfig
from pipeline import kubeflow
from pipeline import pipeline as pipeline_def
from pipeline.config import PipelineConfig
from tests import kfp_emulator

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

IMAGE = "europe-docker.pkg.dev/facepipe-test/images/facepipe:0.1.0"
PUSHED = "pushed_model"


def _config(root) -> PipelineConfig:
    return PipelineConfig(
        data_dir=str(root / "data"),
        pipeline_root=str(root / "pipeline_root"),
        serving_dir=str(root / "serving"),
        pipeline_name="facepipe-kfp",
        train_buckets=1,  # 50/50: every label has positives and negatives in a tiny eval split
        eval_buckets=1,
        trainer=TrainerConfig(image_size=32, epochs=2),
        # tiny data: the gates themselves are tested elsewhere; run 2 must be able to replace run 1's model
        gates=GateSettings(min_macro_auc=0.0, max_auc_regression=1.0),
    )


def _versions(config: PipelineConfig) -> list[int]:
    base = os.path.join(config.serving_dir, config.pipeline_name)
    return sorted(int(n) for n in os.listdir(base) if n.isdigit()) if os.path.isdir(base) else []


def _gates(emulator, run) -> dict:
    with open(os.path.join(emulator.artifact(run, pipeline_def.EVALUATION_GATE, "blessing").uri, "gates.json")) as f:
        return json.load(f)


def _compiled(root, seed: int, target: str) -> tuple[PipelineConfig, dict]:
    config = _config(root)
    synthetic_data.generate(root / "data", synthetic_data.SyntheticSpec(num_images=40, seed=seed, balanced=True,
                                                                        malformed_fraction=0.0, image_size=48))
    suffix = ".json" if target == kubeflow.TARGET_VERTEX else ".yaml"
    return config, kubeflow.compile_pipeline(config, IMAGE, str(root / f"facepipe{suffix}"), target=target)


def _vertex_run_1(root, spec: dict) -> tuple:
    """Run 1 with Vertex AI's typed inputs, on its own root and fork server."""
    with kfp_emulator.ForkServer() as server:
        emulator = kfp_emulator.Emulator(spec, str(root / "backend"), mode=kfp_emulator.VERTEX, run_command=server)
        start = time.monotonic()
        run = emulator.run()
        return emulator, run, time.monotonic() - start, dict(server.cpu_seconds)


@pytest.fixture(scope="module")
def scheduled(tmp_path_factory):
    """Runs 1, 2 (after adding images) and 3 (nothing changed) on open-source KFP's rules; Vertex's run 1 beside them.

    The two backends run at the same time (separate roots, separate fork servers): most steps
    use one core, and this keeps the test's wall time down on two.
    """
    root, vertex_root = tmp_path_factory.mktemp("kfp_scheduled"), tmp_path_factory.mktemp("kfp_vertex")
    # Compiling uses TFX's global DSL registry: both specs are built here, before any thread starts.
    vertex_config, vertex_spec = _compiled(vertex_root, 23, kubeflow.TARGET_VERTEX)
    config, spec = _compiled(root, 21, kubeflow.TARGET_KFP)
    vertex = concurrent.futures.ThreadPoolExecutor(1).submit(_vertex_run_1, vertex_root, vertex_spec)
    runs, seconds, versions = [], [], []
    with kfp_emulator.ForkServer() as server:
        emulator = kfp_emulator.Emulator(spec, str(root / "backend"), mode=kfp_emulator.OSS, run_command=server)
        for step in range(3):
            if step == 1:  # new images arrive between run 1 and run 2
                synthetic_data.generate(
                    root / "data" / "batch-2",
                    synthetic_data.SyntheticSpec(num_images=20, seed=22, balanced=True, malformed_fraction=0.0,
                                                 image_size=48),
                )
            start = time.monotonic()
            runs.append(emulator.run())
            seconds.append(time.monotonic() - start)
            versions.append(_versions(config))
        cpu = dict(server.cpu_seconds)
    vertex_emulator, vertex_run, vertex_seconds, vertex_cpu = vertex.result(timeout=1800)
    cpu.update(vertex_cpu)
    per_task: dict[str, float] = {}
    for log_path, value in cpu.items():
        task = os.path.basename(os.path.dirname(log_path))
        per_task[task] = per_task.get(task, 0.0) + value
    print(f"\nKFP emulation: open-source runs {', '.join(f'{s:.0f} s' for s in seconds)}; Vertex run 1 "
          f"{vertex_seconds:.0f} s (concurrently); step CPU seconds, all runs: "
          + ", ".join(f"{t} {v:.0f}" for t, v in sorted(per_task.items(), key=lambda kv: -kv[1])))
    return config, emulator, runs, versions, (vertex_config, vertex_emulator, vertex_run)


def test_no_step_of_the_spec_is_skipped_and_the_data_steps_never_come_from_the_cache(scheduled):
    config, emulator, runs, _, _ = scheduled
    tasks = set(emulator.spec["root"]["dag"]["tasks"])
    assert set(runs[0].ran()) == tasks  # every compiled step ran, through its container command
    for run in runs[1:]:
        assert set(pipeline_def.READS_OUTSIDE_ARTIFACTS) <= set(run.ran())
    assert pipeline_def.SCHEMA_GEN in runs[1].cached()  # the cache works where it is safe


def test_run_1_pushes_a_model(scheduled):
    config, emulator, runs, versions, _ = scheduled
    pushed = emulator.artifact(runs[0], pipeline_def.PUSHER, PUSHED)
    assert pushed.custom_properties["pushed"] == 1.0
    assert len(versions[0]) == 1
    assert _gates(emulator, runs[0])["has_baseline"] is False
    examples = emulator.artifact(runs[0], pipeline_def.EXAMPLE_GEN, "examples")
    assert examples.custom_properties["files_found"] == 40.0


def test_run_2_ingests_the_new_images_and_is_compared_with_the_serving_model(scheduled):
    config, emulator, runs, versions, _ = scheduled
    before = emulator.artifact(runs[0], pipeline_def.EXAMPLE_GEN, "examples")
    after = emulator.artifact(runs[1], pipeline_def.EXAMPLE_GEN, "examples")
    assert after.custom_properties["files_found"] == 60.0
    assert after.custom_properties["data_fingerprint"] != before.custom_properties["data_fingerprint"]
    # KFP's own cache key for ImageExampleGen did not change (same data_root, image and command):
    # with caching on, run 2 would have reused run 1's examples. Caching off is what saw the images.
    assert runs[1].tasks[pipeline_def.EXAMPLE_GEN].fingerprint == runs[0].tasks[pipeline_def.EXAMPLE_GEN].fingerprint
    baseline = emulator.artifact(runs[1], pipeline_def.SERVING_BASELINE, "baseline_model")
    assert baseline.custom_properties["baseline_version"] == float(versions[0][0])
    gates = _gates(emulator, runs[1])
    assert gates["has_baseline"] is True and gates["baseline"]["version"] == versions[0][0]
    regression = next(g for g in gates["gates"] if g["name"] == "no_regression")
    assert regression["passed"] is True and regression["value"] is not None
    assert len(versions[1]) == 2 and versions[1][0] == versions[0][0]


def test_run_3_with_nothing_changed_publishes_no_new_version(scheduled):
    config, emulator, runs, versions, _ = scheduled
    assert versions[2] == versions[1]
    pushed = emulator.artifact(runs[2], pipeline_def.PUSHER, PUSHED)
    assert pushed.custom_properties["already_serving"] == 1.0
    assert pushed.custom_properties["pushed_version"] == str(versions[1][-1])
    # Retrained from the same inputs: the serving model is recognized as the candidate itself.
    baseline = emulator.artifact(runs[2], pipeline_def.SERVING_BASELINE, "baseline_model")
    assert baseline.custom_properties["baseline_version"] == 0.0
    assert "already serving" in baseline.custom_properties["baseline_note"]


def test_run_1_with_vertex_style_typed_inputs(scheduled):
    config, emulator, run = scheduled[4]
    assert set(run.ran()) == set(emulator.spec["root"]["dag"]["tasks"])
    assert emulator.artifact(run, pipeline_def.PUSHER, PUSHED).custom_properties["pushed"] == 1.0
    assert len(_versions(config)) == 1
