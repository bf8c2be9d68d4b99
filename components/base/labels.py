"""Feature names, label definitions and the UTKFace file-name parser.

This is the only module that knows how labels are named and derived. Everything
else (Transform, Trainer, Evaluator, reports, runners) imports from here, so a
label is never referred to by a bare class id. It lies in the base layer
(components.base) and imports nothing of ours, so every layer may import it.

UTKFace names files ``[age]_[gender]_[race]_[date&time].jpg.chip.jpg`` where
age is 0-116, gender 0 (male) / 1 (female), race 0-4 (White, Black, Asian,
Indian, Others) and date&time a 17-digit ``yyyymmddHHMMSSFFF`` stamp.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

# --- raw tf.Example features written by the image ExampleGen -----------------
IMAGE_KEY = "image_raw"
AGE_KEY = "age"
GENDER_KEY = "gender"
RACE_KEY = "race"
FILENAME_KEY = "filename"
RAW_LABEL_KEYS = (AGE_KEY, GENDER_KEY, RACE_KEY)

# --- features produced by Transform ------------------------------------------
LABELS_KEY = "labels"  # dense float multi-hot vector, one entry per LABEL_NAMES
AGE_GROUP_KEY = "age_group"  # slice feature, e.g. "20-39"
GENDER_NAME_KEY = "gender_name"  # slice feature, "male" / "female"
RACE_NAME_KEY = "race_name"  # slice feature, e.g. "white"

# --- model outputs ------------------------------------------------------------
PROBABILITIES_KEY = "probabilities"
# Exported-model signature: serialized raw tf.Examples -> labels and slice features, by the
# Transform graph (the Evaluator's labels and slices, as Transform does not materialize its output).
TRANSFORM_FEATURES_SIGNATURE = "transform_features"
EVAL_FEATURE_KEYS = (LABELS_KEY, AGE_GROUP_KEY, GENDER_NAME_KEY, RACE_NAME_KEY)

AGE_MIN, AGE_MAX = 0, 116
GENDER_NAMES = ("male", "female")
RACE_NAMES = ("white", "black", "asian", "indian", "other")
# Slice groups for age: (lower bound inclusive, name). Upper bound is the next lower bound.
AGE_GROUPS = ((0, "0-12"), (13, "13-19"), (20, "20-39"), (40, "40-59"), (60, "60+"))


@dataclasses.dataclass(frozen=True)
class LabelDef:
    """One binary target label, defined declaratively so Python and TF agree.

    The label is 1 when ``<field> <op> <value>`` holds, e.g. ``race == 2`` or ``age >= 40``.

    Attributes:
      name: the label's name, used in metrics, reports and model outputs.
      field: the raw feature it reads: one of RAW_LABEL_KEYS.
      op: "eq" or "ge".
      value: the value compared with.
    """

    name: str
    field: str
    op: str
    value: int

    def __post_init__(self) -> None:
        if self.field not in RAW_LABEL_KEYS:
            raise ValueError(f"label {self.name}: field must be one of {RAW_LABEL_KEYS}, not {self.field!r}")
        if self.op not in ("eq", "ge"):
            raise ValueError(f"label {self.name}: op must be 'eq' or 'ge', not {self.op!r}")

    @property
    def description(self) -> str:
        """A short human sentence, e.g. ``age >= 40``."""
        return f"{self.field} {'==' if self.op == 'eq' else '>='} {self.value}"

    def evaluate(self, age: int, gender: int, race: int) -> int:
        """Returns 0 or 1 for one person."""
        x = {AGE_KEY: age, GENDER_KEY: gender, RACE_KEY: race}[self.field]
        return int(x == self.value) if self.op == "eq" else int(x >= self.value)


AGE_THRESHOLDS: tuple[int, ...] = (13, 20, 40, 60)
LABELS: tuple[LabelDef, ...] = (
    LabelDef("female", GENDER_KEY, "eq", 1),
    *(LabelDef(f"race_{n}", RACE_KEY, "eq", i) for i, n in enumerate(RACE_NAMES)),
    *(LabelDef(f"age_{a}_plus", AGE_KEY, "ge", a) for a in AGE_THRESHOLDS),
)
LABEL_NAMES: tuple[str, ...] = tuple(label.name for label in LABELS)


def label_vector(age: int, gender: int, race: int, labels: tuple[LabelDef, ...] = LABELS) -> list[int]:
    """Returns the multi-hot label vector, in the order of ``labels``.

    Args:
      age: age in years.
      gender: 0 male, 1 female.
      race: 0-4, see RACE_NAMES.
      labels: the label definitions; the default target by default.

    Returns:
      A list of 0/1 ints, one per label.
    """
    return [label.evaluate(age, gender, race) for label in labels]


def age_group(age: int) -> str:
    """Returns the age-group slice name for an age in years."""
    name = AGE_GROUPS[0][1]
    for lower, group in AGE_GROUPS:
        if age >= lower:
            name = group
    return name


# --- file names ---------------------------------------------------------------
_ASCII_NUMBER = re.compile(r"[0-9]+")
UTKFACE_PATTERN = r"^(?P<age>\d+)_(?P<gender>\d+)_(?P<race>\d+)_(?P<datetime>\d{17})\.jpg\.chip\.jpg$"


class FilenameError(ValueError):
    """A file name that cannot be turned into labels.

    Attributes:
      reason: a short machine-readable reason (snake_case).
      message: a human sentence.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclasses.dataclass(frozen=True)
class ParsedName:
    """Labels parsed from a file name."""

    age: int
    gender: int
    race: int


def compile_pattern(pattern: str = UTKFACE_PATTERN) -> re.Pattern[str]:
    """Compiles and checks a file-name pattern.

    Args:
      pattern: a regular expression with named groups ``age``, ``gender`` and ``race``; it must
        match a whole base name (parse_filename uses fullmatch), and ``\\d``/``\\w`` mean ASCII only.

    Returns:
      The compiled pattern (re.ASCII).

    Raises:
      ValueError: the pattern does not compile or lacks a required group.
    """
    try:
        # ASCII: \d is [0-9] only; Unicode digits (Arabic-Indic, fullwidth) would otherwise parse as numbers.
        compiled = re.compile(pattern, flags=re.ASCII)
    except (re.error, ValueError) as e:  # ValueError: an inline (?u) conflicts with ASCII
        raise ValueError(f"file-name pattern {pattern!r} is not a valid regex: {e}") from None
    missing = [g for g in RAW_LABEL_KEYS if g not in compiled.groupindex]
    if missing:
        raise ValueError(
            f"file-name pattern {pattern!r} lacks named group(s) {', '.join(missing)}; "
            "write them as (?P<age>...), (?P<gender>...), (?P<race>...)"
        )
    return compiled


def parse_filename(name: str, pattern: re.Pattern[str] | None = None) -> ParsedName:
    """Parses labels out of a file's base name.

    Args:
      name: the base name (no folders), e.g. ``25_1_2_20170116174525125.jpg.chip.jpg``.
      pattern: a compiled pattern from compile_pattern; UTKFace's by default.

    Returns:
      The parsed labels.

    Raises:
      FilenameError: the name does not match or a label is out of range.
    """
    pattern = pattern or _DEFAULT_PATTERN
    # fullmatch: the whole name, so "$" cannot match before a trailing newline; flags come from
    # compile_pattern (re.ASCII), which covers custom patterns too.
    match = pattern.fullmatch(name)
    if match is None:
        raise FilenameError("name_mismatch", f"file name {name!r} does not match the pattern {pattern.pattern!r}")
    values: dict[str, int] = {}
    for key in RAW_LABEL_KEYS:
        text = match.group(key)
        # ASCII digits only: str.isdigit() accepts "²" (which int() refuses) and int() accepts "٢٥" and "２５".
        if text is None or not _ASCII_NUMBER.fullmatch(text):
            raise FilenameError("name_mismatch", f"file name {name!r}: field {key} is {text!r}, not a number")
        values[key] = int(text)
    checks: Mapping[str, tuple[int, int]] = {
        AGE_KEY: (AGE_MIN, AGE_MAX),
        GENDER_KEY: (0, len(GENDER_NAMES) - 1),
        RACE_KEY: (0, len(RACE_NAMES) - 1),
    }
    for key, (lo, hi) in checks.items():
        if not lo <= values[key] <= hi:
            raise FilenameError(
                f"{key}_out_of_range", f"file name {name!r}: {key} {values[key]} is outside {lo}-{hi}"
            )
    return ParsedName(age=values[AGE_KEY], gender=values[GENDER_KEY], race=values[RACE_KEY])


_DEFAULT_PATTERN = compile_pattern(UTKFACE_PATTERN)
