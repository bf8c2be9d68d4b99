"""Runs the latest pushed model over a folder of images and writes a CSV.

    python predict.py --images ~/photos                          # -> predictions.csv
    python predict.py --images ~/photos --output out.csv --threshold race_other=0.7

One row per file: file, one probability per label, predicted_labels, error. Files that are not
decodable images get an error and no probabilities; the others are still predicted.
"""

from __future__ import annotations

import argparse
import os
import sys

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SERVING_DIR = os.path.join(REPO_ROOT, "outputs", "serving")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parses the command line."""
    from pipeline.cli import label_value  # light: no TensorFlow

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, help="folder of images (searched recursively)")
    parser.add_argument("--output", default="predictions.csv", help="CSV to write (default: ./predictions.csv)")
    parser.add_argument("--serving-dir", default=DEFAULT_SERVING_DIR,
                        help="where Pusher put the models: <serving-dir>/<pipeline-name>/<version>/")
    parser.add_argument("--pipeline-name", default="facepipe")
    parser.add_argument("--model-dir", default=None, help="a specific model version folder instead of the latest")
    parser.add_argument("--threshold", action="append", type=label_value, default=None, metavar="LABEL=VALUE",
                        help="decision threshold for one label, repeatable")
    parser.add_argument("--default-threshold", type=float, default=0.5,
                        help="threshold for labels without their own (default 0.5)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tflite", action="store_true",
                        help="run the version's on-device model.tflite (pushed with --export-tflite) "
                        "instead of the SavedModel")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"batch size must be >= 1, got {args.batch_size}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Predicts; returns the exit status (0 even when some files were bad: they are in the CSV)."""
    args = parse_args(argv)
    # Before TensorFlow is imported: the model was built with tf_keras (Keras 2).
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, REPO_ROOT)
    from components import predict  # imports TensorFlow

    try:
        model_dir = args.model_dir or predict.latest_model_dir(args.serving_dir, args.pipeline_name)
        summary = predict.predict_folder(
            model_dir,
            args.images,
            args.output,
            threshold_overrides=dict(args.threshold or ()),
            default_threshold=args.default_threshold,
            batch_size=args.batch_size,
            tflite=args.tflite,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"Model: {summary.model_dir}{' (model.tflite)' if args.tflite else ''}")
    print(f"{summary.files} files: {summary.predicted} predicted, {summary.errors} not images or unreadable "
          f"(see the error column)")
    print(f"Wrote {os.path.abspath(summary.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
