"""Beam runner profiles: argument construction, validation, and Beam's own reading of the arguments."""

import argparse
import sys

import pytest

from pipeline import beam_profiles as bp
from pipeline.cli import LOCAL_SETUP_FILE, add_pipeline_flags, beam_profile_from_args, config_from_args

DATAFLOW = dict(gcp_project="my-project-1", gcp_region="europe-west4", temp_location="gs://bucket/tmp")


def test_in_memory_default_has_no_arguments():
    # Any Beam argument makes TFX build a TFX sdist in every Beam component; the default must stay empty.
    assert bp.beam_args(bp.BeamProfile()) == ()
    options = bp.parse_with_beam(())
    assert options["runner"] is None and options["direct_num_workers"] == 1


def test_multi_processing_uses_a_fixed_worker_count():
    args = bp.beam_args(bp.BeamProfile(bp.MULTI_PROCESSING, workers=3))
    assert args == ("--direct_running_mode=multi_processing", "--direct_num_workers=3")
    options = bp.parse_with_beam(args)
    assert options["direct_running_mode"] == "multi_processing" and options["direct_num_workers"] == 3


@pytest.mark.parametrize("workers", [None, 0, -2])
def test_multi_processing_rejects_missing_or_zero_workers(workers):
    with pytest.raises(ValueError, match="--beam-workers") as info:
        bp.beam_args(bp.BeamProfile(bp.MULTI_PROCESSING, workers=workers))
    assert "\n" not in str(info.value)


def test_dataflow_arguments_parse_as_dataflow_options():
    args = bp.beam_args(bp.BeamProfile(bp.DATAFLOW, setup_file="/facepipe/setup.py", workers=20, **DATAFLOW))
    options = bp.parse_with_beam(args)
    assert options["runner"] == "DataflowRunner"
    assert options["project"] == "my-project-1" and options["region"] == "europe-west4"
    assert options["temp_location"] == "gs://bucket/tmp"
    assert options["setup_file"] == "/facepipe/setup.py"
    assert options["max_num_workers"] == 20


def test_dataflow_with_container_image_instead_of_setup_file():
    args = bp.beam_args(
        bp.BeamProfile(bp.DATAFLOW, sdk_container_image="europe-docker.pkg.dev/p/r/facepipe:1", **DATAFLOW)
    )
    options = bp.parse_with_beam(args)
    assert options["sdk_container_image"] == "europe-docker.pkg.dev/p/r/facepipe:1"
    assert options["setup_file"] is None


@pytest.mark.parametrize(
    ("changes", "flag"),
    [
        ({"gcp_project": None}, "--gcp-project"),
        ({"gcp_region": None}, "--gcp-region"),
        ({"temp_location": None}, "--temp-location"),
        ({"temp_location": "/tmp/beam"}, "--temp-location"),
        ({"gcp_region": "Europe West"}, "--gcp-region"),
        ({"gcp_project": "X"}, "--gcp-project"),
        ({"setup_file": None}, "--setup-file"),
        ({"sdk_container_image": "img:1"}, "--sdk-container-image"),  # together with setup_file
        ({"setup_file": "/facepipe/requirements.txt"}, "--setup-file"),
        ({"job_endpoint": "flink:8099"}, "--job-endpoint"),
        ({"gcp_region": "us-central1\n"}, "--gcp-region"),  # "$" matched before a trailing newline
        ({"gcp_project": "my-project-1\n"}, "--gcp-project"),
        ({"gcp_region": "us-central١"}, "--gcp-region"),  # \d matched Unicode digits
    ],
)
def test_dataflow_errors_name_the_option(changes, flag):
    settings = {**DATAFLOW, "setup_file": "/facepipe/setup.py", **changes}
    with pytest.raises(ValueError) as info:
        bp.beam_args(bp.BeamProfile(bp.DATAFLOW, **settings))
    assert flag in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(("name", "runner"), [(bp.FLINK, "FlinkRunner"), (bp.SPARK, "SparkRunner")])
def test_portable_runners_use_the_job_server(name, runner):
    args = bp.beam_args(bp.BeamProfile(name, job_endpoint="beam-job-server.flink:8099"))
    options = bp.parse_with_beam(args)
    assert options["runner"] == runner
    assert options["job_endpoint"] == "beam-job-server.flink:8099"
    # Default environment: the Beam worker-pool sidecar next to each task manager / executor.
    assert options["environment_type"] == "EXTERNAL" and options["environment_config"] == "localhost:50000"


def test_flink_parallelism_and_docker_environment():
    profile = bp.BeamProfile(
        bp.FLINK,
        job_endpoint="jobserver:8099",
        workers=8,
        environment_type="DOCKER",
        environment_config="europe-docker.pkg.dev/p/r/facepipe:1",
    )
    options = bp.parse_with_beam(bp.beam_args(profile))
    assert options["parallelism"] == 8
    assert options["environment_type"] == "DOCKER"
    assert options["environment_config"] == "europe-docker.pkg.dev/p/r/facepipe:1"


@pytest.mark.parametrize(
    ("profile", "flag"),
    [
        (bp.BeamProfile(bp.FLINK), "--job-endpoint"),
        (bp.BeamProfile(bp.SPARK, job_endpoint="http://spark:8099"), "--job-endpoint"),
        (bp.BeamProfile(bp.SPARK, job_endpoint="spark:8099", workers=4), "--beam-workers"),
        (bp.BeamProfile(bp.FLINK, job_endpoint="flink:8099\n"), "--job-endpoint"),
        (bp.BeamProfile(bp.FLINK, job_endpoint="flink:٨٠٩٩"), "--job-endpoint"),
        (bp.BeamProfile(bp.FLINK, job_endpoint="f:8099", environment_type="DOCKER"), "--beam-environment-config"),
        (bp.BeamProfile(bp.FLINK, job_endpoint="f:8099", environment_type="PROCESS"), "--beam-environment-config"),
        (bp.BeamProfile(bp.FLINK, job_endpoint="f:8099", environment_type="KUBERNETES"), "--beam-environment-type"),
        (
            bp.BeamProfile(bp.FLINK, job_endpoint="f:8099", environment_type="LOOPBACK", environment_config="x"),
            "--beam-environment-config",
        ),
        (bp.BeamProfile(bp.FLINK, job_endpoint="f:8099", gcp_project="my-project-1"), "--gcp-project"),
        (bp.BeamProfile(bp.IN_MEMORY, workers=2), "--beam-workers"),
        (bp.BeamProfile(bp.IN_MEMORY, job_endpoint="f:8099"), "--job-endpoint"),
        (bp.BeamProfile(bp.MULTI_PROCESSING, workers=2, setup_file="/x/setup.py"), "--setup-file"),
        (bp.BeamProfile("local"), "--beam-profile"),
        (bp.BeamProfile(extra_args=("direct_num_workers=2",)), "--beam-arg"),
    ],
)
def test_bad_profiles_name_the_option(profile, flag):
    with pytest.raises(ValueError) as info:
        bp.beam_args(profile)
    assert flag in str(info.value) and "\n" not in str(info.value)


def test_extra_arguments_come_after_the_profile():
    args = bp.beam_args(bp.BeamProfile(bp.MULTI_PROCESSING, workers=2, extra_args=("--experiments=foo",)))
    assert args[-1] == "--experiments=foo"
    assert bp.parse_with_beam(args)["experiments"] == ["foo"]


def test_parse_with_beam_rejects_unknown_options():
    # Beam itself would only log and ignore a misspelled option; the check makes it an error.
    with pytest.raises(ValueError, match="--num_direct_workers"):
        bp.parse_with_beam(("--num_direct_workers=2",))


def _args(argv: list[str], setup_file_default: str = LOCAL_SETUP_FILE) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_pipeline_flags(parser, setup_file_default=setup_file_default)
    return parser.parse_args(argv)


def test_cli_flags_build_the_profile_into_the_config():
    args = _args(["--beam-profile", "multi-processing", "--beam-workers", "2", "--beam-arg=--experiments=x"])
    config = config_from_args(args, data_dir="/d", pipeline_root="/r", serving_dir="/s", metadata_path=None)
    assert config.beam_pipeline_args == (
        "--direct_running_mode=multi_processing",
        "--direct_num_workers=2",
        "--experiments=x",
    )


def test_cli_default_is_in_memory_without_arguments():
    config = config_from_args(_args([]), data_dir="/d", pipeline_root="/r", serving_dir="/s", metadata_path=None)
    assert config.beam_pipeline_args == ()


def test_cli_dataflow_uses_the_runner_default_setup_file():
    argv = ["--beam-profile", "dataflow", "--gcp-project", "my-project-1", "--gcp-region", "us-central1"]
    argv += ["--temp-location", "gs://b/tmp"]
    assert beam_profile_from_args(_args(argv)).setup_file == LOCAL_SETUP_FILE
    assert beam_profile_from_args(_args(argv, "/facepipe/setup.py")).setup_file == "/facepipe/setup.py"
    with_image = beam_profile_from_args(_args([*argv, "--sdk-container-image", "img:1"]))
    assert with_image.setup_file is None and with_image.sdk_container_image == "img:1"


def test_cli_errors_are_value_errors_naming_the_flag():
    with pytest.raises(ValueError, match="--job-endpoint"):
        config_from_args(
            _args(["--beam-profile", "spark"]), data_dir="/d", pipeline_root="/r", serving_dir="/s", metadata_path=None
        )


def _runner_options() -> list[str]:
    """Every option string of runner_local.py's parser (the README's flags table is built the same way)."""
    import runner_local

    return [s for action in runner_local.build_parser()._actions for s in action.option_strings]


def _absl_would_read(option: str, absl_flags) -> bool:
    """Whether absl's parser, given ``option`` in argv, would take it as one of its flags."""
    name = option.lstrip("-")
    return name in absl_flags or (name.startswith("no") and name[2:] in absl_flags)


def test_no_runner_flag_is_an_absl_flag_that_tfx_reads_from_sys_argv(monkeypatch):
    # With any Beam argument (portable, multi_processing, flink, ...) TFX's BaseBeamExecutor runs
    # absl's FLAGS(sys.argv + beam_args, known_only=True) in the runner's process: a runner flag that
    # absl also knows would be parsed a second time, by absl (pytest's "-v" was: --verbosity).
    from absl import flags
    from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor

    from components.image_example_gen.executor import Executor as ImageExampleGenExecutor
    from pipeline import pipeline  # noqa: F401  every component and executor: every absl flag they define

    known = set(flags.FLAGS)
    assert _absl_would_read("-v", known), "the check itself: absl's -v (verbosity) must count as known"
    collisions = [o for o in _runner_options() if o not in ("-h", "--help") and _absl_would_read(o, known)]
    assert collisions == []

    # The real line, with a runner command line as sys.argv: absl's values stay as they were.
    argv = ["runner_local.py", "--beam-profile", "portable", "--job-endpoint", "embed", "--epochs", "3",
            "--no-report-images", "--data-dir", "/tmp/faces"]
    # --setup_file only spares the test TFX's sdist build; the absl line runs either way.
    profile = bp.BeamProfile(bp.PORTABLE, job_endpoint="embed", extra_args=(f"--setup_file={LOCAL_SETUP_FILE}",))
    before = {name: flags.FLAGS[name].value for name in known}
    monkeypatch.setattr(sys, "argv", argv)
    ImageExampleGenExecutor(BaseBeamExecutor.Context(beam_pipeline_args=list(bp.beam_args(profile))))
    assert {name: flags.FLAGS[name].value for name in known} == before
