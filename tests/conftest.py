"""Test setup: Keras 2 (tf_keras) everywhere, set before TensorFlow is first imported."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
