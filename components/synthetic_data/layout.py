"""Layout: what to generate, and which labels and file name each image gets.

Nothing here draws: plan() decides every file's name and labels from the spec alone, and
image_rng() positions image ``i``'s random generator where drawing continues from it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from components.base import labels

# --- label frequencies (UTKFace-like) -----------------------------------------------------------------
FEMALE_PROBABILITY = 0.48
RACE_PROBABILITIES = (0.42, 0.19, 0.145, 0.17, 0.075)  # white, black, asian, indian, other
# One probability per components.base.labels.AGE_GROUPS entry: 0-12, 13-19, 20-39, 40-59, 60+.
AGE_GROUP_PROBABILITIES = (0.14, 0.05, 0.50, 0.20, 0.11)
SYNTHETIC_AGE_MIN, SYNTHETIC_AGE_MAX = 1, 116  # UTKFace has no age 0

# --- file names: UTKFace's, some malformed ------------------------------------------------------------
MALFORMED_KINDS = ("missing_field", "empty_field", "missing_dot", "stray_space")
_DATETIME_START = _dt.datetime(2016, 12, 16)
_DATETIME_SPAN_MS = 45 * 24 * 3600 * 1000


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


def image_rng(spec: SyntheticSpec, index: int) -> tuple[np.random.Generator, int, int, int, int]:
    """Returns (rng positioned after the label draws, age, gender, race, datetime offset in ms)."""
    rng = np.random.default_rng([spec.seed, index])
    if spec.balanced:
        age, gender, race = balanced_labels(index, rng)
    else:
        age, gender, race = sample_labels(rng)
    return rng, age, gender, race, _draw_datetime_ms(rng)


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
        _, age, gender, race, ms = image_rng(spec, i)
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



def label_counts(items: Sequence[PlannedImage]) -> dict:
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

