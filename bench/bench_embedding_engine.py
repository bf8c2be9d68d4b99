"""Benchmark: the frozen embedding pass on TensorFlow against TFLite (XNNPACK), per backbone.

One command, from the repository root:

    .venv/bin/python bench/bench_embedding_engine.py                   # every backbone, 128 px
    .venv/bin/python bench/bench_embedding_engine.py --backbones efficientnet_lite0 --num-images 512

Each backbone runs in a fresh process. It measures, side by side, alternating TF and TFLite
(--repeats, medians):

- the conversion (tflite_engine.convert_feature_extractor, cold, no cache);
- backbone only: images already decoded in memory, batch 32;
- with decoding: JPEG files -> tf.data decode (as the Trainer's embedding pass) -> backbone, the
  interpreter on the main thread while tf.data decodes the next batches;
- for TFLite with decoding, 1 thread and every available CPU (components.cpus);
- the check: largest |TFLite - TF| on one batch against the tolerance (tflite_engine);
- for efficientnet_lite0 (the one backbone with ImageNet weights offline): how far the tolerance
  is from mattering: a head trained for a few epochs on TF embeddings of the images, then the
  largest change of its probabilities with TFLite embeddings, and with TF embeddings moved by
  the full tolerance (each value +/- tolerance, random signs).

keras.applications backbones use ImageNet weights when their file is in the Keras cache, else
random weights (speed does not depend on the values; the report says which).

From the measured rates and conversion time it derives where ``auto`` pays off (the image count
at which the conversion is earned back). Results: <out>/bench_embedding_engine.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from harness import child_env, decoded_batches, write_json, write_markdown  # the sibling module (on sys.path)

from components.trainer.backbone_specs import BACKBONE_NAMES

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "bench", "results")
DEFAULT_DATA = os.path.join(REPO_ROOT, "bench", "work", "data_2400")
BACKBONES = BACKBONE_NAMES


def _image_paths(data_dir: str, n: int) -> list[str]:
    """The first n images whose names carry labels (the synthetic set has a few malformed ones)."""
    sys.path.insert(0, REPO_ROOT)
    from components.base import labels

    def labelled(name: str) -> bool:
        try:
            labels.parse_filename(name)
        except labels.FilenameError:
            return False
        return True

    names = sorted(x for x in os.listdir(data_dir) if x.lower().endswith((".jpg", ".jpeg")) and labelled(x))
    return [os.path.join(data_dir, x) for x in names[:n]]


def child(args: argparse.Namespace) -> dict[str, Any]:
    """Measures one backbone (see the module docstring)."""
    sys.path.insert(0, REPO_ROOT)
    import tensorflow as tf

    from components import cpus
    from components.trainer import backbones, model, tflite_engine, train
    from components.trainer.embeddings import tf_embedder

    train.skip_autograph_for_tf_keras()
    weights = "imagenet"
    try:
        backbone = backbones.build_backbone(args.backbone, args.image_size)
    except backbones.WeightsUnavailableError:
        weights = None
        backbone = backbones.build_backbone(args.backbone, args.image_size, weights=None)
    extractor = model.build_feature_extractor(model.freeze(backbone))
    start = time.monotonic()
    content = tflite_engine.convert_feature_extractor(extractor, args.image_size)
    convert_seconds = time.monotonic() - start
    threads = cpus.available_cpus()
    paths = _image_paths(args.data_dir, args.num_images)

    def batches() -> Any:
        return decoded_batches(paths, args)  # as bench_trainer's bare passes decode

    decoded = [b.numpy() for b in batches()]
    tf_embed = tf_embedder(extractor)
    lite = {t: tflite_engine.TFLiteEmbedder(content, t) for t in sorted({1, threads})}
    tf_embed(tf.constant(decoded[0]))  # trace once, outside the timings
    for embedder in lite.values():
        embedder(decoded[0])

    def rate(fn: Any, source: Any) -> float:
        start = time.monotonic()
        n = 0
        for images in source():
            n += len(fn(images))
        return n / (time.monotonic() - start)

    samples: dict[str, list[float]] = {}
    runs = {
        "tf_backbone_only": lambda: rate(lambda x: tf_embed(tf.constant(x)), lambda: decoded),
        "tflite_backbone_only": lambda: rate(lite[threads], lambda: decoded),
        "tf_with_decoding": lambda: rate(tf_embed, batches),
        **{f"tflite_with_decoding_{t}_threads": (lambda t=t: rate(lambda x: lite[t](x.numpy()), batches))
           for t in lite},
    }
    for _ in range(args.repeats):
        for name, fn in runs.items():
            samples.setdefault(name, []).append(fn())
    reference = tf_embed(tf.constant(decoded[0]))
    check = tflite_engine.compare_embeddings(reference, lite[threads](decoded[0]))
    result: dict[str, Any] = {
        "backbone": args.backbone,
        "weights": weights or "random (ImageNet file not in the Keras cache)",
        "image_size": args.image_size,
        "images": len(paths),
        "threads": threads,
        "convert_seconds": round(convert_seconds, 2),
        "tflite_bytes": len(content),
        "images_per_second": {k: round(statistics.median(v), 1) for k, v in samples.items()},
        "samples": {k: [round(x, 1) for x in v] for k, v in samples.items()},
        "check": {"max_abs_diff": check.max_abs_diff, "scale": check.scale, "tolerance": check.tolerance,
                  "passed": check.passed},
    }
    if weights:
        result["head_sensitivity"] = _head_sensitivity(args, paths, decoded, tf_embed, lite[threads], check.tolerance)
    return result


def _head_sensitivity(
    args: argparse.Namespace, paths: list[str], decoded: list[Any], tf_embed: Any, lite: Any, tolerance: float
) -> dict[str, Any]:
    """How much the check's tolerance moves a trained head's probabilities."""
    import numpy as np
    import tf_keras

    from components.base import labels
    from components.trainer import model

    parsed = [labels.parse_filename(os.path.basename(p)) for p in paths]
    y = np.array([labels.label_vector(p.age, p.gender, p.race) for p in parsed], np.float32)
    e_tf = np.concatenate([tf_embed(tf_keras.backend.constant(x)) for x in decoded])
    e_lite = np.concatenate([lite(x) for x in decoded])
    tf_keras.utils.set_random_seed(0)
    head = model.build_head(e_tf.shape[1], y.shape[1])
    head.compile(optimizer=tf_keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    head.fit(e_tf, y, epochs=5, batch_size=32, verbose=0)
    p_tf = head.predict(e_tf, verbose=0)
    p_lite = head.predict(e_lite, verbose=0)
    signs = np.random.default_rng(0).choice([-1.0, 1.0], size=e_tf.shape).astype(np.float32)
    p_moved = head.predict(e_tf + signs * tolerance, verbose=0)
    return {
        "images": len(paths),
        "max_probability_change_tflite": float(np.abs(p_lite - p_tf).max()),
        "max_probability_change_at_tolerance": float(np.abs(p_moved - p_tf).max()),
        "tolerance": tolerance,
    }


def markdown(results: list[dict[str, Any]]) -> str:
    """A table per backbone, and the derived auto thresholds."""
    lines = [
        "| backbone | weights | TF backbone only | TFLite backbone only | TF with decoding | TFLite with decoding "
        "(1 thread / all) | speed-up with decoding | conversion | max abs diff / tolerance |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        ips = r["images_per_second"]
        all_threads = ips[f"tflite_with_decoding_{r['threads']}_threads"]
        one = ips.get("tflite_with_decoding_1_threads", all_threads)
        lines.append(
            f"| {r['backbone']} | {'ImageNet' if r['weights'] == 'imagenet' else 'random'} "
            f"| {ips['tf_backbone_only']:.0f} | {ips['tflite_backbone_only']:.0f} | {ips['tf_with_decoding']:.0f} "
            f"| {one:.0f} / {all_threads:.0f} | {all_threads / ips['tf_with_decoding']:.2f}x "
            f"| {r['convert_seconds']:.1f} s | {r['check']['max_abs_diff']:.2g} / {r['check']['tolerance']:.2g} |"
        )
    lines.append("")
    lines.append("images/s, medians of the repeats; TFLite with every CPU this process may use "
                 f"({results[0]['threads'] if results else '?'}).")
    for r in results:
        ips = r["images_per_second"]
        saving = 1 / ips["tf_with_decoding"] - 1 / ips[f"tflite_with_decoding_{r['threads']}_threads"]
        if saving > 0:
            lines.append(f"{r['backbone']}: TFLite saves {saving * 1000:.2f} ms per image with decoding; a conversion "
                         f"({r['convert_seconds']:.1f} s) is earned back after "
                         f"{r['convert_seconds'] / saving:,.0f} images.")
        else:
            lines.append(f"{r['backbone']}: TFLite is not faster with decoding here.")
        if "head_sensitivity" in r:
            h = r["head_sensitivity"]
            lines.append(
                f"{r['backbone']}: a head trained on {h['images']} TF embeddings changes its probabilities by at most "
                f"{h['max_probability_change_tflite']:.2g} on TFLite embeddings, and by "
                f"{h['max_probability_change_at_tolerance']:.2g} on TF embeddings moved by the whole tolerance "
                f"({h['tolerance']:.2g})."
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Runs every backbone in its own process and writes the report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=BACKBONES)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-images", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", default=DEFAULT_DATA, help="JPEG folder (default: the trainer bench's 2,400)")
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--backbone", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.backbone:
        write_json(args.result, child(args))
        return 0
    if not os.path.isdir(args.data_dir):
        sys.path.insert(0, REPO_ROOT)
        from components import synthetic_data

        synthetic_data.ensure_default_dataset(args.data_dir, synthetic_data.SyntheticSpec(num_images=2400, seed=2024))
    os.makedirs(args.out, exist_ok=True)
    env = child_env()
    results = []
    for name in args.backbones:
        result_path = os.path.join(args.out, f"engine_{name}.json")
        load = os.getloadavg()[0]
        print(f"{name} ... (load {load:.1f})", flush=True)
        log_path = os.path.join(args.out, f"engine_{name}.log")
        with open(log_path, "w") as log:
            status = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--backbone", name, "--result", result_path,
                 "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
                 "--num-images", str(args.num_images), "--repeats", str(args.repeats), "--data-dir", args.data_dir],
                env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, check=False,
            ).returncode
        if status != 0:
            raise RuntimeError(f"{name} failed (exit {status}); see {log_path}")
        with open(result_path) as f:
            result = json.load(f)
        result["load_before"], result["load_after"] = round(load, 2), round(os.getloadavg()[0], 2)
        results.append(result)
        print(json.dumps(result["images_per_second"]), flush=True)
    write_json(os.path.join(args.out, "bench_embedding_engine.json"), results)
    write_markdown(os.path.join(args.out, "bench_embedding_engine.md"), markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
