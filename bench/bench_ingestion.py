"""Ingestion benchmark: ImageExampleGen's executor on generated folders of 2,400 and 24,000 images.

    .venv/bin/python bench/bench_ingestion.py                      # 2,400 and 24,000 images
    .venv/bin/python bench/bench_ingestion.py --num-images 500     # a quick look

For each size it generates (once, cached under --work-dir) a synthetic UTKFace-style folder,
then runs the executor in a fresh child process (the in-memory Beam DirectRunner, as the local
pipeline does) while this process samples the resident memory of the child and all its
descendants with psutil. It reports images/s (files found / executor seconds: listing, hashing,
decoding and writing) and the peak memory of that process tree, and checks that the peak at the
largest size stays within 1.3x of the peak at the smallest (ingestion streams).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import TreeSampler  # the sibling module (this folder is on sys.path)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORK_DIR = Path(tempfile.gettempdir()) / "facepipe-bench"
TARGET_RATIO = 1.3
SAMPLE_INTERVAL_S = 0.05


def ensure_images(work_dir: Path, num_images: int, seed: int, workers: int) -> Path:
    """Generates the synthetic folder for one size unless it is already complete; returns it."""
    from components import synthetic_data

    folder = work_dir / f"images-{num_images}-seed{seed}"
    started = time.perf_counter()
    _, generated = synthetic_data.ensure_default_dataset(
        folder, synthetic_data.SyntheticSpec(num_images=num_images, seed=seed), workers=workers
    )
    if generated:
        print(f"generated {num_images} images in {folder} ({time.perf_counter() - started:.0f} s)", flush=True)
    return folder


def run_child(data_dir: str, out_dir: str) -> dict:
    """In the child: imports TFX, runs ImageExampleGen's executor on data_dir; returns its numbers."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import psutil

    from components.image_example_gen import executor

    rss_before = psutil.Process().memory_info().rss
    started = time.perf_counter()
    examples = executor.run_on_folder(data_dir, out_dir, code_version="bench")
    seconds = time.perf_counter() - started
    return {
        "files": examples.get_int_custom_property(executor.FILES_FOUND_PROPERTY),
        "quarantined": examples.get_int_custom_property(executor.QUARANTINED_PROPERTY),
        "seconds": seconds,
        "rss_before_mb": rss_before / 2**20,
    }


def measure(data_dir: Path, out_dir: Path) -> dict:
    """Runs the executor in a child process and samples its process tree's memory."""
    import psutil

    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(data_dir), str(out_dir)]
    result_file = out_dir.parent / f"{out_dir.name}.json"
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    log_file = out_dir.parent / f"{out_dir.name}.log"
    started = time.perf_counter()
    with open(log_file, "w") as log:  # TensorFlow's and Beam's start-up noise
        process = subprocess.Popen([*command, str(result_file)], cwd=REPO_ROOT, env=env, stdout=log, stderr=log)
        with TreeSampler(psutil.Process(process.pid), SAMPLE_INTERVAL_S) as sampler:
            code = process.wait()
    if code != 0:
        raise RuntimeError(f"benchmark child failed with exit status {code}; see {log_file}")
    result = json.loads(result_file.read_text())
    result["wall_seconds"] = time.perf_counter() - started
    result["peak_mb"] = sampler.peak / 2**20
    result["images_per_second"] = result["files"] / result["seconds"]
    return result


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark; exit status 1 when peak memory grows more than the target allows."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-images", type=int, nargs="+", default=[2400, 24000], help="folder sizes to run")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR, help="generated images and outputs")
    parser.add_argument("--seed", type=int, default=11, help="synthetic data seed")
    parser.add_argument("--workers", type=int, default=2, help="processes generating images")
    parser.add_argument("--child", nargs=3, metavar=("DATA_DIR", "OUT_DIR", "RESULT_JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT))
    if args.child:
        data_dir, out_dir, result_file = args.child
        Path(result_file).write_text(json.dumps(run_child(data_dir, out_dir)))
        return 0

    import shutil

    rows = []
    for n in sorted(args.num_images):
        data_dir = ensure_images(args.work_dir, n, args.seed, args.workers)
        out_dir = args.work_dir / f"examples-{n}"
        shutil.rmtree(out_dir, ignore_errors=True)
        result = {"num_images": n, **measure(data_dir, out_dir)}
        rows.append(result)
        print(
            f"{n:>7} images: {result['files']} files, {result['quarantined']} quarantined, "
            f"executor {result['seconds']:.1f} s = {result['images_per_second']:.0f} images/s, "
            f"peak memory (process tree) {result['peak_mb']:.0f} MB "
            f"(after imports {result['rss_before_mb']:.0f} MB)",
            flush=True,
        )
    summary = {"runs": rows}
    status = 0
    if len(rows) > 1:
        ratio = rows[-1]["peak_mb"] / rows[0]["peak_mb"]
        summary["peak_ratio"] = ratio
        ok = ratio <= TARGET_RATIO
        print(
            f"peak memory at {rows[-1]['num_images']} / at {rows[0]['num_images']} images: {ratio:.2f}x "
            f"(target <= {TARGET_RATIO}x): {'OK' if ok else 'FAILED'}"
        )
        status = 0 if ok else 1
    (args.work_dir / "results.json").write_text(json.dumps(summary, indent=2))
    print(f"results: {args.work_dir / 'results.json'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
