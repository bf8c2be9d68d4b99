"""Deterministic synthetic stand-in for UTKFace.

UTKFace cannot be downloaded where this project is built and tested, so this package
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

One job a module, in the order an image is made:

- ``layout``: the spec, each image's labels and file name (``plan``), label counts;
- ``appearance``: labels -> visual parameters (skin, hair, eyes, style, ...);
- ``canvas``: the painter (image plus optional part map), background and camera finish;
- ``hair`` and ``face``: the figure, drawn on the canvas;
- ``drawing``: ``render_face`` / ``render_face_with_parts``, one face from its labels;
- ``writing``: the JPEG files (``generate``), the data folder and its completion marker;
- ``cli``: the command line (``data/generate.py``).

Of this repository it imports only ``components.base`` (tests/test_layers.py checks it), so the
report in ``pipeline/`` and the runners can import it, and it is installed with ``components``.
Nothing happens at import time.
"""

from components.synthetic_data.canvas import (
    PART_ACCESSORY,
    PART_BACKGROUND,
    PART_CLOTHES,
    PART_EYES,
    PART_HAIR,
    PART_MOUTH,
    PART_SKIN,
)
from components.synthetic_data.cli import main
from components.synthetic_data.drawing import render_face, render_face_with_parts
from components.synthetic_data.layout import (
    AGE_GROUP_PROBABILITIES,
    FEMALE_PROBABILITY,
    MALFORMED_KINDS,
    RACE_PROBABILITIES,
    SYNTHETIC_AGE_MAX,
    SYNTHETIC_AGE_MIN,
    PlannedImage,
    SyntheticSpec,
    balanced_labels,
    plan,
    sample_labels,
)
from components.synthetic_data.writing import (
    IMAGE_SUFFIXES,
    JPEG_QUALITY,
    MARKER_SUFFIX,
    GenerationReport,
    ensure_default_dataset,
    generate,
    has_images,
    is_complete,
    marker_path,
)

__all__ = [
    "AGE_GROUP_PROBABILITIES",
    "FEMALE_PROBABILITY",
    "IMAGE_SUFFIXES",
    "JPEG_QUALITY",
    "MALFORMED_KINDS",
    "MARKER_SUFFIX",
    "PART_ACCESSORY",
    "PART_BACKGROUND",
    "PART_CLOTHES",
    "PART_EYES",
    "PART_HAIR",
    "PART_MOUTH",
    "PART_SKIN",
    "RACE_PROBABILITIES",
    "SYNTHETIC_AGE_MAX",
    "SYNTHETIC_AGE_MIN",
    "GenerationReport",
    "PlannedImage",
    "SyntheticSpec",
    "balanced_labels",
    "ensure_default_dataset",
    "generate",
    "has_images",
    "is_complete",
    "main",
    "marker_path",
    "plan",
    "render_face",
    "render_face_with_parts",
    "sample_labels",
]
