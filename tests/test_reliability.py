"""Run lock, one-line flag errors, and the stderr log filter."""

import os
import subprocess
import sys
import threading
import time

import pytest

from pipeline import local_run, logs
from pipeline.local_run import RunLockError, run_lock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_second_run_on_same_root_fails_with_clear_message(tmp_path):
    with run_lock(str(tmp_path), "run-A"):
        with pytest.raises(RunLockError) as info:
            with run_lock(str(tmp_path), "run-B"):
                pass
    message = str(info.value)
    assert "another run is using pipeline root" in message
    assert f"pid {os.getpid()}, run run-A" in message and "--wait-for-lock" in message
    with run_lock(str(tmp_path), "run-C"):  # released: free again
        pass


def test_second_run_waits_for_the_lock(tmp_path, monkeypatch):
    a_holds, b_waits, a_leaves = threading.Event(), threading.Event(), threading.Event()

    class Clock:  # run_lock's clock: its poll sleep tells the test that B found the lock taken
        monotonic = staticmethod(time.monotonic)

        @staticmethod
        def sleep(seconds: float) -> None:
            b_waits.set()
            time.sleep(min(seconds, 0.05))

    monkeypatch.setattr(local_run, "time", Clock)

    def hold():
        with run_lock(str(tmp_path), "run-A"):
            a_holds.set()
            assert b_waits.wait(timeout=30)
            a_leaves.set()  # before the lock is released, so B can only get it afterwards

    holder = threading.Thread(target=hold)
    holder.start()
    assert a_holds.wait(timeout=30)
    with run_lock(str(tmp_path), "run-B", wait_seconds=20):
        assert b_waits.is_set() and a_leaves.is_set()
    holder.join(timeout=30)
    assert not holder.is_alive()


def _runner(*flags: str, cwd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "runner_local.py"), *flags],
        capture_output=True, text=True, timeout=120, cwd=cwd, env=env, check=False,
    )


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--data-dir", "/nonexistent/faces"], "does not exist"),
        (["--data-dir", "{empty}"], "is empty"),
        (["--backbone", "alexnet"], "invalid choice: 'alexnet'"),
        (["--filename-pattern", "(?P<age>\\d+"], "not a valid regex"),
        (["--filename-pattern", "(?P<age>\\d+)_(?P<race>\\d)"], "lacks named group(s) gender"),
        (["--epochs", "-1"], "epochs must be >= 1"),
        (["--epochs", "ten"], "invalid int value: 'ten'"),
        (["--image-size", "8"], "image size must be within"),
        (["--serving-dir", "{empty}/serving[1]"], "would read it as a file pattern"),
    ],
)
def test_config_and_flag_errors_are_one_line(tmp_path, flags, expected):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    flags = [f.replace("{empty}", str(empty)) for f in flags]
    result = _runner(*flags, "--pipeline-root", str(tmp_path / "root"), cwd=str(tmp_path))
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr


def test_filter_keeps_noise_in_log_only():
    class Sink:
        def __init__(self):
            self.text = ""

        def write(self, s):
            self.text += s

        def flush(self):
            pass

    log, console = Sink(), Sink()
    f = logs._Filter(log, console)
    lines = [
        "/x/_python_version_support.py:246: FutureWarning: You are using a non-supported Python version (3.10.13).\n",
        "  warnings.warn(message, FutureWarning)\n",
        "real problem: disk full\n",
        "2026-11-24 E external/local_xla/xla/stream_executor/cuda/cuda_dnn.cc] Unable to register cuDNN factory\n",
        "UserWarning: something new\n",
    ]
    for line in lines:
        f.feed(line)
    assert log.text == "".join(lines)
    assert console.text == "real problem: disk full\nUserWarning: something new\n"


def test_stderr_to_log_captures_file_descriptor_2(tmp_path, capfd):
    log_file = tmp_path / "logs" / "run.log"
    with logs.stderr_to_log(str(log_file)):
        os.write(2, b"Could not find cuda drivers on your machine, GPU will not be used.\n")
        os.write(2, b"a line people should see\n")
    assert log_file.read_text() == (
        "Could not find cuda drivers on your machine, GPU will not be used.\na line people should see\n"
    )
    assert "a line people should see" in capfd.readouterr().err


@pytest.mark.parametrize("name", ["../../etc", "a/b", "..", "", "-x", "x" * 64])
def test_pipeline_name_cannot_escape_the_serving_folder(name):
    from pipeline.config import PipelineConfig

    with pytest.raises(ValueError, match="pipeline name"):
        PipelineConfig(data_dir="d", pipeline_root="r", serving_dir="s", pipeline_name=name).validate()


@pytest.mark.parametrize("name", ["30_1_2_20170116174525125.jpg\n.chip.jpg", "../30_1_2_x.jpg", "ü_1_2_x.jpg"])
def test_odd_file_names_are_quarantined_as_data(name):
    import json

    from components.base.labels import UTKFACE_PATTERN, compile_pattern
    from components.image_example_gen import ingest

    entry = ingest.check_file(f"/data/{name}", name, b"\xff\xd8", compile_pattern(UTKFACE_PATTERN))
    assert isinstance(entry, ingest.QuarantineEntry) and entry.reason in {"name_mismatch", "hidden_file"}
    line = entry.to_json()
    assert "\n" not in line and json.loads(line)["path"] == f"/data/{name}"


def test_tfma_empty_slice_warnings_are_noise_but_other_runtime_warnings_are_not():
    tfma = "/x/site-packages/tensorflow_model_analysis/metrics/confusion_matrix_metrics.py:546: RuntimeWarning: "
    assert logs.is_noise(tfma + "divide by zero encountered in divide")
    assert logs.is_noise(tfma + "invalid value encountered in divide")
    assert not logs.is_noise("/x/components/trainer/train.py:10: RuntimeWarning: divide by zero encountered in divide")
