"""Regenerates the evaluation report of a past run, and the index of runs, from ML Metadata.

    python -m pipeline.report --pipeline-root outputs/pipeline_root            # latest run (+ index)
    python -m pipeline.report --pipeline-root outputs/pipeline_root --run-id ID
    python -m pipeline.report --pipeline-root outputs/pipeline_root --index    # only reports/index.html
    python -m pipeline.report --pipeline-root outputs/pipeline_root --list     # recorded runs
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    """Writes report.json, report.html and model_card.md; returns the exit status.

    Args:
      argv: command-line arguments (sys.argv[1:] by default).

    Returns:
      0 on success, 2 when the store or run does not exist.
    """
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pipeline-root", required=True, help="the pipeline root of the runs (holds metadata.sqlite)")
    parser.add_argument(
        "--metadata-path", default=None, help="SQLite ML Metadata (default: <pipeline root>/metadata.sqlite)"
    )
    parser.add_argument("--run-id", default=None, help="the run to report on (default: the latest run)")
    parser.add_argument("--pipeline-name", default=None, help="with no --run-id: the latest run of this pipeline")
    parser.add_argument("--list", action="store_true", help="list the recorded run ids and exit")
    parser.add_argument("--index", action="store_true",
                        help="only rebuild <pipeline root>/reports/index.html (every run) from ML Metadata")
    parser.add_argument("--no-images", action="store_true",
                        help="leave the thumbnails of misclassified eval images out of the report (privacy)")
    args = parser.parse_args(argv)
    # Before TensorFlow is imported: TFMA and the model code use tf_keras (Keras 2).
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    pipeline_root = os.path.abspath(args.pipeline_root)
    metadata_path = args.metadata_path or os.path.join(pipeline_root, "metadata.sqlite")

    from pipeline import mlmd  # here, not at the top: --help needs none of it

    try:
        store = mlmd.open_readonly(metadata_path)
        if args.list:
            for run_id in mlmd.run_ids(store, args.pipeline_name):
                print(run_id)
            return 0
        from pipeline.report import build, index  # TFX and TFMA (seconds): neither --help nor --list needs them

        paths = {} if args.index else build.generate_report(
            store, pipeline_root, args.run_id, args.pipeline_name, images=not args.no_images
        )
        index_path = index.write_index(store, pipeline_root, args.pipeline_name, rebuild=args.index)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if paths:
        print(f"Report for run {paths['run_id']}:")
        for key in ("html", "json", "model_card"):
            print(f"  {paths[key]}")
    print(f"Index of runs: {index_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
