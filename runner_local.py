"""Runs the facepipe pipeline locally: LocalDagRunner, Beam DirectRunner, SQLite ML Metadata.

    python runner_local.py                      # bundled synthetic data (generated on first use)
    python runner_local.py --data-dir ~/UTKFace # real UTKFace (or any folder of named images)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA_DIR = os.path.join(REPO_ROOT, "data", "utkface_synth")
DEFAULT_OUTPUT = os.path.join(REPO_ROOT, "outputs")


def build_parser() -> argparse.ArgumentParser:
    """The runner's command line (the README's flags table is generated from it)."""
    from pipeline.cli import OneLineErrorParser, add_pipeline_flags  # light: no TensorFlow

    parser = OneLineErrorParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None,
                        help=f"folder of UTKFace-style images (default: generated synthetic set in {DEFAULT_DATA_DIR})")
    parser.add_argument("--pipeline-root", default=os.path.join(DEFAULT_OUTPUT, "pipeline_root"),
                        help="TFX artifacts, ML Metadata (metadata.sqlite), logs and last_run_summary.json")
    parser.add_argument("--serving-dir", default=os.path.join(DEFAULT_OUTPUT, "serving"),
                        help="blessed models are pushed to <serving-dir>/<pipeline-name>/<version>/")
    parser.add_argument("--wait-for-lock", type=float, default=0.0, metavar="SECONDS",
                        help="when another run uses the same --pipeline-root, wait this long before giving up "
                        "(default 0: fail at once)")
    add_pipeline_flags(parser)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parses the command line."""
    return build_parser().parse_args(argv)


def _check_data_dir(data_dir: str) -> str | None:
    """Returns a one-line problem with a local data folder, or None when it looks usable."""
    if "://" in data_dir:
        return None  # object stores are checked by the ExampleGen itself
    if not os.path.exists(data_dir):
        return f"data folder {data_dir} does not exist"
    if not os.path.isdir(data_dir):
        return f"data folder {data_dir} is a file, not a folder"
    for _, _, files in os.walk(data_dir):
        if files:
            return None
    return f"data folder {data_dir} is empty: no files to ingest"


def main(argv: list[str] | None = None) -> int:
    """Runs the pipeline; returns the process exit status (0 ok, 1 run failed, 2 bad usage, 3 busy).

    A failed Beam worker check (remote Beam profiles) is a failed run: status 1, one line.
    """
    args = parse_args(argv)
    # Before TensorFlow is imported anywhere: TF 2.16 would otherwise mix Keras 3 and tf_keras.
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    sys.path.insert(0, REPO_ROOT)
    from pipeline.cli import config_from_args
    from pipeline.logs import new_run_id, stderr_to_log

    data_dir = args.data_dir
    pipeline_root = os.path.abspath(args.pipeline_root)
    try:
        config = config_from_args(
            args,
            data_dir=data_dir or DEFAULT_DATA_DIR,
            pipeline_root=pipeline_root,
            serving_dir=os.path.abspath(args.serving_dir),
            metadata_path=os.path.join(pipeline_root, "metadata.sqlite"),
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.wait_for_lock < 0:
        print("error: --wait-for-lock must be >= 0 seconds", file=sys.stderr)
        return 2
    if data_dir is None:
        from components import synthetic_data

        _, generated = synthetic_data.ensure_default_dataset(DEFAULT_DATA_DIR, synthetic_data.SyntheticSpec())
        what = "Generated" if generated else "Using"
        print(f"{what} the bundled synthetic UTKFace-style data set in {DEFAULT_DATA_DIR}")
    else:
        data_dir = os.path.abspath(os.path.expanduser(data_dir)) if "://" not in data_dir else data_dir
        if problem := _check_data_dir(data_dir):
            print(f"error: {problem}", file=sys.stderr)
            return 2
        config = dataclasses.replace(config, data_dir=data_dir)

    run_id = new_run_id()
    # From here on, stderr (TensorFlow's C++ logs and Python warnings included) goes to the run's
    # log file; known noise is kept off the console.
    with stderr_to_log(os.path.join(pipeline_root, "logs", f"{run_id}.log")):
        from pipeline.beam_canary import WorkerCheckError
        from pipeline.local_run import RunLockError, format_summary, run_local  # TFX: ~15 s

        print(f"Running pipeline {config.pipeline_name!r} on {config.data_dir} (run {run_id})", flush=True)
        try:
            summary = run_local(config, run_id=run_id, wait_for_lock=args.wait_for_lock)
        except RunLockError as e:
            print(f"error: {e}", flush=True)
            return 3
        except WorkerCheckError as e:  # nothing ran: the Beam workers of the chosen profile are not usable
            print(f"error: {e}", flush=True)
            return 1
        print(format_summary(summary, config), flush=True)
    return 1 if summary.get("error") else 0


if __name__ == "__main__":
    sys.exit(main())
