"""Only good models reach serving, and a killed run resumes: real pipeline runs on tiny data."""

import io
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from ml_metadata.metadata_store import metadata_store
from tfx import v1 as tfx

from components import synthetic_data
from components.base import labels
from components.evaluation.settings import GateSettings
from components.trainer.config import TrainerConfig
from components.trainer.embeddings import EMBED_LOG_PREFIX
from pipeline import pipeline as pipeline_def
from pipeline.config import PipelineConfig
from pipeline.local_run import run_local
from pipeline.run_summary import component_runs
from tests.conftest import run_paths

pytestmark = pytest.mark.e2e
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _generate(path, n: int, seed: int):
    synthetic_data.generate(path, synthetic_data.SyntheticSpec(num_images=n, seed=seed, balanced=True))
    return str(path)


def _shuffle_labels(folder: str, seed: int) -> None:
    """Gives every well-formed file another file's labels: images no longer predict labels."""
    names = sorted(n for n in os.listdir(folder) if re.match(labels.UTKFACE_PATTERN, n))
    triples = [n.split("_")[:3] for n in names]
    order = np.random.default_rng(seed).permutation(len(names))
    tmp = [os.path.join(folder, f"tmp{i}") for i in range(len(names))]
    for name, t in zip(names, tmp, strict=True):
        os.rename(os.path.join(folder, name), t)
    for i, (name, t) in enumerate(zip(names, tmp, strict=True)):
        stamp = name.split("_")[3]
        os.rename(t, os.path.join(folder, "_".join(triples[order[i]]) + "_" + stamp))


def _config(root, data_dir: str, **overrides) -> PipelineConfig:
    values = dict(
        data_dir=data_dir,
        **run_paths(root),
        trainer=TrainerConfig(image_size=96, epochs=10),
    )
    values.update(overrides)
    return PipelineConfig(**values)


def _versions(config: PipelineConfig) -> list[str]:
    base = os.path.join(config.serving_dir, config.pipeline_name)
    return sorted(n for n in os.listdir(base) if n.isdigit()) if os.path.isdir(base) else []


@pytest.fixture(scope="module")
def shuffled_dir(tmp_path_factory):
    folder = _generate(tmp_path_factory.mktemp("shuffled") / "data", 160, seed=11)
    _shuffle_labels(folder, seed=3)
    return folder


def test_shuffled_labels_are_not_blessed_even_as_first_model(tmp_path, shuffled_dir):
    config = _config(tmp_path, shuffled_dir)  # default macro-AUC floor
    summary = run_local(config, out=io.StringIO())
    assert summary["error"] is None
    assert summary["blessed"] is False and summary["pushed_model"] is None
    assert summary["baseline_model"] is None  # first model: no baseline to lean on
    assert summary["macro_auc"] < config.gates.min_macro_auc
    assert any("macro_auc" in reason for reason in summary["blessing_reasons"])
    assert _versions(config) == []


def test_model_worse_than_serving_is_not_pushed(tmp_path, shuffled_dir):
    good_dir = _generate(tmp_path / "good", 160, seed=12)
    # The floor is off here so that only the comparison with the serving model can stop the push.
    first = run_local(_config(tmp_path, good_dir, gates=GateSettings(min_macro_auc=0.0)), out=io.StringIO())
    assert first["blessed"] is True and first["pushed_model"]
    config = _config(tmp_path, shuffled_dir, gates=GateSettings(min_macro_auc=0.0))
    second = run_local(config, out=io.StringIO())
    assert second["error"] is None
    assert second["baseline_model"] is not None
    assert second["macro_auc"] < first["macro_auc"] - config.gates.max_auc_regression
    assert second["blessed"] is False and second["pushed_model"] is None
    assert any("change in macro_auc" in reason for reason in second["blessing_reasons"]), second
    assert _versions(config) == [os.path.basename(first["pushed_model"])]


def _wait_for_log_line(log_dir, text: str, process: subprocess.Popen, deadline_s: float) -> str | None:
    """Returns the first line containing ``text`` in the run's log files, or None at the deadline.

    Polls the files (the run writes them; no thread of this test waits on another), and gives up
    early when the process exits.
    """
    deadline = time.monotonic() + deadline_s
    offsets: dict[str, int] = {}
    while time.monotonic() < deadline and process.poll() is None:
        for path in sorted(log_dir.glob("*.log")) if log_dir.is_dir() else []:
            with open(path, errors="replace") as f:
                f.seek(offsets.get(str(path), 0))
                chunk = f.read()
            complete = chunk[: chunk.rfind("\n") + 1]  # only whole lines
            offsets[str(path)] = offsets.get(str(path), 0) + len(complete.encode())
            for line in complete.splitlines():
                if text in line:
                    return line
        time.sleep(0.05)
    return None


def test_killed_run_resumes_from_cache_and_pushes_once(tmp_path):
    data_dir = _generate(tmp_path / "data", 60, seed=5)
    root, serving = tmp_path / "pipeline_root", tmp_path / "serving"
    command = [
        sys.executable, os.path.join(REPO, "runner_local.py"), "--data-dir", data_dir,
        "--pipeline-root", str(root), "--serving-dir", str(serving),
        "--image-size", "64", "--epochs", "3", "--min-macro-auc", "0",
    ]
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
    console = tmp_path / "victim_console.txt"
    with open(console, "w") as out:
        victim = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        # Killed inside the Trainer's work: on the first line its embedding loop writes to the run's log.
        # The deadline also fires when no such line (or nothing at all) arrives.
        line = _wait_for_log_line(root / "logs", EMBED_LOG_PREFIX, victim, deadline_s=300)
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
    assert line is not None, f"no embedding line in the log within 300 s:\n{console.read_text()}"
    assert victim.returncode == -signal.SIGKILL, console.read_text()
    assert not os.path.isdir(serving / "facepipe") or not [n for n in os.listdir(serving / "facepipe") if n.isdigit()]

    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    run_id = re.search(r"\(run (\S+)\)", again.stdout).group(1)
    store = metadata_store.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(str(root / "metadata.sqlite"))
    )
    states = {node: run.state for node, run in component_runs(store, run_id).items()}
    for node in (pipeline_def.EXAMPLE_GEN, pipeline_def.STATISTICS_GEN, pipeline_def.TRANSFORM):
        assert states[node] == "cached", states
    assert states[pipeline_def.TRAINER] == "complete" and states[pipeline_def.PUSHER] == "complete", states
    versions = [n for n in os.listdir(serving / "facepipe") if n.isdigit()]
    assert len(versions) == 1
    assert not [n for n in os.listdir(serving / "facepipe") if n.startswith(".staging")]
