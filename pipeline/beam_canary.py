"""Worker check: a tiny Beam job through the run's own Beam profile before any Beam step.

A remote Beam runner whose SDK workers cannot start does not fail: the job waits for a worker
forever. Seen here: a worker pool whose ``python`` lacked Beam kept ImageExampleGen waiting for
10 minutes, with nothing but Beam's "input queue delay" in the run log. The canary submits four
elements through the same runner and environment, waits a bounded time
(``wait_until_finish(duration)``), cancels, and turns what it saw into one line naming the
environment, the address and the likely cause.

Inside a worker the canary also checks what the pipeline's own steps will need there: this
package importable, the launcher's Beam and Python versions, and ``TF_USE_LEGACY_KERAS=1``
(TF 2.16 mixes Keras 3 into tf-keras code otherwise).

The job runs in a child process (``python -m pipeline.beam_canary``): a job that waits for a
worker that never comes leaves non-daemon threads behind that no cancel ends, so the child is
killed (its whole process group) when it overruns, and this process never hangs. Its probe is
defined in the child's ``__main__``, so Beam pickles it by value: it runs in a worker that lacks
this package and reports that, instead of failing to unpickle.

Nothing here imports Beam at import time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

# Runners that execute in this process (or in local subprocesses of this same Python): no check.
LOCAL_RUNNERS = ("DirectRunner", "SwitchingDirectRunner", "BundleBasedDirectRunner", "FnApiRunner")
# How long a worker may take to appear. Docker pulls an image first; Dataflow starts VMs.
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_DOCKER_TIMEOUT_S = 600.0
DEFAULT_DATAFLOW_TIMEOUT_S = 900.0
# Beyond the worker bound: the child's Python start and Beam import, job submission and cancel.
_CHILD_GRACE_S = 90.0
_RESULT_PREFIX = "FACEPIPE_WORKER_CHECK_RESULT "
_PROBE_MARKER = "FACEPIPE_WORKER_CHECK: "
_ELEMENTS = 4
_PACKAGES = ("pipeline", "components")  # this project's top-level packages, imported by its DoFns


class WorkerCheckError(RuntimeError):
    """The Beam workers of the run's profile did not start or cannot run this pipeline (one line)."""


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a Beam job's work would run.

    Attributes:
      runner: Beam runner name (PortableRunner, FlinkRunner, DataflowRunner, ...).
      job_endpoint: the job server (host:port, "embed"), None for runners without one.
      environment_type: EXTERNAL, DOCKER, PROCESS or LOOPBACK (None: the runner's default).
      environment_config: the worker pool address, image or command.
    """

    runner: str
    job_endpoint: str | None = None
    environment_type: str | None = None
    environment_config: str | None = None

    def describe(self) -> str:
        """E.g. 'PortableRunner, EXTERNAL environment at localhost:50000, job server embed'."""
        parts = [self.runner]
        if self.environment_type:
            where = f" at {self.environment_config}" if self.environment_config else ""
            parts.append(f"{self.environment_type} environment{where}")
        if self.job_endpoint:
            parts.append(f"job server {self.job_endpoint}")
        return ", ".join(parts)

    def default_timeout_s(self) -> float:
        """The worker bound used when none is given: longer where workers start slowly."""
        if self.runner == "DataflowRunner":
            return DEFAULT_DATAFLOW_TIMEOUT_S
        if (self.environment_type or "").upper() == "DOCKER":
            return DEFAULT_DOCKER_TIMEOUT_S
        return DEFAULT_TIMEOUT_S


@dataclasses.dataclass(frozen=True)
class WorkerCheck:
    """A passed worker check: the target and how long the canary job took (seconds)."""

    target: Target
    seconds: float


def target_of(beam_args: tuple[str, ...] | list[str]) -> Target | None:
    """Reads where the Beam steps of a run will execute (imports apache_beam).

    Args:
      beam_args: the run's Beam pipeline arguments.

    Returns:
      The target, or None when the work stays on this machine in this Python (DirectRunner,
      in memory or multi-processing): nothing to check.
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    options = PipelineOptions(flags=list(beam_args)).get_all_options()
    runner = options.get("runner")
    name = runner if isinstance(runner, str) else type(runner).__name__ if runner else None
    if name is None or name.split(".")[-1] in LOCAL_RUNNERS:
        return None
    return Target(
        runner=name.split(".")[-1],
        job_endpoint=options.get("job_endpoint"),
        environment_type=(options.get("environment_type") or "").upper() or None,
        environment_config=options.get("environment_config"),
    )


def likely_cause(target: Target, timeout_s: float) -> str:
    """The most likely reason why no worker of the target ran the canary within timeout_s."""
    env, config = target.environment_type, target.environment_config
    if target.runner == "DataflowRunner":
        return (
            f"Dataflow started no worker that ran it within {timeout_s:g} s: worker VMs may still be starting "
            "(quota, region capacity) or fail to install the pipeline's packages; see the job's worker logs"
        )
    if env == "EXTERNAL":
        return (
            f"the worker pool at {config} started no worker that could import apache_beam within {timeout_s:g} s "
            "(a Python worker pool starts the first 'python' on its PATH: put this project's .venv/bin first; "
            "a Beam boot sidecar needs the facepipe image); the pool's own log shows the worker's error"
        )
    if env == "DOCKER":
        return (
            f"no SDK container from image {config} ran it within {timeout_s:g} s: the image cannot be pulled where "
            "the job runs, or it does not start Beam's SDK harness (/opt/apache/beam/boot)"
        )
    if env == "PROCESS":
        return f"the worker command {config} started no SDK worker within {timeout_s:g} s"
    if env == "LOOPBACK":
        return (
            f"the job server ran nothing on this process's loopback worker within {timeout_s:g} s "
            "(it may be unable to connect back to this machine)"
        )
    return f"no SDK worker ran it within {timeout_s:g} s"


def _failure_line(target: Target, error: str) -> str:
    """The one-line cause of a canary job that failed (not one that waited)."""
    for line in error.splitlines():
        if _PROBE_MARKER in line:
            return line.split(_PROBE_MARKER, 1)[1].strip().rstrip("'\"")
    lowered = error.lower()
    if "futuretimeouterror" in lowered:  # PortableRunner could not connect to the job server
        return f"cannot reach the Beam job server at {target.job_endpoint}: is it running?"
    refused = "connection refused" in lowered or "failed to connect" in lowered
    port = (target.environment_config or "").rpartition(":")[2]
    if refused and target.environment_type == "EXTERNAL" and port and f":{port}" in error:
        return f"cannot reach the worker pool at {target.environment_config} (connection refused): is it running?"
    details = [line.split("=", 1)[1].strip().strip('"') for line in error.splitlines() if "details =" in line]
    lines = [line.strip() for line in error.splitlines() if len(line.strip()) > 3]
    reason = details[-1] if details else lines[-1] if lines else "no error message"
    return f"the canary job failed: {reason}"


def check_workers(
    beam_args: tuple[str, ...] | list[str],
    timeout_s: float | None = None,
    log_path: str | None = None,
) -> WorkerCheck | None:
    """Runs the canary job through the given Beam arguments, bounded in time.

    Args:
      beam_args: the run's Beam pipeline arguments (its profile's and any --beam-arg).
      timeout_s: how long a worker may take to run the canary; None: the target's default
        (Target.default_timeout_s). Must be > 0.
      log_path: a file the child's output (Beam's logs) is appended to; None: discarded.

    Returns:
      The passed check, or None when the Beam steps run in this Python (nothing to check).

    Raises:
      WorkerCheckError: one line naming the target and the likely cause.
      ValueError: timeout_s <= 0.
    """
    target = target_of(beam_args)
    if target is None:
        return None
    bound = target.default_timeout_s() if timeout_s is None else float(timeout_s)
    if bound <= 0:
        raise ValueError(f"the worker check timeout must be > 0 seconds, got {bound:g}")
    command = [sys.executable, "-m", "pipeline.beam_canary", "--timeout", str(bound), "--", *beam_args]
    started = time.monotonic()
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115  (closed below)
    try:
        child = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,  # its own process group: killed whole on overrun
            env=dict(os.environ, TF_USE_LEGACY_KERAS="1"),
        )
        try:
            output, _ = child.communicate(timeout=bound + _CHILD_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            raise WorkerCheckError(
                f"Beam worker check failed ({target.describe()}): the canary job did not finish or cancel within "
                f"{bound + _CHILD_GRACE_S:g} s and was killed; {likely_cause(target, bound)}"
            ) from None
    finally:
        if log_path:
            log.close()
    result = _read_result(output.decode(errors="replace"))
    seconds = round(time.monotonic() - started, 1)
    if result is None:
        raise WorkerCheckError(
            f"Beam worker check failed ({target.describe()}): the canary process ended (exit status "
            f"{child.returncode}) without a result" + (f"; see {log_path}" if log_path else "")
        )
    if result["status"] == "ok":
        return WorkerCheck(target, seconds)
    if result["status"] == "timeout":
        cause = likely_cause(target, bound)
        hint = "; raise --worker-check-timeout if workers only start slowly"
        raise WorkerCheckError(
            f"Beam worker check failed ({target.describe()}): no worker ran the canary job: {cause}{hint}"
        )
    raise WorkerCheckError(
        f"Beam worker check failed ({target.describe()}): {_failure_line(target, result.get('error', ''))}"
    )


# ------------------------------------------------------------------------------------------------------
# Kubeflow: each Beam step checks its own workers first, inside its pod
# ------------------------------------------------------------------------------------------------------


def guard_beam_steps(spec: dict[str, Any], beam_args: tuple[str, ...], timeout_s: float | None) -> list[str]:
    """Makes every Beam step of a compiled KFP pipeline spec run the worker check before its executor.

    Each step runs in its own pod, at its own time, so the check goes into the step itself: its
    container command becomes ``python -m pipeline.beam_canary --guard ... -- <original command>``,
    which checks the workers with the step's own Beam arguments and then execs the original
    command (or fails the step with the one-line reason). A step served from KFP's cache runs
    nothing, and checks nothing. Only job-server runners (Flink, Spark, portable) are guarded:
    they wait for a dead worker forever, while Dataflow reports a job without worker activity
    itself, and a canary job per step would cost a Dataflow job start (minutes) each.

    Args:
      spec: the PipelineSpec as a dict (changed in place).
      beam_args: the pipeline's Beam arguments (the last arguments of every step's container).
      timeout_s: the worker bound; None: the environment's default; 0: no check.

    Returns:
      The executor labels guarded.
    """
    from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor
    from tfx.utils import import_utils

    target = target_of(beam_args)
    if target is None or target.runner == "DataflowRunner" or timeout_s == 0 or not beam_args:
        return []
    bound = timeout_s or target.default_timeout_s()
    guarded = []
    for label, executor in spec["deploymentSpec"]["executors"].items():
        container = executor.get("container")
        args = list((container or {}).get("args", []))
        if not container or args[-len(beam_args) :] != list(beam_args) or "--executor_class_path" not in args:
            continue
        class_path = args[args.index("--executor_class_path") + 1]
        if not issubclass(import_utils.import_class_by_path(class_path), BaseBeamExecutor):
            continue
        container["command"] = [
            "python", "-m", "pipeline.beam_canary", "--guard", f"--beam-args={len(beam_args)}",
            f"--timeout={bound:g}", "--", *container["command"],
        ]
        guarded.append(label)
    return guarded


def _guard(argv: list[str]) -> int:
    """The guarded step: the worker check with the step's Beam arguments, then the step itself."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.beam_canary --guard")
    parser.add_argument("--guard", action="store_true")
    parser.add_argument("--beam-args", type=int, required=True, help="how many trailing arguments are Beam's")
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the step's command and arguments")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or args.beam_args < 1 or len(command) <= args.beam_args:
        parser.error("expected -- COMMAND ... with the Beam arguments last")
    try:
        check = check_workers(command[-args.beam_args :], args.timeout)
    except WorkerCheckError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    if check is not None:
        print(f"Beam workers ok ({check.target.describe()}): the canary job ran in {check.seconds:g} s", flush=True)
    os.execvp(command[0], command)
    return 0  # not reached


def _read_result(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(_RESULT_PREFIX):
            return json.loads(line[len(_RESULT_PREFIX) :])
    return None


# ------------------------------------------------------------------------------------------------------
# The child: python -m pipeline.beam_canary --timeout SECONDS -- BEAM_ARGS...
# ------------------------------------------------------------------------------------------------------


def probe(element: int, expected: dict[str, str]) -> int:
    """Runs inside a Beam worker: checks what the pipeline's steps will need there.

    Self-contained on purpose (imports inside, no module globals): run from the child's
    ``__main__`` it is pickled by value and works in a worker that lacks this package.

    Raises:
      RuntimeError: marked so the launcher can find the one-line reason in the job's error.
    """
    import importlib.util
    import os
    import platform
    import sys

    import apache_beam

    marker = "FACEPIPE_WORKER_CHECK: "
    where = f"worker {platform.node()} pid {os.getpid()} ({platform.python_version()} at {sys.executable})"
    problems = []
    if apache_beam.__version__ != expected["beam"]:
        problems.append(f"Beam {apache_beam.__version__} where the launcher has {expected['beam']}")
    if platform.python_version().rsplit(".", 1)[0] != expected["python"]:
        problems.append(f"Python {platform.python_version()} where the launcher has {expected['python']}")
    missing = [name for name in expected["packages"].split(",") if importlib.util.find_spec(name) is None]
    if missing:
        problems.append(f"this project's package(s) {', '.join(missing)} are not importable")
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        problems.append("TF_USE_LEGACY_KERAS=1 is not set (start the workers with it, as the facepipe image does)")
    if problems:
        raise RuntimeError(f"{marker}the Beam workers cannot run this pipeline: {'; '.join(problems)} [{where}]")
    return element


def _child(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.beam_canary")
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("beam_args", nargs="*")
    args = parser.parse_args(argv)
    started = time.monotonic()

    def finish(status: str, **extra: Any) -> None:
        result = {"status": status, "seconds": round(time.monotonic() - started, 2), **extra}
        print(_RESULT_PREFIX + json.dumps(result), flush=True)
        sys.stderr.flush()
        # A job still waiting for a worker leaves threads that keep a normal exit waiting forever.
        os._exit(0)

    import platform

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.runner import PipelineState

    expected = {
        "beam": beam.__version__,
        "python": platform.python_version().rsplit(".", 1)[0],
        "packages": ",".join(_PACKAGES),
    }
    pipeline = beam.Pipeline(options=PipelineOptions(flags=args.beam_args))
    _ = (
        pipeline
        | "Elements" >> beam.Create(list(range(_ELEMENTS)))
        | "Probe" >> beam.Map(probe, expected=expected)
    )
    try:
        result = pipeline.run()
        remaining_ms = max(1, int((args.timeout - (time.monotonic() - started)) * 1000))
        state = result.wait_until_finish(duration=remaining_ms)
    except Exception as e:  # noqa: BLE001  (any failure is the check's result)
        finish("failed", error=f"{type(e).__name__}: {e}")
    if state == PipelineState.DONE:
        finish("ok")
    if PipelineState.is_terminal(state):
        finish("failed", error=f"the canary job ended in state {state}")
    try:
        result.cancel()
    except Exception:  # noqa: BLE001, S110  (the result is the timeout either way; the parent kills us on overrun)
        pass
    finish("timeout", state=str(state))
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(_guard(sys.argv[1:]) if sys.argv[1:2] == ["--guard"] else _child(sys.argv[1:]))
