"""Compiling: the pipeline to a KFP 2.x spec (.yaml) or a Vertex AI PipelineJob (.json).

TFX's KubeflowV2DagRunner compiles the one create_pipeline; the spec is then finished here
(run-time parameter defaults, the container command, caching off for the steps that read outside
the artifact store). The paths and image a spec names are checked first. Nothing here imports TFX
at import time.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pipeline import beam_canary
from pipeline.config import PipelineConfig

# Where the Dockerfile puts this repository inside the image (its WORKDIR).
CONTAINER_REPO_ROOT = "/facepipe"
CONTAINER_SCHEMA_PATH = f"{CONTAINER_REPO_ROOT}/schema/schema.pbtxt"
CONTAINER_SETUP_FILE = f"{CONTAINER_REPO_ROOT}/setup.py"
# Every step runs our entrypoint (open-source KFP's inputs made what TFX expects; see there).
ENTRYPOINT_COMMAND = ("python", "-m", "pipeline.kfp_entrypoint")
# Where the compiled pipeline runs: open-source KFP 2.x (a .yaml PipelineSpec, what kfp.Client
# uploads) or Vertex AI Pipelines (a .json PipelineJob). Both from the same create_pipeline.
TARGET_KFP, TARGET_VERTEX = "kfp", "vertex"
TARGETS = (TARGET_KFP, TARGET_VERTEX)
PACKAGE_SUFFIXES = {TARGET_KFP: (".yaml", ".yml"), TARGET_VERTEX: (".json",)}


_IMAGE_RE = re.compile(r"^[a-z0-9]+([._/:@-][A-Za-z0-9_]+)*$")
_URI_RE = re.compile(r"^[a-z][a-z0-9+.-]*://")


def check_cluster_path(flag: str, value: str) -> str:
    """Checks that a path can mean the same thing inside the pipeline's pods.

    Args:
      flag: the flag's name, for the error message.
      value: a URI (gs://, s3://, minio://, ...) or an absolute path (e.g. a mounted volume).

    Returns:
      The value.

    Raises:
      ValueError: a relative path (it would be resolved inside each pod's working folder).
    """
    if not value or not (_URI_RE.match(value) or value.startswith("/")):
        raise ValueError(
            f"{flag} must be a URI such as gs://bucket/path or an absolute path in the pods, got {value!r}"
        )
    return value


def check_image(image: str) -> str:
    """Checks a container image reference such as ``europe-docker.pkg.dev/p/r/facepipe:0.1.0``.

    Raises:
      ValueError: empty or malformed.
    """
    if not image or not _IMAGE_RE.match(image):
        raise ValueError(f"--image must be an image reference like registry/path/facepipe:TAG, got {image!r}")
    return image


def check_package_path(path: str, target: str = TARGET_KFP) -> str:
    """Checks that a package path has the suffix its target takes.

    Open-source KFP 2.x uploads a .yaml PipelineSpec; Vertex AI runs a .json PipelineJob.

    Raises:
      ValueError: another suffix, or an unknown target.
    """
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    if not path.endswith(PACKAGE_SUFFIXES[target]):
        what = {TARGET_KFP: "a .yaml file (what KFP 2.x uploads)", TARGET_VERTEX: "a .json file (a Vertex PipelineJob)"}
        raise ValueError(f"the {target} pipeline package must be {what[target]}, got {path!r}")
    return path


def runtime_parameter_defaults(tfx_pipeline: Any) -> dict[str, Any]:
    """Collects the runtime parameters of a TFX pipeline and their defaults.

    Args:
      tfx_pipeline: a tfx.dsl.Pipeline.

    Returns:
      {parameter name: default value}.

    Raises:
      ValueError: two parameters share a name but not a default, or one has no default.
    """
    from tfx.orchestration import data_types

    found: dict[str, Any] = {}
    for component in tfx_pipeline.components:
        for value in component.exec_properties.values():
            if isinstance(value, data_types.RuntimeParameter):
                if value.default is None:
                    raise ValueError(f"runtime parameter {value.name!r} has no default")
                if value.name in found and found[value.name] != value.default:
                    raise ValueError(f"runtime parameter {value.name!r} has two different defaults")
                found[value.name] = value.default
    return found


def finish_pipeline_spec(spec: dict[str, Any], defaults: Mapping[str, Any], pipeline_root: str) -> dict[str, Any]:
    """Adds what TFX 1.16's KubeflowV2 compiler leaves out of a KFP 2.x pipeline spec.

    TFX keeps runtime parameter defaults and the pipeline root only in a PipelineJob's
    runtimeConfig, which its .yaml output (the form KFP 2.x uploads) drops: without this, every
    run would have to pass every parameter, and artifacts would go to the server's default root.

    Args:
      spec: the PipelineSpec as a dict (changed in place).
      defaults: {parameter name: default} (runtime_parameter_defaults).
      pipeline_root: where the pipeline's artifacts go.

    Returns:
      The same dict.

    Raises:
      ValueError: a default for a parameter the spec does not declare.
    """
    declared = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    for name, default in defaults.items():
        if name not in declared:
            raise ValueError(f"runtime parameter {name!r} is not declared in the compiled spec")
        declared[name]["defaultValue"] = default
        declared[name]["isOptional"] = True
    spec["defaultPipelineRoot"] = pipeline_root
    return spec


def write_package(spec: dict[str, Any], path: str) -> None:
    """Writes a PipelineSpec dict as the YAML package KFP 2.x uploads.

    Args:
      spec: the PipelineSpec as a dict.
      path: where to write (.yaml); folders are created.
    """
    import yaml

    check_package_path(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    header = (
        "# PIPELINE DEFINITION (KFP 2.x pipeline spec)\n"
        f"# Name: {spec['pipelineInfo']['name']}\n"
        "# Compiled from pipeline/pipeline.py:create_pipeline by runner_kfp.py (TFX KubeflowV2DagRunner)\n"
    )
    with open(path, "w") as f:
        f.write(header)
        yaml.safe_dump(spec, f, sort_keys=True)


def disable_caching(spec: dict[str, Any], task_names: Iterable[str]) -> dict[str, Any]:
    """Turns KFP's cache off for the given tasks (changed in place).

    KFP's cache key covers input artifact ids, parameters, image and command: not the data or
    serving folder a step reads. Without this, a nightly run with the same data root would reuse
    the first night's ImageExampleGen (and everything after it).

    Raises:
      ValueError: a task the spec does not have.
    """
    tasks = spec["root"]["dag"]["tasks"]
    for name in task_names:
        if name not in tasks:
            raise ValueError(f"no task {name!r} in the compiled spec")
        tasks[name]["cachingOptions"] = {"enableCache": False}
    return spec


def unsupported_on_kfp(spec: dict[str, Any]) -> list[str]:
    """What open-source KFP 2.x cannot run in a spec, one line per task (empty: nothing).

    Its Argo compiler refuses resolver executors and artifact iterators (``backend/src/v2/
    compiler/argocompiler``), and its backend never runs a ``preCacheCheck`` hook, so a step that
    relies on one (TFX's FileBasedExampleGen driver: span and input fingerprint) reads stale data.
    """
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    problems = []
    for name, task in sorted(spec["root"]["dag"]["tasks"].items()):
        label = spec.get("components", {}).get(task.get("componentRef", {}).get("name", ""), {}).get("executorLabel")
        executor = executors.get(label, {})
        if "resolver" in executor:
            problems.append(f"task {name!r} is a resolver, which only Vertex AI runs")
        if "iterator" in task or "artifactIterator" in task or "parameterIterator" in task:
            problems.append(f"task {name!r} iterates over artifacts or parameters")
        if executor.get("container", {}).get("lifecycle", {}).get("preCacheCheck"):
            problems.append(f"task {name!r} needs its preCacheCheck driver, which open-source KFP never runs")
    return problems


def compile_pipeline(config: PipelineConfig, image: str, output_path: str, target: str = TARGET_KFP) -> dict[str, Any]:
    """Compiles create_pipeline(config) for open-source KFP 2.x (.yaml) or Vertex AI (.json).

    Args:
      config: settings; metadata_path must be None (Kubeflow brings its own ML Metadata).
      image: the container image every component runs in (built from the Dockerfile).
      output_path: the package to write (.yaml for kfp, .json for vertex).
      target: TARGET_KFP or TARGET_VERTEX.

    Returns:
      The PipelineSpec as a dict (as written; for vertex, the PipelineJob's pipelineSpec).

    Raises:
      ValueError: a setting the pipeline cannot use, or (kfp) a task open-source KFP cannot run.
    """
    check_package_path(output_path, target)
    check_image(image)
    if config.metadata_path:
        raise ValueError("a Kubeflow pipeline uses the cluster's ML Metadata; metadata_path must be None")

    from tfx import v1 as tfx

    from pipeline.pipeline import READS_OUTSIDE_ARTIFACTS, create_pipeline

    tfx_pipeline = create_pipeline(config, runtime_parameters=True)
    defaults = runtime_parameter_defaults(tfx_pipeline)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image=image,
            default_commands=list(ENTRYPOINT_COMMAND),
            # Schema 2.1 (parameterType, parameter values): what KFP 2.x backends and SDKs use.
            use_pipeline_spec_2_1=True,
        ),
    )
    job = runner.run(tfx_pipeline, write_out=False)
    spec = finish_pipeline_spec(job["pipelineSpec"], defaults, config.pipeline_root)
    disable_caching(spec, READS_OUTSIDE_ARTIFACTS)
    # Job-server Beam profiles: each Beam step checks its workers before it runs (pipeline.beam_canary).
    beam_canary.guard_beam_steps(spec, config.beam_pipeline_args, config.worker_check_timeout_s)
    if target == TARGET_KFP:
        problems = unsupported_on_kfp(spec)
        if problems:
            raise ValueError(f"open-source KFP cannot run this pipeline: {problems[0]} (use --target vertex)")
        write_package(spec, output_path)
    else:
        job["pipelineSpec"] = spec
        os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
        with open(output_path, "w") as f:
            json.dump(job, f, indent=2, sort_keys=True)
    return spec
