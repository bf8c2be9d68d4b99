"""GateSettings: the thresholds a model must meet to be blessed; pipeline.config.PipelineConfig holds one."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

from components.base import labels


@dataclasses.dataclass(frozen=True)
class GateSettings:
    """The thresholds a model must meet to be blessed (and pushed).

    Attributes:
      min_macro_auc: macro-average AUC floor on the overall slice.
      max_auc_regression: allowed macro-AUC drop against the model serving now; None: no check.
      min_label_auc: AUC floor on the overall slice for every label; None: no per-label floor
        except those in label_auc_floors.
      label_auc_floors: (label name, floor) pairs overriding min_label_auc for single labels.
      max_fairness_gap: largest allowed AUC gap, per label, between two race groups or two
        genders; None disables the fairness gate.
      fairness_min_count: a group is judged for a label only with at least this many positives
        and this many negatives of it (smaller groups are listed as not judged).
      require_significance: the regression and fairness gates fail only on a difference that is
        beyond the tolerance AND significant (its 95% DeLong interval excludes 0); off by default
        (see docs/design.md): a failure within noise is then recorded as such, not excused.
    """

    min_macro_auc: float = 0.7
    max_auc_regression: float | None = 0.02
    min_label_auc: float | None = None
    label_auc_floors: tuple[tuple[str, float], ...] = ()
    # With 20 positives and 20 negatives per group, the standard error of an AUC near 0.9 is about
    # 0.05 (Hanley & McNeil), so of a gap between two groups about 0.07: a 0.15 limit is ~2 standard
    # errors. Smaller groups would make the gate fail on noise.
    max_fairness_gap: float | None = 0.15
    fairness_min_count: int = 20
    require_significance: bool = False

    def __post_init__(self) -> None:
        """Checks the ranges (label names are checked by validate, against a model's labels).

        Raises:
          ValueError: with a message naming the bad setting.
        """
        if not 0.0 <= self.min_macro_auc <= 1.0:
            raise ValueError(f"min macro AUC must be within 0-1, got {self.min_macro_auc}")
        if self.max_auc_regression is not None and self.max_auc_regression < 0:
            raise ValueError(f"max AUC regression must be >= 0, got {self.max_auc_regression}")
        if self.min_label_auc is not None and not 0.0 <= self.min_label_auc <= 1.0:
            raise ValueError(f"min label AUC must be within 0-1, got {self.min_label_auc}")
        for name, floor in self.label_auc_floors:
            if not 0.0 <= floor <= 1.0:
                raise ValueError(f"AUC floor for {name} must be within 0-1, got {floor}")
        if self.max_fairness_gap is not None and not 0.0 <= self.max_fairness_gap <= 1.0:
            raise ValueError(f"max fairness gap must be within 0-1, got {self.max_fairness_gap}")
        if self.fairness_min_count < 1:
            raise ValueError(f"fairness min count must be >= 1, got {self.fairness_min_count}")

    def validate(self, label_names: Sequence[str] = labels.LABEL_NAMES) -> None:
        """Checks that every per-label floor names one of ``label_names`` (ranges: on construction).

        Raises:
          ValueError: with a message naming the bad setting.
        """
        for name, _ in self.label_auc_floors:
            if name not in label_names:
                raise ValueError(f"AUC floor for unknown label {name!r}; labels are {', '.join(label_names)}")

    def label_floor(self, name: str) -> float | None:
        """Returns the AUC floor of one label (None: not gated)."""
        return dict(self.label_auc_floors).get(name, self.min_label_auc)

    def to_json(self) -> str:
        """Serializes the settings (the gate's record, reports)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)
