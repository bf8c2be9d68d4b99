"""The shared per-slice combiner of components.fast_metrics: each example's label vector, prediction
vector and weight kept as numpy rows, with its file name and slicing features.

One ``LabelRowsCombiner`` per model output replaces the ~30 per-label stock TFMA combiners; the
replays in components.rows_replay rebuild the stock accumulators from its rows, and EvalRows
writes them out. TFMA runs one computation per (combiner class, keys, preprocessor names), so
``rows_computation`` builds an identical one wherever it is called.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis import constants
from tensorflow_model_analysis.metrics import (
    metric_types,
    metric_util,
)

ROWS_NAME = "_facepipe_label_rows"  # private (leading underscore): TFMA drops it from the output
# The feature that identifies an example in the per-example rows EvalRows writes (unique per example).
ID_FEATURE = "filename"
_ROWS_PREPROCESSOR = "facepipe_rows_features"


def captured_features(eval_config: Any) -> tuple[str, ...]:
    """The features the shared rows keep per example: the id feature and every slicing feature.

    Derived from the EvalConfig alone, so every metric builds the same shared combiner (TFMA
    de-duplicates computations by combiner class, keys and preprocessor names; the first wins).
    """
    names = {ID_FEATURE}
    specs = list(getattr(eval_config, "slicing_specs", []) or [])
    for cross in getattr(eval_config, "cross_slicing_specs", []) or []:
        specs += [cross.baseline_spec, *cross.slicing_specs]
    for spec in specs:
        names.update(spec.feature_keys)
        names.update(spec.feature_values)
    return tuple(sorted(names))


def _rows_preprocessor(eval_config: Any) -> metric_types.StandardMetricInputsPreprocessor:
    """Adds the captured raw features and all transformed features (slice features live there) to the inputs.

    Only named raw features: the raw example also holds the image bytes, which must not be copied.
    """
    return metric_types.StandardMetricInputsPreprocessor(
        include_filter={
            constants.FEATURES_KEY: {name: {} for name in captured_features(eval_config)},
            constants.TRANSFORMED_FEATURES_KEY: {},
        },
        include_default_inputs=True,
        name=_ROWS_PREPROCESSOR,
    )


def _feature_text(element: Mapping[str, Any], name: str, model_name: str) -> str:
    """One example's value of a feature as text ("" when absent): transformed features first, then raw."""
    for source_key in (constants.TRANSFORMED_FEATURES_KEY, constants.FEATURES_KEY):
        source = element.get(source_key)
        if not isinstance(source, Mapping):
            continue
        if isinstance(source.get(model_name), Mapping):  # multi-model transformed features are per model
            source = source[model_name]
        value = source.get(name)
        if value is None:
            continue
        flat = np.asarray(value).reshape(-1)
        if flat.size != 1:
            raise ValueError(f"fast_metrics keeps one value of feature {name!r} per example, got {flat.size}")
        item = flat[0]
        text = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
        # Group names repeat across examples: one string object each instead of one per example.
        return text if name == ID_FEATURE else sys.intern(text)
    return ""


class Rows:
    """Per-example label rows, prediction rows, weights and captured features of one slice (an accumulator).

    Rows are appended as small arrays and stacked lazily; pickling stacks them, so Beam encodes
    four arrays instead of thousands of objects.
    """

    __slots__ = ("labels", "predictions", "weights", "features")

    def __init__(self) -> None:
        self.labels: list[np.ndarray] = []
        self.predictions: list[np.ndarray] = []
        self.weights: list[np.ndarray] = []
        self.features: list[np.ndarray] = []  # object arrays [1, F] of str, in captured_features order

    def add(self, label: np.ndarray, prediction: np.ndarray, weight: np.ndarray, features: np.ndarray) -> None:
        self.labels.append(label.reshape(1, -1))
        self.predictions.append(prediction.reshape(1, -1))
        self.weights.append(weight.reshape(-1))
        self.features.append(features.reshape(1, -1))

    def extend(self, other: Rows) -> None:
        self.labels += other.labels
        self.predictions += other.predictions
        self.weights += other.weights
        self.features += other.features

    def compact(self) -> Rows:
        if len(self.labels) > 1:
            self.labels = [np.concatenate(self.labels)]
            self.predictions = [np.concatenate(self.predictions)]
            self.weights = [np.concatenate(self.weights)]
            self.features = [np.concatenate(self.features)]
        return self

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(labels [n, width], predictions [n, width], weights [n]); empty arrays for no rows."""
        if not self.labels:
            return np.zeros((0, 0)), np.zeros((0, 0)), np.zeros((0,))
        self.compact()
        return self.labels[0], self.predictions[0], self.weights[0]

    def feature_array(self) -> np.ndarray:
        """[n, F] object array of the captured features' text (captured_features order)."""
        if not self.features:
            return np.zeros((0, 0), dtype=object)
        self.compact()
        return self.features[0]

    def __getstate__(self) -> tuple[list[np.ndarray], ...]:
        self.compact()
        return self.labels, self.predictions, self.weights, self.features

    def __setstate__(self, state: tuple[list[np.ndarray], ...]) -> None:
        self.labels, self.predictions, self.weights, self.features = state


class LabelRowsCombiner(beam.CombineFn):
    """Collects each example's (label vector, prediction vector, weight, captured features) for one model output."""

    def __init__(self, key: metric_types.MetricKey, eval_config: Any) -> None:
        self._key = key
        self._eval_config = eval_config
        self._features = captured_features(eval_config)

    def create_accumulator(self) -> Rows:
        return Rows()

    def add_input(self, accumulator: Rows, element: metric_types.StandardMetricInputs) -> Rows:
        features = np.array(
            [_feature_text(element, name, self._key.model_name) for name in self._features], dtype=object
        )
        for raw_label, raw_prediction, raw_weight in metric_util.to_label_prediction_example_weight(
            element,
            eval_config=self._eval_config,
            model_name=self._key.model_name,
            output_name=self._key.output_name,
            example_weighted=self._key.example_weighted,
            flatten=False,
        ):
            label = np.asarray(raw_label, dtype=np.float64).reshape(-1)
            prediction = np.asarray(raw_prediction, dtype=np.float64).reshape(-1)
            if label.shape != prediction.shape:
                raise ValueError(
                    f"fast_metrics needs one dense label per prediction (multi-hot labels); got label shape "
                    f"{label.shape} and prediction shape {prediction.shape}"
                )
            weight = np.asarray(raw_weight, dtype=np.float64).reshape(-1)
            if weight.size != 1:
                raise ValueError(f"fast_metrics needs one weight per example, got {weight.size}")
            accumulator.add(label, prediction, weight, features)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[Rows]) -> Rows:
        it = iter(accumulators)
        result = next(it)
        for acc in it:
            result.extend(acc)
        return result

    def compact(self, accumulator: Rows) -> Rows:
        return accumulator.compact()

    def extract_output(self, accumulator: Rows) -> dict[metric_types.MetricKey, Rows]:
        return {self._key: accumulator.compact()}


def rows_metric_key(key: metric_types.MetricKey) -> metric_types.MetricKey:
    return metric_types.MetricKey(
        name=ROWS_NAME, model_name=key.model_name, output_name=key.output_name, example_weighted=key.example_weighted
    )


def rows_computation(rows_key: metric_types.MetricKey, eval_config: Any) -> metric_types.MetricComputation:
    """The shared rows combiner of one model output (identical wherever it is built, so TFMA runs it once)."""
    return metric_types.MetricComputation(
        keys=[rows_key],
        preprocessors=[_rows_preprocessor(eval_config)],
        combiner=LabelRowsCombiner(rows_key, eval_config),
    )

