"""Drawing: one face rendered from its labels, optionally with a map of which part each pixel is."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from components.synthetic_data.appearance import sample_appearance
from components.synthetic_data.canvas import PART_BACKGROUND, Painter, background, finish
from components.synthetic_data.face import draw_figure


def render_face_with_parts(
    rng: np.random.Generator, age: int, gender: int, race: int, size: int = 200, *, parts: bool = True
) -> tuple[Image.Image, np.ndarray | None]:
    """Renders one face, optionally with a map of which part each pixel belongs to.

    The image is the same as render_face's for the same rng state: the part map uses no
    randomness.

    Args:
      rng: the random generator (consumed).
      age: age in years.
      gender: 0 male, 1 female.
      race: 0-4 (components.base.labels.RACE_NAMES).
      size: width and height in pixels.
      parts: whether to build the part map.

    Returns:
      (RGB image, uint8 array of PART_* ids of shape (size, size), or None when parts is False).
      Semi-transparent overlays (beard shadow, wrinkles, blush) are not in the part map.
    """
    ap = sample_appearance(rng, age, gender, race)
    n = int(round(size * 1.3))  # room for a rotation of up to 15 degrees before cropping
    s = size / 200.0
    canvas = background(rng, n)
    part_map = Image.new("L", (n, n), PART_BACKGROUND) if parts else None
    b = size * rng.uniform(0.25, 0.31)
    cx = n / 2 + size * float(np.clip(rng.normal(0.0, 0.04), -0.08, 0.08))
    cy = n / 2 - 0.07 * size + size * float(np.clip(rng.normal(0.0, 0.035), -0.07, 0.07))
    draw_figure(Painter(canvas, part_map), ap, rng, cx=cx, cy=cy, b=b, s=s)
    # Rotate about the canvas centre and crop the central size x size in one affine transform.
    angle = math.radians(float(np.clip(rng.normal(0.0, 6.0), -15.0, 15.0)))
    cos, sin, h = math.cos(angle), math.sin(angle), size / 2
    affine = (cos, -sin, n / 2 - cos * h + sin * h, sin, cos, n / 2 - sin * h - cos * h)
    image = finish(rng, canvas.transform((size, size), Image.AFFINE, affine, resample=Image.BILINEAR))
    part_arr = None
    if part_map is not None:
        part_arr = np.asarray(part_map.transform((size, size), Image.AFFINE, affine, resample=Image.NEAREST))
    return image, part_arr


def render_face(rng: np.random.Generator, age: int, gender: int, race: int, size: int = 200) -> Image.Image:
    """Renders one cartoon face whose looks depend on its labels: render_face_with_parts without the part map.

    Returns:
      A size x size RGB PIL image.
    """
    return render_face_with_parts(rng, age, gender, race, size, parts=False)[0]

