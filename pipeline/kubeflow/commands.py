"""The commands of ``runner_kfp.py``: compile; run, schedule, unschedule and list on a KFP server.

The runner parses the flags and calls ``run_command``; everything after that is here: the checks
before anything slow happens, compiling, credentials, and one line per failure. Exit status: 0 ok,
1 the server failed or could not be reached, 2 bad usage or settings.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from pipeline import kubeflow, runtime_params
from pipeline.cli import config_from_args

DEFAULT_EXPERIMENT = "facepipe"


class UsageError(ValueError):
    """Bad flags or settings: exit status 2."""



def _config(args: argparse.Namespace) -> Any:
    """The PipelineConfig for compiling, from the shared flags (pipeline.cli) and Kubeflow's fixed choices."""
    missing = [f for f in ("image", "data_dir", "pipeline_root", "serving_dir") if not getattr(args, f)]
    if missing:
        raise UsageError(f"compiling needs {', '.join('--' + m.replace('_', '-') for m in missing)}")
    kubeflow.check_image(args.image)
    return config_from_args(
        args,
        data_dir=kubeflow.check_cluster_path("--data-dir", args.data_dir),
        pipeline_root=kubeflow.check_cluster_path("--pipeline-root", args.pipeline_root),
        serving_dir=kubeflow.check_cluster_path("--serving-dir", args.serving_dir),
        metadata_path=None,  # the cluster's ML Metadata
        schema_path=kubeflow.CONTAINER_SCHEMA_PATH,
    )


def _compile(args: argparse.Namespace, config: Any, output_dir: str, out: Callable[[str], None]) -> str:
    target = getattr(args, "target", kubeflow.TARGET_KFP)  # run and schedule upload to a KFP server
    suffix = ".json" if target == kubeflow.TARGET_VERTEX else ".yaml"
    output = args.output or os.path.join(output_dir, f"{config.pipeline_name}{suffix}")
    kubeflow.check_package_path(output, target)
    out(f"Compiling pipeline {config.pipeline_name!r} for {target} and image {args.image} (imports TFX) ...")
    spec = kubeflow.compile_pipeline(config, args.image, output, target)
    params = spec["root"]["inputDefinitions"]["parameters"]
    out(f"Wrote {output}: {len(spec['root']['dag']['tasks'])} tasks; runtime parameters: {', '.join(sorted(params))}")
    return output


def _check_upload_flags(args: argparse.Namespace) -> Any:
    """Validates run/schedule flags before anything slow happens; returns the config or None (--package)."""
    if not args.endpoint:
        raise UsageError(f"{args.command} needs --endpoint URL (or ${kubeflow.ENDPOINT_ENV})")
    if args.command == "schedule":
        kubeflow.validate_cron(args.cron)
    if args.package:
        given = [f for f in ("image", "data_dir", "pipeline_root", "serving_dir", "output") if getattr(args, f)]
        if given:
            raise UsageError(
                f"--package cannot be combined with {', '.join('--' + g.replace('_', '-') for g in given)}"
            )
        if not os.path.isfile(args.package):
            raise UsageError(f"pipeline package {args.package} does not exist")
        kubeflow.resolve_params(kubeflow.pipeline_parameters(kubeflow.load_pipeline_spec(args.package)), args.param)
        return None
    known = {name for _, _, name in runtime_params.EXPOSED}
    for item in args.param:
        name = item.partition("=")[0]
        if name not in known:
            raise UsageError(f"unknown runtime parameter {name!r}; the pipeline has: {', '.join(sorted(known))}")
    return _config(args)



def run_command(
    args: argparse.Namespace,
    *,
    output_dir: str,
    client_factory: Callable[..., Any] | None = None,
    environ: Mapping[str, str] | None = None,
    out: Callable[[str], None] = print,
) -> int:
    """Runs one parsed subcommand of runner_kfp.py; returns the exit status (0 ok, 1 server failure, 2 bad usage).

    Args:
      args: the parsed command line (runner_kfp.parse_args).
      output_dir: where a compiled package goes without --output (<output_dir>/<pipeline-name>.yaml).
      client_factory: (endpoint, token, namespace) -> client; default kfp.Client via kubeflow.connect.
      environ: where the endpoint and credentials come from (default os.environ).
      out: where normal output goes (errors go to stderr).
    """
    environ = os.environ if environ is None else environ
    if args.command != "compile":
        args.endpoint = args.endpoint or environ.get(kubeflow.ENDPOINT_ENV)
    token = None
    try:
        if args.command == "compile":
            _compile(args, _config(args), output_dir, out)
            return 0
        config = _check_upload_flags(args) if args.command in ("run", "schedule") else None
        if args.command in ("unschedule", "list") and not args.endpoint:
            raise UsageError(f"{args.command} needs --endpoint URL (or ${kubeflow.ENDPOINT_ENV})")
        token = kubeflow.token_from_env(environ)
        kubeflow.check_token_transport(args.endpoint, token, insecure=args.insecure)
    except ValueError as e:  # UsageError and the config's own checks
        print(f"error: {e}", file=sys.stderr)
        return 2

    # kfp's client logs failed requests with tracebacks holding the server's response: one line, token masked.
    with kubeflow.redacted_client_logs(token):
        return _server_command(args, config, token, client_factory, output_dir, out)


def _server_command(
    args: argparse.Namespace, config: Any, token: Any, client_factory: Callable[..., Any] | None,
    output_dir: str, out: Callable[[str], None],
) -> int:
    """run, schedule, unschedule or list against the server; returns the exit status."""
    experiment = args.experiment or (config.pipeline_name if config is not None else DEFAULT_EXPERIMENT)
    try:
        client = (client_factory or kubeflow.connect)(args.endpoint, token, args.namespace)
    except Exception as e:  # noqa: BLE001  (any connection failure: one line, no traceback)
        print(
            f"error: cannot reach Kubeflow Pipelines at {args.endpoint}: {kubeflow.one_line(e, token)}", file=sys.stderr
        )
        return 1

    package, params = None, {}
    if args.command in ("run", "schedule"):
        try:
            package = args.package or _compile(args, config, output_dir, out)
            params = kubeflow.resolve_params(
                kubeflow.pipeline_parameters(kubeflow.load_pipeline_spec(package)), args.param
            )
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    try:
        if args.command in ("run", "schedule"):
            if args.command == "run":
                run_name = args.run_name or (
                    f"{experiment} {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S} UTC"
                )
                run_id = kubeflow.run_once(
                    client, package, experiment, run_name=run_name, params=params, namespace=args.namespace
                )
                out(f"Started run {run_id} ({run_name!r}) in experiment {experiment!r}")
            else:
                name = args.schedule_name or (config.pipeline_name if config is not None else experiment)
                result = kubeflow.schedule(
                    client,
                    package,
                    experiment,
                    name=name,
                    cron=args.cron,
                    params=params,
                    namespace=args.namespace,
                    max_concurrency=args.max_concurrency,
                    catchup=args.catchup,
                )
                replaced = f"; replaced (deleted) {', '.join(result.replaced)}" if result.replaced else ""
                out(f"Scheduled {name!r} ({args.cron}) as recurring run {result.recurring_run_id}{replaced}")
        elif args.command == "unschedule":
            deleted = kubeflow.unschedule(client, experiment, args.schedule_name, args.namespace)
            if not deleted:
                print(f"error: no schedule named {args.schedule_name!r} in experiment {experiment!r}", file=sys.stderr)
                return 1
            out(f"Deleted schedule {args.schedule_name!r}: {', '.join(deleted)}")
        else:
            experiment_id = kubeflow.find_experiment_id(client, experiment, args.namespace)
            schedules = kubeflow.list_schedules(client, experiment_id) if experiment_id else []
            out(f"{len(schedules)} schedule(s) in experiment {experiment!r}")
            for s in schedules:
                out(f"  {s.name:<24} {s.cron:<16} {s.status:<10} {s.recurring_run_id}  created {s.created_at}")
    except ValueError as e:
        print(f"error: {kubeflow.one_line(e, token).removeprefix('ValueError: ')}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001  (server-side failures: one line, no traceback)
        print(f"error: Kubeflow Pipelines request failed: {kubeflow.one_line(e, token)}", file=sys.stderr)
        return 1
    return 0

