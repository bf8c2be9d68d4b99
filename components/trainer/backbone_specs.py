"""The backbone names and the keras.applications backbones' weight files: the one declaration of both.

Light on purpose (no TensorFlow): the CLI and the configs import the names; components.trainer.backbones
builds the models.
"""

from __future__ import annotations

import dataclasses

DEFAULT_BACKBONE = "efficientnet_lite0"

_KERAS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """How to build one keras.applications backbone and where its weights live.

    Attributes:
      name: the --backbone name.
      builder: the tf_keras.applications constructor name (e.g. "ResNet50").
      weights_url: folder URL the Keras weights file is downloaded from.
      file_hash: md5 (or sha256) of the no-top weights file, as Keras checks it; "" when Keras has none.
      preprocessing: "tf" (x / 127.5 - 1), "caffe" (BGR minus means) or "inside" (the Keras model
        normalizes with the ImageNet mean/std itself).
    """

    name: str
    builder: str
    weights_url: str
    file_hash: str
    preprocessing: str

    def weights_file_name(self, image_size: int) -> str:
        """The Keras cache file name of the no-top ImageNet weights for this input size."""
        if self.name == "mobilenet_v2":
            # Keras ships one file per training resolution and falls back to the 224 one.
            rows = image_size if image_size in (96, 128, 160, 192, 224) else 224
            return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5"
        return {
            "efficientnet_b0": "efficientnetb0_notop.h5",
            "resnet50": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        }[self.name]

    def weights_origin(self, image_size: int) -> str:
        """The URL Keras downloads the weights file from."""
        return self.weights_url + self.weights_file_name(image_size)


# File names, URLs and hashes as in tf_keras 2.16's applications modules.
KERAS_BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("mobilenet_v2", "MobileNetV2", _KERAS_BASE + "mobilenet_v2/", "", "tf"),
        BackboneSpec(
            "efficientnet_b0",
            "EfficientNetB0",
            "https://storage.googleapis.com/keras-applications/",
            "50bc09e76180e00e4465e1a485ddc09d",
            "inside",
        ),
        BackboneSpec("resnet50", "ResNet50", _KERAS_BASE + "resnet/", "4d473c1dd8becc155b73f8504c6f6626", "caffe"),
        BackboneSpec("vgg16", "VGG16", _KERAS_BASE + "vgg16/", "6d6bbae143d832006294945121d1f1fc", "caffe"),
    )
}
# Every --backbone name; the first is the default.
BACKBONE_NAMES: tuple[str, ...] = (DEFAULT_BACKBONE, *KERAS_BACKBONES)
