"""Client operations on a KFP server: connecting, experiments, one run, schedules (create, replace,
list, delete).

Plain functions over the few kfp.Client methods they use (``KfpClient``), so they can be tested
without a server. Nothing here imports kfp at import time.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any, Protocol

from pipeline.kubeflow.compiling import check_package_path
from pipeline.kubeflow.credentials import Token, one_line

_CRON_DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


class KfpError(RuntimeError):
    """A Kubeflow Pipelines request failed; the message is one line and never holds the token."""


def validate_cron(expression: str) -> str:
    """Checks a KFP cron expression: 6 fields, seconds first, or a descriptor.

    KFP's scheduler (robfig/cron) reads ``second minute hour day-of-month month day-of-week``;
    a classic 5-field crontab line would be misread, so it is rejected with an example.

    Args:
      expression: e.g. ``0 0 3 * * *`` (03:00 every day) or ``@daily`` or ``@every 6h``.

    Returns:
      The expression, stripped.

    Raises:
      ValueError: not 6 fields and not a descriptor.
    """
    expression = expression.strip()
    if expression in _CRON_DESCRIPTORS or re.fullmatch(
        r"@every \d+(\.\d+)?(ns|us|ms|s|m|h)(\d+(ns|us|ms|s|m|h))*", expression
    ):
        return expression
    fields = expression.split()
    if len(fields) != 6:
        raise ValueError(
            f"--cron needs 6 fields, seconds first (KFP's cron format), e.g. '0 0 3 * * *' for 03:00 daily; "
            f"got {len(fields)} field(s) in {expression!r}"
        )
    for field in fields:
        if not re.fullmatch(r"[0-9A-Za-z*?/,\-LW#]+", field):
            raise ValueError(f"--cron field {field!r} in {expression!r} is not a cron field")
    return expression


class KfpClient(Protocol):
    """The few kfp.Client (kfp 2.5) methods this module uses."""

    def create_experiment(self, name: str, description: str | None = None, namespace: str | None = None) -> Any: ...

    def get_experiment(
        self, experiment_id: str | None = None, experiment_name: str | None = None, namespace: str | None = None
    ) -> Any: ...

    def create_run_from_pipeline_package(
        self, pipeline_file: str, arguments: dict | None = None, **kwargs: Any
    ) -> Any: ...

    def create_recurring_run(self, experiment_id: str, job_name: str, **kwargs: Any) -> Any: ...

    def list_recurring_runs(self, page_token: str = "", page_size: int = 10, **kwargs: Any) -> Any: ...

    def delete_recurring_run(self, recurring_run_id: str) -> Any: ...


@dataclasses.dataclass(frozen=True)
class ScheduleInfo:
    """One recurring run, as listed."""

    recurring_run_id: str
    name: str
    cron: str
    status: str
    created_at: str


@dataclasses.dataclass(frozen=True)
class ScheduleResult:
    """What schedule() did: the new recurring run and the ones it replaced (deleted first)."""

    recurring_run_id: str
    replaced: tuple[str, ...]


def find_experiment_id(client: KfpClient, experiment: str, namespace: str | None = None) -> str | None:
    """Returns the id of an existing experiment, or None (never creates one)."""
    try:
        return client.get_experiment(experiment_name=experiment, namespace=namespace).experiment_id
    except ValueError as e:  # kfp raises ValueError("No experiment is found with name ...")
        if str(e).startswith("No experiment is found"):
            return None
        raise


def ensure_experiment_id(client: KfpClient, experiment: str, namespace: str | None = None) -> str:
    """Returns the id of the experiment, creating it when missing (kfp's create_experiment gets or creates)."""
    return client.create_experiment(name=experiment, namespace=namespace).experiment_id


def list_schedules(client: KfpClient, experiment_id: str) -> list[ScheduleInfo]:
    """Lists every recurring run of an experiment (all pages).

    Args:
      client: a connected client.
      experiment_id: the experiment.

    Returns:
      The recurring runs, in the server's order.
    """
    found: list[ScheduleInfo] = []
    token = ""
    while True:
        page = client.list_recurring_runs(page_token=token, page_size=100, experiment_id=experiment_id)
        for run in page.recurring_runs or []:
            cron = run.trigger.cron_schedule.cron if run.trigger and run.trigger.cron_schedule else ""
            if not cron and run.trigger and run.trigger.periodic_schedule:
                cron = f"every {run.trigger.periodic_schedule.interval_second} s"
            found.append(
                ScheduleInfo(
                    run.recurring_run_id, run.display_name, cron, str(run.status or ""), str(run.created_at or "")
                )
            )
        token = page.next_page_token or ""
        if not token:
            return found


def run_once(
    client: KfpClient,
    package_path: str,
    experiment: str,
    *,
    run_name: str,
    params: Mapping[str, Any],
    namespace: str | None = None,
) -> str:
    """Uploads the package and starts one run.

    Args:
      client: a connected client.
      package_path: the .yaml package.
      experiment: experiment name (created when missing).
      run_name: the run's display name.
      params: runtime parameter values (resolve_params); others keep their defaults.
      namespace: the user's namespace on multi-user Kubeflow.

    Returns:
      The run id.
    """
    experiment_id = ensure_experiment_id(client, experiment, namespace)
    result = client.create_run_from_pipeline_package(
        pipeline_file=check_package_path(package_path),
        arguments=dict(params),
        run_name=run_name,
        experiment_id=experiment_id,
    )
    return result.run_id


def schedule(
    client: KfpClient,
    package_path: str,
    experiment: str,
    *,
    name: str,
    cron: str,
    params: Mapping[str, Any],
    namespace: str | None = None,
    max_concurrency: int = 1,
    catchup: bool = False,
) -> ScheduleResult:
    """Creates the recurring run ``name``, replacing any of that name in the experiment.

    KFP cannot update a recurring run in place, so an existing one of the same name is deleted
    first and the new one created (cron and package are checked before anything is deleted).

    Args:
      client, package_path, experiment, namespace: as for ``run_once``.
      name: the schedule's display name; its identity for replace and unschedule.
      cron: KFP cron expression (validate_cron).
      params: runtime parameter values for every scheduled run.
      max_concurrency: runs of this schedule allowed at once.
      catchup: whether KFP should backfill intervals missed while paused.

    Returns:
      The new recurring run id and the replaced ids.

    Raises:
      ValueError: bad cron, package or concurrency (nothing was changed).
      KfpError: creating failed after the old schedule(s) were deleted (the message says so).
    """
    cron = validate_cron(cron)
    check_package_path(package_path)
    if not os.path.isfile(package_path):
        raise ValueError(f"pipeline package {package_path} does not exist")
    if max_concurrency < 1:
        raise ValueError(f"--max-concurrency must be >= 1, got {max_concurrency}")
    experiment_id = ensure_experiment_id(client, experiment, namespace)
    replaced = tuple(s.recurring_run_id for s in list_schedules(client, experiment_id) if s.name == name)
    for recurring_run_id in replaced:
        client.delete_recurring_run(recurring_run_id=recurring_run_id)
    try:
        created = client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=name,
            cron_expression=cron,
            pipeline_package_path=package_path,
            params=dict(params),
            max_concurrency=max_concurrency,
            no_catchup=not catchup,
            enabled=True,
        )
    except Exception as e:
        if replaced:
            raise KfpError(
                f"deleted the old schedule {name!r} ({', '.join(replaced)}) but creating the new one failed: "
                f"{one_line(e)}"
            ) from e
        raise
    return ScheduleResult(created.recurring_run_id, replaced)


def unschedule(client: KfpClient, experiment: str, name: str, namespace: str | None = None) -> tuple[str, ...]:
    """Deletes every recurring run named ``name`` in the experiment.

    Returns:
      The deleted ids (empty when there was none, or no such experiment).
    """
    experiment_id = find_experiment_id(client, experiment, namespace)
    if experiment_id is None:
        return ()
    deleted = tuple(s.recurring_run_id for s in list_schedules(client, experiment_id) if s.name == name)
    for recurring_run_id in deleted:
        client.delete_recurring_run(recurring_run_id=recurring_run_id)
    return deleted


def connect(endpoint: str, token: Token | None, namespace: str | None = None) -> KfpClient:
    """Connects a kfp.Client (kfp 2.5) to a KFP 2.x API endpoint.

    Args:
      endpoint: e.g. https://kubeflow.example.com/pipeline or http://localhost:8080.
      token: bearer token, or None.
      namespace: the user's namespace on multi-user Kubeflow.

    Returns:
      The client (it has already called the server's health check).
    """
    import kfp

    kwargs: dict[str, Any] = {"host": endpoint}
    if token is not None:
        kwargs["existing_token"] = token.reveal()
    if namespace:
        kwargs["namespace"] = namespace
    return kfp.Client(**kwargs)
