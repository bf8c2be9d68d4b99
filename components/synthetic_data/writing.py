"""Writing: the JPEG files of a plan, and the completion marker of a generated data folder."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from components.synthetic_data.drawing import render_face
from components.synthetic_data.layout import PlannedImage, SyntheticSpec, image_rng, label_counts, plan

logger = logging.getLogger(__name__)

JPEG_QUALITY = 90
MARKER_SUFFIX = ".complete"  # marker file ``.<folder>.complete`` written NEXT TO the data folder
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclasses.dataclass
class GenerationReport:
    """What generate() wrote.

    Attributes:
      written: number of image files written (malformed names included).
      malformed: the malformed file names, sorted.
      label_counts: counts over the well-formed files: ``{"gender": {name: n}, "race":
        {name: n}, "age_group": {name: n}, "labels": {label name: positives},
        "well_formed": n}``.
      seconds: wall time spent.
    """

    written: int
    malformed: list[str]
    label_counts: dict
    seconds: float = 0.0


def _encode(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _write_one(args: tuple[SyntheticSpec, PlannedImage, str]) -> None:
    spec, item, out_dir = args
    rng, age, gender, race, _ = image_rng(spec, item.index)
    assert (age, gender, race) == (item.age, item.gender, item.race)
    data = _encode(render_face(rng, age, gender, race, spec.image_size))
    with open(os.path.join(out_dir, item.name), "wb") as f:
        f.write(data)



def generate(out_dir: str | Path, spec: SyntheticSpec, *, workers: int = 1) -> GenerationReport:
    """Writes spec.num_images JPEGs into out_dir (created if needed) and nothing else.

    Files already in out_dir are left alone; files with the same names are overwritten.

    Args:
      out_dir: the folder to write into.
      spec: what to generate.
      workers: processes to render with. The output is identical for any value. More than
        one starts 'spawn' worker processes (safe even from a process running TensorFlow),
        which re-import the caller's main module, so that module needs an
        ``if __name__ == "__main__":`` guard; from an interactive or stdin session it
        falls back to one process.

    Returns:
      A GenerationReport.
    """
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = plan(spec)
    tasks = [(spec, it, str(out)) for it in items]
    workers = max(1, min(workers, len(tasks) // 50 or 1))
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file is None or not os.path.exists(main_file):
        workers = 1  # spawn could not re-import the main module
    if workers == 1:
        for task in tasks:
            _write_one(task)
    else:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers) as pool:
            for _ in pool.imap_unordered(_write_one, tasks, chunksize=max(1, len(tasks) // (workers * 8))):
                pass
    return GenerationReport(
        written=len(items),
        malformed=sorted(it.name for it in items if it.malformed),
        label_counts=label_counts(items),
        seconds=time.perf_counter() - start,
    )


def has_images(folder: str | Path) -> bool:
    """Whether a folder holds any non-hidden image file (.jpg, .jpeg, .png)."""
    path = Path(folder)
    if not path.is_dir():
        return False
    return any(
        e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(IMAGE_SUFFIXES)
        for e in path.iterdir()
    )


def marker_path(folder: str | Path) -> Path:
    """The completion marker of a generated folder: a hidden file beside it, not inside it.

    Outside, because the image ExampleGen accounts for every file inside the data folder
    (a marker there would show up as a quarantined hidden file in every run).
    """
    path = Path(folder)
    return path.parent / f".{path.name}{MARKER_SUFFIX}"


def is_complete(folder: str | Path) -> bool:
    """Whether ensure_default_dataset finished generating into folder (its marker exists)."""
    return marker_path(folder).is_file()


def ensure_default_dataset(
    out_dir: str | Path, spec: SyntheticSpec | None = None, *, workers: int = 1
) -> tuple[Path, bool]:
    """Generates a synthetic dataset into out_dir unless it already holds one or other images.

    Generation goes to a hidden temporary sibling folder which is renamed into place
    (or whose files are moved in) only when complete; the hidden marker file
    ``.<folder>.complete`` beside it (JSON: spec, count, malformed names) is written last. A folder with
    the marker (see marker_path), or with any non-hidden image (e.g. real UTKFace data), is left alone.

    Args:
      out_dir: the data folder.
      spec: what to generate; SyntheticSpec() by default.
      workers: processes to render with.

    Returns:
      (out_dir as a Path, whether images were generated by this call).
    """
    spec = spec or SyntheticSpec()
    out = Path(out_dir)
    if is_complete(out):
        return out, False
    if has_images(out):
        logger.info("%s already holds images but no %s marker; leaving it as it is", out, marker_path(out))
        return out, False
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        report = generate(tmp, spec, workers=workers)
        marker = json.dumps(
            {"spec": dataclasses.asdict(spec), "written": report.written, "malformed": report.malformed},
            indent=1,
        )
        try:
            if out.exists() and not any(out.iterdir()):
                out.rmdir()
            if not out.exists():
                os.replace(tmp, out)
            else:
                for entry in tmp.iterdir():
                    os.replace(entry, out / entry.name)
                tmp.rmdir()
            marker_path(out).write_text(marker)
        except OSError:
            if is_complete(out):  # someone else finished first
                shutil.rmtree(tmp, ignore_errors=True)
                return out, False
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("generated %d synthetic images in %s (%.1f s)", report.written, out, report.seconds)
    return out, True

