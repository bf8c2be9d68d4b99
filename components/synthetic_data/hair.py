"""Hair: the hair behind the head and the hair over it (top, hairline, fringe, side locks, waves)."""

from __future__ import annotations

import math

import numpy as np

from components.synthetic_data.appearance import Appearance
from components.synthetic_data.canvas import PART_HAIR, PART_SKIN, Painter, rgb

# The hair behind the head, per style: half-width (times a), top and bottom (times b from cy).
_BACK_HAIR = {"long": (1.24, 1.12, 0.9), "bob": (1.27, 1.12, 1.0), "afro": (1.65, 1.45, 0.75)}


def draw_back_hair(
    p: Painter, ap: Appearance, rng: np.random.Generator, *, cx: float, cy: float, a: float, b: float
) -> None:
    """Draws the hair that lies behind the head: a mass of hair (long, bob, afro) or a bun (updo)."""
    hair_c = rgb(ap.hair)
    if ap.style in _BACK_HAIR:
        width, up, down = _BACK_HAIR[ap.style]
        p("ellipse", (cx - a * width, cy - b * up, cx + a * width, cy + b * down), fill=hair_c, part=PART_HAIR)
        if ap.style == "long":
            length = b * rng.uniform(1.5, 2.2)
            p(
                "rounded_rectangle",
                (cx - a * 1.24, cy, cx + a * 1.24, cy + length),
                radius=a * 0.35,
                fill=hair_c,
                part=PART_HAIR,
            )
    elif ap.style == "updo":
        r = a * 0.42
        bx = cx + a * rng.uniform(-0.5, 0.5)
        p(
            "ellipse",
            (bx - r, cy - b * 1.05 - r * 1.4, bx + r, cy - b * 1.05 + r * 0.6),
            fill=hair_c,
            part=PART_HAIR,
        )


def _cap(
    p: Painter, fill: tuple[int, ...], *, cx: float, a: float, width: float, top: float, depth: float,
    part: int | None = PART_HAIR,
) -> float:
    """The top hair: the upper half of an ellipse from ``top`` down to ``top + 2 depth``.

    Returns:
      Its flat lower edge, ``top + depth``.
    """
    bottom = top + depth
    p("chord", (cx - a * width, top, cx + a * width, bottom + depth), 180, 360, fill=fill, part=part)
    return bottom


def _parting(p: Painter, skin: tuple[int, ...], *, centre: float, half: float, bottom: float, arch: float,
             b: float) -> float:
    """The forehead arched up into the top hair (centred on the parting); returns the hairline's y."""
    p("ellipse", (centre - half, bottom - arch, centre + half, bottom + b * 0.5), fill=skin, part=PART_SKIN)
    return bottom - arch


def _side_locks(
    p: Painter, fill: tuple[int, ...], *, cx: float, a: float, inner: float,
    top_out: float, top_in: float, low_in: float, low_out: float,
) -> None:
    """Hair down both sides of the head, between 1.04 a and ``inner`` a from the middle."""
    for sx in (-1, 1):
        x_out, x_in = cx + sx * a * 1.04, cx + sx * a * inner
        p("polygon", [(x_out, top_out), (x_in, top_in), (x_in, low_in), (x_out, low_out)], fill=fill, part=PART_HAIR)


def draw_front_hair(
    p: Painter, ap: Appearance, rng: np.random.Generator, *, cx: float, cy: float, a: float, b: float
) -> float:
    """Draws the hair over the head (top, fringe, side strands, sideburns).

    Returns:
      The y of the hairline in the middle of the forehead (cy - b when there is none).
    """
    hair_c = rgb(ap.hair)
    skin_c = rgb(ap.skin)
    hl = b * rng.uniform(0.66, 0.78)  # how far the top hair comes down from cy - 1.1 b
    hairline = cy - b
    if ap.style in ("short", "medium", "updo"):
        depth = hl * (1.08 if ap.style == "medium" else 1.0)
        bottom = _cap(p, hair_c, cx=cx, a=a, width=1.06, top=cy - b * 1.1, depth=depth)
        off = a * rng.uniform(-0.25, 0.25)  # an arched, optionally side-parted hairline
        arch = b * rng.uniform(0.08, 0.2)
        hairline = _parting(p, skin_c, centre=cx + off, half=a * 0.62, bottom=bottom, arch=arch, b=b)
        low = cy + (b * 0.02 if ap.style == "medium" else -b * 0.08)
        edge = bottom - b * 0.1
        _side_locks(p, hair_c, cx=cx, a=a, inner=0.86, top_out=edge, top_in=edge, low_in=low, low_out=low)
    elif ap.style in ("buzz", "baby"):
        alpha = 150 if ap.style == "buzz" else 95
        part = PART_HAIR if ap.style == "buzz" else None
        hairline = _cap(p, rgb(ap.hair, alpha), cx=cx, a=a, width=1.02, top=cy - b * 1.04, depth=hl, part=part)
    elif ap.style == "bald":
        _side_locks(p, hair_c, cx=cx, a=a, inner=0.84, top_out=cy - b * 0.45, top_in=cy - b * 0.4,
                    low_in=cy + b * 0.02, low_out=cy + b * 0.05)
    else:  # long, bob, afro
        fringe = rng.random() < 0.5
        depth = hl * (1.12 if fringe else 0.95)
        grow = 1.25 if ap.style == "afro" else 1.08
        bottom = _cap(p, hair_c, cx=cx, a=a, width=grow, top=cy - b * 1.12 * grow, depth=depth * grow)
        hairline = bottom
        if fringe:
            teeth = int(rng.integers(4, 8))
            xs = np.linspace(cx - a * 0.75, cx + a * 0.75, teeth + 1)
            for x0, x1 in zip(xs[:-1], xs[1:], strict=True):
                tip = bottom + b * rng.uniform(0.04, 0.1)
                p("polygon", [(x0, bottom - 1), (x1, bottom - 1), ((x0 + x1) / 2, tip)], fill=hair_c, part=PART_HAIR)
        else:
            off = a * rng.choice([-0.3, 0.3])
            arch = b * rng.uniform(0.1, 0.2)
            hairline = _parting(p, skin_c, centre=cx + off, half=a * 0.6, bottom=bottom, arch=arch, b=b)
        if ap.style != "afro":
            low = cy + b * (1.15 if ap.style == "long" else 0.8)
            for sx in (-1, 1):
                x_out, x_in = cx + sx * a * 1.2, cx + sx * a * 0.8
                box = (min(x_out, x_in), cy - b * 0.85, max(x_out, x_in), low)
                p("ellipse", box, fill=hair_c, part=PART_HAIR)
    if ap.wavy and ap.style not in ("bald", "baby", "buzz"):
        _draw_waves(p, ap, rng, cx=cx, top=cy - b * 1.05, bottom=hairline, a=a)
    return float(hairline)


def _draw_waves(
    p: Painter, ap: Appearance, rng: np.random.Generator, *, cx: float, top: float, bottom: float, a: float
) -> None:
    """Wavy strands across the top hair, a little darker (or lighter, for black hair) than the hair."""
    color = rgb(ap.hair + 50.0 if ap.hair.mean() < 60 else ap.hair * 0.62)
    width = max(1, int(round(a / 30.0)))
    phase = rng.uniform(0.0, 2.0 * math.pi)
    xs = np.linspace(-0.75, 0.75, 13)
    for k, frac in enumerate((0.3, 0.55, 0.8)):
        y0 = top + (bottom - top) * frac
        half = np.sqrt(max(0.0, 1.0 - (1.0 - frac) ** 2))  # follow the round top of the head
        ys = y0 + a * 0.05 * np.sin(xs * 9.0 + phase + k)
        p("line", [(cx + x * a * half, y) for x, y in zip(xs, ys, strict=True)], fill=color, width=width)

