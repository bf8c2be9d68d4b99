"""Runs the facepipe pipeline locally: LocalDagRunner, Beam DirectRunner, SQLite ML Metadata.

    python runner_local.py                      # bundled synthetic data (generated on first use)
    python runner_local.py --data-dir ~/UTKFace # real UTKFace (or any folder of named images)
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA_DIR = os.path.join(REPO_ROOT, "data", "utkface_synth")
DEFAULT_OUTPUT = os.path.join(REPO_ROOT, "outputs")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parses the command line."""
    from pipeline.cli import add_pipeline_flags  # noqa: PLC0415  (light: no TensorFlow)

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None,
                        help=f"folder of UTKFace-style images (default: generated synthetic set in {DEFAULT_DATA_DIR})")
    parser.add_argument("--pipeline-root", default=os.path.join(DEFAULT_OUTPUT, "pipeline_root"),
                        help="TFX artifacts, ML Metadata (metadata.sqlite), logs and last_run_summary.json")
    parser.add_argument("--serving-dir", default=os.path.join(DEFAULT_OUTPUT, "serving"),
                        help="blessed models are pushed to <serving-dir>/<pipeline-name>/<version>/")
    add_pipeline_flags(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs the pipeline; returns the process exit status."""
    args = parse_args(argv)
    # Before TensorFlow is imported anywhere: TF 2.16 would otherwise mix Keras 3 and tf_keras.
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Known import-time noise from the Google Cloud client libraries TFX pulls in.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\..*")
    sys.path.insert(0, REPO_ROOT)
    from pipeline.cli import config_from_args  # noqa: PLC0415

    data_dir = args.data_dir
    if data_dir is None:
        from pipeline import synthetic_data  # noqa: PLC0415

        data_dir = DEFAULT_DATA_DIR
        _, generated = synthetic_data.ensure_default_dataset(data_dir, synthetic_data.SyntheticSpec())
        if generated:
            print(f"Generated the bundled synthetic UTKFace-style data set in {data_dir}")
        else:
            print(f"Using the bundled synthetic data set in {data_dir}")
    data_dir = os.path.abspath(os.path.expanduser(data_dir)) if "://" not in data_dir else data_dir
    if "://" not in data_dir and not os.path.isdir(data_dir):
        print(f"error: data folder {data_dir} does not exist", file=sys.stderr)
        return 2
    pipeline_root = os.path.abspath(args.pipeline_root)
    try:
        config = config_from_args(
            args,
            data_dir=data_dir,
            pipeline_root=pipeline_root,
            serving_dir=os.path.abspath(args.serving_dir),
            metadata_path=os.path.join(pipeline_root, "metadata.sqlite"),
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from pipeline.local_run import format_summary, run_local  # noqa: PLC0415  (imports TFX: ~15 s)

    print(f"Running pipeline {config.pipeline_name!r} on {config.data_dir}")
    summary = run_local(config)
    print(format_summary(summary, config))
    return 1 if summary.get("error") else 0


if __name__ == "__main__":
    sys.exit(main())
