"""TFMA EvalConfig generated from the label list, and gate settings."""

from __future__ import annotations

import tensorflow_model_analysis as tfma

from pipeline import labels

MACRO_AUC = "macro_auc"  # reported name of the macro-average AUC
# TFMA's default of 10,000 AUC thresholds doubles the Evaluator's time on 2 cores; 1,000 changes
# AUC by well under 0.001 at our eval-set sizes.
AUC_THRESHOLDS = 1000
SLICE_FEATURES: tuple[str, ...] = (labels.GENDER_NAME_KEY, labels.RACE_NAME_KEY, labels.AGE_GROUP_KEY)


def build_eval_config(
    label_names: tuple[str, ...] = labels.LABEL_NAMES,
    min_macro_auc: float = 0.7,
    max_auc_regression: float = 0.02,
    slice_features: tuple[str, ...] = SLICE_FEATURES,
) -> tfma.EvalConfig:
    """Builds the Evaluator's config.

    Per label (binarized by class id, one per label name): AUC, precision, recall.
    Aggregate: macro-average AUC, gated on the overall slice by an absolute floor and
    by a change threshold against the baseline (the latest blessed model; skipped when
    there is none).

    Args:
      label_names: one per model output column, in order.
      min_macro_auc: bless only at or above this macro AUC.
      max_auc_regression: allowed macro AUC drop against the baseline.
      slice_features: features to slice by, besides the overall slice.

    Returns:
      A tfma.EvalConfig.
    """
    class_ids = list(range(len(label_names)))
    overall = tfma.SlicingSpec()
    macro_gate = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": min_macro_auc}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -max_auc_regression}
        ),
    )
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name="serving_default",
                label_key=labels.LABELS_KEY,
                prediction_key=labels.PROBABILITIES_KEY,
                model_type=tfma.TF_GENERIC,
            )
        ],
        slicing_specs=[overall, *(tfma.SlicingSpec(feature_keys=[f]) for f in slice_features)],
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name="ExampleCount"),
                    tfma.MetricConfig(class_name="AUC", config=f'"num_thresholds": {AUC_THRESHOLDS}'),
                    tfma.MetricConfig(class_name="Precision"),
                    tfma.MetricConfig(class_name="Recall"),
                ],
                binarize=tfma.BinarizationOptions(class_ids={"values": class_ids}),
            ),
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(
                        class_name="AUC",
                        config=f'"name": "{MACRO_AUC}", "num_thresholds": {AUC_THRESHOLDS}',
                        per_slice_thresholds=[
                            tfma.PerSliceMetricThreshold(slicing_specs=[overall], threshold=macro_gate)
                        ],
                    )
                ],
                aggregate=tfma.AggregationOptions(
                    macro_average=True, class_weights={i: 1.0 for i in class_ids}
                ),
            ),
        ],
    )
