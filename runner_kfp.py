"""Kubeflow Pipelines runner: compile the pipeline into a KFP 2.x spec; run, schedule and list it on a server.

    python runner_kfp.py compile  --image IMAGE --data-dir gs://B/faces --pipeline-root gs://B/root \\
                                  --serving-dir gs://B/serving [--target kfp|vertex] [--output FILE]
    python runner_kfp.py run      --endpoint URL (--package FILE | the compile flags) [--param NAME=VALUE]...
    python runner_kfp.py schedule --endpoint URL --cron '0 0 3 * * *' (--package FILE | the compile flags)
    python runner_kfp.py unschedule --endpoint URL --schedule-name NAME
    python runner_kfp.py list     --endpoint URL

Credentials come from the environment: KFP_TOKEN (a bearer token) or KF_PIPELINES_SA_TOKEN_PATH
(a file holding one). They are never printed. Exit status: 0 ok, 1 the server failed or could
not be reached, 2 bad usage or settings.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUTPUT_DIR = os.path.join(REPO_ROOT, "outputs", "kfp")
DEFAULT_EXPERIMENT = "facepipe"


class UsageError(ValueError):
    """Bad flags or settings: exit status 2."""


def _add_compile_flags(parser: argparse.ArgumentParser, for_upload: bool) -> None:
    from pipeline.cli import add_pipeline_flags
    from pipeline.kubeflow import CONTAINER_SETUP_FILE

    group = parser.add_argument_group("compiling" + (" (unless --package is given)" if for_upload else ""))
    group.add_argument(
        "--image", default=None, help="container image built from the Dockerfile, e.g. REGISTRY/facepipe:TAG"
    )
    group.add_argument("--data-dir", default=None, help="image folder as the pods see it (gs://..., or a mounted path)")
    group.add_argument("--pipeline-root", default=None, help="artifact root as the pods see it (gs://...)")
    group.add_argument(
        "--serving-dir", default=None, help="blessed models go to <serving-dir>/<pipeline-name>/<version>/"
    )
    group.add_argument(
        "--output",
        default=None,
        help="the package to write (default: outputs/kfp/<pipeline-name>.yaml, or .json for --target vertex)",
    )
    add_pipeline_flags(parser, setup_file_default=CONTAINER_SETUP_FILE)


def _add_server_flags(parser: argparse.ArgumentParser) -> None:
    from pipeline.kubeflow import ENDPOINT_ENV

    group = parser.add_argument_group("server")
    group.add_argument(
        "--endpoint",
        default=None,
        help=f"KFP API endpoint, e.g. https://HOST/pipeline or http://localhost:8080 (default: ${ENDPOINT_ENV})",
    )
    group.add_argument("--namespace", default=None, help="your namespace on multi-user Kubeflow")
    group.add_argument(
        "--insecure",
        action="store_true",
        help="allow sending the bearer token over plain http:// to a host other than this machine",
    )
    group.add_argument("--experiment", default=None, help="KFP experiment (default: the pipeline name)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parses the command line (usage errors exit with status 2 and one line)."""
    from pipeline.cli import OneLineErrorParser

    parser = OneLineErrorParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineErrorParser)

    p = commands.add_parser("compile", help="write the pipeline spec (.yaml for KFP 2.x, .json for Vertex AI)")
    p.add_argument(
        "--target",
        choices=("kfp", "vertex"),
        default="kfp",
        help="kfp: open-source Kubeflow Pipelines 2.x (.yaml); vertex: a Vertex AI PipelineJob (.json)",
    )
    _add_compile_flags(p, for_upload=False)

    for name, help_text in (("run", "upload and start one run"), ("schedule", "create or replace a recurring run")):
        p = commands.add_parser(name, help=help_text)
        _add_server_flags(p)
        p.add_argument("--package", default=None, help="upload this compiled .yaml instead of compiling")
        p.add_argument(
            "--param",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="runtime parameter value, repeatable: data_root, range_config, trainer_config, "
            "eval_config; JSON objects merge into the default, e.g. trainer_config='{\"epochs\": 20}'",
        )
        if name == "run":
            p.add_argument("--run-name", default=None, help="run name (default: <pipeline-name> <UTC time>)")
        else:
            p.add_argument(
                "--cron", required=True, help="KFP cron, 6 fields, seconds first: '0 0 3 * * *' = 03:00 daily"
            )
            p.add_argument("--schedule-name", default=None, help="schedule name (default: the pipeline name)")
            p.add_argument("--max-concurrency", type=int, default=1, help="scheduled runs allowed at once")
            p.add_argument("--catchup", action="store_true", help="backfill intervals missed while paused")
        _add_compile_flags(p, for_upload=True)

    p = commands.add_parser("unschedule", help="delete a recurring run by name")
    _add_server_flags(p)
    p.add_argument("--schedule-name", required=True, help="the schedule to delete")

    p = commands.add_parser("list", help="list the experiment's recurring runs")
    _add_server_flags(p)
    return parser.parse_args(argv)


def _config(args: argparse.Namespace) -> Any:
    """The PipelineConfig for compiling, from the shared flags (pipeline.cli) and Kubeflow's fixed choices."""
    from pipeline import kubeflow
    from pipeline.cli import config_from_args

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


def _compile(args: argparse.Namespace, config: Any, out: Callable[[str], None]) -> str:
    from pipeline import kubeflow

    target = getattr(args, "target", kubeflow.TARGET_KFP)  # run and schedule upload to a KFP server
    suffix = ".json" if target == kubeflow.TARGET_VERTEX else ".yaml"
    output = args.output or os.path.join(DEFAULT_OUTPUT_DIR, f"{config.pipeline_name}{suffix}")
    kubeflow.check_package_path(output, target)
    out(f"Compiling pipeline {config.pipeline_name!r} for {target} and image {args.image} (imports TFX) ...")
    spec = kubeflow.compile_pipeline(config, args.image, output, target)
    params = spec["root"]["inputDefinitions"]["parameters"]
    out(f"Wrote {output}: {len(spec['root']['dag']['tasks'])} tasks; runtime parameters: {', '.join(sorted(params))}")
    return output


def _check_upload_flags(args: argparse.Namespace) -> Any:
    """Validates run/schedule flags before anything slow happens; returns the config or None (--package)."""
    from pipeline import kubeflow, runtime_params

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


def main(
    argv: list[str] | None = None,
    client_factory: Callable[..., Any] | None = None,
    environ: Mapping[str, str] | None = None,
    out: Callable[[str], None] = print,
) -> int:
    """Runs one subcommand; returns the exit status (0 ok, 1 server failure, 2 bad usage).

    Args:
      argv: the command line (default sys.argv[1:]).
      client_factory: (endpoint, token, namespace) -> client; default kfp.Client via pipeline.kubeflow.connect.
      environ: where credentials come from (default os.environ).
      out: where normal output goes (errors go to stderr).
    """
    sys.path.insert(0, REPO_ROOT)
    # Before TensorFlow is imported (compiling imports TFX): TF 2.16 would mix Keras 3 and tf_keras.
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", category=FutureWarning)  # kfp.Client and google.* import-time notices
    args = parse_args(argv)
    from pipeline import kubeflow

    environ = os.environ if environ is None else environ
    if args.command != "compile":
        args.endpoint = args.endpoint or environ.get(kubeflow.ENDPOINT_ENV)
    token = None
    try:
        if args.command == "compile":
            _compile(args, _config(args), out)
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
        return _server_command(args, config, token, client_factory, out)


def _server_command(
    args: argparse.Namespace, config: Any, token: Any, client_factory: Callable[..., Any] | None,
    out: Callable[[str], None],
) -> int:
    """run, schedule, unschedule or list against the server; returns the exit status."""
    from pipeline import kubeflow

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
            package = args.package or _compile(args, config, out)
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
                run_id = kubeflow.run_once(client, package, experiment, run_name, params, args.namespace)
                out(f"Started run {run_id} ({run_name!r}) in experiment {experiment!r}")
            else:
                name = args.schedule_name or (config.pipeline_name if config is not None else experiment)
                result = kubeflow.schedule(
                    client,
                    package,
                    experiment,
                    name,
                    args.cron,
                    params,
                    args.namespace,
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


if __name__ == "__main__":
    sys.exit(main())
