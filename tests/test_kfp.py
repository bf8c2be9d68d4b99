"""Kubeflow Pipelines: the compiled spec, its container entrypoints run here, and the client logic.

No KFP server or Kubernetes cluster exists on these machines. What is real: TFX's KubeflowV2
compiler on the one create_pipeline, kfp's own loaders and proto, the component entrypoints
exactly as the spec gives them (run as subprocesses on tiny data), and runner_kfp's error paths
against an endpoint that does not answer. The run/schedule/unschedule/list logic runs against
FakeKfpClient below: an in-memory FAKE of the few kfp.Client methods runner_kfp uses (no server
behind it), answering with kfp_server_api's own model classes and reading packages with the
function kfp.Client uses for that.
"""

import dataclasses
import importlib.util
import itertools
import json
import os
import socket
import subprocess
import sys
import types

import pytest

from pipeline import kubeflow, runtime_params
from pipeline.config import PipelineConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = "europe-docker.pkg.dev/facepipe-test/images/facepipe:0.1.0"
# `runner_kfp.py compile` with every required flag; cases append the flag under test.
COMPILE_TO_GCS = [
    "compile", "--image", IMAGE, "--data-dir", "gs://d", "--pipeline-root", "gs://r", "--serving-dir", "gs://s"
]
SECRET = "s3cr3t-t0ken-value-4f1d"


# ---------------------------------------------------------------------------------------------
# A fake kfp.Client (no server exists here)


class FakeKfpClient:
    """FAKE, in-memory stand-in for the kfp.Client (kfp 2.5) methods runner_kfp uses.

    Keeps experiments and recurring runs in dicts, records every call in ``calls`` (in order),
    serves list_recurring_runs in pages of ``page_limit``, and reads packages with kfp's own
    package reader, so a package kfp.Client would reject is rejected here too.
    """

    def __init__(self, token: str | None = None, page_limit: int = 2):
        import kfp_server_api

        self.api = kfp_server_api
        self.token = token
        self.page_limit = page_limit
        self.calls: list[tuple] = []
        self.experiments: dict[str, object] = {}
        self.recurring: dict[str, object] = {}
        self.runs: dict[str, dict] = {}
        self.fail_create_recurring: Exception | None = None
        self._ids = itertools.count(1)

    @staticmethod
    def _read_package(path: str) -> None:
        from kfp.client.client import _extract_pipeline_yaml  # what kfp.Client uses to read a package

        _extract_pipeline_yaml(path)

    def create_experiment(self, name, description=None, namespace=None):
        self.calls.append(("create_experiment", name))
        if name not in self.experiments:
            self.experiments[name] = self.api.V2beta1Experiment(
                experiment_id=f"exp-{next(self._ids)}", display_name=name, namespace=namespace
            )
        return self.experiments[name]

    def get_experiment(self, experiment_id=None, experiment_name=None, namespace=None):
        self.calls.append(("get_experiment", experiment_name))
        if experiment_name not in self.experiments:
            raise ValueError(f"No experiment is found with name {experiment_name}.")  # kfp's message
        return self.experiments[experiment_name]

    def create_run_from_pipeline_package(self, pipeline_file, arguments=None, run_name=None, experiment_id=None, **_):
        self._read_package(pipeline_file)
        run_id = f"run-{next(self._ids)}"
        self.calls.append(("create_run", run_id, run_name))
        self.runs[run_id] = {"experiment_id": experiment_id, "name": run_name, "params": dict(arguments or {})}
        return types.SimpleNamespace(run_id=run_id)

    def create_recurring_run(
        self,
        experiment_id,
        job_name,
        cron_expression=None,
        pipeline_package_path=None,
        params=None,
        max_concurrency=1,
        no_catchup=None,
        enabled=True,
        **_,
    ):
        self._read_package(pipeline_package_path)
        if self.fail_create_recurring is not None:
            raise self.fail_create_recurring
        recurring_run_id = f"rr-{next(self._ids)}"
        self.calls.append(("create_recurring_run", recurring_run_id, job_name))
        self.recurring[recurring_run_id] = self.api.V2beta1RecurringRun(
            recurring_run_id=recurring_run_id,
            display_name=job_name,
            experiment_id=experiment_id,
            trigger=self.api.V2beta1Trigger(cron_schedule=self.api.V2beta1CronSchedule(cron=cron_expression)),
            runtime_config=self.api.V2beta1RuntimeConfig(parameters=dict(params or {})),
            max_concurrency=str(max_concurrency),
            no_catchup=no_catchup,
            status="ENABLED" if enabled else "DISABLED",
            created_at="2026-01-01T00:00:00Z",
        )
        return self.recurring[recurring_run_id]

    def list_recurring_runs(
        self, page_token="", page_size=10, sort_by="", experiment_id=None, namespace=None, filter=None
    ):  # noqa: A002  (kfp's name)
        self.calls.append(("list_recurring_runs", experiment_id, page_token))
        matching = [r for r in self.recurring.values() if experiment_id is None or r.experiment_id == experiment_id]
        start = int(page_token or 0)
        size = min(page_size, self.page_limit)
        page = matching[start : start + size]
        more = start + size < len(matching)
        return self.api.V2beta1ListRecurringRunsResponse(
            recurring_runs=page or None, total_size=len(matching), next_page_token=str(start + size) if more else None
        )

    def delete_recurring_run(self, recurring_run_id):
        self.calls.append(("delete_recurring_run", recurring_run_id))
        del self.recurring[recurring_run_id]
        return {}


MINI_SPEC = {
    # A small but valid KFP pipeline spec with two parameters, for client-logic tests.
    "pipelineInfo": {"name": "facepipe"},
    "schemaVersion": "2.1.0",
    "sdkVersion": "test",
    "components": {},
    "deploymentSpec": {},
    "root": {
        "dag": {"tasks": {}},
        "inputDefinitions": {
            "parameters": {
                "data_root": {"parameterType": "STRING", "defaultValue": "gs://b/faces", "isOptional": True},
                "trainer_config": {
                    "parameterType": "STRING",
                    "defaultValue": json.dumps({"batch_size": 32, "epochs": 10, "image_size": 128}),
                    "isOptional": True,
                },
                "max_images": {"parameterType": "NUMBER_INTEGER", "defaultValue": 5, "isOptional": True},
            }
        },
    },
}


@pytest.fixture
def package(tmp_path):
    path = str(tmp_path / "facepipe.yaml")
    kubeflow.write_package(json.loads(json.dumps(MINI_SPEC)), path)
    return path


# ---------------------------------------------------------------------------------------------
# Pure logic: paths, cron, parameters, tokens


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


@pytest.mark.parametrize("cron", ["0 0 3 * * *", "0 30 */6 * * 1-5", "@daily", "@every 6h", " 0 0 3 ? * MON "])
def test_valid_cron(cron):
    assert kubeflow.validate_cron(cron) == cron.strip()


@pytest.mark.parametrize(
    ("cron", "needle"),
    [
        ("0 3 * * *", "6 fields"),
        ("", "6 fields"),
        ("0 0 3 * * * *", "7"),
        ("0 0 3 * * {x}", "not a cron field"),
        ("@sometimes", "6 fields"),
    ],
)
def test_invalid_cron_names_the_problem(cron, needle):
    with pytest.raises(ValueError, match="--cron") as info:
        kubeflow.validate_cron(cron)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_params_are_typed_and_json_objects_merge_into_defaults(package):
    parameters = kubeflow.pipeline_parameters(kubeflow.load_pipeline_spec(package))
    assert parameters["max_images"] == kubeflow.ParameterInfo("NUMBER_INTEGER", 5)
    values = kubeflow.resolve_params(
        parameters, ["data_root=gs://b/faces-2026-01", 'trainer_config={"epochs": 20}', "max_images=7"]
    )
    assert values["data_root"] == "gs://b/faces-2026-01"
    assert values["max_images"] == 7
    assert json.loads(values["trainer_config"]) == {"batch_size": 32, "epochs": 20, "image_size": 128}


@pytest.mark.parametrize(
    ("assignment", "needle"),
    [
        ("epochs=3", "unknown runtime parameter 'epochs'"),
        ("data_root", "NAME=VALUE"),
        ("max_images=many", "NUMBER_INTEGER"),
        ('trainer_config={"epoch": 2}', "unknown key(s) epoch"),
        ("trainer_config=20", "JSON object"),
    ],
)
def test_bad_params_are_rejected(package, assignment, needle):
    parameters = kubeflow.pipeline_parameters(kubeflow.load_pipeline_spec(package))
    with pytest.raises(ValueError) as info:
        kubeflow.resolve_params(parameters, [assignment])
    assert needle in str(info.value)


def test_load_pipeline_spec_is_strict(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(json.dumps({**MINI_SPEC, "pipelineJobName": "x"}))  # a field PipelineSpec does not have
    with pytest.raises(ValueError, match="not a KFP pipeline spec"):
        kubeflow.load_pipeline_spec(str(path))


def test_finish_pipeline_spec_adds_defaults_and_root():
    spec = json.loads(json.dumps(MINI_SPEC))
    kubeflow.finish_pipeline_spec(spec, {"data_root": "gs://x"}, "gs://root")
    assert spec["root"]["inputDefinitions"]["parameters"]["data_root"]["defaultValue"] == "gs://x"
    assert spec["defaultPipelineRoot"] == "gs://root"
    with pytest.raises(ValueError, match="not declared"):
        kubeflow.finish_pipeline_spec(spec, {"nope": 1}, "gs://root")


def test_token_from_env_never_shows_itself(tmp_path):
    token = kubeflow.token_from_env({kubeflow.TOKEN_ENV: f" {SECRET}\n"})
    assert token.reveal() == SECRET
    assert SECRET not in repr(token) and SECRET not in str(token) and SECRET not in f"{[token]}"
    token_file = tmp_path / "token"
    token_file.write_text(SECRET + "\n")
    assert kubeflow.token_from_env({kubeflow.TOKEN_PATH_ENV: str(token_file)}).reveal() == SECRET
    assert kubeflow.token_from_env({}) is None
    with pytest.raises(ValueError, match="cannot read the token file"):
        kubeflow.token_from_env({kubeflow.TOKEN_PATH_ENV: str(tmp_path / "missing")})


def test_error_lines_mask_the_token():
    token = kubeflow.Token(SECRET)
    error = RuntimeError(f"request with Authorization: Bearer {SECRET} failed\nsecond line")
    line = kubeflow.one_line(error, token)
    assert SECRET not in line and "\n" not in line and "***" in line

    class ApiException(Exception):
        status, reason = 401, "Unauthorized"

    assert kubeflow.one_line(ApiException(f"headers: {SECRET}"), token) == "HTTP 401 Unauthorized"


# ---------------------------------------------------------------------------------------------
# Run / schedule / unschedule / list against the fake client


def test_run_once_creates_the_experiment_and_passes_params(package):
    client = FakeKfpClient()
    run_id = kubeflow.run_once(client, package, "facepipe", "nightly", {"data_root": "gs://b/new"})
    assert client.runs[run_id] == {
        "experiment_id": client.experiments["facepipe"].experiment_id,
        "name": "nightly",
        "params": {"data_root": "gs://b/new"},
    }


def test_schedule_replaces_an_existing_schedule_by_deleting_then_creating(package):
    client = FakeKfpClient()
    first = kubeflow.schedule(client, package, "facepipe", "facepipe-nightly", "0 0 3 * * *", {})
    other = kubeflow.schedule(client, package, "facepipe", "facepipe-weekly", "0 0 4 * * 0", {})
    assert first.replaced == () and other.replaced == ()
    client.calls.clear()

    second = kubeflow.schedule(
        client, package, "facepipe", "facepipe-nightly", "0 30 2 * * *", {"data_root": "gs://b/x"}, max_concurrency=2
    )
    assert second.replaced == (first.recurring_run_id,)
    mutations = [c[0] for c in client.calls if c[0] in ("delete_recurring_run", "create_recurring_run")]
    assert mutations == ["delete_recurring_run", "create_recurring_run"]  # delete first, then create
    assert first.recurring_run_id not in client.recurring
    assert other.recurring_run_id in client.recurring  # another schedule of the experiment is untouched
    new = client.recurring[second.recurring_run_id]
    assert new.display_name == "facepipe-nightly"
    assert new.trigger.cron_schedule.cron == "0 30 2 * * *"
    assert new.runtime_config.parameters == {"data_root": "gs://b/x"}
    assert new.no_catchup is True and new.max_concurrency == "2"


def test_schedule_finds_duplicates_across_pages(package):
    client = FakeKfpClient(page_limit=1)
    for name in ("a", "facepipe", "b", "facepipe"):  # two of the same name, e.g. made by hand in the UI
        client.create_recurring_run(
            client.create_experiment("facepipe").experiment_id,
            name,
            cron_expression="0 0 1 * * *",
            pipeline_package_path=package,
        )
    result = kubeflow.schedule(client, package, "facepipe", "facepipe", "0 0 3 * * *", {})
    assert len(result.replaced) == 2
    assert sorted(r.display_name for r in client.recurring.values()) == ["a", "b", "facepipe"]


def test_schedule_checks_everything_before_deleting(package, tmp_path):
    client = FakeKfpClient()
    kept = kubeflow.schedule(client, package, "facepipe", "facepipe", "0 0 3 * * *", {})
    client.calls.clear()
    for bad in (
        dict(cron="0 3 * * *"),
        dict(package_path=str(tmp_path / "missing.yaml")),
        dict(package_path=str(tmp_path / "p.json")),
        dict(max_concurrency=0),
    ):
        args = dict(package_path=package, cron="0 0 4 * * *", max_concurrency=1) | bad
        with pytest.raises(ValueError):
            kubeflow.schedule(
                client,
                args["package_path"],
                "facepipe",
                "facepipe",
                args["cron"],
                {},
                max_concurrency=args["max_concurrency"],
            )
    assert client.calls == [] and kept.recurring_run_id in client.recurring


def test_schedule_says_so_when_creating_fails_after_deleting(package):
    client = FakeKfpClient()
    old = kubeflow.schedule(client, package, "facepipe", "facepipe", "0 0 3 * * *", {})
    client.fail_create_recurring = RuntimeError("HTTP 500")
    with pytest.raises(kubeflow.KfpError, match=f"deleted the old schedule 'facepipe' \\({old.recurring_run_id}\\)"):
        kubeflow.schedule(client, package, "facepipe", "facepipe", "0 0 4 * * *", {})


def test_unschedule_and_list(package):
    client = FakeKfpClient()
    assert kubeflow.unschedule(client, "facepipe", "facepipe") == ()  # no experiment yet: nothing, nothing created
    assert "facepipe" not in client.experiments
    made = kubeflow.schedule(client, package, "facepipe", "facepipe", "0 0 3 * * *", {})
    kubeflow.schedule(client, package, "facepipe", "other", "@daily", {})
    listed = kubeflow.list_schedules(client, client.experiments["facepipe"].experiment_id)
    assert [(s.name, s.cron, s.status) for s in listed] == [
        ("facepipe", "0 0 3 * * *", "ENABLED"),
        ("other", "@daily", "ENABLED"),
    ]
    assert kubeflow.unschedule(client, "facepipe", "facepipe") == (made.recurring_run_id,)
    assert [s.name for s in kubeflow.list_schedules(client, client.experiments["facepipe"].experiment_id)] == ["other"]


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


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:8080", "http://[::1]:8080", "http://127.3.4.5"])
def test_loopback_endpoints_are_allowed_over_http(endpoint):
    kubeflow.check_token_transport(endpoint, kubeflow.Token(SECRET))
    kubeflow.check_token_transport("http://kfp.example.com", None)  # no token, nothing to leak


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


# ---------------------------------------------------------------------------------------------
# The image (no Docker engine here: the Dockerfile is checked against the repository and the spec)


def _dockerfile_instructions() -> list[tuple[str, str]]:
    with open(os.path.join(REPO, "Dockerfile")) as f:
        text = f.read()
    logical, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            logical.append(current.strip())
            current = ""
    return [(item.split(None, 1)[0].upper(), item.split(None, 1)[1]) for item in logical]


def _docker_ignored(relative: str, patterns: list[str]) -> bool:
    import fnmatch

    parts = relative.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]  # the path and its parent folders
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        for candidate in candidates:
            tails = ["/".join(candidate.split("/")[i:]) for i in range(len(candidate.split("/")))]
            if fnmatch.fnmatch(candidate, pattern) or (
                pattern.startswith("**/") and any(fnmatch.fnmatch(t, bare) for t in tails)
            ):
                return True
    return False


def test_dockerfile_installs_this_package_from_the_lock_on_the_tfx_image():
    instructions = _dockerfile_instructions()
    assert instructions[0] == ("FROM", "gcr.io/tfx-oss-public/tfx:1.16.0")
    env = " ".join(rest for kind, rest in instructions if kind == "ENV")
    assert "TF_USE_LEGACY_KERAS=1" in env.split()
    assert [rest for kind, rest in instructions if kind == "WORKDIR"] == [kubeflow.CONTAINER_REPO_ROOT]
    runs = [rest for kind, rest in instructions if kind == "RUN"]
    lock_install = next(i for i, r in enumerate(runs) if "uv pip install" in r and "-r requirements/lock.txt" in r)
    package_install = next(i for i, r in enumerate(runs) if "uv pip install" in r and "--no-deps ." in r)
    assert lock_install < package_install

    with open(os.path.join(REPO, ".dockerignore")) as f:
        ignored = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    copied = []
    for kind, rest in instructions:
        if kind != "COPY":
            continue
        *sources, destination = rest.split()
        for source in sources:
            path = os.path.join(REPO, source)
            assert os.path.exists(path), f"COPY {source}: not in the repository"
            files = (
                [path]
                if os.path.isfile(path)
                else [os.path.join(d, n) for d, _, names in os.walk(path) for n in names if "__pycache__" not in d]
            )
            for file in files:
                relative = os.path.relpath(file, REPO)
                assert not _docker_ignored(relative, ignored), f"{relative} is copied but .dockerignore excludes it"
                copied.append(relative)
    # What the compiled spec points at inside the image, and the packages setup.py installs.
    inside = lambda p: os.path.relpath(p, kubeflow.CONTAINER_REPO_ROOT)  # noqa: E731
    assert inside(kubeflow.CONTAINER_SCHEMA_PATH) in copied
    assert inside(kubeflow.CONTAINER_SETUP_FILE) in copied
    assert "requirements/lock.txt" in copied
    for package in ("pipeline", "components"):
        assert f"{package}/__init__.py" in copied
    assert _docker_ignored(".venv/bin/python", ignored) and _docker_ignored("outputs/kfp/x.yaml", ignored)


# ---------------------------------------------------------------------------------------------
# The compiled spec (TFX's KubeflowV2 compiler on create_pipeline)


def _kfp_config(**changes) -> PipelineConfig:
    config = PipelineConfig(
        data_dir="gs://facepipe-test/faces",
        pipeline_root="gs://facepipe-test/root",
        serving_dir="gs://facepipe-test/serving",
        schema_path=kubeflow.CONTAINER_SCHEMA_PATH,
        epochs=7,
    )
    return dataclasses.replace(config, **changes)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Compiles the pipeline twice: flat data folder, and span folders (spans="latest")."""
    out = tmp_path_factory.mktemp("kfp")
    flat = kubeflow.compile_pipeline(_kfp_config(), IMAGE, str(out / "facepipe.yaml"))
    spans = kubeflow.compile_pipeline(_kfp_config(spans="latest"), IMAGE, str(out / "facepipe-spans.yaml"))
    return {"flat": (flat, str(out / "facepipe.yaml")), "spans": (spans, str(out / "facepipe-spans.yaml"))}


def _kfp_graph(spec: dict) -> tuple[set, set]:
    edges, wiring = set(), set()
    for name, task in spec["root"]["dag"]["tasks"].items():
        for dep in task.get("dependentTasks", []):
            edges.add((dep, name))
        for key, source in task.get("inputs", {}).get("artifacts", {}).items():
            producer = source["taskOutputArtifact"]["producerTask"]
            edges.add((producer, name))
            wiring.add((name, key, producer, source["taskOutputArtifact"]["outputArtifactKey"]))
    return edges, wiring


def _local_graph(config: PipelineConfig) -> tuple[set, set, set]:
    from tfx.dsl.compiler import compiler

    from pipeline.pipeline import create_pipeline

    ir = compiler.Compiler().compile(create_pipeline(config))
    nodes, edges, wiring = set(), set(), set()
    for node in ir.nodes:
        pn = node.pipeline_node
        nodes.add(pn.node_info.id)
        edges |= {(up, pn.node_info.id) for up in pn.upstream_nodes}
        for key, channels in pn.inputs.inputs.items():
            for c in channels.channels:
                wiring.add((pn.node_info.id, key, c.producer_node_query.id, c.output_key))
    return nodes, edges, wiring


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

    local = {c.id: c for c in create_pipeline(_kfp_config()).components}
    assert kubeflow.runtime_parameter_defaults(create_pipeline(_kfp_config())) == {}  # local: no runtime parameters
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
    kfp_edges, kfp_wiring = _kfp_graph(spec)
    nodes, edges, wiring = _local_graph(_kfp_config(metadata_path=None))
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
    spec = kubeflow.compile_pipeline(_kfp_config(), IMAGE, path, target=kubeflow.TARGET_VERTEX)
    with open(path) as f:
        job = json.load(f)
    assert job["pipelineSpec"] == spec == compiled["flat"][0]  # the same spec as the .yaml
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "gs://facepipe-test/root"
    json_format.ParseDict(job["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())  # strict
    with pytest.raises(ValueError, match="must be a .json file"):
        kubeflow.compile_pipeline(_kfp_config(), IMAGE, str(tmp_path / "x.yaml"), target=kubeflow.TARGET_VERTEX)
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


# ---------------------------------------------------------------------------------------------
# Container entrypoints from the compiled spec, executed here on tiny data


def _executor_input(spec: dict, task_name: str, params: dict, out_dir) -> dict:
    """The ExecutorInput KFP's launcher would give the task: parameters from the spec, outputs under out_dir."""
    task = spec["root"]["dag"]["tasks"][task_name]
    component = spec["components"][task["componentRef"]["name"]]
    assert not task.get("inputs", {}).get("artifacts"), "helper handles tasks without input artifacts only"
    defaults = spec["root"]["inputDefinitions"]["parameters"]
    values = {}
    for key, source in task["inputs"]["parameters"].items():
        if "runtimeValue" in source:
            values[key] = source["runtimeValue"]["constant"]
        else:
            name = source["componentInputParameter"]
            values[key] = params.get(name, defaults[name]["defaultValue"])
    outputs = {
        key: {
            "artifacts": [
                {"name": f"{task_name}-{key}", "type": d["artifactType"], "uri": str(out_dir / key), "metadata": {}}
            ]
        }
        for key, d in component["outputDefinitions"]["artifacts"].items()
    }
    return {
        "inputs": {"parameterValues": values},
        "outputs": {"artifacts": outputs, "outputFile": str(out_dir / "executor_output.json")},
    }


def _run_entrypoint(command: dict, executor_input: dict, cwd) -> subprocess.CompletedProcess:
    """Runs a container command of the spec with this venv's Python, {{$}} replaced by the ExecutorInput."""
    assert command["command"][0] == "python"
    argv = [sys.executable, *command["command"][1:]]
    argv += [json.dumps(executor_input) if a == "{{$}}" else a for a in command["args"]]
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")  # as the Dockerfile sets
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=480, env=env, cwd=str(cwd))


def _read_executor_output(path):
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    with open(path) as f:
        return json_format.Parse(f.read(), pipeline_spec_pb2.ExecutorOutput())


@pytest.mark.slow
def test_example_gen_container_runs_on_a_tiny_image_folder(compiled, tmp_path):
    """The executor step as open-source KFP runs it (no driver step): data_root given at run time."""
    import tensorflow as tf

    from components import synthetic_data

    spec, _ = compiled["flat"]
    data = tmp_path / "faces"
    report = synthetic_data.generate(
        data, synthetic_data.SyntheticSpec(num_images=10, seed=3, image_size=48, malformed_fraction=0.0)
    )
    (data / "not_a_face_name.jpg").write_bytes(b"\xff\xd8 not an image")
    out = tmp_path / "ImageExampleGen"
    executor_input = _executor_input(spec, "ImageExampleGen", {runtime_params.DATA_ROOT: str(data)}, out)
    container = spec["deploymentSpec"]["executors"][spec["components"]["ImageExampleGen"]["executorLabel"]]["container"]

    result = _run_entrypoint(container, executor_input, tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]

    output = _read_executor_output(out / "executor_output.json")
    (artifact,) = output.artifacts["examples"].artifacts
    assert artifact.uri == str(out / "examples")
    assert json.loads(artifact.metadata["split_names"]) == ["train", "eval"]
    counts = {}
    for split in ("train", "eval"):
        files = tf.io.gfile.glob(str(out / "examples" / f"Split-{split}" / "*.gz"))
        counts[split] = sum(1 for _ in tf.data.TFRecordDataset(files, compression_type="GZIP"))
    assert sum(counts.values()) == report.written == 10 and min(counts.values()) > 0
    quarantine = (out / "examples" / "quarantine.jsonl").read_text().splitlines()
    assert len(quarantine) == 1 and "not_a_face_name.jpg" in quarantine[0]


@pytest.mark.slow
def test_example_gen_step_resolves_the_span_given_at_run_time(compiled, tmp_path):
    """No driver step on open-source KFP: the executor itself reads the span that range_config names."""
    from components import synthetic_data

    spec, _ = compiled["spans"]
    data = tmp_path / "faces"
    for span, n in ((1, 4), (2, 6)):
        synthetic_data.generate(
            data / f"span-{span}", synthetic_data.SyntheticSpec(num_images=n, seed=span, image_size=32,
                                                               malformed_fraction=0.0)
        )
    out = tmp_path / "ImageExampleGen"
    params = {
        runtime_params.DATA_ROOT: str(data),
        runtime_params.RANGE_CONFIG: json.dumps({"static_range": {"start_span_number": 1, "end_span_number": 1}}),
    }
    executor_input = _executor_input(spec, "ImageExampleGen", params, out)
    container = spec["deploymentSpec"]["executors"][spec["components"]["ImageExampleGen"]["executorLabel"]]["container"]

    result = _run_entrypoint(container, executor_input, tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]

    output = _read_executor_output(out / "executor_output.json")
    (artifact,) = output.artifacts["examples"].artifacts
    assert artifact.metadata["span"] == 1 and artifact.metadata["files_found"] == 4
    assert len(artifact.metadata["data_fingerprint"]) == 64


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
