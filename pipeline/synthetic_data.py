"""Deterministic synthetic stand-in for UTKFace.

UTKFace cannot be downloaded where this project is built and tested, so this module
draws cartoon faces whose looks depend on the labels (age, gender, race) and writes
them as 200x200 RGB JPEGs named the UTKFace way,
``{age}_{gender}_{race}_{yyyymmddHHMMSSfff}.jpg.chip.jpg``.

The cues are meant to be learnable by a frozen ImageNet CNN plus a small head, but
not trivially: every cue is drawn from overlapping per-label distributions and the
figure sits on a random background with random position, scale, rotation, lighting,
noise and blur. See data/README.md for how each label is rendered.

Everything is deterministic: image ``i`` draws all its randomness from
``np.random.default_rng([seed, i])``, so the same seed and count give byte-identical
files (and, outside balanced mode, image ``i`` is the same whatever the count).

Nothing happens at import time.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import functools
import io
import json
import logging
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from components.base import labels

logger = logging.getLogger(__name__)

# --- label frequencies (UTKFace-like) -----------------------------------------------------------------
FEMALE_PROBABILITY = 0.48
RACE_PROBABILITIES = (0.42, 0.19, 0.145, 0.17, 0.075)  # white, black, asian, indian, other
# One probability per components.base.labels.AGE_GROUPS entry: 0-12, 13-19, 20-39, 40-59, 60+.
AGE_GROUP_PROBABILITIES = (0.14, 0.05, 0.50, 0.20, 0.11)
SYNTHETIC_AGE_MIN, SYNTHETIC_AGE_MAX = 1, 116  # UTKFace has no age 0

# --- files ---------------------------------------------------------------------------------------------
JPEG_QUALITY = 90
MARKER_SUFFIX = ".complete"  # marker file ``.<folder>.complete`` written NEXT TO the data folder
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MALFORMED_KINDS = ("missing_field", "empty_field", "missing_dot", "stray_space")
_DATETIME_START = _dt.datetime(2016, 12, 16)
_DATETIME_SPAN_MS = 45 * 24 * 3600 * 1000

# --- part ids of the optional part map (render_face_with_parts) ----------------------------------------
PART_BACKGROUND, PART_SKIN, PART_HAIR, PART_CLOTHES, PART_EYES, PART_MOUTH, PART_ACCESSORY = range(7)

Color = tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """What to generate.

    Attributes:
      num_images: number of files to write, malformed names included.
      seed: base seed; image i uses np.random.default_rng([seed, i]).
      image_size: width and height in pixels.
      malformed_fraction: fraction of files given a malformed (unparseable) name; when
        positive and num_images >= 50, at least 3 files are malformed.
      balanced: cycle deterministically through genders, races and age groups instead
        of drawing UTKFace-like frequencies (for tiny end-to-end tests).
    """

    num_images: int = 1500
    seed: int = 0
    image_size: int = 200
    malformed_fraction: float = 0.007
    balanced: bool = False

    def __post_init__(self) -> None:
        if self.num_images < 0:
            raise ValueError(f"num_images must be >= 0, got {self.num_images}")
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32, got {self.image_size}")
        if not 0.0 <= self.malformed_fraction <= 1.0:
            raise ValueError(f"malformed_fraction must be in [0, 1], got {self.malformed_fraction}")


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


# ======================================================================================================
# Labels
# ======================================================================================================


@functools.cache
def _age_table() -> tuple[np.ndarray, np.ndarray, tuple[tuple[int, int], ...]]:
    """Returns (ages, per-age probability, per-group (start, stop) index ranges into ages)."""
    ages = np.arange(SYNTHETIC_AGE_MIN, SYNTHETIC_AGE_MAX + 1)
    shape = np.zeros(len(ages))
    bounds = [lower for lower, _ in labels.AGE_GROUPS] + [SYNTHETIC_AGE_MAX + 1]
    groups = []
    for g, prob in enumerate(AGE_GROUP_PROBABILITIES):
        lo, hi = max(bounds[g], SYNTHETIC_AGE_MIN), bounds[g + 1]
        a = np.arange(lo, hi).astype(float)
        if g == 0:  # spike at 1, then slowly falling
            w = np.where(a == 1, 0.0, 1.0 - 0.04 * (a - 2))
            spike_age, spike = 1, 0.33
        elif g == 1:
            w, spike_age, spike = 1.0 + 0.15 * (a - 13), None, 0.0
        elif g == 2:  # broad bump around 28 plus UTKFace's spike at 26
            w = np.exp(-(((a - 28.0) / 8.0) ** 2))
            w[a == 26] = 0.0
            spike_age, spike = 26, 0.18
        elif g == 3:
            w, spike_age, spike = np.exp(-(a - 40.0) / 18.0), None, 0.0
        else:  # long tail, very few centenarians
            w = np.exp(-(a - 60.0) / 10.0) * np.where(a > 100, 0.3, 1.0)
            spike_age, spike = None, 0.0
        w = w / w.sum() * (1.0 - spike)
        if spike_age is not None:
            w[a == spike_age] = spike
        i0, i1 = lo - SYNTHETIC_AGE_MIN, hi - SYNTHETIC_AGE_MIN
        shape[i0:i1] = w * prob
        groups.append((i0, i1))
    return ages, shape / shape.sum(), tuple(groups)


def _sample_age_in_group(rng: np.random.Generator, group: int) -> int:
    ages, probs, groups = _age_table()
    i0, i1 = groups[group]
    p = probs[i0:i1]
    cdf = np.cumsum(p / p.sum())
    return int(ages[i0 + min(int(np.searchsorted(cdf, rng.random(), side="right")), i1 - i0 - 1)])


def sample_labels(rng: np.random.Generator) -> tuple[int, int, int]:
    """Draws one (age, gender, race) with UTKFace-like frequencies.

    Args:
      rng: the random generator to draw from (three draws).

    Returns:
      (age in 1-116, gender 0 male / 1 female, race 0-4).
    """
    ages, probs, _ = _age_table()
    age_cdf = np.cumsum(probs)
    race_cdf = np.cumsum(RACE_PROBABILITIES)
    u_gender, u_race, u_age = rng.random(3)
    gender = int(u_gender < FEMALE_PROBABILITY)
    race = min(
        int(np.searchsorted(race_cdf / race_cdf[-1], u_race, side="right")), len(RACE_PROBABILITIES) - 1
    )
    age = int(ages[min(int(np.searchsorted(age_cdf / age_cdf[-1], u_age, side="right")), len(ages) - 1)])
    return age, gender, race


def balanced_labels(index: int, rng: np.random.Generator) -> tuple[int, int, int]:
    """Labels for image ``index`` in balanced mode.

    Gender alternates, race cycles with period 5 (so every 10 images hold every
    gender x race pair) and the age group cycles so that every 50 images hold every
    race x age-group pair; only the age inside its group is random.

    Args:
      index: the image index.
      rng: the random generator to draw the age from.

    Returns:
      (age, gender, race).
    """
    gender = index % 2
    race = index % 5
    group = (index // 2 + index // 10) % len(labels.AGE_GROUPS)
    return _sample_age_in_group(rng, group), gender, race


def _draw_datetime_ms(rng: np.random.Generator) -> int:
    return int(rng.integers(0, _DATETIME_SPAN_MS))


def _format_datetime(offset_ms: int) -> str:
    when = _DATETIME_START + _dt.timedelta(milliseconds=offset_ms)
    return when.strftime("%Y%m%d%H%M%S") + f"{when.microsecond // 1000:03d}"


def _image_rng(spec: SyntheticSpec, index: int) -> tuple[np.random.Generator, int, int, int, int]:
    """Returns (rng positioned after the label draws, age, gender, race, datetime offset in ms)."""
    rng = np.random.default_rng([spec.seed, index])
    if spec.balanced:
        age, gender, race = balanced_labels(index, rng)
    else:
        age, gender, race = sample_labels(rng)
    return rng, age, gender, race, _draw_datetime_ms(rng)


# ======================================================================================================
# Appearance: label -> visual parameters
# ======================================================================================================

# Skin-tone ramp from light to dark; a person's tone is a position d in [0, 1] on it.
_SKIN_RAMP_POS = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
_SKIN_RAMP = np.array(
    [(250, 222, 205), (236, 196, 166), (208, 158, 118), (168, 116, 80), (116, 76, 50), (68, 44, 32)],
    dtype=float,
)
# Per race: (mean, sd) of d; "other" is a broad uniform mix instead.
_SKIN_DARKNESS = {0: (0.13, 0.08), 1: (0.78, 0.10), 2: (0.25, 0.08), 3: (0.52, 0.11)}
# asian: more yellow; indian: warm olive; other: ruddy
_SKIN_TINT = {2: (2.0, 4.0, -10.0), 3: (6.0, -4.0, -10.0), 4: (10.0, -2.0, -4.0)}
_WAVY_HAIR = {0: 0.12, 4: 0.65}  # probability of wavy hair strands per race (0.08 otherwise)
_BROW_WEIGHT = {3: 1.35, 4: 1.2}  # eyebrow thickness factor per race (1.0 otherwise)

_HAIR_COLORS: dict[int, tuple[tuple[Color, ...], tuple[float, ...]]] = {
    0: (
        ((220, 186, 122), (152, 106, 64), (86, 58, 38), (36, 29, 24), (158, 74, 38)),
        (0.2, 0.3, 0.3, 0.1, 0.1),
    ),
    1: (((24, 20, 18), (52, 36, 27)), (0.8, 0.2)),
    2: (((20, 18, 20), (62, 42, 30)), (0.85, 0.15)),
    3: (((24, 20, 18), (58, 40, 28)), (0.8, 0.2)),
    4: (((24, 20, 18), (86, 58, 38), (152, 106, 64), (220, 186, 122)), (0.55, 0.25, 0.12, 0.08)),
}
_IRIS_COLORS: dict[int, tuple[tuple[Color, ...], tuple[float, ...]]] = {
    0: (((70, 112, 172), (82, 122, 84), (118, 128, 138), (92, 62, 36)), (0.3, 0.15, 0.1, 0.45)),
    4: (((92, 62, 36), (50, 34, 24), (82, 122, 84)), (0.5, 0.4, 0.1)),
}
_DARK_IRIS = (((60, 40, 28), (38, 26, 20)), (0.5, 0.5))
# Nose width factor per race: (mean, sd).
_NOSE_WIDTH = {0: (0.9, 0.1), 1: (1.32, 0.12), 2: (1.08, 0.1), 3: (1.12, 0.1), 4: (1.1, 0.15)}
_FEMALE_STYLES = (("long", "bob", "updo"), (0.6, 0.25, 0.15))
_MALE_STYLES = (("short", "medium", "buzz"), (0.6, 0.25, 0.15))
AGAINST_TYPE_PROBABILITY = 0.10


@dataclasses.dataclass
class _Appearance:
    skin: np.ndarray  # float RGB
    hair: np.ndarray
    brow: np.ndarray
    iris: Color
    lip: np.ndarray
    style: str
    child: float  # 1 for toddlers, 0 from about 17
    wrinkles: float  # 0 young .. 1 old
    aspect: float
    square_jaw: bool
    eye_ratio: float
    eye_scale: float
    crease: bool
    lashes: bool
    nose_width: float
    lip_scale: float
    smile: float
    gaze: float
    wavy: bool
    brow_weight: float
    beard: str
    earrings: Color | None
    bindi: bool
    blush: float
    glasses: Color | None
    clothes: Color


def _pick(rng: np.random.Generator, table: tuple[tuple[Any, ...], tuple[float, ...]]) -> Any:
    options, probs = table
    p = np.asarray(probs, dtype=float)
    return options[int(rng.choice(len(options), p=p / p.sum()))]


def _mix(a: np.ndarray, b: Sequence[float], t: float) -> np.ndarray:
    return np.asarray(a, dtype=float) * (1.0 - t) + np.asarray(b, dtype=float) * t


def _sample_appearance(rng: np.random.Generator, age: int, gender: int, race: int) -> _Appearance:
    # Age cues, each seen through its own noise.
    child = float(np.clip((17.0 - (age + rng.normal(0.0, 2.5))) / 15.0, 0.0, 1.0))
    age_w = age + rng.normal(0.0, 2.5 + 0.1 * age)
    wrinkles = float(np.clip((age_w - 28.0) / 45.0, 0.0, 1.0))
    grey = float(
        np.clip((age + rng.normal(0.0, 3.0 + 0.1 * age) - 36.0) / 35.0 + rng.normal(0.0, 0.1), 0.0, 1.0)
    )

    # Skin: overlapping per-race tone distributions; old skin is less saturated.
    if race in _SKIN_DARKNESS:
        mean, sd = _SKIN_DARKNESS[race]
        d = rng.normal(mean, sd)
    else:
        d = rng.normal(0.4, 0.15)  # "other": a broad mix, centred between the light and dark groups
    d = float(np.clip(d, 0.0, 1.0))
    skin = np.array([np.interp(d, _SKIN_RAMP_POS, _SKIN_RAMP[:, c]) for c in range(3)])
    skin = skin + np.asarray(_SKIN_TINT.get(race, (0.0, 0.0, 0.0))) + rng.normal(0.0, 5.0, 3)
    sat = 1.0 - 0.35 * wrinkles
    skin = _mix(skin, [skin.mean()] * 3, 1.0 - sat)

    hair = np.asarray(_pick(rng, _HAIR_COLORS[race]), dtype=float) + rng.normal(0.0, 8.0, 3)
    if race == 0 and child > 0.5 and rng.random() < 0.4:
        hair = _mix(hair, (225, 195, 135), 0.5)  # fair-haired children
    grey_color = (205.0, 205.0, 202.0) if rng.random() < 0.5 else (236.0, 236.0, 232.0)
    brow = _mix(hair, grey_color, 0.6 * grey) * 0.8
    hair = _mix(hair, grey_color, grey)

    iris = _pick(rng, _IRIS_COLORS.get(race, _DARK_IRIS))

    # Gender cues; about 10% of people wear the other gender's typical hair.
    against = rng.random() < AGAINST_TYPE_PROBABILITY
    feminine_hair = (gender == 1) != against
    style = str(_pick(rng, _FEMALE_STYLES if feminine_hair else _MALE_STYLES))
    if race == 1 and rng.random() < 0.3:
        style = "afro" if feminine_hair else "short"
    if gender == 0 and rng.random() < np.clip((age_w - 42.0) / 45.0, 0.0, 0.7):
        style = "bald"
    if age <= 2 and rng.random() < 0.7:
        style = "baby"
    adult = child < 0.25
    beard = "none"
    if gender == 0 and age_w >= 17.0:
        beard = str(_pick(rng, (("none", "shadow", "moustache", "full"), (0.46, 0.3, 0.12, 0.12))))
    earrings: Color | None = None
    p_earrings = (0.45 if gender == 1 else 0.04) if age >= 6 else 0.0
    if rng.random() < p_earrings:
        earrings = (222, 184, 64) if rng.random() < 0.6 else (206, 206, 214)
    lipstick = gender == 1 and age >= 15 and rng.random() < 0.45
    lip = _mix(skin * 0.82, (190, 30, 52) if lipstick else (184, 84, 88), 0.7 if lipstick else 0.3)

    eye_ratio = rng.normal(0.32, 0.05) if race == 2 else rng.normal(0.5, 0.07)
    if race == 4:
        eye_ratio = rng.normal(0.42, 0.09)
    eye_ratio = float(np.clip(eye_ratio + 0.1 * child, 0.2, 0.8))
    nose_mean, nose_sd = _NOSE_WIDTH[race]
    aspect = 0.77 + (0.03 if gender == 0 else -0.02) + 0.12 * child + rng.normal(0.0, 0.03)
    glasses: Color | None = None
    if rng.random() < 0.1 + 0.15 * wrinkles:
        glasses = (30, 30, 30) if rng.random() < 0.6 else (180, 160, 110)
    return _Appearance(
        skin=np.clip(skin, 0, 255),
        hair=np.clip(hair, 0, 255),
        brow=np.clip(brow, 0, 255),
        iris=iris,
        lip=np.clip(lip, 0, 255),
        style=style,
        child=child,
        wrinkles=wrinkles,
        aspect=float(aspect),
        square_jaw=bool(adult and rng.random() < (0.7 if gender == 0 else 0.15)),
        eye_ratio=eye_ratio,
        eye_scale=float(rng.normal(1.0, 0.08)),
        crease=bool(race != 2 and rng.random() < 0.75),
        lashes=bool(gender == 1 and age >= 12 and rng.random() < 0.6),
        nose_width=float(max(0.6, rng.normal(nose_mean, nose_sd))),
        lip_scale=float(
            max(0.6, rng.normal(1.4 if race == 1 else 1.0, 0.12) * (1.12 if gender == 1 else 1.0))
        ),
        smile=float(rng.uniform(-0.3, 1.0)),
        gaze=float(rng.uniform(-0.25, 0.25)),
        wavy=bool(rng.random() < _WAVY_HAIR.get(race, 0.08)),
        brow_weight=float(
            _BROW_WEIGHT.get(race, 1.0) * (0.85 if gender == 1 else 1.0) * rng.normal(1.0, 0.1)
        ),
        beard=beard,
        earrings=earrings,
        bindi=bool(race == 3 and gender == 1 and age >= 12 and rng.random() < 0.25),
        blush=float(0.6 * child + (0.4 if lipstick else 0.0)),
        glasses=glasses,
        clothes=tuple(int(v) for v in rng.integers(20, 236, 3)),
    )


# ======================================================================================================
# Drawing
# ======================================================================================================


def _rgb(c: np.ndarray | Sequence[float], alpha: int | None = None) -> tuple[int, ...]:
    vals = tuple(int(round(min(255.0, max(0.0, float(v))))) for v in c)
    return vals if alpha is None else (*vals, int(alpha))


class _Painter:
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


def _background(rng: np.random.Generator, n: int) -> Image.Image:
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


def _head_outline(cx: float, cy: float, a: float, b: float, ap: _Appearance) -> list[tuple[float, float]]:
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


def _draw_front_hair(
    p: _Painter, ap: _Appearance, rng: np.random.Generator, *, cx: float, cy: float, a: float, b: float
) -> float:
    """Draws the hair over the head (top, fringe, side strands, sideburns).

    Returns:
      The y of the hairline in the middle of the forehead (cy - b when there is none).
    """
    hair_c = _rgb(ap.hair)
    skin_c = _rgb(ap.skin)
    hl = b * rng.uniform(0.66, 0.78)  # how far the top hair comes down from cy - 1.1 b
    hairline = cy - b
    if ap.style in ("short", "medium", "updo"):
        depth = hl * (1.08 if ap.style == "medium" else 1.0)
        bottom = cy - b * 1.1 + depth
        p(
            "chord",
            (cx - a * 1.06, cy - b * 1.1, cx + a * 1.06, bottom + depth),
            180,
            360,
            fill=hair_c,
            part=PART_HAIR,
        )
        # arched (optionally side-parted) hairline
        off = a * rng.uniform(-0.25, 0.25)
        arch = b * rng.uniform(0.08, 0.2)
        p(
            "ellipse",
            (cx + off - a * 0.62, bottom - arch, cx + off + a * 0.62, bottom + b * 0.5),
            fill=skin_c,
            part=PART_SKIN,
        )
        hairline = bottom - arch
        low = cy + (b * 0.02 if ap.style == "medium" else -b * 0.08)
        for sx in (-1, 1):
            x_out, x_in = cx + sx * a * 1.04, cx + sx * a * 0.86
            p(
                "polygon",
                [(x_out, bottom - b * 0.1), (x_in, bottom - b * 0.1), (x_in, low), (x_out, low)],
                fill=hair_c,
                part=PART_HAIR,
            )
    elif ap.style in ("buzz", "baby"):
        alpha = 150 if ap.style == "buzz" else 95
        bottom = cy - b * 1.04 + hl
        p(
            "chord",
            (cx - a * 1.02, cy - b * 1.04, cx + a * 1.02, bottom + hl),
            180,
            360,
            fill=_rgb(ap.hair, alpha),
            part=PART_HAIR if ap.style == "buzz" else None,
        )
        hairline = bottom
    elif ap.style == "bald":
        for sx in (-1, 1):
            x_out, x_in = cx + sx * a * 1.04, cx + sx * a * 0.84
            p(
                "polygon",
                [(x_out, cy - b * 0.45), (x_in, cy - b * 0.4), (x_in, cy + b * 0.02), (x_out, cy + b * 0.05)],
                fill=hair_c,
                part=PART_HAIR,
            )
    else:  # long, bob, afro
        fringe = rng.random() < 0.5
        depth = hl * (1.12 if fringe else 0.95)
        grow = 1.25 if ap.style == "afro" else 1.08
        top = cy - b * 1.12 * grow
        bottom = top + depth * grow
        p(
            "chord",
            (cx - a * grow, top, cx + a * grow, bottom + depth * grow),
            180,
            360,
            fill=hair_c,
            part=PART_HAIR,
        )
        hairline = bottom
        if fringe:
            teeth = int(rng.integers(4, 8))
            xs = np.linspace(cx - a * 0.75, cx + a * 0.75, teeth + 1)
            for x0, x1 in zip(xs[:-1], xs[1:], strict=True):
                tip = bottom + b * rng.uniform(0.04, 0.1)
                p(
                    "polygon",
                    [(x0, bottom - 1), (x1, bottom - 1), ((x0 + x1) / 2, tip)],
                    fill=hair_c,
                    part=PART_HAIR,
                )
        else:
            off = a * rng.choice([-0.3, 0.3])
            arch = b * rng.uniform(0.1, 0.2)
            p(
                "ellipse",
                (cx + off - a * 0.6, bottom - arch, cx + off + a * 0.6, bottom + b * 0.5),
                fill=skin_c,
                part=PART_SKIN,
            )
            hairline = bottom - arch
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
    p: _Painter, ap: _Appearance, rng: np.random.Generator, *, cx: float, top: float, bottom: float, a: float
) -> None:
    """Wavy strands across the top hair, a little darker (or lighter, for black hair) than the hair."""
    color = _rgb(ap.hair + 50.0 if ap.hair.mean() < 60 else ap.hair * 0.62)
    width = max(1, int(round(a / 30.0)))
    phase = rng.uniform(0.0, 2.0 * math.pi)
    xs = np.linspace(-0.75, 0.75, 13)
    for k, frac in enumerate((0.3, 0.55, 0.8)):
        y0 = top + (bottom - top) * frac
        half = np.sqrt(max(0.0, 1.0 - (1.0 - frac) ** 2))  # follow the round top of the head
        ys = y0 + a * 0.05 * np.sin(xs * 9.0 + phase + k)
        p("line", [(cx + x * a * half, y) for x, y in zip(xs, ys, strict=True)], fill=color, width=width)


def _draw_figure(
    p: _Painter, ap: _Appearance, rng: np.random.Generator, *, cx: float, cy: float, b: float, s: float
) -> None:
    """Draws shoulders, neck, head, hair and face, centred on the head at (cx, cy).

    b is the head's half-height and s the pixel scale (image size / 200).
    """
    a = b * ap.aspect
    c = ap.child
    skin, hair = ap.skin, ap.hair
    skin_c, hair_c = _rgb(skin), _rgb(hair)
    shade = _rgb(skin * 0.84)
    lw = max(1, int(round(1.3 * s)))

    # --- behind the head: clothes, long hair, bun ---
    sw = a * (1.35 + 1.05 * (1.0 - c)) * (1.08 if ap.square_jaw else 1.0)
    top = cy + b * (1.22 - 0.12 * c)
    p("ellipse", (cx - sw, top, cx + sw, top + 2.2 * b), fill=_rgb(ap.clothes), part=PART_CLOTHES)
    if ap.style == "long":
        length = b * rng.uniform(1.5, 2.2)
        p("ellipse", (cx - a * 1.24, cy - b * 1.12, cx + a * 1.24, cy + b * 0.9), fill=hair_c, part=PART_HAIR)
        p(
            "rounded_rectangle",
            (cx - a * 1.24, cy, cx + a * 1.24, cy + length),
            radius=a * 0.35,
            fill=hair_c,
            part=PART_HAIR,
        )
    elif ap.style == "bob":
        p("ellipse", (cx - a * 1.27, cy - b * 1.12, cx + a * 1.27, cy + b * 1.0), fill=hair_c, part=PART_HAIR)
    elif ap.style == "afro":
        p(
            "ellipse",
            (cx - a * 1.65, cy - b * 1.45, cx + a * 1.65, cy + b * 0.75),
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
    hairline = _draw_front_hair(p, ap, rng, cx=cx, cy=cy, a=a, b=b)

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
            fill=_rgb(hair, alpha),
            part=PART_HAIR if ap.beard == "full" else None,
        )
        p(
            "ellipse",
            (cx - mw * 1.35, y_tip + b * 0.02, cx + mw * 1.35, ym + lt * 3),
            fill=_rgb(hair, alpha),
            part=PART_HAIR if ap.beard == "full" else None,
        )
    if ap.beard in ("moustache", "full"):
        p(
            "ellipse",
            (cx - mw * 1.1, y_tip + b * 0.04, cx + mw * 1.1, ym - lt * 0.4),
            fill=_rgb(hair * 0.9),
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
                fill=_rgb(skin * 0.7),
                width=lw,
            )
        by = ey - eh - b * (0.1 - 0.02 * c)
        bw = max(1, int(round((3.2 if ap.beard != "none" or ap.square_jaw else 2.2) * ap.brow_weight * s)))
        brow = [
            (ex - sx * ew * 1.05, by + b * 0.02),
            (ex, by - b * 0.025),
            (ex + sx * ew * 1.15, by + b * 0.01),
        ]
        p("line", brow, fill=_rgb(ap.brow), width=bw, joint="curve")

    # --- nose ---
    nose_col = _rgb(skin * 0.66)
    p(
        "line",
        [(cx - nose_w * 0.25, ey + b * 0.06), (cx - nose_w * 0.6, y_tip - nose_w * 0.5)],
        fill=_rgb(skin * 0.78, 200),
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
            fill=_rgb(skin * 0.5),
        )

    # --- mouth ---
    p("ellipse", (cx - mw, ym - lt, cx + mw, ym + lt * 1.3), fill=_rgb(ap.lip), part=PART_MOUTH)
    curve = b * 0.035 * ap.smile
    p(
        "line",
        [(cx - mw, ym - curve), (cx, ym + curve * 0.4), (cx + mw, ym - curve)],
        fill=_rgb(ap.lip * 0.45),
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
        wc = _rgb(skin * 0.6, int(70 + 160 * w))
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
            spot = _rgb(skin * 0.72, 150)
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


def _finish(rng: np.random.Generator, image: Image.Image) -> Image.Image:
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
    ap = _sample_appearance(rng, age, gender, race)
    n = int(round(size * 1.3))  # room for a rotation of up to 15 degrees before cropping
    s = size / 200.0
    canvas = _background(rng, n)
    part_map = Image.new("L", (n, n), PART_BACKGROUND) if parts else None
    b = size * rng.uniform(0.25, 0.31)
    cx = n / 2 + size * float(np.clip(rng.normal(0.0, 0.04), -0.08, 0.08))
    cy = n / 2 - 0.07 * size + size * float(np.clip(rng.normal(0.0, 0.035), -0.07, 0.07))
    _draw_figure(_Painter(canvas, part_map), ap, rng, cx=cx, cy=cy, b=b, s=s)
    # Rotate about the canvas centre and crop the central size x size in one affine transform.
    angle = math.radians(float(np.clip(rng.normal(0.0, 6.0), -15.0, 15.0)))
    cos, sin, h = math.cos(angle), math.sin(angle), size / 2
    affine = (cos, -sin, n / 2 - cos * h + sin * h, sin, cos, n / 2 - sin * h - cos * h)
    image = _finish(rng, canvas.transform((size, size), Image.AFFINE, affine, resample=Image.BILINEAR))
    part_arr = None
    if part_map is not None:
        part_arr = np.asarray(part_map.transform((size, size), Image.AFFINE, affine, resample=Image.NEAREST))
    return image, part_arr


def render_face(rng: np.random.Generator, age: int, gender: int, race: int, size: int = 200) -> Image.Image:
    """Renders one cartoon face whose looks depend on its labels.

    Args:
      rng: the random generator (consumed).
      age: age in years.
      gender: 0 male, 1 female.
      race: 0-4 (components.base.labels.RACE_NAMES).
      size: width and height in pixels.

    Returns:
      A size x size RGB PIL image.
    """
    return render_face_with_parts(rng, age, gender, race, size, parts=False)[0]


# ======================================================================================================
# Files
# ======================================================================================================


@dataclasses.dataclass(frozen=True)
class PlannedImage:
    """One file to write: its index, name and labels (malformed: the name does not parse)."""

    index: int
    name: str
    age: int
    gender: int
    race: int
    malformed: bool


def _malformed_indices(spec: SyntheticSpec) -> dict[int, str]:
    n = spec.num_images
    count = int(round(n * spec.malformed_fraction))
    if spec.malformed_fraction > 0 and n >= 50:
        count = max(count, 3)
    count = min(count, n)
    if count == 0:
        return {}
    rng = np.random.default_rng([spec.seed, n, 0x0BAD])
    chosen = sorted(int(i) for i in rng.choice(n, size=count, replace=False))
    offset = int(rng.integers(len(MALFORMED_KINDS)))
    return {idx: MALFORMED_KINDS[(j + offset) % len(MALFORMED_KINDS)] for j, idx in enumerate(chosen)}


def _malformed_name(kind: str, *, index: int, age: int, gender: int, race: int, stamp: str) -> str:
    variant = index % 2
    if kind == "missing_field":  # e.g. 39_1_20170116174525125.jpg.chip.jpg
        return f"{age}_{gender}_{stamp}.jpg.chip.jpg" if variant else f"{age}_{race}_{stamp}.jpg.chip.jpg"
    if kind == "empty_field":  # e.g. 53__0_20170116184028385.jpg.chip.jpg
        return f"{age}__{race}_{stamp}.jpg.chip.jpg" if variant else f"{age}_{gender}__{stamp}.jpg.chip.jpg"
    if kind == "missing_dot":  # e.g. 61_1_3_20170109150557335jpg.chip.jpg
        return f"{age}_{gender}_{race}_{stamp}jpg.chip.jpg"
    if kind == "stray_space":
        return (
            f"{age}_{gender}_{race}_ {stamp}.jpg.chip.jpg"
            if variant
            else f"{age} _{gender}_{race}_{stamp}.jpg.chip.jpg"
        )
    raise ValueError(f"unknown malformed kind {kind!r}")


def plan(spec: SyntheticSpec) -> list[PlannedImage]:
    """Decides every file's labels and name without rendering anything.

    Args:
      spec: what to generate.

    Returns:
      One entry per file, in index order (attributes index, name, age, gender, race, malformed).
    """
    malformed = _malformed_indices(spec)
    used: set[int] = set()
    out = []
    for i in range(spec.num_images):
        _, age, gender, race, ms = _image_rng(spec, i)
        while ms in used:  # keep datetimes unique, deterministically
            ms = (ms + 1) % _DATETIME_SPAN_MS
        used.add(ms)
        stamp = _format_datetime(ms)
        if i in malformed:
            name = _malformed_name(malformed[i], index=i, age=age, gender=gender, race=race, stamp=stamp)
        else:
            name = f"{age}_{gender}_{race}_{stamp}.jpg.chip.jpg"
        out.append(PlannedImage(i, name, age, gender, race, i in malformed))
    return out


def _encode(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _write_one(args: tuple[SyntheticSpec, PlannedImage, str]) -> None:
    spec, item, out_dir = args
    rng, age, gender, race, _ = _image_rng(spec, item.index)
    assert (age, gender, race) == (item.age, item.gender, item.race)
    data = _encode(render_face(rng, age, gender, race, spec.image_size))
    with open(os.path.join(out_dir, item.name), "wb") as f:
        f.write(data)


def _label_counts(items: Sequence[PlannedImage]) -> dict:
    good = [it for it in items if not it.malformed]
    counts: dict[str, Any] = {
        "well_formed": len(good),
        "gender": {name: 0 for name in labels.GENDER_NAMES},
        "race": {name: 0 for name in labels.RACE_NAMES},
        "age_group": {name: 0 for _, name in labels.AGE_GROUPS},
        "labels": {name: 0 for name in labels.LABEL_NAMES},
    }
    for it in good:
        counts["gender"][labels.GENDER_NAMES[it.gender]] += 1
        counts["race"][labels.RACE_NAMES[it.race]] += 1
        counts["age_group"][labels.age_group(it.age)] += 1
        for name, v in zip(labels.LABEL_NAMES, labels.label_vector(it.age, it.gender, it.race), strict=True):
            counts["labels"][name] += v
    return counts


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
        label_counts=_label_counts(items),
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


# ======================================================================================================
# CLI
# ======================================================================================================


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
