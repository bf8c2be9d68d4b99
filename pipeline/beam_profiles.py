"""Beam runner profiles: named, validated sets of Beam pipeline arguments.

Every Beam-based TFX component (ExampleGen, StatisticsGen, Transform, Evaluator, ...) gets the
same arguments. A profile turns a few typed settings into those arguments and rejects
incomplete or contradictory settings with a one-line message naming the option:

- ``in-memory``: Beam's DirectRunner in one process, no arguments at all (the default). Any
  argument makes TFX build and attach a TFX sdist in every Beam component (~2 s each), which
  only remote workers need.
- ``multi-processing``: DirectRunner with a fixed number of worker processes on this machine.
- ``dataflow``: Google Cloud Dataflow (project, region, gs:// temp location, and this package
  as a setup file or a custom SDK container image).
- ``flink`` / ``spark``: a running Beam job server of a Flink or Spark cluster (job endpoint),
  with the SDK harness environment the cluster's workers use.
- ``portable``: Beam's PortableRunner on any job server (``embed``: Beam's in-process one), with
  the same environment settings; with an ``EXTERNAL`` worker pool on this machine it runs the
  SDK-harness path of Flink and Spark without a cluster.

Nothing here imports Beam; ``parse_with_beam`` does, to check arguments the way Beam will read them.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

IN_MEMORY = "in-memory"
MULTI_PROCESSING = "multi-processing"
DATAFLOW = "dataflow"
FLINK = "flink"
SPARK = "spark"
PORTABLE = "portable"
PROFILES: tuple[str, ...] = (IN_MEMORY, MULTI_PROCESSING, DATAFLOW, FLINK, SPARK, PORTABLE)
# Profiles whose SDK harness is chosen by an environment (EXTERNAL, DOCKER, ...) on a job server.
JOB_SERVER_PROFILES: tuple[str, ...] = (FLINK, SPARK, PORTABLE)
# --job-endpoint of the portable profile that starts Beam's job service inside the launching process.
EMBEDDED_JOB_SERVER = "embed"
_RUNNERS = {FLINK: "FlinkRunner", SPARK: "SparkRunner", PORTABLE: "PortableRunner"}

# SDK harness environments of portable runners (Flink, Spark, any job server). EXTERNAL with a worker pool at
# localhost:50000 is the usual Kubernetes setup: a Beam worker-pool sidecar (this image started
# with --worker_pool) next to each Flink task manager / Spark executor.
ENVIRONMENT_TYPES: tuple[str, ...] = ("EXTERNAL", "DOCKER", "PROCESS", "LOOPBACK")
DEFAULT_ENVIRONMENT_TYPE = "EXTERNAL"
DEFAULT_EXTERNAL_ENVIRONMENT = "localhost:50000"

# Matched with fullmatch: "$" alone also matches before a trailing newline; [0-9], not \d (Unicode digits).
_HOST_PORT = re.compile(r"[A-Za-z0-9._-]+:[0-9]{1,5}")
_GCP_REGION = re.compile(r"[a-z]+-[a-z]+[0-9]+")
_GCP_PROJECT = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")


@dataclasses.dataclass(frozen=True)
class BeamProfile:
    """Settings of one Beam runner profile; ``beam_args`` turns them into pipeline arguments.

    Attributes:
      name: one of PROFILES.
      workers: multi-processing: worker processes (required, >= 1); dataflow: maximum workers
        (autoscaling bound); flink: parallelism. Not used by in-memory and spark.
      gcp_project / gcp_region / temp_location: Dataflow's project, region and gs:// temp folder.
      setup_file: Dataflow: this package's setup.py, built and installed on every worker.
      sdk_container_image: Dataflow: a worker image that already holds this package (instead
        of setup_file).
      job_endpoint: flink/spark/portable: host:port of the Beam job server; portable also
        takes "embed" (Beam's in-process job server).
      environment_type / environment_config: flink/spark/portable: the SDK harness environment.
      extra_args: more Beam arguments appended verbatim (the runners' repeatable --beam-arg).
    """

    name: str = IN_MEMORY
    workers: int | None = None
    gcp_project: str | None = None
    gcp_region: str | None = None
    temp_location: str | None = None
    setup_file: str | None = None
    sdk_container_image: str | None = None
    job_endpoint: str | None = None
    environment_type: str | None = None
    environment_config: str | None = None
    extra_args: tuple[str, ...] = ()


# Which profile uses which setting, for "option X is not used by profile Y" errors.
_USED_BY: dict[str, tuple[str, ...]] = {
    "workers": (MULTI_PROCESSING, DATAFLOW, FLINK),
    "gcp_project": (DATAFLOW,),
    "gcp_region": (DATAFLOW,),
    "temp_location": (DATAFLOW,),
    "setup_file": (DATAFLOW,),
    "sdk_container_image": (DATAFLOW,),
    "job_endpoint": JOB_SERVER_PROFILES,
    "environment_type": JOB_SERVER_PROFILES,
    "environment_config": JOB_SERVER_PROFILES,
}

# Command-line spelling of each setting, so errors name the flag the user typed.
FLAG_NAMES: dict[str, str] = {
    "name": "--beam-profile",
    "workers": "--beam-workers",
    "gcp_project": "--gcp-project",
    "gcp_region": "--gcp-region",
    "temp_location": "--temp-location",
    "setup_file": "--setup-file",
    "sdk_container_image": "--sdk-container-image",
    "job_endpoint": "--job-endpoint",
    "environment_type": "--beam-environment-type",
    "environment_config": "--beam-environment-config",
    "extra_args": "--beam-arg",
}


def _flag(field: str) -> str:
    return FLAG_NAMES[field]


def validate(profile: BeamProfile) -> None:
    """Checks that the profile's settings are complete and consistent.

    Args:
      profile: the settings.

    Raises:
      ValueError: one line naming the missing or bad option.
    """
    if profile.name not in PROFILES:
        raise ValueError(
            f"unknown Beam profile {profile.name!r} ({_flag('name')}); choose one of {', '.join(PROFILES)}"
        )
    for field, users in _USED_BY.items():
        if getattr(profile, field) is not None and profile.name not in users:
            raise ValueError(
                f"{_flag(field)} is not used by the {profile.name} Beam profile (only by {', '.join(users)})"
            )
    for arg in profile.extra_args:
        if not arg.startswith("--"):
            raise ValueError(f"{_flag('extra_args')} values must look like --name=value, got {arg!r}")

    if profile.name == MULTI_PROCESSING:
        if profile.workers is None:
            raise ValueError(
                f"the multi-processing Beam profile needs {_flag('workers')} N: a fixed worker count "
                "(0 would start one worker per core, which can run the Evaluator out of memory)"
            )
    if profile.workers is not None and profile.workers < 1:
        raise ValueError(f"{_flag('workers')} must be >= 1, got {profile.workers}")

    if profile.name == DATAFLOW:
        _validate_dataflow(profile)
    elif profile.name in JOB_SERVER_PROFILES:
        _validate_portable(profile)


def _validate_dataflow(profile: BeamProfile) -> None:
    for field in ("gcp_project", "gcp_region", "temp_location"):
        if not getattr(profile, field):
            raise ValueError(f"the dataflow Beam profile needs {_flag(field)}")
    if not _GCP_PROJECT.fullmatch(profile.gcp_project or ""):
        raise ValueError(f"{_flag('gcp_project')} {profile.gcp_project!r} is not a valid GCP project id")
    if not _GCP_REGION.fullmatch(profile.gcp_region or ""):
        raise ValueError(f"{_flag('gcp_region')} {profile.gcp_region!r} is not a GCP region like us-central1")
    if not (profile.temp_location or "").startswith("gs://"):
        raise ValueError(f"{_flag('temp_location')} must be a gs:// folder for Dataflow, got {profile.temp_location!r}")
    if profile.setup_file and profile.sdk_container_image:
        raise ValueError(
            f"give either {_flag('setup_file')} or {_flag('sdk_container_image')} for the dataflow Beam profile, "
            "not both"
        )
    if not profile.setup_file and not profile.sdk_container_image:
        raise ValueError(
            f"the dataflow Beam profile needs {_flag('setup_file')} (this package's setup.py) or "
            f"{_flag('sdk_container_image')}: Dataflow workers must be able to import the pipeline's code"
        )
    if profile.setup_file and not profile.setup_file.endswith("setup.py"):
        raise ValueError(f"{_flag('setup_file')} must point to a setup.py, got {profile.setup_file!r}")


def _validate_portable(profile: BeamProfile) -> None:
    if not profile.job_endpoint:
        raise ValueError(
            f"the {profile.name} Beam profile needs {_flag('job_endpoint')} HOST:PORT of its Beam job server"
            + (f" ({EMBEDDED_JOB_SERVER} for Beam's in-process one)" if profile.name == PORTABLE else "")
        )
    embedded_ok = profile.name == PORTABLE and profile.job_endpoint == EMBEDDED_JOB_SERVER
    if not embedded_ok and not _HOST_PORT.fullmatch(profile.job_endpoint):
        also = f" or {EMBEDDED_JOB_SERVER}" if profile.name == PORTABLE else ""
        raise ValueError(f"{_flag('job_endpoint')} must be HOST:PORT{also}, got {profile.job_endpoint!r}")
    env_type = profile.environment_type or DEFAULT_ENVIRONMENT_TYPE
    if env_type not in ENVIRONMENT_TYPES:
        raise ValueError(f"{_flag('environment_type')} must be one of {', '.join(ENVIRONMENT_TYPES)}, got {env_type!r}")
    if env_type in ("DOCKER", "PROCESS") and not profile.environment_config:
        what = "the SDK container image" if env_type == "DOCKER" else 'JSON like {"command": "/opt/apache/beam/boot"}'
        raise ValueError(f"{_flag('environment_type')}={env_type} needs {_flag('environment_config')} ({what})")
    if env_type == "LOOPBACK" and profile.environment_config:
        raise ValueError(f"{_flag('environment_type')}=LOOPBACK takes no {_flag('environment_config')}")


def beam_args(profile: BeamProfile) -> tuple[str, ...]:
    """Validates the profile and builds its Beam pipeline arguments.

    Args:
      profile: the settings.

    Returns:
      The arguments, profile arguments first, then ``extra_args``; empty for a plain in-memory profile.

    Raises:
      ValueError: one line naming the missing or bad option.
    """
    validate(profile)
    args: list[str] = []
    if profile.name == MULTI_PROCESSING:
        args += ["--direct_running_mode=multi_processing", f"--direct_num_workers={profile.workers}"]
    elif profile.name == DATAFLOW:
        args += [
            "--runner=DataflowRunner",
            f"--project={profile.gcp_project}",
            f"--region={profile.gcp_region}",
            f"--temp_location={profile.temp_location}",
        ]
        # Either flag also stops TFX from building its own sdist for the workers.
        if profile.setup_file:
            args.append(f"--setup_file={profile.setup_file}")
        else:
            args.append(f"--sdk_container_image={profile.sdk_container_image}")
        if profile.workers is not None:
            args.append(f"--max_num_workers={profile.workers}")
    elif profile.name in JOB_SERVER_PROFILES:
        env_type = profile.environment_type or DEFAULT_ENVIRONMENT_TYPE
        env_config = profile.environment_config
        if env_type == "EXTERNAL" and not env_config:
            env_config = DEFAULT_EXTERNAL_ENVIRONMENT
        args += [
            f"--runner={_RUNNERS[profile.name]}",
            f"--job_endpoint={profile.job_endpoint}",
            f"--environment_type={env_type}",
        ]
        if env_config:
            args.append(f"--environment_config={env_config}")
        if profile.name == FLINK and profile.workers is not None:
            args.append(f"--parallelism={profile.workers}")
    return tuple(args) + tuple(profile.extra_args)


def parse_with_beam(args: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """Reads arguments exactly as Beam will (imports apache_beam).

    Args:
      args: Beam pipeline arguments.

    Returns:
      Beam's view of all options (``PipelineOptions.get_all_options``).

    Raises:
      ValueError: an argument Beam does not know (Beam would silently ignore it).
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    options = PipelineOptions(flags=list(args))
    known = options.get_all_options(retain_unknown_options=False)
    everything = options.get_all_options(retain_unknown_options=True)
    unknown = sorted(set(everything) - set(known))
    if unknown:
        raise ValueError(f"Beam does not know the option(s) {', '.join('--' + u for u in unknown)}")
    return known
