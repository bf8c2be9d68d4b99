"""TFX's Evaluator with a code fingerprint in its execution properties.

TFMA imports the metric classes an EvalConfig names by module (``components.fast_metrics``).
TFX's cache key covers the EvalConfig's text but not that code, so an edited metric module
was served from the cache. A ``code_version`` execution property (pipeline.config.code_fingerprint
of those modules) is part of the cache key.
"""

from __future__ import annotations

from typing import Any

from tfx import v1 as tfx

CODE_VERSION_KEY = "code_version"


class FingerprintedEvaluator(tfx.components.Evaluator):
    """``tfx.components.Evaluator`` plus a ``code_version`` execution property (cache key only).

    The executor is TFX's own and never reads the property.
    """

    def __init__(self, *, code_version: str, **kwargs: Any):
        """Builds the Evaluator.

        Args:
          code_version: fingerprint of the code the Evaluator loads (metric modules).
          kwargs: tfx.components.Evaluator's arguments.
        """
        super().__init__(**kwargs)
        # Set after construction, as TFX itself adds module_path to this component (udf_utils):
        # TFX's EvaluatorSpec is built inside Evaluator.__init__ and cannot take the extra key.
        # The local and KubeflowV2 compilers copy every execution property.
        self.exec_properties[CODE_VERSION_KEY] = code_version
