"""The Evaluator's configuration and the gates: settings, EvalConfig, results, verdicts.

- ``settings``: GateSettings, the thresholds (pipeline.config.PipelineConfig holds one);
- ``eval_config``: the tfma.EvalConfig built from the label list and the settings, and read back;
- ``results``: an Evaluator's output as plain values keyed by names (EvalResults);
- ``gates``: each gate's verdict (GateResult), the blessing, EvaluationGate's record.

The Evaluator computes, per label and per slice, AUC, PR-AUC, precision, recall and F1 at 0.5,
mean label and mean prediction (calibration), their macro and micro averages, ROC/PR and
calibration plots and the multi-label confusion matrix. Four gates are TFMA thresholds:

- ``macro_auc_floor``: macro-average AUC on the overall slice >= a floor;
- ``label_auc_floors``: each label's AUC on the overall slice >= its floor;
- ``no_regression``: macro AUC not lower than the baseline's (the model serving now) by more
  than a tolerance (skipped when there is no baseline);
- ``fairness_<attribute>``: for each label, the AUC gap between every pair of groups
  (race groups; genders) <= a limit, as TFMA cross-slice thresholds.

TFMA counts a comparison it cannot compute (a group without positives or negatives of a label)
as a failure, and a gap between groups of a handful of positives is mostly noise. So
``evaluate_gates`` reads TFMA's validation result and excuses exactly one kind of failure: a
fairness comparison where either group has fewer than ``fairness_min_count`` positives or
negatives of that label ("not judged"; listed in the gate's record). Every other TFMA failure
stands. Labels defined by the attribute itself (``race_*`` across race groups, ``female``
across genders) are constant within each group and are not compared at all.

Uncertainty: the config also asks for the per-example rows (fast_metrics.EvalRows), from which
EvaluationGate computes DeLong intervals (components.uncertainty) of every gated number; each
gate records its headline value's interval and whether its verdict is within noise, and with
``require_significance`` the regression and fairness gates fail only on significant differences.
"""

# The names pipeline/report reads through ``components.evaluation``; new code imports the modules above.
from components.evaluation.eval_config import AGGREGATE, FAIRNESS_GROUPS, MACRO_AUC, SLICE_FEATURE_NAMES
from components.evaluation.gates import GATE_FAIRNESS_PREFIX, read_gates
from components.evaluation.results import BASELINE, CANDIDATE, DIFF, EvalResults, load_eval_results
from components.evaluation.settings import GateSettings

__all__ = [
    "AGGREGATE",
    "BASELINE",
    "CANDIDATE",
    "DIFF",
    "FAIRNESS_GROUPS",
    "GATE_FAIRNESS_PREFIX",
    "MACRO_AUC",
    "SLICE_FEATURE_NAMES",
    "EvalResults",
    "GateSettings",
    "load_eval_results",
    "read_gates",
]
