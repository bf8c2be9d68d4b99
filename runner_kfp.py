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
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUTPUT_DIR = os.path.join(REPO_ROOT, "outputs", "kfp")


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


def main(
    argv: list[str] | None = None,
    client_factory: Callable[..., Any] | None = None,
    environ: Mapping[str, str] | None = None,
    out: Callable[[str], None] = print,
) -> int:
    """Runs one subcommand (pipeline.kubeflow.commands); returns the exit status (0 ok, 1 server failure, 2 bad usage).

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
    from pipeline.kubeflow import commands

    return commands.run_command(
        args, output_dir=DEFAULT_OUTPUT_DIR, client_factory=client_factory, environ=environ, out=out
    )


if __name__ == "__main__":
    sys.exit(main())
