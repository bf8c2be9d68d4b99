"""What per-example predictions cost: carried through the Evaluator (EvalRows) or a second scoring pass.

On a finished pipeline root (a default run), with its pushed model and its eval split:

(a) TFMA as the Evaluator runs it (build_eval_config, the model's transform_features signature),
    with and without the EvalRows metric, alternating, ``--repeats`` times each: the in-pipeline cost
    of carrying file names and rows through the shared per-slice combiner, and the size it adds to
    the metrics output;
(b) the alternative: load the SavedModel and score the eval split once more (decode, backbone),
    as a separate scoring pass would (for one model; with a baseline it is twice that).

    .venv/bin/python bench/bench_eval_rows.py --pipeline-root outputs/pipeline_root --serving-dir outputs/serving
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _eval_files(pipeline_root: str) -> list[str]:
    files = sorted(glob.glob(os.path.join(pipeline_root, "ImageExampleGen", "examples", "*", "Split-eval", "*")))
    if not files:
        raise SystemExit(f"no eval split under {pipeline_root}/ImageExampleGen")
    newest = os.path.dirname(files[-1])
    return sorted(glob.glob(os.path.join(newest, "*")))


def _tfma(model_dir: str, files: list[str], with_rows: bool, out: str) -> float:
    import tensorflow_model_analysis as tfma

    from components.evaluation.eval_config import build_eval_config

    config = build_eval_config()
    if not with_rows:
        spec = config.metrics_specs[0]
        keep = [m for m in spec.metrics if m.class_name != "EvalRows"]
        del spec.metrics[:]
        spec.metrics.extend(keep)
    config = tfma.utils.update_eval_config_with_defaults(config, rubber_stamp=True)  # no baseline here
    model = tfma.default_eval_shared_model(model_dir, eval_config=config)
    start = time.perf_counter()
    tfma.run_model_analysis(eval_shared_model=model, eval_config=config, data_location=os.path.dirname(files[0])
                            + "/*", file_format="tfrecords", output_path=out)
    return time.perf_counter() - start


def _scoring_pass(model_dir: str, files: list[str]) -> tuple[float, int]:
    import tensorflow as tf

    start = time.perf_counter()
    serve = tf.saved_model.load(model_dir).signatures["serving_default"]
    n = 0
    compression = "GZIP" if files[0].endswith(".gz") else ""
    for batch in tf.data.TFRecordDataset(files, compression_type=compression).batch(64):
        serve(examples=batch)
        n += int(batch.shape[0])
    return time.perf_counter() - start, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline-root", required=True)
    parser.add_argument("--serving-dir", required=True)
    parser.add_argument("--pipeline-name", default="facepipe")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from components import predict

    model_dir = predict.latest_model_dir(args.serving_dir, args.pipeline_name)
    files = _eval_files(args.pipeline_root)
    times: dict[bool, list[float]] = {True: [], False: []}
    sizes: dict[bool, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for with_rows in (True, False):
                out = os.path.join(tmp, f"{with_rows}-{repeat}")
                times[with_rows].append(_tfma(model_dir, files, with_rows, out))
                sizes[with_rows] = sum(os.path.getsize(p) for p in glob.glob(os.path.join(out, "metrics*")))
                print(f"TFMA {'with' if with_rows else 'without'} EvalRows: {times[with_rows][-1]:.1f} s", flush=True)
    seconds, n = _scoring_pass(model_dir, files)
    print(f"\neval split: {n} examples, model {model_dir}")
    for with_rows in (False, True):
        runs = ", ".join(f"{t:.1f}" for t in times[with_rows])
        label = "with   " if with_rows else "without"
        print(f"TFMA {label} EvalRows: {runs} s; metrics output {sizes[with_rows]:,} bytes")
    print(f"separate scoring pass (load the SavedModel, decode + backbone over the eval split, one model): "
          f"{seconds:.1f} s")


if __name__ == "__main__":
    main()
