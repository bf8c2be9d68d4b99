"""Kubeflow Pipelines, the client side: cron, run-time parameters, the token, and run / schedule /
unschedule / list against FakeKfpClient (tests/kfp_helpers.py; no server exists here)."""

import json

import pytest

from pipeline import kubeflow
from tests.kfp_helpers import (
    MINI_SPEC,
    SECRET,
    FakeKfpClient,
)

# ---------------------------------------------------------------------------------------------
# Pure logic: cron, parameters, tokens


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


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:8080", "http://[::1]:8080", "http://127.3.4.5"])
def test_loopback_endpoints_are_allowed_over_http(endpoint):
    kubeflow.check_token_transport(endpoint, kubeflow.Token(SECRET))
    kubeflow.check_token_transport("http://kfp.example.com", None)  # no token, nothing to leak


# ---------------------------------------------------------------------------------------------
# Run / schedule / unschedule / list against the fake client


def test_run_once_creates_the_experiment_and_passes_params(package):
    client = FakeKfpClient()
    run_id = kubeflow.run_once(client, package, "facepipe", run_name="nightly", params={"data_root": "gs://b/new"})
    assert client.runs[run_id] == {
        "experiment_id": client.experiments["facepipe"].experiment_id,
        "name": "nightly",
        "params": {"data_root": "gs://b/new"},
    }


def test_schedule_replaces_an_existing_schedule_by_deleting_then_creating(package):
    client = FakeKfpClient()
    first = kubeflow.schedule(client, package, "facepipe", name="facepipe-nightly", cron="0 0 3 * * *", params={})
    other = kubeflow.schedule(client, package, "facepipe", name="facepipe-weekly", cron="0 0 4 * * 0", params={})
    assert first.replaced == () and other.replaced == ()
    client.calls.clear()

    second = kubeflow.schedule(
        client,
        package,
        "facepipe",
        name="facepipe-nightly",
        cron="0 30 2 * * *",
        params={"data_root": "gs://b/x"},
        max_concurrency=2,
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
    result = kubeflow.schedule(client, package, "facepipe", name="facepipe", cron="0 0 3 * * *", params={})
    assert len(result.replaced) == 2
    assert sorted(r.display_name for r in client.recurring.values()) == ["a", "b", "facepipe"]


def test_schedule_checks_everything_before_deleting(package, tmp_path):
    client = FakeKfpClient()
    kept = kubeflow.schedule(client, package, "facepipe", name="facepipe", cron="0 0 3 * * *", params={})
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
                name="facepipe",
                cron=args["cron"],
                params={},
                max_concurrency=args["max_concurrency"],
            )
    assert client.calls == [] and kept.recurring_run_id in client.recurring


def test_schedule_says_so_when_creating_fails_after_deleting(package):
    client = FakeKfpClient()
    old = kubeflow.schedule(client, package, "facepipe", name="facepipe", cron="0 0 3 * * *", params={})
    client.fail_create_recurring = RuntimeError("HTTP 500")
    with pytest.raises(kubeflow.KfpError, match=f"deleted the old schedule 'facepipe' \\({old.recurring_run_id}\\)"):
        kubeflow.schedule(client, package, "facepipe", name="facepipe", cron="0 0 4 * * *", params={})


def test_unschedule_and_list(package):
    client = FakeKfpClient()
    assert kubeflow.unschedule(client, "facepipe", "facepipe") == ()  # no experiment yet: nothing, nothing created
    assert "facepipe" not in client.experiments
    made = kubeflow.schedule(client, package, "facepipe", name="facepipe", cron="0 0 3 * * *", params={})
    kubeflow.schedule(client, package, "facepipe", name="other", cron="@daily", params={})
    listed = kubeflow.list_schedules(client, client.experiments["facepipe"].experiment_id)
    assert [(s.name, s.cron, s.status) for s in listed] == [
        ("facepipe", "0 0 3 * * *", "ENABLED"),
        ("other", "@daily", "ENABLED"),
    ]
    assert kubeflow.unschedule(client, "facepipe", "facepipe") == (made.recurring_run_id,)
    assert [s.name for s in kubeflow.list_schedules(client, client.experiments["facepipe"].experiment_id)] == ["other"]
