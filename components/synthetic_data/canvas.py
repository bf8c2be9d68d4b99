"""The canvas: a painter that also fills a part map, the background, and the camera finish."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

PART_BACKGROUND, PART_SKIN, PART_HAIR, PART_CLOTHES, PART_EYES, PART_MOUTH, PART_ACCESSORY = range(7)


def rgb(c: np.ndarray | Sequence[float], alpha: int | None = None) -> tuple[int, ...]:
    vals = tuple(int(round(min(255.0, max(0.0, float(v))))) for v in c)
    return vals if alpha is None else (*vals, int(alpha))


class Painter:
    """Draws on the image and, optionally, the same opaque shapes on a part-id map."""

    def __init__(self, image: Image.Image, parts: Image.Image | None):
        self._draw = ImageDraw.Draw(image, "RGBA")
        self._parts = ImageDraw.Draw(parts) if parts is not None else None

    def __call__(self, kind: str, *args: Any, part: int | None = None, **kwargs: Any) -> None:
        getattr(self._draw, kind)(*args, **kwargs)
        if self._parts is not None and part is not None:
            kwargs = dict(kwargs)
            for key in ("fill", "outline"):
                if kwargs.get(key) is not None:
                    kwargs[key] = part
            getattr(self._parts, kind)(*args, **kwargs)


def background(rng: np.random.Generator, n: int) -> Image.Image:
    """A colour gradient with low-frequency blotches and a few random shapes."""
    c1, c2 = rng.uniform(0.0, 255.0, (2, 3))
    theta = rng.uniform(0.0, 2.0 * math.pi)
    k = int(rng.integers(3, 9))  # drawn small, then upsampled: cheap and smooth
    coords = np.linspace(-0.5, 0.5, k)
    ramp = coords[None, :] * math.cos(theta) + coords[:, None] * math.sin(theta) + 0.5
    low = c1 + (c2 - c1) * ramp[..., None] + rng.normal(0.0, rng.uniform(5.0, 30.0), (k, k, 3))
    image = Image.fromarray(np.clip(low, 0, 255).astype(np.uint8)).resize((n, n), Image.BILINEAR)
    draw = ImageDraw.Draw(image, "RGBA")
    for _ in range(int(rng.integers(0, 7))):
        x0, y0 = rng.uniform(-0.2 * n, n, 2)
        w, h = rng.uniform(0.05 * n, 0.5 * n, 2)
        color = (*(int(v) for v in rng.integers(0, 256, 3)), int(rng.integers(70, 256)))
        kind = int(rng.integers(0, 4))
        box = (x0, y0, x0 + w, y0 + h)
        if kind == 0:
            draw.ellipse(box, fill=color)
        elif kind == 1:
            draw.rectangle(box, fill=color)
        elif kind == 2:
            draw.line(box, fill=color, width=int(rng.integers(2, max(3, n // 20))))
        else:
            pts = rng.uniform(0.0, n, (3, 2))
            draw.polygon([tuple(p) for p in pts], fill=color)
    return image



def finish(rng: np.random.Generator, image: Image.Image) -> Image.Image:
    """Blur, lighting (gain, white balance, contrast, directional ramp) and sensor noise."""
    n = image.size[0]
    image = image.filter(ImageFilter.BoxBlur(float(rng.uniform(0.1, 1.0))))
    gain = rng.uniform(0.75, 1.2) * rng.uniform(0.92, 1.08, 3)
    contrast = rng.uniform(0.8, 1.15)
    pivot = 128.0 * float(gain.mean())
    v = np.arange(256, dtype=float)
    lut = np.concatenate([np.clip((v * g - pivot) * contrast + pivot, 0, 255) for g in gain])
    image = image.point(np.round(lut).astype(np.uint8).tolist())
    theta = rng.uniform(0.0, 2.0 * math.pi)
    amp = rng.uniform(0.0, 0.35)
    coords = np.linspace(-0.5, 0.5, n, dtype=np.float32)
    light = 1.0 + amp * (
        coords[None, :] * np.float32(math.cos(theta)) + coords[:, None] * np.float32(math.sin(theta))
    )
    arr = np.asarray(image, dtype=np.float32) * np.repeat(light[..., None], 3, axis=2)
    # Triangular noise from two uniform byte draws (sd 104 before scaling): much cheaper than normal().
    sigma = rng.uniform(1.5, 8.0)
    u1 = np.frombuffer(rng.bytes(n * n * 3), dtype=np.uint8).astype(np.float32)
    u2 = np.frombuffer(rng.bytes(n * n * 3), dtype=np.uint8).astype(np.float32)
    arr += ((u1 + u2 - 255.0) * np.float32(sigma / 104.0)).reshape(arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))

