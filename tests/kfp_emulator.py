"""Runs a compiled KFP 2.x pipeline spec here, step by step, the way a Kubeflow backend would.

No cluster, no KFP server: this stands in for the open-source backend's driver and launcher
(kubeflow/pipelines ``backend/src/v2``, read in 2026-08), or for Vertex AI, and runs each
task's *real container command* from the spec, with this repository and its venv standing in
for the image. What it reproduces, by mode:

- ``oss`` (open-source KFP): input artifacts are built as ``metadata.OutputArtifact.
  ToRuntimeArtifact()`` builds them: ``name`` = the ML Metadata id, ``type`` =
  ``{instanceSchema: ""}``, ``metadata`` = the recorded properties with numbers as floats plus
  the launcher's ``display_name`` and ``store_session_info``; outputs are provisioned by
  ``driver.provisionOutputs`` under ``<root>/<task>/<uuid>/<key>``, plus the ``executor-logs``
  output (``system.Artifact``) the driver adds; the cache key is ``cacheutils.GenerateCacheKey``'s
  (input artifact names, parameter values, output specs without URIs, image, command and
  arguments before substitution); a task with caching on reuses the outputs of the newest
  execution with the same key; ``preCacheCheck`` hooks are never run;
- ``vertex``: typed input artifacts (the consumer's declared type), resource names as ids, the
  same cache rule.

Recorded artifacts keep what the launcher records: the executor output's metadata merged
into the provisioned artifact (``mergeRuntimeArtifacts``), numbers as doubles.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

OSS, VERTEX = "oss", "vertex"
EXECUTOR_LOGS = "executor-logs"  # the output the open-source driver adds to every task
_VERTEX_PREFIX = "projects/facepipe-test/locations/europe-west4/metadataStores/default/artifacts/"


@dataclasses.dataclass
class Artifact:
    """An artifact as the backend's ML Metadata holds it."""

    id: int
    uri: str
    schema: str  # the producer's declared type (instanceSchema YAML or schemaTitle)
    custom_properties: dict[str, Any]


@dataclasses.dataclass
class TaskRun:
    """One task of one pipeline run."""

    task: str
    cached: bool
    outputs: dict[str, int]  # output key -> artifact id
    fingerprint: str  # the cache key KFP would compute, whether or not the task caches
    seconds: float
    returncode: int = 0
    log: str = ""


@dataclasses.dataclass
class PipelineRun:
    """One pipeline run: its tasks in execution order."""

    run_id: str
    tasks: dict[str, TaskRun]

    def ran(self) -> list[str]:
        """Tasks that executed (not served from the cache)."""
        return [name for name, t in self.tasks.items() if not t.cached]

    def cached(self) -> list[str]:
        """Tasks served from the cache."""
        return [name for name, t in self.tasks.items() if t.cached]


class Metadata:
    """The backend's ML Metadata and cache table, in memory, shared by the runs of one scenario."""

    def __init__(self) -> None:
        self.artifacts: dict[int, Artifact] = {}
        self.cache: dict[str, dict[str, int]] = {}  # fingerprint -> outputs of the newest execution
        self._next = 1

    def record(self, uri: str, schema: str, custom_properties: dict[str, Any]) -> int:
        artifact_id = self._next
        self._next += 1
        self.artifacts[artifact_id] = Artifact(artifact_id, uri, schema, custom_properties)
        return artifact_id


def _value(value: Any) -> Any:
    """A property as protobuf Struct carries it: every number a float (as the Go backend sends it)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return value


def topological_order(tasks: Mapping[str, Any]) -> list[str]:
    """Task names, each after every task it depends on (ties by name, for repeatable runs)."""
    order: list[str] = []
    done: set[str] = set()
    pending = dict(tasks)
    while pending:
        ready = sorted(n for n, t in pending.items() if set(t.get("dependentTasks", [])) <= done)
        if not ready:
            raise ValueError(f"dependency cycle among {sorted(pending)}")
        for name in ready:
            order.append(name)
            done.add(name)
            del pending[name]
    return order


def cache_fingerprint(executor_input: Mapping[str, Any], command: Sequence[str], image: str) -> str:
    """cacheutils.GenerateCacheKey + GenerateFingerPrint: what decides a cache hit, without output URIs."""
    key = {
        "inputArtifactNames": {
            k: {"artifactNames": [a["name"] for a in v["artifacts"]]}
            for k, v in executor_input["inputs"].get("artifacts", {}).items()
        },
        "inputParameterValues": executor_input["inputs"].get("parameterValues", {}),
        "outputArtifactsSpec": {
            k: {"name": v["artifacts"][0]["name"], "type": v["artifacts"][0]["type"],
                "metadata": v["artifacts"][0].get("metadata", {})}
            for k, v in executor_input["outputs"].get("artifacts", {}).items()
            if v["artifacts"]
        },
        "outputParametersSpec": {},
        "containerSpec": {"image": image, "cmdArgs": list(command)},
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def exec_command(argv: Sequence[str], env: Mapping[str, str], cwd: str, log_path: str, timeout: float) -> int:
    """Runs a command as a plain subprocess (interpreter start and imports included)."""
    with open(log_path, "wb") as log:
        return subprocess.run(list(argv), env=dict(env), cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                              timeout=timeout, check=False).returncode


class Emulator:
    """Runs one compiled spec repeatedly on one backend, with one ML Metadata and cache.

    Args:
      spec: the PipelineSpec as a dict (the .yaml package, or a Vertex PipelineJob's pipelineSpec).
      workdir: local folder for task roots and logs.
      mode: OSS or VERTEX.
      run_command: (argv, env, cwd, log path, timeout) -> exit status; the container stand-in.
      python: the interpreter standing in for the image's ``python``.
      timeout: seconds a task may take.
    """

    def __init__(
        self,
        spec: Mapping[str, Any],
        workdir: str,
        mode: str = OSS,
        run_command: Callable[..., int] = exec_command,
        python: str = sys.executable,
        timeout: float = 600,
        metadata: Metadata | None = None,
    ):
        if mode not in (OSS, VERTEX):
            raise ValueError(f"unknown mode {mode!r}")
        self.spec = spec
        self.workdir = workdir
        self.mode = mode
        self.run_command = run_command
        self.python = python
        self.timeout = timeout
        self.metadata = metadata or Metadata()

    # -- what the driver builds -------------------------------------------------------------

    def _component(self, task: Mapping[str, Any]) -> Mapping[str, Any]:
        return self.spec["components"][task["componentRef"]["name"]]

    def _parameters(self, task: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
        defaults = self.spec["root"].get("inputDefinitions", {}).get("parameters", {})
        values = {}
        for key, source in task.get("inputs", {}).get("parameters", {}).items():
            if "runtimeValue" in source:
                values[key] = source["runtimeValue"]["constant"]
            elif "componentInputParameter" in source:
                name = source["componentInputParameter"]
                if name in params:
                    values[key] = params[name]
                elif "defaultValue" in defaults.get(name, {}):
                    values[key] = defaults[name]["defaultValue"]
                else:
                    raise ValueError(f"pipeline parameter {name!r} has no value and no default")
            else:
                raise ValueError(f"unsupported parameter source for {key!r}: {sorted(source)}")
        return values

    def _input_artifact(self, artifact_id: int, declared_type: Mapping[str, Any]) -> dict[str, Any]:
        stored = self.metadata.artifacts[artifact_id]
        metadata = {k: _value(v) for k, v in stored.custom_properties.items()}
        if self.mode == OSS:
            # ToRuntimeArtifact(): the schema is not recorded, so the type is an empty instance schema.
            return {"name": str(artifact_id), "uri": stored.uri, "type": {"instanceSchema": ""}, "metadata": metadata}
        metadata = {k: v for k, v in metadata.items() if k not in ("display_name", "store_session_info")}
        return {"name": f"{_VERTEX_PREFIX}{artifact_id}", "uri": stored.uri, "type": dict(declared_type),
                "metadata": metadata}

    def _executor_input(
        self, name: str, task: Mapping[str, Any], params: Mapping[str, Any], produced: Mapping[str, dict[str, int]],
        pipeline_root: str, task_root: str,
    ) -> dict[str, Any]:
        component = self._component(task)
        declared = component.get("inputDefinitions", {}).get("artifacts", {})
        inputs: dict[str, Any] = {"parameterValues": self._parameters(task, params)}
        artifacts = {}
        for key, source in task.get("inputs", {}).get("artifacts", {}).items():
            if "taskOutputArtifact" not in source:
                raise ValueError(f"task {name}: unsupported artifact source {sorted(source)}")
            producer = source["taskOutputArtifact"]["producerTask"]
            artifact_id = produced[producer][source["taskOutputArtifact"]["outputArtifactKey"]]
            artifacts[key] = {"artifacts": [self._input_artifact(artifact_id, declared[key]["artifactType"])]}
        if artifacts:
            inputs["artifacts"] = artifacts
        run_uuid = uuid.uuid4().hex
        outputs_spec = dict(component.get("outputDefinitions", {}).get("artifacts", {}))
        if self.mode == OSS:
            outputs_spec[EXECUTOR_LOGS] = {"artifactType": {"schemaTitle": "system.Artifact"}}
        outputs = {
            key: {"artifacts": [{
                "name": key,
                "uri": f"{pipeline_root.rstrip('/')}/{name}/{run_uuid}/{key}",
                "type": dict(d["artifactType"]),
                "metadata": {},
            }]}
            for key, d in outputs_spec.items()
        }
        return {"inputs": inputs, "outputs": {"artifacts": outputs,
                                              "outputFile": os.path.join(task_root, "output_metadata.json")}}

    # -- what the launcher does -------------------------------------------------------------

    def _command(self, task: Mapping[str, Any]) -> tuple[str, list[str]]:
        label = self._component(task)["executorLabel"]
        executor = self.spec["deploymentSpec"]["executors"][label]
        if "container" not in executor:
            raise ValueError(f"executor {label} is not a container ({sorted(executor)}): the backend cannot run it")
        container = executor["container"]
        return container["image"], [*container.get("command", []), *container.get("args", [])]

    def _substitute(self, command: Sequence[str], executor_input: Mapping[str, Any]) -> list[str]:
        text = json.dumps(executor_input, separators=(",", ":"))
        argv = [arg.replace("{{$}}", text) for arg in command]
        leftover = [a for a in argv if "{{$." in a]
        if leftover:
            raise ValueError(f"placeholders this emulator does not know: {leftover[0][:80]}")
        if argv[0] == "python":
            argv[0] = self.python
        return argv

    def _record_outputs(self, executor_input: Mapping[str, Any]) -> dict[str, int]:
        output_file = executor_input["outputs"]["outputFile"]
        with open(output_file) as f:
            executor_output = json.load(f)
        recorded = {}
        for key, listed in executor_input["outputs"]["artifacts"].items():
            artifact = dict(listed["artifacts"][0])
            produced = executor_output.get("artifacts", {}).get(key, {}).get("artifacts", [])
            if produced and key != EXECUTOR_LOGS:  # mergeRuntimeArtifacts
                artifact["uri"] = produced[0].get("uri") or artifact["uri"]
                artifact["metadata"] = {**artifact.get("metadata", {}), **produced[0].get("metadata", {})}
            properties = {k: _value(v) for k, v in artifact.get("metadata", {}).items()}
            if self.mode == OSS:
                properties.setdefault("display_name", key)
                properties.setdefault("store_session_info", '{"Provider":"gs","Params":{}}')
            schema = artifact["type"].get("instanceSchema") or artifact["type"].get("schemaTitle", "")
            recorded[key] = self.metadata.record(artifact["uri"], schema, properties)
        return recorded

    def run(self, params: Mapping[str, Any] | None = None, pipeline_root: str | None = None) -> PipelineRun:
        """Runs every task once, in dependency order, with the backend's caching.

        Args:
          params: pipeline parameter values (others keep their defaults).
          pipeline_root: artifact root (default: the spec's defaultPipelineRoot).

        Returns:
          The run; raises RuntimeError naming the task, its exit status and log tail when a task fails.
        """
        params = dict(params or {})
        root = pipeline_root or self.spec["defaultPipelineRoot"]
        run_id = uuid.uuid4().hex[:8]
        produced: dict[str, dict[str, int]] = {}
        result = PipelineRun(run_id, {})
        tasks = self.spec["root"]["dag"]["tasks"]
        for name in topological_order(tasks):
            task = tasks[name]
            task_root = os.path.join(self.workdir, run_id, name)
            os.makedirs(task_root, exist_ok=True)
            executor_input = self._executor_input(name, task, params, produced, root, task_root)
            image, command = self._command(task)
            caching = bool(task.get("cachingOptions", {}).get("enableCache"))
            fingerprint = cache_fingerprint(executor_input, command, image)
            if caching and fingerprint in self.metadata.cache:
                produced[name] = dict(self.metadata.cache[fingerprint])
                result.tasks[name] = TaskRun(name, True, produced[name], fingerprint, 0.0)
                continue
            argv = self._substitute(command, executor_input)
            log_path = os.path.join(task_root, "log.txt")
            env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")  # as the Dockerfile sets
            start = time.monotonic()
            status = self.run_command(argv, env, task_root, log_path, self.timeout)
            seconds = time.monotonic() - start
            with open(log_path, errors="replace") as f:
                log = f.read()
            if status != 0:
                raise RuntimeError(f"task {name} failed with exit status {status}:\n{log[-6000:]}")
            produced[name] = self._record_outputs(executor_input)
            if caching:
                self.metadata.cache[fingerprint] = dict(produced[name])
            result.tasks[name] = TaskRun(name, False, produced[name], fingerprint, seconds, status, log)
        return result

    def artifact(self, run: PipelineRun, task: str, key: str) -> Artifact:
        """An output artifact of a task in a run."""
        return self.metadata.artifacts[run.tasks[task].outputs[key]]


class ForkServer:
    """The container stand-in that starts each command from a warm interpreter (tests/forkserver.py).

    The commands are the spec's own (``python -m pipeline.kfp_entrypoint ...``); only the
    interpreter start and the stack's imports are shared. Use as a context manager.

    Args:
      python: the interpreter (this venv's).
      env: the environment it starts with (TF_USE_LEGACY_KERAS is read at import time).
      start_timeout: seconds to wait for the preloading.
    """

    def __init__(self, python: str = sys.executable, env: Mapping[str, str] | None = None, start_timeout: float = 300):
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(env or os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
        self._stderr = open(os.devnull, "wb")  # noqa: SIM115  (closed in close())
        self._proc = subprocess.Popen(
            [python, "-m", "tests.forkserver"], cwd=repo, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._stderr, bufsize=0,
        )
        self._buffer = b""
        self.cpu_seconds: dict[str, float] = {}  # log path -> CPU seconds of that command
        try:
            self._read(time.monotonic() + start_timeout)
        except BaseException:
            self.close()
            raise

    def _read(self, deadline: float) -> dict[str, Any]:
        import select

        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the fork server did not answer in time")
            ready, _, _ = select.select([self._proc.stdout], [], [], remaining)
            if ready:
                chunk = os.read(self._proc.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError(f"the fork server exited with status {self._proc.wait()}")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def __call__(self, argv: Sequence[str], env: Mapping[str, str], cwd: str, log_path: str, timeout: float) -> int:
        request = {"argv": list(argv), "env": dict(env), "cwd": cwd, "log": log_path}
        self._proc.stdin.write((json.dumps(request) + "\n").encode())
        deadline = time.monotonic() + timeout
        pid = self._read(time.monotonic() + 60)["pid"]
        try:
            reply = self._read(deadline)
        except TimeoutError:
            os.kill(pid, 9)
            self._read(time.monotonic() + 60)
            raise TimeoutError(f"{' '.join(argv[:3])} ran longer than {timeout:.0f} s (killed)") from None
        self.cpu_seconds[log_path] = reply["cpu"]
        return reply["status"]

    def close(self) -> None:
        """Stops the server."""
        if self._proc.poll() is None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._stderr.close()

    def __enter__(self) -> ForkServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
