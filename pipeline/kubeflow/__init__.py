"""Kubeflow Pipelines (KFP 2.x): compile the pipeline to a spec file; run, schedule, list on a server.

One job a module:

- ``compiling``: the spec from the one create_pipeline (TFX's KubeflowV2DagRunner), finished here;
  the cluster paths, image and package name it needs, checked;
- ``parameters``: a compiled package read back, its run-time parameters and ``--param`` values;
- ``client``: connecting and the client operations (experiments, one run, schedules) over a small
  client interface that ``kfp.Client`` implements, so they can be tested without a server;
- ``credentials``: the bearer token (never printed), its transport, kfp's logs with the token masked;
- ``commands``: what ``runner_kfp.py`` runs (not imported here: it needs the runners' flags).

The names of the first four are importable from here (``from pipeline import kubeflow``). Nothing
here imports TFX or kfp at import time.
"""

from pipeline.kubeflow.client import (
    KfpClient,
    KfpError,
    ScheduleInfo,
    ScheduleResult,
    connect,
    ensure_experiment_id,
    find_experiment_id,
    list_schedules,
    run_once,
    schedule,
    unschedule,
    validate_cron,
)
from pipeline.kubeflow.compiling import (
    CONTAINER_REPO_ROOT,
    CONTAINER_SCHEMA_PATH,
    CONTAINER_SETUP_FILE,
    ENTRYPOINT_COMMAND,
    PACKAGE_SUFFIXES,
    TARGET_KFP,
    TARGET_VERTEX,
    TARGETS,
    check_cluster_path,
    check_image,
    check_package_path,
    compile_pipeline,
    disable_caching,
    finish_pipeline_spec,
    runtime_parameter_defaults,
    unsupported_on_kfp,
    write_package,
)
from pipeline.kubeflow.credentials import (
    ENDPOINT_ENV,
    TOKEN_ENV,
    TOKEN_PATH_ENV,
    Token,
    check_token_transport,
    is_loopback,
    one_line,
    redacted_client_logs,
    token_from_env,
)
from pipeline.kubeflow.parameters import (
    ParameterInfo,
    load_pipeline_spec,
    pipeline_parameters,
    resolve_params,
)

__all__ = [
    "CONTAINER_REPO_ROOT",
    "CONTAINER_SCHEMA_PATH",
    "CONTAINER_SETUP_FILE",
    "ENDPOINT_ENV",
    "ENTRYPOINT_COMMAND",
    "KfpClient",
    "KfpError",
    "PACKAGE_SUFFIXES",
    "ParameterInfo",
    "ScheduleInfo",
    "ScheduleResult",
    "TARGETS",
    "TARGET_KFP",
    "TARGET_VERTEX",
    "TOKEN_ENV",
    "TOKEN_PATH_ENV",
    "Token",
    "check_cluster_path",
    "check_image",
    "check_package_path",
    "check_token_transport",
    "compile_pipeline",
    "connect",
    "disable_caching",
    "ensure_experiment_id",
    "find_experiment_id",
    "finish_pipeline_spec",
    "is_loopback",
    "list_schedules",
    "load_pipeline_spec",
    "one_line",
    "pipeline_parameters",
    "redacted_client_logs",
    "resolve_params",
    "run_once",
    "runtime_parameter_defaults",
    "schedule",
    "token_from_env",
    "unschedule",
    "unsupported_on_kfp",
    "validate_cron",
    "write_package",
]
