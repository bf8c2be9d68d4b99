"""The figure: clothes, neck, ears, head and face (eyes, brows, nose, mouth, wrinkles, accessories)."""

from __future__ import annotations

import math

import numpy as np

from components.synthetic_data.appearance import Appearance
from components.synthetic_data.canvas import (
    PART_ACCESSORY,
    PART_CLOTHES,
    PART_EYES,
    PART_HAIR,
    PART_MOUTH,
    PART_SKIN,
    Painter,
    rgb,
)
from components.synthetic_data.hair import draw_back_hair, draw_front_hair


def _head_outline(cx: float, cy: float, a: float, b: float, ap: Appearance) -> list[tuple[float, float]]:
    """The head as a polygon: an ellipse on top; below, squarer for a square jaw, else a tapering chin."""
    t = np.linspace(0.0, 2.0 * math.pi, 72, endpoint=False)
    cos, sin = np.cos(t), np.sin(t)
    lower = sin > 0
    power = np.where(lower & ap.square_jaw, 2.0 / 2.8, 1.0)
    x = np.sign(cos) * np.abs(cos) ** power
    y = np.sign(sin) * np.abs(sin) ** power
    if not ap.square_jaw:
        x = x * (1.0 - np.where(lower, 0.1 * (1.0 - ap.child) * sin**2, 0.0))
    return [(float(cx + a * u), float(cy + b * v)) for u, v in zip(x, y, strict=True)]



def draw_figure(
    p: Painter, ap: Appearance, rng: np.random.Generator, *, cx: float, cy: float, b: float, s: float
) -> None:
    """Draws shoulders, neck, head, hair and face, centred on the head at (cx, cy).

    b is the head's half-height and s the pixel scale (image size / 200).
    """
    a = b * ap.aspect
    c = ap.child
    skin, hair = ap.skin, ap.hair
    skin_c = rgb(skin)
    shade = rgb(skin * 0.84)
    lw = max(1, int(round(1.3 * s)))

    # --- behind the head: clothes, long hair, bun ---
    sw = a * (1.35 + 1.05 * (1.0 - c)) * (1.08 if ap.square_jaw else 1.0)
    top = cy + b * (1.22 - 0.12 * c)
    p("ellipse", (cx - sw, top, cx + sw, top + 2.2 * b), fill=rgb(ap.clothes), part=PART_CLOTHES)
    draw_back_hair(p, ap, rng, cx=cx, cy=cy, a=a, b=b)

    # --- neck and neckline ---
    nw = a * (0.36 + (0.06 if ap.square_jaw else 0.0)) * (1.0 - 0.15 * c)
    p("rectangle", (cx - nw, cy + b * 0.5, cx + nw, top + b * 0.35), fill=shade, part=PART_SKIN)
    p(
        "chord",
        (cx - nw * 1.5, top - b * 0.25, cx + nw * 1.5, top + b * 0.45),
        0,
        180,
        fill=shade,
        part=PART_SKIN,
    )

    # --- ears and head ---
    ear_y = cy + b * 0.05
    for sx in (-1, 1):
        ex = cx + sx * a * 0.97
        p(
            "ellipse",
            (ex - a * 0.16, ear_y - b * 0.2, ex + a * 0.16, ear_y + b * 0.2),
            fill=skin_c,
            part=PART_SKIN,
        )
    p("polygon", _head_outline(cx, cy, a, b, ap), fill=skin_c, part=PART_SKIN)
    hairline = draw_front_hair(p, ap, rng, cx=cx, cy=cy, a=a, b=b)

    # --- face geometry (children: low, large eyes; small nose and mouth) ---
    ey = cy + b * (-0.02 + 0.17 * c)
    dx = a * (0.42 + 0.02 * c)
    ew = a * (0.2 + 0.08 * c) * ap.eye_scale
    eh = ew * ap.eye_ratio
    y_tip = ey + b * (0.36 - 0.12 * c)
    nose_w = a * 0.13 * ap.nose_width * (1.0 - 0.3 * c)
    ym = y_tip + b * (0.22 - 0.06 * c)
    mw = a * (0.36 - 0.1 * c) * (1.06 if ap.lip_scale > 1.25 else 1.0)
    lt = b * 0.045 * ap.lip_scale * (1.0 - 0.3 * c)

    # --- beard (under the mouth) ---
    if ap.beard in ("shadow", "full"):
        alpha = 60 if ap.beard == "shadow" else 235
        start = 22 if ap.beard == "shadow" else 12
        p(
            "chord",
            (cx - a, cy - b, cx + a, cy + b),
            start,
            180 - start,
            fill=rgb(hair, alpha),
            part=PART_HAIR if ap.beard == "full" else None,
        )
        p(
            "ellipse",
            (cx - mw * 1.35, y_tip + b * 0.02, cx + mw * 1.35, ym + lt * 3),
            fill=rgb(hair, alpha),
            part=PART_HAIR if ap.beard == "full" else None,
        )
    if ap.beard in ("moustache", "full"):
        p(
            "ellipse",
            (cx - mw * 1.1, y_tip + b * 0.04, cx + mw * 1.1, ym - lt * 0.4),
            fill=rgb(hair * 0.9),
            part=PART_HAIR,
        )

    # --- eyes and brows ---
    for sx in (-1, 1):
        ex = cx + sx * dx
        look = ew * ap.gaze
        p("ellipse", (ex - ew, ey - eh, ex + ew, ey + eh), fill=(246, 244, 238), part=PART_EYES)
        ri_x, ri_y = ew * 0.5, min(ew * 0.5, eh * 0.98)
        p("ellipse", (ex + look - ri_x, ey - ri_y, ex + look + ri_x, ey + ri_y), fill=ap.iris, part=PART_EYES)
        rp = ri_y * 0.5
        p("ellipse", (ex + look - rp, ey - rp, ex + look + rp, ey + rp), fill=(12, 10, 10), part=PART_EYES)
        lid_w = max(1, int(round((2.4 if ap.lashes else 1.3) * s)))
        p("arc", (ex - ew, ey - eh, ex + ew, ey + eh), 180, 360, fill=(28, 20, 18), width=lid_w)
        if ap.lashes:
            ox = ex + sx * ew
            p("line", [(ox, ey), (ox + sx * ew * 0.35, ey - eh * 0.7)], fill=(28, 20, 18), width=lid_w)
        if ap.crease:
            p(
                "arc",
                (ex - ew * 1.05, ey - eh * 1.9, ex + ew * 1.05, ey + eh * 0.6),
                200,
                340,
                fill=rgb(skin * 0.7),
                width=lw,
            )
        by = ey - eh - b * (0.1 - 0.02 * c)
        bw = max(1, int(round((3.2 if ap.beard != "none" or ap.square_jaw else 2.2) * ap.brow_weight * s)))
        brow = [
            (ex - sx * ew * 1.05, by + b * 0.02),
            (ex, by - b * 0.025),
            (ex + sx * ew * 1.15, by + b * 0.01),
        ]
        p("line", brow, fill=rgb(ap.brow), width=bw, joint="curve")

    # --- nose ---
    nose_col = rgb(skin * 0.66)
    p(
        "line",
        [(cx - nose_w * 0.25, ey + b * 0.06), (cx - nose_w * 0.6, y_tip - nose_w * 0.5)],
        fill=rgb(skin * 0.78, 200),
        width=lw,
    )
    p(
        "arc",
        (cx - nose_w, y_tip - nose_w * 0.9, cx + nose_w, y_tip + nose_w * 0.35),
        15,
        165,
        fill=nose_col,
        width=lw,
    )
    for sx in (-1, 1):
        nx = cx + sx * nose_w * 0.5
        p(
            "ellipse",
            (nx - nose_w * 0.26, y_tip - nose_w * 0.15, nx + nose_w * 0.26, y_tip + nose_w * 0.12),
            fill=rgb(skin * 0.5),
        )

    # --- mouth ---
    p("ellipse", (cx - mw, ym - lt, cx + mw, ym + lt * 1.3), fill=rgb(ap.lip), part=PART_MOUTH)
    curve = b * 0.035 * ap.smile
    p(
        "line",
        [(cx - mw, ym - curve), (cx, ym + curve * 0.4), (cx + mw, ym - curve)],
        fill=rgb(ap.lip * 0.45),
        width=lw,
        joint="curve",
    )

    # --- cheeks ---
    if ap.blush > 0.05:
        for sx in (-1, 1):
            bx, byy = cx + sx * a * 0.55, ey + b * 0.27
            p(
                "ellipse",
                (bx - a * 0.17, byy - b * 0.08, bx + a * 0.17, byy + b * 0.08),
                fill=(226, 96, 100, int(55 * ap.blush)),
            )

    # --- wrinkles: forehead lines, nasolabial folds, crow's feet, bags, age spots ---
    w = ap.wrinkles
    if w > 0.0:
        wc = rgb(skin * 0.6, int(70 + 160 * w))
        for k in range(int(round(w * 4.0))):
            fy = cy - b * (0.24 + 0.045 * k)
            if fy < hairline + b * 0.04:
                break
            half = a * (0.32 + 0.04 * k)
            p(
                "line",
                [(cx - half, fy + b * 0.015), (cx, fy - b * 0.01), (cx + half, fy + b * 0.015)],
                fill=wc,
                width=lw,
                joint="curve",
            )
        if w > 0.12:
            for sx in (-1, 1):
                p(
                    "line",
                    [
                        (cx + sx * nose_w * 1.2, y_tip - nose_w * 0.3),
                        (cx + sx * mw * 1.1, ym - lt * 0.2),
                        (cx + sx * mw * 1.2, ym + lt * 2.2),
                    ],
                    fill=wc,
                    width=lw,
                    joint="curve",
                )
        if w > 0.3:
            for sx in (-1, 1):
                ox = cx + sx * (dx + ew * 1.1)
                for t in (-0.35, 0.0, 0.35):
                    p(
                        "line",
                        [(ox, ey + t * eh), (ox + sx * a * 0.12, ey + t * eh + t * b * 0.12)],
                        fill=wc,
                        width=lw,
                    )
        if w > 0.45:
            for sx in (-1, 1):
                ex = cx + sx * dx
                p(
                    "arc",
                    (ex - ew * 0.9, ey - eh * 0.2, ex + ew * 0.9, ey + eh * 2.2),
                    20,
                    160,
                    fill=wc,
                    width=lw,
                )
        if w > 0.6:
            for sx in (-1, 1):
                p(
                    "arc",
                    (cx + sx * mw * 1.3 - a * 0.2, ym, cx + sx * mw * 1.3 + a * 0.2, ym + b * 0.3),
                    60,
                    120,
                    fill=wc,
                    width=lw,
                )
            spot = rgb(skin * 0.72, 150)
            for _ in range(int(rng.integers(0, 5))):
                sx_, sy_ = cx + rng.uniform(-0.7, 0.7) * a, cy + rng.uniform(-0.6, 0.5) * b
                r = rng.uniform(0.8, 2.0) * s
                p("ellipse", (sx_ - r, sy_ - r, sx_ + r, sy_ + r), fill=spot)

    # --- accessories ---
    if ap.earrings is not None:
        r = max(1.5, 3.2 * s)
        for sx in (-1, 1):
            ex, ey_ = cx + sx * a * 1.0, ear_y + b * 0.24
            if ap.style in ("long", "bob") and rng.random() < 0.5:
                ex += sx * a * 0.28  # shows beside the hair
            p("ellipse", (ex - r, ey_ - r, ex + r, ey_ + r), fill=ap.earrings, part=PART_ACCESSORY)
    if ap.bindi:
        r = max(1.2, 2.4 * s)
        y_b = ey - eh - b * 0.17
        p("ellipse", (cx - r, y_b - r, cx + r, y_b + r), fill=(196, 24, 40), part=PART_ACCESSORY)
    if ap.glasses is not None:
        gw = max(1, int(round(1.8 * s)))
        for sx in (-1, 1):
            ex = cx + sx * dx
            p(
                "rounded_rectangle",
                (ex - ew * 1.35, ey - ew * 0.8, ex + ew * 1.35, ey + ew * 0.8),
                radius=ew * 0.4,
                outline=ap.glasses,
                width=gw,
            )
        p("line", [(cx - dx + ew * 1.35, ey), (cx + dx - ew * 1.35, ey)], fill=ap.glasses, width=gw)

