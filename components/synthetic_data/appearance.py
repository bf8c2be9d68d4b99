"""Appearance: the labels (age, gender, race) turned into the visual parameters of one face.

Every cue is drawn from overlapping per-label distributions, so the labels are learnable but
not trivially; see data/README.md for how each label is rendered.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

Color = tuple[int, int, int]


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
class Appearance:
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


def sample_appearance(rng: np.random.Generator, age: int, gender: int, race: int) -> Appearance:
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
    return Appearance(
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

