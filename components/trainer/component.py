"""Trainer component: TFX's Trainer with the executor that fingerprints the training inputs."""

from __future__ import annotations

from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec

from components.trainer import executor


class Trainer(tfx.components.Trainer):
    """TFX's Trainer (run_fn: components.trainer.run.run_fn) recording ``facepipe_inputs`` on its model."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)
