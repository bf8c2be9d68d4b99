"""Frozen pretrained backbones, by name.

Every backbone takes float32 RGB images with values 0-255 and does its own input
normalization inside the model, so callers never need a per-backbone preprocess.
"""

from __future__ import annotations

import tf_keras

from components.trainer import efficientnet_lite


def build_backbone(name: str, image_size: int, weights: str | None = "imagenet") -> tf_keras.Model:
    """Builds a pretrained backbone that maps images to a feature map.

    Args:
      name: backbone name; one of pipeline.config.BACKBONES.
      image_size: square input size in pixels.
      weights: "imagenet" for the pretrained weights, None for random init (tests only).

    Returns:
      A tf_keras Model, images (B, S, S, 3) in 0-255 -> feature map (B, h, w, C).

    Raises:
      ValueError: unknown backbone name.
    """
    if name == "efficientnet_lite0":
        return efficientnet_lite.build_efficientnet_lite0(image_size=image_size, weights=weights, include_top=False)
    raise ValueError(f"unknown backbone {name!r}")
