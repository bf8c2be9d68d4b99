"""The losses and metrics: positive weighting, weighted BCE, per-label AUC, exact ROC AUC."""

import numpy as np
import pytest
import tensorflow as tf

from components.base import labels
from components.trainer.losses import WeightedBinaryCrossentropy, positive_weights
from components.trainer.metrics import LabelAUC, roc_auc

N_LABELS = len(labels.LABEL_NAMES)


def test_positive_weights_balance_each_label():
    y = np.array([[1, 0, 1, 0], [0, 0, 1, 0], [0, 0, 1, 1], [0, 0, 1, 1]], np.float32)
    # label 0: 1 pos / 3 neg -> 3; label 1: no positives -> 1; label 2: all positive -> 1; label 3: 2/2 -> 1
    np.testing.assert_allclose(positive_weights(y), [3.0, 1.0, 1.0, 1.0])
    many = np.zeros((100, 2), np.float32)
    many[:1, 0] = 1  # 1 positive in 100 -> 99, clipped
    many[:99, 1] = 1  # 99 positives in 100 -> 1/99, clipped
    np.testing.assert_allclose(positive_weights(many, max_weight=20.0), [20.0, 1 / 20.0], rtol=1e-6)


def test_weighted_bce_matches_keras_bce_and_weights_positives():
    import tf_keras

    y = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    p = tf.constant([[0.8, 0.3], [0.4, 0.9]])
    plain = WeightedBinaryCrossentropy([1.0, 1.0])(y, p).numpy()
    np.testing.assert_allclose(plain, tf_keras.losses.BinaryCrossentropy()(y, p).numpy(), rtol=1e-5)
    weighted = WeightedBinaryCrossentropy([3.0, 0.5])(y, p).numpy()
    by_hand = np.mean([-(3 * np.log(0.8) + np.log(0.7)) / 2, -(np.log(0.6) + 0.5 * np.log(0.9)) / 2])
    np.testing.assert_allclose(weighted, by_hand, rtol=1e-5)

def test_label_auc_equals_the_one_hot_weighted_multi_label_auc():
    import tf_keras

    rng = np.random.default_rng(4)
    y = (rng.random((200, N_LABELS)) < 0.3).astype(np.float32)
    p = np.clip(y * 0.3 + rng.random((200, N_LABELS)) * 0.7, 0, 1).astype(np.float32)
    for i in (0, 5, N_LABELS - 1):
        reference = tf_keras.metrics.AUC(multi_label=True, num_labels=N_LABELS, label_weights=np.eye(N_LABELS)[i])
        reference.update_state(y, p)
        ours = LabelAUC(i)
        ours.update_state(y, p)
        np.testing.assert_allclose(ours.result().numpy(), reference.result().numpy(), rtol=1e-6)


def test_roc_auc_matches_sklearn_with_ties_and_single_class():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.3).astype(np.float32)
    scores = np.round(rng.random(300) * 0.5 + 0.4 * y, 2)  # rounded: many ties
    assert roc_auc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert np.isnan(roc_auc(np.zeros(5), np.arange(5.0)))
