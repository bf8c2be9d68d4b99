"""create_pipeline: the only place the TFX pipeline is built."""

from __future__ import annotations

import dataclasses
import json
import os

import tensorflow_data_validation as tfdv
from tfx import v1 as tfx
from tfx.proto import example_gen_pb2

from components import pusher as atomic_pusher
from components.anomaly_gate import AnomalyGate
from components.base import labels
from components.baseline import ServingBaseline
from components.drift import LabelDriftCheck
from components.evaluation.eval_config import build_eval_config
from components.evaluation_gate import EvaluationGate
from components.evaluator import Evaluator
from components.image_example_gen.component import ImageExampleGen
from components.image_example_gen.ingest import DEFAULT_MAX_IMAGE_PIXELS
from components.tflite_evaluator import TFLiteEvaluator
from components.trainer.component import Trainer
from pipeline import runtime_params
from pipeline.config import PipelineConfig, code_fingerprint, component_modules

TRANSFORM_FN = "components.transform.preprocessing_fn"
RUN_FN = "components.trainer.run.run_fn"

# Component ids, used by runners to report progress and read results from ML Metadata.
EXAMPLE_GEN = "ImageExampleGen"
STATISTICS_GEN = "StatisticsGen"
SCHEMA_GEN = "ImportSchemaGen"
EXAMPLE_VALIDATOR = "ExampleValidator"
ANOMALY_GATE = "AnomalyGate"
LABEL_DRIFT = "LabelDriftCheck"
TRANSFORM = "Transform"
TRAINER = "Trainer"
SERVING_BASELINE = "ServingBaseline"
EVALUATOR = "Evaluator"
TFLITE_EVALUATOR = "TFLiteEvaluator"  # only with --export-tflite
EVALUATION_GATE = "EvaluationGate"
PUSHER = "Pusher"
# Steps that read outside the artifact store (the data folder, the serving folder): locally a
# driver puts that state into their cache key; on Kubeflow, which runs no custom driver, their
# caching is off (pipeline.kubeflow).
READS_OUTSIDE_ARTIFACTS: tuple[str, ...] = (EXAMPLE_GEN, LABEL_DRIFT, SERVING_BASELINE, PUSHER)


def serving_base(config: PipelineConfig) -> str:
    """Where Pusher writes versions: <serving_dir>/<pipeline_name>."""
    return os.path.join(config.serving_dir, config.pipeline_name)


def create_pipeline(config: PipelineConfig, runtime_parameters: bool = False) -> tfx.dsl.Pipeline:
    """Builds the face-attribute pipeline.

    ImageExampleGen -> StatisticsGen -> ExampleValidator (vs the curated schema) ->
    AnomalyGate (stops on anomalies) -> Transform -> Trainer -> ServingBaseline (the model
    serving now) -> Evaluator (vs thresholds and that baseline) -> EvaluationGate (every gate;
    its blessing decides) -> Pusher (blessed models only).

    Args:
      config: the run's settings.
      runtime_parameters: turn the values a scheduled run may change (data root, spans, trainer
        and evaluator settings; see pipeline.runtime_params) into runtime parameters (Kubeflow).

    Returns:
      The TFX pipeline.
    """
    config.validate()
    example_gen = ImageExampleGen(
        input_base=config.data_dir,
        filename_pattern=config.filename_pattern,
        code_version=code_fingerprint(*component_modules(ImageExampleGen)),
        max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS,
        spans=config.spans,
        output_config=example_gen_pb2.Output(
            split_config=example_gen_pb2.SplitConfig(
                splits=[
                    example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=config.train_buckets),
                    example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=config.eval_buckets),
                ],
                partition_feature_name="filename",
            )
        ),
    ).with_id(EXAMPLE_GEN)

    schema_gen = tfx.components.ImportSchemaGen(schema_file=config.schema_path).with_id(SCHEMA_GEN)
    # Semantic-domain statistics count image_raw's formats; the schema's image_domain checks them.
    # With the curated schema, TFDV treats image_raw as bytes and skips the top-k and unique
    # counts of string features (hashing every image): 3.4 s instead of 5.1 s for 19k images.
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        stats_options=tfdv.StatsOptions(enable_semantic_domain_stats=True),
    ).with_id(STATISTICS_GEN)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    ).with_id(EXAMPLE_VALIDATOR)
    label_drift = LabelDriftCheck(
        examples=example_gen.outputs["examples"],
        max_label_drift=config.max_label_drift,
        code_version=code_fingerprint(*component_modules(LabelDriftCheck)),
    ).with_id(LABEL_DRIFT)
    anomaly_gate = AnomalyGate(
        anomalies=example_validator.outputs["anomalies"],
        drift=label_drift.outputs["report"],
        code_version=code_fingerprint(*component_modules(AnomalyGate)),
    ).with_id(ANOMALY_GATE)

    # Transform's graph is all the Trainer and the Evaluator need: they read ExampleGen's examples
    # and apply it per batch (the Trainer in its embedding pass, the Evaluator through the exported
    # model's transform_features signature). Materializing would copy every JPEG through Arrow, tf.Example
    # and deflate once more: 13 s of the pipeline at 24,000 images.
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=TRANSFORM_FN,
        # Dotted-path functions are invisible to the cache key; the fingerprint is not.
        custom_config={"code_version": code_fingerprint(*component_modules(TRANSFORM_FN))},
        disable_statistics=True,
        materialize=False,
    ).with_id(TRANSFORM)
    transform.add_upstream_node(anomaly_gate)

    trainer_config = dataclasses.replace(
        config.trainer,
        # The Transform graph's labels are part of what a model learns from (its input fingerprint).
        code_version=code_fingerprint(
            *component_modules(Trainer, RUN_FN, TRANSFORM_FN), files=[config.trainer.weights_file]
        ),
    )
    trainer = Trainer(
        run_fn=RUN_FN,
        examples=example_gen.outputs["examples"],
        transform_graph=transform.outputs["transform_graph"],
        custom_config=trainer_config.to_custom_config(),
    ).with_id(TRAINER)

    # The model serving now, copied from the serving folder (empty when there is none, or when it
    # is the candidate itself): no Resolver, so Kubeflow's open-source backend can run it too.
    serving_baseline = ServingBaseline(
        candidate=trainer.outputs["model"],
        serving_base=serving_base(config),
        code_version=code_fingerprint(*component_modules(ServingBaseline)),
    ).with_id(SERVING_BASELINE)

    eval_config = build_eval_config(gates=config.gates)
    evaluator = Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=serving_baseline.outputs["baseline_model"],
        eval_config=eval_config,
        # TFMA loads the metric classes the EvalConfig names by module: their code is in no cache key.
        code_version=code_fingerprint(*component_modules(Evaluator, config=eval_config)),
    ).with_id(EVALUATOR)
    # TFMA cannot score a TFLite model beside the SavedModel: our own pass over the eval split does.
    tflite_evaluator = None
    if config.trainer.export_tflite != "none":
        tflite_evaluator = TFLiteEvaluator(
            examples=example_gen.outputs["examples"],
            model=trainer.outputs["model"],
            transform_graph=transform.outputs["transform_graph"],
            batch_size=config.trainer.batch_size,
            code_version=code_fingerprint(*component_modules(TFLiteEvaluator)),
        ).with_id(TFLITE_EVALUATOR)
    # Judges every gate against the thresholds the Evaluator ran with; its blessing decides the push.
    evaluation_gate = EvaluationGate(
        evaluation_result=evaluator.outputs["evaluation"],
        model=trainer.outputs["model"],
        baseline=serving_baseline.outputs["baseline_model"],
        label_names=json.dumps(list(labels.LABEL_NAMES)),
        fairness_min_count=config.gates.fairness_min_count,
        require_significance=int(config.gates.require_significance),
        code_version=code_fingerprint(*component_modules(EvaluationGate)),
        tflite_evaluation=tflite_evaluator.outputs["evaluation"] if tflite_evaluator else None,
        max_tflite_auc_drop=config.max_tflite_auc_drop,
    ).with_id(EVALUATION_GATE)

    pusher = atomic_pusher.AtomicPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluation_gate.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_base(config))
        ),
        # Atomic (staging folder + rename) and idempotent publishing; see components/pusher.py.
        custom_config={"code_version": code_fingerprint(*component_modules(atomic_pusher.AtomicPusher))},
    ).with_id(PUSHER)

    if runtime_parameters:
        runtime_params.expose_runtime_parameters(example_gen=example_gen, trainer=trainer, evaluator=evaluator)

    metadata = (
        tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path)
        if config.metadata_path
        else None
    )
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=[
            example_gen,
            statistics_gen,
            schema_gen,
            example_validator,
            label_drift,
            anomaly_gate,
            transform,
            trainer,
            serving_baseline,
            evaluator,
            *([tflite_evaluator] if tflite_evaluator else []),
            evaluation_gate,
            pusher,
        ],
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata,
        beam_pipeline_args=list(config.beam_pipeline_args),
    )
