"""Kubeflow Pipelines, compiling: the cluster paths and image, and the compiled spec (TFX's
KubeflowV2 compiler on the one create_pipeline, read back with kfp's own loaders and proto)."""

import importlib.util
import json

import pytest

from pipeline import kubeflow, runtime_params
from tests.kfp_helpers import (
    IMAGE,
    MINI_SPEC,
    compile_flat_and_spans,
    kfp_config,
    kfp_graph,
    local_graph,
)

# ---------------------------------------------------------------------------------------------
# Checks before compiling, and finishing a spec


def test_cluster_paths_must_mean_the_same_in_the_pods():
    assert kubeflow.check_cluster_path("--data-dir", "gs://b/faces") == "gs://b/faces"
    assert kubeflow.check_cluster_path("--data-dir", "/mnt/data") == "/mnt/data"
    with pytest.raises(ValueError, match="--data-dir"):
        kubeflow.check_cluster_path("--data-dir", "data/faces")


def test_image_and_package_checks():
    assert kubeflow.check_image(IMAGE) == IMAGE
    for bad in ("", "my image", "Registry/UPPER:1"):
        with pytest.raises(ValueError, match="--image"):
            kubeflow.check_image(bad)
    with pytest.raises(ValueError, match=r"\.yaml"):
        kubeflow.check_package_path("facepipe.json")  # TFX writes .json as a Vertex PipelineJob


def test_finish_pipeline_spec_adds_defaults_and_root():
    spec = json.loads(json.dumps(MINI_SPEC))
    kubeflow.finish_pipeline_spec(spec, {"data_root": "gs://x"}, "gs://root")
    assert spec["root"]["inputDefinitions"]["parameters"]["data_root"]["defaultValue"] == "gs://x"
    assert spec["defaultPipelineRoot"] == "gs://root"
    with pytest.raises(ValueError, match="not declared"):
        kubeflow.finish_pipeline_spec(spec, {"nope": 1}, "gs://root")


# ---------------------------------------------------------------------------------------------
# The compiled spec (TFX's KubeflowV2 compiler on create_pipeline)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Compiles the pipeline twice: flat data folder, and span folders (spans="latest")."""
    return compile_flat_and_spans(tmp_path_factory.mktemp("kfp"))


@pytest.mark.slow
def test_spec_loads_with_kfp(compiled):
    from google.protobuf import json_format
    from kfp import components
    from kfp.client.client import _extract_pipeline_yaml

    spec, path = compiled["flat"]
    proto = kubeflow.load_pipeline_spec(path)  # strict: unknown fields are errors
    # The same spec (the file spells out enableCache: false, which the proto's dict form leaves out).
    assert proto == json_format.ParseDict(spec, type(proto)())
    assert proto.schema_version == "2.1.0" and proto.pipeline_info.name == "facepipe"
    assert proto.default_pipeline_root == "gs://facepipe-test/root"
    assert _extract_pipeline_yaml(path).pipeline_spec == proto  # exactly what kfp.Client would upload
    loaded = components.load_component_from_file(path)  # kfp's component/pipeline loader
    assert loaded.name == "facepipe"
    assert {name: spec_input.optional for name, spec_input in loaded.component_spec.inputs.items()} == {
        name: True for _, _, name in runtime_params.EXPOSED
    }


@pytest.mark.slow
def test_runtime_parameters_default_to_the_local_values(compiled):
    import tensorflow_model_analysis as tfma
    from google.protobuf import json_format

    from pipeline.pipeline import EVALUATOR, EXAMPLE_GEN, TRAINER, create_pipeline

    spec, path = compiled["flat"]
    parameters = kubeflow.pipeline_parameters(kubeflow.load_pipeline_spec(path))
    assert set(parameters) == {name for _, _, name in runtime_params.EXPOSED}
    assert {p.type for p in parameters.values()} == {"STRING"}

    local = {c.id: c for c in create_pipeline(kfp_config()).components}
    assert kubeflow.runtime_parameter_defaults(create_pipeline(kfp_config())) == {}  # local: no runtime parameters
    assert parameters[runtime_params.DATA_ROOT].default == "gs://facepipe-test/faces"
    assert parameters[runtime_params.RANGE_CONFIG].default == ""
    trainer_config = json.loads(parameters[runtime_params.TRAINER_CONFIG].default)
    assert trainer_config == json.loads(local[TRAINER].exec_properties["custom_config"])
    assert trainer_config["epochs"] == 7
    eval_config = json_format.Parse(parameters[runtime_params.EVAL_CONFIG].default, tfma.EvalConfig())
    local_eval_config = local[EVALUATOR].exec_properties["eval_config"]  # stored as JSON by the component spec
    assert eval_config == json_format.Parse(local_eval_config, tfma.EvalConfig())
    assert eval_config.metrics_specs  # the blessing thresholds are in there

    tasks = spec["root"]["dag"]["tasks"]
    wired = {
        (task, key): source["componentInputParameter"]
        for task, body in tasks.items()
        for key, source in body.get("inputs", {}).get("parameters", {}).items()
        if "componentInputParameter" in source
    }
    assert wired == {
        (EXAMPLE_GEN, "input_base"): runtime_params.DATA_ROOT,
        (EXAMPLE_GEN, "range_config"): runtime_params.RANGE_CONFIG,
        (TRAINER, "custom_config"): runtime_params.TRAINER_CONFIG,
        (EVALUATOR, "eval_config"): runtime_params.EVAL_CONFIG,
    }
    # A partial trainer_config override keeps every other trainer setting.
    merged = json.loads(kubeflow.resolve_params(parameters, ['trainer_config={"epochs": 2}'])["trainer_config"])
    assert merged == {**trainer_config, "epochs": 2}


@pytest.mark.slow
def test_same_components_and_edges_as_the_local_pipeline(compiled):
    from pipeline.pipeline import READS_OUTSIDE_ARTIFACTS

    spec, _ = compiled["flat"]
    kfp_edges, kfp_wiring = kfp_graph(spec)
    nodes, edges, wiring = local_graph(kfp_config(metadata_path=None))
    assert set(spec["root"]["dag"]["tasks"]) == nodes  # no resolver tasks: one graph for every orchestrator
    assert kfp_edges == edges
    assert kfp_wiring == wiring
    # KFP's cache key cannot see the data or serving folder: those steps never come from its cache.
    caching = {name: task["cachingOptions"]["enableCache"] for name, task in spec["root"]["dag"]["tasks"].items()}
    assert {name for name, on in caching.items() if not on} == set(READS_OUTSIDE_ARTIFACTS)


@pytest.mark.slow
def test_open_source_kfp_can_run_every_task(compiled):
    for spec, _ in compiled.values():
        executors = spec["deploymentSpec"]["executors"]
        assert all(set(e) == {"container"} for e in executors.values())  # no resolver, importer, ...
        assert not any("lifecycle" in e["container"] for e in executors.values())  # no preCacheCheck driver
        assert kubeflow.unsupported_on_kfp(spec) == []


def test_what_open_source_kfp_cannot_run_is_named_by_task():
    spec = {
        "root": {"dag": {"tasks": {
            "resolve": {"componentRef": {"name": "r"}},
            "gen": {"componentRef": {"name": "g"}},
            "loop": {"componentRef": {"name": "l"}, "artifactIterator": {"items": {}}},
            "fine": {"componentRef": {"name": "f"}},
        }}},
        "components": {n: {"executorLabel": f"{n}_executor"} for n in "rglf"},
        "deploymentSpec": {"executors": {
            "r_executor": {"resolver": {}},
            "g_executor": {"container": {"lifecycle": {"preCacheCheck": {"command": ["python"]}}}},
            "l_executor": {"container": {}},
            "f_executor": {"container": {}},
        }},
    }
    problems = kubeflow.unsupported_on_kfp(spec)
    assert len(problems) == 3
    assert "'gen' needs its preCacheCheck driver" in problems[0]
    assert "'loop' iterates" in problems[1]
    assert "'resolve' is a resolver" in problems[2]


@pytest.mark.slow
def test_vertex_target_writes_a_pipeline_job_from_the_same_pipeline(compiled, tmp_path):
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    path = str(tmp_path / "facepipe.json")
    spec = kubeflow.compile_pipeline(kfp_config(), IMAGE, path, target=kubeflow.TARGET_VERTEX)
    with open(path) as f:
        job = json.load(f)
    assert job["pipelineSpec"] == spec == compiled["flat"][0]  # the same spec as the .yaml
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "gs://facepipe-test/root"
    json_format.ParseDict(job["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())  # strict
    with pytest.raises(ValueError, match="must be a .json file"):
        kubeflow.compile_pipeline(kfp_config(), IMAGE, str(tmp_path / "x.yaml"), target=kubeflow.TARGET_VERTEX)
    with pytest.raises(ValueError, match="must be a .yaml file"):
        kubeflow.check_package_path(path)


@pytest.mark.slow
def test_every_container_names_an_existing_module_and_class(compiled):
    from tfx.dsl.components.base.base_executor import BaseExecutor
    from tfx.orchestration.kubeflow.v2 import compiler_utils
    from tfx.types.artifact import Artifact
    from tfx.utils import import_utils

    spec, _ = compiled["flat"]
    executors = spec["deploymentSpec"]["executors"]
    tasks = spec["root"]["dag"]["tasks"]
    assert {spec["components"][t["componentRef"]["name"]]["executorLabel"] for t in tasks.values()} == set(executors)
    ours = {"pipeline", "components"}
    checked = []
    for executor in executors.values():
        container = executor["container"]
        assert container["image"] == IMAGE
        # One entrypoint for every step and both backends (pipeline/kfp_entrypoint.py).
        assert container["command"] == list(kubeflow.ENTRYPOINT_COMMAND)
        assert importlib.util.find_spec(container["command"][2]) is not None
        assert "{{$}}" in container["args"]  # KFP's ExecutorInput placeholder
        assert "--json_serialized_inputs_spec_args" in container["args"]  # the declared input types
        class_path = container["args"][container["args"].index("--executor_class_path") + 1]
        assert class_path.split(".")[0] in ours | {"tfx"}, class_path
        assert issubclass(import_utils.import_class_by_path(class_path), BaseExecutor), class_path
        checked.append(class_path)
    assert "components.image_example_gen.executor.Executor" in checked
    assert "components.anomaly_gate.AnomalyGate_Executor" in checked

    assert "components.evaluator.Executor" in checked and "components.trainer.executor.Executor" in checked

    # Every artifact type must be importable in the container: its schema title names the class.
    import yaml

    titles = set()
    for component in spec["components"].values():
        for side in ("inputDefinitions", "outputDefinitions"):
            for artifact in component.get(side, {}).get("artifacts", {}).values():
                titles.add(yaml.safe_load(artifact["artifactType"]["instanceSchema"])["title"])
    unimportable = []
    for title in sorted(titles):
        try:
            cls = import_utils.import_class_by_path(compiler_utils.TITLE_TO_CLASS_PATH.get(title, title))
        except ImportError:
            unimportable.append(title)
            continue
        assert issubclass(cls, Artifact), title
    # TFX's container entrypoint imports a custom type's schema title as "<module>.<Class>"
    # (kubeflow_v2_entrypoint_utils._retrieve_class_path), and the compiler only accepts
    # "<lowercase name>.<Class>": a custom TYPE_NAME must be both, e.g. "components.MyArtifact".
    assert not unimportable, f"artifact types the KFP container cannot import: {unimportable}"


@pytest.mark.slow
def test_cli_compile_puts_beam_profile_arguments_into_every_beam_step(tmp_path, capsys):
    import runner_kfp

    output = str(tmp_path / "dataflow.yaml")
    lines: list[str] = []
    status = runner_kfp.main(
        [
            "compile",
            "--image",
            IMAGE,
            "--data-dir",
            "gs://d/faces",
            "--pipeline-root",
            "gs://d/root",
            "--serving-dir",
            "gs://d/serving",
            "--output",
            output,
            "--epochs",
            "4",
            "--beam-profile",
            "dataflow",
            "--gcp-project",
            "facepipe-test",
            "--gcp-region",
            "europe-west4",
            "--temp-location",
            "gs://d/tmp",
        ],
        out=lines.append,
    )
    assert status == 0, capsys.readouterr().err
    spec = kubeflow.load_pipeline_spec(output)
    # KubeflowV2 hands the pipeline's Beam arguments to every step (non-Beam executors ignore them).
    expected = [
        "--runner=DataflowRunner",
        "--project=facepipe-test",
        "--region=europe-west4",
        "--temp_location=gs://d/tmp",
        "--setup_file=/facepipe/setup.py",
    ]
    containers = {label: e["container"] for label, e in spec.deployment_spec["executors"].items() if "container" in e}
    assert "Transform_executor" in containers and "Evaluator_executor" in containers
    for label, container in containers.items():
        assert list(container["args"])[-len(expected) :] == expected, label
    parameters = kubeflow.pipeline_parameters(spec)
    assert json.loads(parameters["trainer_config"].default)["epochs"] == 4
    assert f"Wrote {output}" in lines[-1]
