"""The command line of the generator (data/generate.py runs it)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from components.synthetic_data.layout import SyntheticSpec
from components.synthetic_data.writing import ensure_default_dataset, generate, has_images


def _parser() -> argparse.ArgumentParser:
    default = SyntheticSpec()
    p = argparse.ArgumentParser(
        prog="generate.py", description="Write a deterministic synthetic UTKFace-format image folder."
    )
    p.add_argument("--out", required=True, help="folder to write the images into (created if needed)")
    p.add_argument(
        "--num-images", type=int, default=default.num_images, help="files to write, malformed included"
    )
    p.add_argument("--seed", type=int, default=default.seed)
    p.add_argument("--image-size", type=int, default=default.image_size)
    p.add_argument("--malformed-fraction", type=float, default=default.malformed_fraction)
    p.add_argument(
        "--balanced", action="store_true", help="cycle evenly through genders, races and age groups"
    )
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="rendering processes")
    p.add_argument(
        "--if-missing",
        action="store_true",
        help="generate only if the folder has no images yet, and write the .<folder>.complete marker beside it",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point.

    Args:
      argv: arguments without the program name; sys.argv[1:] when None.

    Returns:
      The process exit status.
    """
    args = _parser().parse_args(argv)
    try:
        spec = SyntheticSpec(
            num_images=args.num_images,
            seed=args.seed,
            image_size=args.image_size,
            malformed_fraction=args.malformed_fraction,
            balanced=args.balanced,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    if args.if_missing:
        path, generated = ensure_default_dataset(args.out, spec, workers=args.workers)
        if not generated:
            print(f"{path} already holds images; nothing generated")
            return 0
        print(f"generated {spec.num_images} images in {path} ({time.perf_counter() - start:.1f} s)")
        return 0
    if has_images(args.out):
        print(f"warning: {args.out} already holds images; adding to them", file=sys.stderr)
    report = generate(args.out, spec, workers=args.workers)
    rate = report.written / report.seconds if report.seconds > 0 else float("inf")
    print(
        f"wrote {report.written} images ({len(report.malformed)} with malformed names) to {args.out} "
        f"in {report.seconds:.1f} s ({rate:.0f} images/s)"
    )
    print(json.dumps({k: v for k, v in report.label_counts.items() if k != "labels"}))
    return 0
