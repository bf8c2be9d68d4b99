"""runner_kfp.py's command line: against FakeKfpClient, against an endpoint that does not answer,
and against a server that echoes the token back."""

import json
import os
import socket
import subprocess
import sys

import pytest

from pipeline import kubeflow
from tests.kfp_helpers import (
    COMPILE_TO_GCS,
    IMAGE,
    REPO,
    SECRET,
    FakeKfpClient,
)

# ---------------------------------------------------------------------------------------------
# runner_kfp's command line, against the fake client and against an endpoint that does not answer


def _main(argv, client, capsys, environ=None):
    import runner_kfp

    lines: list[str] = []
    environ = {kubeflow.TOKEN_ENV: SECRET} if environ is None else environ

    def factory(endpoint, token, namespace):
        client.endpoint, client.token, client.namespace = endpoint, token.reveal() if token else None, namespace
        return client

    status = runner_kfp.main(argv, client_factory=factory, environ=environ, out=lines.append)
    captured = capsys.readouterr()
    output = "\n".join(lines) + captured.out + captured.err
    assert SECRET not in output  # the token reaches the client, never the console
    return status, lines, captured.err


def test_cli_run_schedule_unschedule_list(package, capsys):
    client = FakeKfpClient()
    server = ["--endpoint", "https://kfp.example.com/pipeline"]
    status, lines, _ = _main(
        ["run", *server, "--package", package, "--param", 'trainer_config={"epochs": 3}'], client, capsys
    )
    assert status == 0 and client.token == SECRET and client.endpoint == "https://kfp.example.com/pipeline"
    (run,) = client.runs.values()
    assert json.loads(run["params"]["trainer_config"])["epochs"] == 3
    assert lines[-1].startswith("Started run run-")

    schedule = ["schedule", *server, "--package", package, "--schedule-name", "nightly"]
    assert _main([*schedule, "--cron", "0 0 3 * * *"], client, capsys)[0] == 0
    status, lines, _ = _main([*schedule, "--cron", "0 0 5 * * *"], client, capsys)
    assert status == 0 and "replaced (deleted)" in lines[-1]
    assert [r.trigger.cron_schedule.cron for r in client.recurring.values()] == ["0 0 5 * * *"]

    status, lines, _ = _main(["list", *server], client, capsys)
    assert status == 0 and lines[0] == "1 schedule(s) in experiment 'facepipe'" and "nightly" in lines[1]

    assert _main(["unschedule", *server, "--schedule-name", "nightly"], client, capsys)[0] == 0
    status, _, err = _main(["unschedule", *server, "--schedule-name", "nightly"], client, capsys)
    assert status == 1 and "no schedule named 'nightly'" in err


def test_cli_endpoint_and_token_from_the_environment(tmp_path, capsys):
    client = FakeKfpClient()
    token_file = tmp_path / "token"
    token_file.write_text(SECRET)
    environ = {kubeflow.ENDPOINT_ENV: "http://localhost:8080", kubeflow.TOKEN_PATH_ENV: str(token_file)}
    status, lines, _ = _main(["list"], client, capsys, environ=environ)  # loopback (kubectl port-forward): allowed
    assert status == 0 and client.endpoint == "http://localhost:8080" and client.token == SECRET
    assert lines == ["0 schedule(s) in experiment 'facepipe'"]


@pytest.mark.parametrize("endpoint", ["http://kfp.example.com/pipeline", "http://10.0.0.7:8888", "HTTP://kfp"])
def test_a_token_is_never_sent_in_clear_text_to_another_machine(endpoint, capsys):
    client = FakeKfpClient()
    status, _, err = _main(["list", "--endpoint", endpoint], client, capsys)
    assert status == 2 and "refusing to send the bearer token over plain http" in err and client.token is None
    assert SECRET not in err
    status, _, _ = _main(["list", "--endpoint", endpoint, "--insecure"], client, capsys)
    assert status == 0 and client.token == SECRET


def test_cli_server_errors_are_one_line_without_the_token(package, capsys):
    client = FakeKfpClient()
    client.fail_create_recurring = RuntimeError(f"403 Forbidden for Bearer {SECRET}")
    status, _, err = _main(
        ["schedule", "--endpoint", "https://kfp", "--package", package, "--cron", "@daily"], client, capsys
    )
    assert status == 1 and err.count("\n") == 1 and "Kubeflow Pipelines request failed" in err and "***" in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["list"], "needs --endpoint"),
        (["run", "--endpoint", "http://kfp"], "compiling needs --image, --data-dir, --pipeline-root, --serving-dir"),
        (
            [
                "run",
                "--endpoint",
                "http://kfp",
                "--image",
                IMAGE,
                "--data-dir",
                "faces",
                "--pipeline-root",
                "gs://r",
                "--serving-dir",
                "gs://s",
            ],
            "--data-dir must be a URI",
        ),
        (["schedule", "--endpoint", "http://kfp", "--package", "x.yaml", "--cron", "0 3 * * *"], "6 fields"),
        (["run", "--endpoint", "http://kfp", "--package", "missing.yaml"], "does not exist"),
        (["run", "--endpoint", "http://kfp", "--param", "epochs=3", "--image", IMAGE], "unknown runtime parameter"),
        (
            [*COMPILE_TO_GCS, "--beam-profile", "flink"],
            "--job-endpoint",
        ),
        (
            [*COMPILE_TO_GCS, "--output", "p.json"],
            ".yaml",
        ),
    ],
)
def test_cli_usage_errors_exit_2_with_one_line(argv, needle, capsys):
    status, _, err = _main(argv, FakeKfpClient(), capsys)
    assert status == 2 and needle in err and err.count("\n") == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("command", [["list"], ["unschedule", "--schedule-name", "x"], ["run"], ["schedule"]])
def test_unreachable_endpoint_fails_with_one_line_and_no_traceback(command, package):
    # Nothing listens on this port: the real kfp.Client fails to connect.
    argv = [
        sys.executable,
        os.path.join(REPO, "runner_kfp.py"),
        *command,
        "--endpoint",
        f"http://127.0.0.1:{_free_port()}",
    ]
    if command[0] in ("run", "schedule"):
        argv += ["--package", package] + (["--cron", "0 0 3 * * *"] if command[0] == "schedule" else [])
    env = dict(os.environ, **{kubeflow.TOKEN_ENV: SECRET})
    result = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach Kubeflow Pipelines at http://127.0.0.1:")
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_a_server_that_echoes_the_token_never_gets_it_on_the_console(monkeypatch, capsys, caplog):
    """kfp's client logs each failed health check with the server's response (logging.exception)."""
    import http.server
    import threading

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802  (http.server's name)
            body = f"upstream error; your request: {dict(self.headers)}".encode()
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Echo-Authorization", self.headers.get("Authorization", ""))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr("kfp.client.client.time.sleep", lambda seconds: None)  # skip kfp's 5 s retry pauses
    import runner_kfp

    try:
        status = runner_kfp.main(["list", "--endpoint", f"http://127.0.0.1:{server.server_port}"],
                                 environ={kubeflow.TOKEN_ENV: SECRET}, out=lambda line: None)
    finally:
        server.shutdown()
    captured = capsys.readouterr()
    assert status == 1
    assert SECRET not in captured.err + captured.out
    # What logging handlers receive (the console's, or here pytest's): one line each, no traceback, no token.
    kfp_records = [r for r in caplog.records if "healthz" in r.getMessage()]
    assert len(kfp_records) == 5
    for record in kfp_records:
        assert record.exc_info is None and SECRET not in record.getMessage() and "\n" not in record.getMessage()
        assert "HTTP 500" in record.getMessage()
