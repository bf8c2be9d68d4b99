"""The portable Beam path: PortableRunner (in-process job server) -> a real local Beam worker pool.

This is the SDK-harness path the flink and spark profiles use on a cluster, run on one machine:
every Beam step of the pipeline crosses a process boundary into worker processes that the pool
(``python -m apache_beam.runners.worker.worker_pool_main``) starts with the first ``python`` on
its PATH. The tests start and stop such pools themselves, and check

- that the whole pipeline through the pool gives the in-memory run's results (same examples,
  statistics and metrics), and that the pool's workers did that work;
- that the worker check (pipeline.beam_canary) fails a run in bounded time, with one line, when
  the pool's workers cannot import Beam, lack TF_USE_LEGACY_KERAS, or there is no pool at all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import venv
from collections.abc import Iterator

import numpy as np
import pytest

from components.evaluation.results import BASELINE
from pipeline import beam_canary, beam_profiles
from pipeline import pipeline as pipeline_def
from pipeline.run_summary import component_runs
from tests.conftest import run_paths

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.dirname(sys.executable)
POOL_START_TIMEOUT_S = 60
# Tolerances against the in-memory run. Both runs embed and evaluate the same images with the
# same model code; what differs is how Beam batches and orders examples (the Trainer sorts its
# training items by file name, so training does not depend on it), which moves float sums in
# the last digits. TFDV's quantile sketches depend on batching, so histograms are not compared.
STATS_RTOL = 1e-6
METRIC_ATOL = 1e-3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _accepts_connections(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("localhost", port)) == 0


@dataclasses.dataclass
class WorkerPool:
    """A running Beam worker pool: its address, log file and process."""

    address: str
    log_path: str
    process: subprocess.Popen

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()


@contextlib.contextmanager
def worker_pool(tmp_path, path_first: str, legacy_keras: bool = True) -> Iterator[WorkerPool]:
    """Starts ``python -m apache_beam.runners.worker.worker_pool_main`` as the README says, and stops it.

    Args:
      tmp_path: where the pool's log goes.
      path_first: a bin folder put first on the pool's PATH: the ``python`` its workers run.
      legacy_keras: start the pool with TF_USE_LEGACY_KERAS=1 (as the README's command does).
    """
    port = _free_port()
    log_path = str(tmp_path / f"pool-{port}.log")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["PATH"] = path_first + os.pathsep + env.get("PATH", "")
    if legacy_keras:
        env["TF_USE_LEGACY_KERAS"] = "1"
    with open(log_path, "wb") as log:
        # The pool itself runs in this project's Python (it needs Beam); its workers run PATH's python.
        process = subprocess.Popen(
            [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    pool = WorkerPool(f"localhost:{port}", log_path, process)
    try:
        deadline = time.monotonic() + POOL_START_TIMEOUT_S
        while not _accepts_connections(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker pool did not start: {pool.log()[-2000:]}")
            time.sleep(0.2)  # polling another process's port for readiness, not ordering threads
        yield pool
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def portable_args(pool_address: str) -> tuple[str, ...]:
    return beam_profiles.beam_args(
        beam_profiles.BeamProfile(
            beam_profiles.PORTABLE, job_endpoint="embed", environment_type="EXTERNAL", environment_config=pool_address
        )
    )


# --- the whole pipeline through the pool, against the in-memory run ------------------------------------


def _outputs(store, run_id: str) -> dict[str, str]:
    runs = component_runs(store, run_id)
    return {
        "examples": runs[pipeline_def.EXAMPLE_GEN].outputs["examples"][0].uri,
        "statistics": runs[pipeline_def.STATISTICS_GEN].outputs["statistics"][0].uri,
        "evaluation": runs[pipeline_def.EVALUATOR].outputs["evaluation"][0].uri,
    }


def _examples(uri: str) -> dict[str, set[tuple[str, int, int, int]]]:
    """{split: {(file name, age, gender, race)}} of an Examples artifact."""
    import tensorflow as tf

    from components.base import labels

    spec = {
        labels.FILENAME_KEY: tf.io.FixedLenFeature([], tf.string),
        **{key: tf.io.FixedLenFeature([], tf.int64) for key in (labels.AGE_KEY, labels.GENDER_KEY, labels.RACE_KEY)},
    }
    result = {}
    for split in ("train", "eval"):
        files = sorted(tf.io.gfile.glob(os.path.join(uri, f"Split-{split}", "*")))
        rows = set()
        for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
            x = tf.io.parse_single_example(record, spec)
            rows.add((
                x[labels.FILENAME_KEY].numpy().decode(),
                int(x[labels.AGE_KEY]), int(x[labels.GENDER_KEY]), int(x[labels.RACE_KEY]),
            ))
        result[split] = rows
    return result


def _statistics(uri: str) -> dict[str, dict]:
    """{split: {"num_examples": n, feature: {mean, std_dev, min, max, num_zeros, avg length, ...}}}."""
    import tensorflow_data_validation as tfdv

    result = {}
    for split in ("train", "eval"):
        stats = tfdv.load_stats_binary(os.path.join(uri, f"Split-{split}", "FeatureStats.pb")).datasets[0]
        entry: dict = {"num_examples": stats.num_examples}
        for feature in stats.features:
            name = feature.path.step[0]
            if feature.HasField("num_stats"):
                s = feature.num_stats
                entry[name] = {"mean": s.mean, "std_dev": s.std_dev, "min": s.min, "max": s.max,
                               "num_zeros": s.num_zeros, "missing": s.common_stats.num_missing}
            elif feature.HasField("bytes_stats"):
                s = feature.bytes_stats
                entry[name] = {"avg_num_bytes": s.avg_num_bytes, "max_num_bytes": s.max_num_bytes,
                               "missing": s.common_stats.num_missing}
            elif feature.HasField("string_stats"):
                s = feature.string_stats
                entry[name] = {"unique": s.unique, "avg_length": s.avg_length, "missing": s.common_stats.num_missing}
        result[split] = entry
    return result


def _metrics(uri: str) -> dict[str, float]:
    """Every candidate metric with a number, of every slice: {"slice | metric | sub key": value}."""
    import tensorflow_model_analysis as tfma

    values = {}
    for slice_metrics in tfma.load_metrics(uri):
        if slice_metrics.HasField("cross_slice_key"):
            continue
        slice_name = str(tfma.slicer.deserialize_slice_key(slice_metrics.slice_key))
        for item in slice_metrics.metric_keys_and_values:
            key, value = item.key, item.value
            if key.model_name == BASELINE or key.is_diff or not value.HasField("double_value"):
                continue
            values[f"{slice_name} | {key.name} | {str(key.sub_key).strip()}"] = value.double_value.value
    return values


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.portable
def test_pipeline_through_a_worker_pool_matches_the_in_memory_run(e2e_runs, tmp_path, monkeypatch):
    from ml_metadata.metadata_store import metadata_store
    from tfx import v1 as tfx

    from pipeline.local_run import run_local

    config, _, in_memory, _, in_memory_store = e2e_runs
    root = tmp_path / "portable"
    with worker_pool(tmp_path, VENV_BIN) as pool:
        portable_config = dataclasses.replace(
            config,
            **run_paths(root),
            beam_pipeline_args=portable_args(pool.address),
        )
        progress = io.StringIO()
        # TFX's BaseBeamExecutor parses sys.argv + the Beam args with absl whenever there are Beam
        # args (base_beam_executor.py, TODO b/174174381): pytest's `-v --durations=20` (.ci/run) read
        # as --verbosity=--durations=20. The runner's own argv has no absl flag.
        monkeypatch.setattr(sys, "argv", ["runner_local.py"])
        with WorkerAccounting(pool.process.pid) as workers:
            summary = run_local(portable_config, out=progress)
        pool_log = pool.log()
    assert summary["error"] is None, summary["error"]
    assert "[check] Beam workers ok" in progress.getvalue()

    # The pool's workers did the Beam work: one worker per Beam job (the canary, ImageExampleGen,
    # StatisticsGen, Evaluator; Transform's graph-only analysis may run without one), and those
    # workers spent CPU time importing the TFX stack and running its stages. There is nowhere
    # else an EXTERNAL environment's work can run.
    started = pool_log.count("Starting worker with command")
    assert started >= 4 and len(workers.cpu_seconds) >= 4, (workers.cpu_seconds, pool_log[-3000:])
    assert all("SdkHarness" in command for command in workers.commands.values()), workers.commands
    busy = sorted(workers.cpu_seconds.values(), reverse=True)
    assert busy[3] >= 2.0, f"fewer than 4 workers did real work (CPU seconds per worker: {busy})"
    assert "Traceback" not in pool_log, pool_log[-3000:]

    store = metadata_store.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(portable_config.metadata_path)
    )
    ours, theirs = _outputs(store, summary["run_id"]), _outputs(in_memory_store, in_memory["run_id"])

    examples, expected_examples = _examples(ours["examples"]), _examples(theirs["examples"])
    assert examples == expected_examples
    assert {k: len(v) for k, v in examples.items()} == in_memory["ingested_by_split"] == summary["ingested_by_split"]
    assert summary["quarantined_by_reason"] == in_memory["quarantined_by_reason"]

    stats, expected_stats = _statistics(ours["statistics"]), _statistics(theirs["statistics"])
    assert stats.keys() == expected_stats.keys()
    for split, features in expected_stats.items():
        assert stats[split].keys() == features.keys(), split
        for name, expected in features.items():
            if isinstance(expected, dict):
                for field, value in expected.items():
                    assert stats[split][name][field] == pytest.approx(value, rel=STATS_RTOL), (split, name, field)
            else:
                assert stats[split][name] == expected, (split, name)

    metrics, expected_metrics = _metrics(ours["evaluation"]), _metrics(theirs["evaluation"])
    assert len(expected_metrics) > 100 and metrics.keys() == expected_metrics.keys()
    differences = {k: abs(metrics[k] - v) for k, v in expected_metrics.items() if not np.isnan(v)}
    worst = max(differences, key=differences.get)
    assert differences[worst] <= METRIC_ATOL, (worst, metrics[worst], expected_metrics[worst])
    assert summary["blessed"] == in_memory["blessed"] and summary["pushed_model"]


class WorkerAccounting:
    """Samples the worker processes a pool starts: per worker pid, its command and CPU seconds.

    The pool does not wait for its finished workers, so the kernel's children totals stay at
    zero; sampling /proc every 0.2 s sees each worker while it runs (a worker lives for a whole
    Beam job: its imports alone take seconds).
    """

    def __init__(self, pool_pid: int, interval_s: float = 0.2):
        import psutil

        self._pool = psutil.Process(pool_pid)
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.cpu_seconds: dict[int, float] = {}
        self.commands: dict[int, str] = {}

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            for child in self._pool.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    times = child.cpu_times()
                    self.commands.setdefault(child.pid, " ".join(child.cmdline()))
                    self.cpu_seconds[child.pid] = max(self.cpu_seconds.get(child.pid, 0.0), times.user + times.system)
            self._stop.wait(self._interval)

    def __enter__(self) -> "WorkerAccounting":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


# --- dead workers fail fast ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def python_without_beam(tmp_path_factory) -> str:
    """The bin folder of a plain venv (no Beam): a worker pool with it first on PATH starts dead workers."""
    where = tmp_path_factory.mktemp("nobeam") / "venv"
    venv.EnvBuilder(with_pip=False).create(where)
    python = where / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import apache_beam"], check=False, capture_output=True, timeout=60)
    assert probe.returncode != 0  # really without Beam
    return str(where / "bin")


@pytest.mark.slow
@pytest.mark.portable
def test_a_pool_whose_python_lacks_beam_fails_the_run_in_bounded_time(python_without_beam, tmp_path):
    from components import synthetic_data

    data = tmp_path / "data"
    synthetic_data.generate(data, synthetic_data.SyntheticSpec(num_images=5, seed=3))
    bound = 15
    with worker_pool(tmp_path, python_without_beam) as pool:
        started = time.monotonic()
        run = subprocess.run(
            [sys.executable, "runner_local.py", "--data-dir", str(data), "--pipeline-root", str(tmp_path / "root"),
             "--serving-dir", str(tmp_path / "serving"), "--beam-profile", "portable", "--job-endpoint", "embed",
             "--beam-environment-config", pool.address, "--worker-check-timeout", str(bound)],
            check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
        )
        seconds = time.monotonic() - started
        pool_log = pool.log()
    assert "No module named 'apache_beam'" in pool_log  # the pool did start a worker, and it died
    assert run.returncode == 1, run.stdout + run.stderr
    errors = [line for line in run.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, run.stdout
    line = errors[0]
    assert f"the worker pool at {pool.address} started no worker that could import apache_beam" in line
    assert "EXTERNAL environment" in line and "--worker-check-timeout" in line
    assert "[start] ImageExampleGen" not in run.stdout  # nothing of the pipeline ran
    # The bound plus the child's start, submission and cancel; far from "forever".
    assert seconds < bound + beam_canary._CHILD_GRACE_S + 120, seconds


@pytest.mark.slow
@pytest.mark.portable
def test_workers_without_legacy_keras_are_refused_with_the_reason(tmp_path):
    with worker_pool(tmp_path, VENV_BIN, legacy_keras=False) as pool:
        with pytest.raises(beam_canary.WorkerCheckError) as info:
            beam_canary.check_workers(portable_args(pool.address), timeout_s=60)
    message = str(info.value)
    assert "\n" not in message
    assert f"EXTERNAL environment at {pool.address}" in message
    assert "TF_USE_LEGACY_KERAS=1 is not set" in message and "pid" in message


@pytest.mark.slow
@pytest.mark.portable
def test_no_pool_at_the_address_is_named_as_such():
    address = f"localhost:{_free_port()}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(beam_canary.WorkerCheckError) as info:
        beam_canary.check_workers(portable_args(address), timeout_s=60)
    assert str(info.value).endswith(f"cannot reach the worker pool at {address} (connection refused): is it running?")
    assert time.monotonic() - started < 60  # a refused connection fails the job at once, no waiting


# --- what needs no worker ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [(), ("--direct_running_mode=multi_processing", "--direct_num_workers=2"), ("--runner=DirectRunner",)],
)
def test_local_runners_need_no_worker_check(args):
    assert beam_canary.target_of(args) is None
    assert beam_canary.check_workers(args) is None


def test_targets_and_their_default_bounds():
    portable = beam_canary.target_of(portable_args("localhost:50000"))
    assert portable == beam_canary.Target("PortableRunner", "embed", "EXTERNAL", "localhost:50000")
    assert portable.describe() == "PortableRunner, EXTERNAL environment at localhost:50000, job server embed"
    assert portable.default_timeout_s() == beam_canary.DEFAULT_TIMEOUT_S == 120
    docker = beam_canary.target_of(beam_profiles.beam_args(beam_profiles.BeamProfile(
        beam_profiles.FLINK, job_endpoint="flink:8099", environment_type="DOCKER", environment_config="img:1"
    )))
    assert docker.runner == "FlinkRunner" and docker.default_timeout_s() == beam_canary.DEFAULT_DOCKER_TIMEOUT_S
    dataflow = beam_canary.target_of(("--runner=DataflowRunner", "--project=p", "--region=us-central1"))
    assert dataflow.default_timeout_s() == beam_canary.DEFAULT_DATAFLOW_TIMEOUT_S
    assert "image img:1" in beam_canary.likely_cause(docker, 600)
    with pytest.raises(ValueError, match="> 0"):
        beam_canary.check_workers(portable_args("localhost:50000"), timeout_s=0)


# --- Kubeflow: every Beam step checks its workers first, in its own pod ----------------------------------


@pytest.mark.slow
def test_kfp_beam_steps_run_the_worker_check_before_their_executor(tmp_path):
    import yaml

    from pipeline import kubeflow
    from pipeline.config import PipelineConfig

    flink = beam_profiles.beam_args(beam_profiles.BeamProfile(beam_profiles.FLINK, job_endpoint="flink-jobserver:8099"))
    config = PipelineConfig(
        data_dir="gs://facepipe-test/faces",
        pipeline_root="gs://facepipe-test/root",
        serving_dir="gs://facepipe-test/serving",
        schema_path=kubeflow.CONTAINER_SCHEMA_PATH,
        beam_pipeline_args=flink,
        worker_check_timeout_s=300,
    )
    spec = kubeflow.compile_pipeline(config, "registry.example/facepipe:1", str(tmp_path / "p.yaml"))
    commands = {label: e["container"]["command"] for label, e in spec["deploymentSpec"]["executors"].items()
                if "container" in e}
    guard = ["python", "-m", "pipeline.beam_canary", "--guard", f"--beam-args={len(flink)}", "--timeout=300", "--"]
    guarded = {label for label, command in commands.items() if command[: len(guard)] == guard}
    assert guarded == {"ImageExampleGen_executor", "StatisticsGen_executor", "Transform_executor",
                       "Evaluator_executor"}
    for label in guarded:  # then the step's own entrypoint, unchanged
        assert commands[label][len(guard):] == list(kubeflow.ENTRYPOINT_COMMAND), label
    assert commands["Trainer_executor"] == list(kubeflow.ENTRYPOINT_COMMAND)
    # The written package carries the same commands, and still loads strictly as a PipelineSpec.
    kubeflow.load_pipeline_spec(str(tmp_path / "p.yaml"))
    with open(tmp_path / "p.yaml") as f:
        written = yaml.safe_load(f)
    assert written["deploymentSpec"]["executors"]["Evaluator_executor"]["container"]["command"] == commands[
        "Evaluator_executor"]


def _guarded_step(beam_args: tuple[str, ...], timeout_s: int) -> subprocess.CompletedProcess:
    """A guarded step as KFP runs it: the guard, then a stand-in for the step's entrypoint."""
    step = [sys.executable, "-c", "import sys; print('STEP RAN with', len(sys.argv) - 1, 'arguments')"]
    return subprocess.run(
        [sys.executable, "-m", "pipeline.beam_canary", "--guard", f"--beam-args={len(beam_args)}",
         f"--timeout={timeout_s}", "--", *step, "--executor_class_path", "x.Y", *beam_args],
        check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s + 300,
    )


@pytest.mark.slow
@pytest.mark.portable
def test_a_guarded_step_runs_only_when_its_workers_run_the_canary(tmp_path):
    dead = _guarded_step(portable_args(f"localhost:{_free_port()}"), 60)
    assert dead.returncode == 1 and "STEP RAN" not in dead.stdout
    assert dead.stderr.strip().splitlines()[-1].startswith("error: Beam worker check failed (PortableRunner")
    assert "cannot reach the worker pool" in dead.stderr
    with worker_pool(tmp_path, VENV_BIN) as pool:
        args = portable_args(pool.address)
        alive = _guarded_step(args, 120)
    assert alive.returncode == 0, alive.stderr[-2000:]
    assert "Beam workers ok (PortableRunner, EXTERNAL environment" in alive.stdout
    assert f"STEP RAN with {2 + len(args)} arguments" in alive.stdout  # exec'd with its arguments intact
