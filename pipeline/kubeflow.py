"""Kubeflow Pipelines (KFP 2.x): compile the pipeline to a spec file; run, schedule, list on a server.

Compiling uses TFX's KubeflowV2DagRunner on the one create_pipeline. The client-side logic
(parameters, schedules, tokens) is plain functions over a small client interface that
``kfp.Client`` implements, so it can be tested without a server. Nothing here imports TFX
or kfp at import time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import re
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

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

# Credentials: a bearer token in KFP_TOKEN, or a file holding one (KFP's own variable for a
# projected service-account token). Read, passed to the client, never printed.
TOKEN_ENV = "KFP_TOKEN"
TOKEN_PATH_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
ENDPOINT_ENV = "KF_PIPELINES_ENDPOINT"

_IMAGE_RE = re.compile(r"^[a-z0-9]+([._/:@-][A-Za-z0-9_]+)*$")
_CRON_DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_URI_RE = re.compile(r"^[a-z][a-z0-9+.-]*://")


class KfpError(RuntimeError):
    """A Kubeflow Pipelines request failed; the message is one line and never holds the token."""


# ---------------------------------------------------------------------------------------------
# Compiling


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


# ---------------------------------------------------------------------------------------------
# Reading a package and run-time parameter values


def load_pipeline_spec(path: str) -> Any:
    """Loads a package strictly into KFP's PipelineSpec proto (unknown fields are errors).

    Args:
      path: a .yaml package.

    Returns:
      kfp.pipeline_spec.pipeline_spec_pb2.PipelineSpec.

    Raises:
      ValueError: not a readable pipeline spec.
    """
    import yaml
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    check_package_path(path)
    try:
        with open(path) as f:
            doc = next(iter(yaml.safe_load_all(f)), None)
        if not isinstance(doc, dict):
            raise ValueError("empty or not a mapping")
        return json_format.ParseDict(doc, pipeline_spec_pb2.PipelineSpec())
    except (OSError, yaml.YAMLError, json_format.ParseError, ValueError) as e:
        raise ValueError(f"{path} is not a KFP pipeline spec: {str(e).splitlines()[0] if str(e) else e}") from e


@dataclasses.dataclass(frozen=True)
class ParameterInfo:
    """A pipeline input parameter: its KFP type name and default (None when it has none)."""

    type: str
    default: Any


def pipeline_parameters(spec: Any) -> dict[str, ParameterInfo]:
    """Lists a PipelineSpec's input parameters.

    Args:
      spec: a PipelineSpec proto.

    Returns:
      {name: ParameterInfo}.
    """
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    result = {}
    for name, p in spec.root.input_definitions.parameters.items():
        default = json_format.MessageToDict(p.default_value) if p.HasField("default_value") else None
        result[name] = ParameterInfo(pipeline_spec_pb2.ParameterType.ParameterTypeEnum.Name(p.parameter_type), default)
    return result


def _convert(name: str, kind: str, text: str) -> Any:
    try:
        if kind == "NUMBER_INTEGER":
            return int(text)
        if kind == "NUMBER_DOUBLE":
            return float(text)
        if kind == "BOOLEAN":
            if text.lower() not in ("true", "false"):
                raise ValueError("expected true or false")
            return text.lower() == "true"
        if kind in ("LIST", "STRUCT"):
            return json.loads(text)
    except ValueError as e:
        raise ValueError(f"--param {name}: {text!r} is not a valid {kind} ({e})") from e
    return text


def resolve_params(parameters: Mapping[str, ParameterInfo], assignments: Iterable[str]) -> dict[str, Any]:
    """Turns ``NAME=VALUE`` strings into the values a run or schedule passes to KFP.

    A string parameter whose default is a JSON object (trainer_config, eval_config, ...) takes a
    JSON object that is merged into the default key by key (top level), so
    ``trainer_config={"epochs": 20}`` changes the epochs and keeps everything else.

    Args:
      parameters: the spec's parameters (pipeline_parameters).
      assignments: ``NAME=VALUE`` strings.

    Returns:
      {name: value} for the assigned parameters only (the rest keep their defaults).

    Raises:
      ValueError: malformed assignment, unknown name, a value of the wrong type.
    """
    values: dict[str, Any] = {}
    for item in assignments:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--param must be NAME=VALUE, got {item!r}")
        if name not in parameters:
            raise ValueError(f"unknown runtime parameter {name!r}; the pipeline has: {', '.join(sorted(parameters))}")
        info = parameters[name]
        value = _convert(name, info.type, text)
        default_obj = _json_object(info.default) if info.type == "STRING" else None
        if default_obj is not None:
            given = _json_object(text)
            if given is None:
                raise ValueError(f"--param {name}: expected a JSON object (merged into the default), got {text!r}")
            unknown = sorted(set(given) - set(default_obj))
            if unknown:
                raise ValueError(
                    f"--param {name}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(default_obj))}"
                )
            value = json.dumps({**default_obj, **given}, sort_keys=True)
        values[name] = value
    return values


def _json_object(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, str) or not text.lstrip().startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# ---------------------------------------------------------------------------------------------
# Schedules


def validate_cron(expression: str) -> str:
    """Checks a KFP cron expression: 6 fields, seconds first, or a descriptor.

    KFP's scheduler (robfig/cron) reads ``second minute hour day-of-month month day-of-week``;
    a classic 5-field crontab line would be misread, so it is rejected with an example.

    Args:
      expression: e.g. ``0 0 3 * * *`` (03:00 every day) or ``@daily`` or ``@every 6h``.

    Returns:
      The expression, stripped.

    Raises:
      ValueError: not 6 fields and not a descriptor.
    """
    expression = expression.strip()
    if expression in _CRON_DESCRIPTORS or re.fullmatch(
        r"@every \d+(\.\d+)?(ns|us|ms|s|m|h)(\d+(ns|us|ms|s|m|h))*", expression
    ):
        return expression
    fields = expression.split()
    if len(fields) != 6:
        raise ValueError(
            f"--cron needs 6 fields, seconds first (KFP's cron format), e.g. '0 0 3 * * *' for 03:00 daily; "
            f"got {len(fields)} field(s) in {expression!r}"
        )
    for field in fields:
        if not re.fullmatch(r"[0-9A-Za-z*?/,\-LW#]+", field):
            raise ValueError(f"--cron field {field!r} in {expression!r} is not a cron field")
    return expression


class KfpClient(Protocol):
    """The few kfp.Client (kfp 2.5) methods this module uses."""

    def create_experiment(self, name: str, description: str | None = None, namespace: str | None = None) -> Any: ...

    def get_experiment(
        self, experiment_id: str | None = None, experiment_name: str | None = None, namespace: str | None = None
    ) -> Any: ...

    def create_run_from_pipeline_package(
        self, pipeline_file: str, arguments: dict | None = None, **kwargs: Any
    ) -> Any: ...

    def create_recurring_run(self, experiment_id: str, job_name: str, **kwargs: Any) -> Any: ...

    def list_recurring_runs(self, page_token: str = "", page_size: int = 10, **kwargs: Any) -> Any: ...

    def delete_recurring_run(self, recurring_run_id: str) -> Any: ...


@dataclasses.dataclass(frozen=True)
class ScheduleInfo:
    """One recurring run, as listed."""

    recurring_run_id: str
    name: str
    cron: str
    status: str
    created_at: str


@dataclasses.dataclass(frozen=True)
class ScheduleResult:
    """What schedule() did: the new recurring run and the ones it replaced (deleted first)."""

    recurring_run_id: str
    replaced: tuple[str, ...]


def find_experiment_id(client: KfpClient, experiment: str, namespace: str | None = None) -> str | None:
    """Returns the id of an existing experiment, or None (never creates one)."""
    try:
        return client.get_experiment(experiment_name=experiment, namespace=namespace).experiment_id
    except ValueError as e:  # kfp raises ValueError("No experiment is found with name ...")
        if str(e).startswith("No experiment is found"):
            return None
        raise


def ensure_experiment_id(client: KfpClient, experiment: str, namespace: str | None = None) -> str:
    """Returns the id of the experiment, creating it when missing (kfp's create_experiment gets or creates)."""
    return client.create_experiment(name=experiment, namespace=namespace).experiment_id


def list_schedules(client: KfpClient, experiment_id: str) -> list[ScheduleInfo]:
    """Lists every recurring run of an experiment (all pages).

    Args:
      client: a connected client.
      experiment_id: the experiment.

    Returns:
      The recurring runs, in the server's order.
    """
    found: list[ScheduleInfo] = []
    token = ""
    while True:
        page = client.list_recurring_runs(page_token=token, page_size=100, experiment_id=experiment_id)
        for run in page.recurring_runs or []:
            cron = run.trigger.cron_schedule.cron if run.trigger and run.trigger.cron_schedule else ""
            if not cron and run.trigger and run.trigger.periodic_schedule:
                cron = f"every {run.trigger.periodic_schedule.interval_second} s"
            found.append(
                ScheduleInfo(
                    run.recurring_run_id, run.display_name, cron, str(run.status or ""), str(run.created_at or "")
                )
            )
        token = page.next_page_token or ""
        if not token:
            return found


def run_once(
    client: KfpClient,
    package_path: str,
    experiment: str,
    run_name: str,
    params: Mapping[str, Any],
    namespace: str | None = None,
) -> str:
    """Uploads the package and starts one run.

    Args:
      client: a connected client.
      package_path: the .yaml package.
      experiment: experiment name (created when missing).
      run_name: the run's display name.
      params: runtime parameter values (resolve_params); others keep their defaults.
      namespace: the user's namespace on multi-user Kubeflow.

    Returns:
      The run id.
    """
    experiment_id = ensure_experiment_id(client, experiment, namespace)
    result = client.create_run_from_pipeline_package(
        pipeline_file=check_package_path(package_path),
        arguments=dict(params),
        run_name=run_name,
        experiment_id=experiment_id,
    )
    return result.run_id


def schedule(
    client: KfpClient,
    package_path: str,
    experiment: str,
    name: str,
    cron: str,
    params: Mapping[str, Any],
    namespace: str | None = None,
    max_concurrency: int = 1,
    catchup: bool = False,
) -> ScheduleResult:
    """Creates the recurring run ``name``, replacing any of that name in the experiment.

    KFP cannot update a recurring run in place, so an existing one of the same name is deleted
    first and the new one created (cron and package are checked before anything is deleted).

    Args:
      client: a connected client.
      package_path: the .yaml package.
      experiment: experiment name (created when missing).
      name: the schedule's display name; its identity for replace and unschedule.
      cron: KFP cron expression (validate_cron).
      params: runtime parameter values for every scheduled run.
      namespace: the user's namespace on multi-user Kubeflow.
      max_concurrency: runs of this schedule allowed at once.
      catchup: whether KFP should backfill intervals missed while paused.

    Returns:
      The new recurring run id and the replaced ids.

    Raises:
      ValueError: bad cron, package or concurrency (nothing was changed).
      KfpError: creating failed after the old schedule(s) were deleted (the message says so).
    """
    cron = validate_cron(cron)
    check_package_path(package_path)
    if not os.path.isfile(package_path):
        raise ValueError(f"pipeline package {package_path} does not exist")
    if max_concurrency < 1:
        raise ValueError(f"--max-concurrency must be >= 1, got {max_concurrency}")
    experiment_id = ensure_experiment_id(client, experiment, namespace)
    replaced = tuple(s.recurring_run_id for s in list_schedules(client, experiment_id) if s.name == name)
    for recurring_run_id in replaced:
        client.delete_recurring_run(recurring_run_id=recurring_run_id)
    try:
        created = client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=name,
            cron_expression=cron,
            pipeline_package_path=package_path,
            params=dict(params),
            max_concurrency=max_concurrency,
            no_catchup=not catchup,
            enabled=True,
        )
    except Exception as e:
        if replaced:
            raise KfpError(
                f"deleted the old schedule {name!r} ({', '.join(replaced)}) but creating the new one failed: "
                f"{one_line(e)}"
            ) from e
        raise
    return ScheduleResult(created.recurring_run_id, replaced)


def unschedule(client: KfpClient, experiment: str, name: str, namespace: str | None = None) -> tuple[str, ...]:
    """Deletes every recurring run named ``name`` in the experiment.

    Returns:
      The deleted ids (empty when there was none, or no such experiment).
    """
    experiment_id = find_experiment_id(client, experiment, namespace)
    if experiment_id is None:
        return ()
    deleted = tuple(s.recurring_run_id for s in list_schedules(client, experiment_id) if s.name == name)
    for recurring_run_id in deleted:
        client.delete_recurring_run(recurring_run_id=recurring_run_id)
    return deleted


# ---------------------------------------------------------------------------------------------
# Credentials and connecting


class Token:
    """A bearer token that never shows itself in str(), repr() or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        """The token itself: only for handing to the client."""
        return self._value

    def __repr__(self) -> str:
        return "Token(***)"

    __str__ = __repr__


def token_from_env(environ: Mapping[str, str]) -> Token | None:
    """Reads the token from KFP_TOKEN, or from the file named by KF_PIPELINES_SA_TOKEN_PATH.

    Args:
      environ: the environment (os.environ).

    Returns:
      The token, or None when neither is set (e.g. a port-forwarded, unauthenticated server).

    Raises:
      ValueError: the token file cannot be read or is empty (the message names the file only).
    """
    if environ.get(TOKEN_ENV, "").strip():
        return Token(environ[TOKEN_ENV].strip())
    path = environ.get(TOKEN_PATH_ENV, "").strip()
    if not path:
        return None
    try:
        with open(path) as f:
            value = f.read().strip()
    except OSError as e:
        raise ValueError(f"cannot read the token file {path} ({TOKEN_PATH_ENV}): {e.strerror}") from None
    if not value:
        raise ValueError(f"the token file {path} ({TOKEN_PATH_ENV}) is empty")
    return Token(value)


def one_line(error: BaseException, token: Token | None = None) -> str:
    """A short one-line description of a client error, with the token masked.

    Args:
      error: the exception (kfp_server_api ApiException, urllib3 errors, ...).
      token: masked wherever it appears.

    Returns:
      e.g. ``HTTP 401 Unauthorized`` or ``MaxRetryError: ... Connection refused``.
    """
    status = getattr(error, "status", None)
    reason = getattr(error, "reason", None)
    if isinstance(status, int):
        text = f"HTTP {status} {reason or ''}".strip()
    elif isinstance(reason, Exception):  # urllib3's MaxRetryError wraps the real cause
        cause = re.sub(r"^<[^>]*>:\s*", "", str(reason).splitlines()[0] if str(reason) else "")
        text = f"{type(reason).__name__}: {cause}" if cause else type(reason).__name__
    else:
        first = next((line for line in str(error).splitlines() if line.strip()), "")
        text = f"{type(error).__name__}: {first}" if first else type(error).__name__
    if token is not None and token.reveal():
        text = text.replace(token.reveal(), "***")
    return text[:400]


def is_loopback(endpoint: str) -> bool:
    """Whether an endpoint's host is this machine (localhost, 127.0.0.0/8, ::1): kubectl port-forward."""
    host = urllib.parse.urlsplit(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_token_transport(endpoint: str, token: Token | None, insecure: bool = False) -> None:
    """Refuses to send a bearer token in clear text to another machine.

    Raises:
      ValueError: a token, a plain ``http://`` endpoint that is not loopback, and no ``insecure``.
    """
    scheme = urllib.parse.urlsplit(endpoint).scheme.lower()
    if token is not None and scheme == "http" and not is_loopback(endpoint) and not insecure:
        raise ValueError(
            f"refusing to send the bearer token over plain http to {urllib.parse.urlsplit(endpoint).hostname}: "
            "use https://, or --insecure if the network is trusted"
        )


class _RedactingFilter(logging.Filter):
    """Makes a log record one line without a traceback, with the token masked.

    kfp's client logs failed health checks with ``logging.exception``: the traceback of a
    kfp_server_api ApiException, whose text holds the server's response headers and body. A
    server (or proxy) that echoes the request put the bearer token on stderr that way.
    """

    def __init__(self, token: Token | None):
        super().__init__()
        self._token = token

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage().splitlines()[0] if record.getMessage() else ""
        if record.exc_info and record.exc_info[1] is not None:
            text = f"{text}: {one_line(record.exc_info[1], self._token)}"
        if self._token is not None and self._token.reveal():
            text = text.replace(self._token.reveal(), "***")
        record.msg, record.args, record.exc_info, record.exc_text, record.stack_info = text[:500], (), None, None, None
        return True


@contextlib.contextmanager
def redacted_client_logs(token: Token | None) -> Iterator[None]:
    """While active, kfp's and its HTTP stack's log records are one line each, token masked."""
    redactor = _RedactingFilter(token)
    loggers = [logging.getLogger(name) for name in ("", "kfp", "kfp_server_api", "urllib3")]
    handlers = [h for h in logging.getLogger().handlers] + [logging.lastResort]
    targets = [t for t in [*loggers, *handlers] if t is not None]
    for target in targets:
        target.addFilter(redactor)
    try:
        yield
    finally:
        for target in targets:
            target.removeFilter(redactor)


def connect(endpoint: str, token: Token | None, namespace: str | None = None) -> KfpClient:
    """Connects a kfp.Client (kfp 2.5) to a KFP 2.x API endpoint.

    Args:
      endpoint: e.g. https://kubeflow.example.com/pipeline or http://localhost:8080.
      token: bearer token, or None.
      namespace: the user's namespace on multi-user Kubeflow.

    Returns:
      The client (it has already called the server's health check).
    """
    import kfp

    kwargs: dict[str, Any] = {"host": endpoint}
    if token is not None:
        kwargs["existing_token"] = token.reveal()
    if namespace:
        kwargs["namespace"] = namespace
    return kfp.Client(**kwargs)
