"""Flags shared by the runners, turned into one PipelineConfig."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from components.evaluation.settings import GateSettings
from components.image_example_gen import spans
from components.trainer.backbone_specs import BACKBONE_NAMES
from components.trainer.config import EMBEDDING_ENGINES, TFLITE_EXPORTS, TrainerConfig
from pipeline import beam_profiles
from pipeline.config import DEFAULT_BEAM_ARGS, REPO_ROOT, PipelineConfig

LOCAL_SETUP_FILE = str(REPO_ROOT / "setup.py")


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (no usage block), exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {message} (see --help)\n")


def add_pipeline_flags(parser: argparse.ArgumentParser, setup_file_default: str = LOCAL_SETUP_FILE) -> None:
    """Adds the flags every runner accepts.

    Args:
      parser: the runner's parser.
      setup_file_default: the setup.py the dataflow Beam profile ships to workers when
        --setup-file is not given (a path where the Beam components run: this checkout locally,
        the image's copy on Kubeflow).
    """
    defaults = PipelineConfig(data_dir="", pipeline_root="", serving_dir="")
    trainer, gates = defaults.trainer, defaults.gates
    parser.add_argument("--pipeline-name", default=defaults.pipeline_name, help="name in ML Metadata and serving")
    parser.add_argument("--epochs", type=int, default=trainer.epochs, help="training epochs of the head")
    parser.add_argument("--image-size", type=int, default=trainer.image_size, help="input size in pixels")
    parser.add_argument(
        "--backbone", default=trainer.backbone, choices=BACKBONE_NAMES, help="frozen pretrained backbone"
    )
    parser.add_argument("--batch-size", type=int, default=trainer.batch_size)
    parser.add_argument(
        "--weights-file",
        default=None,
        metavar="PATH",
        help="local Keras .h5 ImageNet weights for a keras.applications backbone (offline; default: the Keras "
        "cache ~/.keras/models, downloaded when online)",
    )
    parser.add_argument(
        "--no-class-weighting", action="store_true", help="plain BCE instead of per-label positive-class weighting"
    )
    parser.add_argument(
        "--early-stopping-patience",
        type=int,
        default=trainer.early_stopping_patience,
        help="epochs without a lower validation loss before training stops (0: off)",
    )
    parser.add_argument(
        "--fine-tune-layers",
        type=int,
        default=trainer.fine_tune_layers,
        help="after head training, fine-tune this many top backbone layers (default 0: off; much slower)",
    )
    parser.add_argument("--fine-tune-epochs", type=int, default=trainer.fine_tune_epochs)
    parser.add_argument(
        "--embedding-engine",
        default=trainer.embedding_engine,
        choices=EMBEDDING_ENGINES,
        help="what runs the Trainer's frozen embedding pass: auto (TFLite/XNNPACK when it pays off, checked "
        "against TensorFlow), tf, or tflite; the exported SavedModel is the same",
    )
    parser.add_argument(
        "--tflite-cache-dir",
        default=None,
        metavar="DIR",
        help="where converted TFLite backbones are kept between runs (default ~/.cache/facepipe/tflite)",
    )
    parser.add_argument(
        "--export-tflite",
        default=trainer.export_tflite,
        choices=TFLITE_EXPORTS,
        help="also export model.tflite (backbone + head) for devices: float, or full-integer int8 "
        "(default none); it is scored on the eval split, gated and pushed with the model",
    )
    parser.add_argument(
        "--max-tflite-auc-drop",
        type=float,
        default=defaults.max_tflite_auc_drop,
        help="push only when model.tflite's macro AUC is at most this much below the SavedModel's",
    )
    parser.add_argument(
        "--filename-pattern",
        default=defaults.filename_pattern,
        help="regex with named groups age, gender, race (default: UTKFace names)",
    )
    parser.add_argument(
        "--span",
        default=None,
        metavar="latest|N|A-B",
        help="read a data folder of span-<N> folders: the latest span, span N, or spans A to B (default: "
        "'latest' when a local data folder holds span-<N> folders, else the whole folder)",
    )
    parser.add_argument(
        "--max-label-drift",
        type=float,
        default=defaults.max_label_drift,
        help="stop the run when a label distribution (gender, race, age group) moves by more than this "
        "(L-infinity, 0-1) from the previous span",
    )
    parser.add_argument(
        "--min-macro-auc",
        type=float,
        default=gates.min_macro_auc,
        help="bless only models with at least this macro-average AUC",
    )
    parser.add_argument(
        "--max-auc-regression",
        type=float,
        default=gates.max_auc_regression,
        help="allowed macro-AUC drop against the model serving now (the highest pushed version)",
    )
    parser.add_argument(
        "--min-label-auc",
        type=_float_or_none,
        default=gates.min_label_auc,
        metavar="AUC|none",
        help="bless only models whose every label reaches this AUC on the eval split (default: none, e.g. 0.6)",
    )
    parser.add_argument(
        "--label-auc-floor",
        action="append",
        type=label_value,
        default=None,
        metavar="LABEL=AUC",
        help="AUC floor for one label instead of --min-label-auc, repeatable, e.g. --label-auc-floor race_other=0.65",
    )
    parser.add_argument(
        "--max-fairness-gap",
        type=_float_or_none,
        default=gates.max_fairness_gap,
        metavar="GAP|none",
        help="largest allowed AUC gap of a label between two race groups or two genders (none: no fairness gate)",
    )
    parser.add_argument(
        "--fairness-min-count",
        type=int,
        default=gates.fairness_min_count,
        metavar="N",
        help="a group needs N positives and N negatives of a label for its fairness comparisons to be judged",
    )
    parser.add_argument(
        "--require-significance",
        action="store_true",
        help="the regression and fairness gates fail only on a difference that is beyond the tolerance AND "
        "significant (its 95%% DeLong interval excludes 0); default: the point estimate decides",
    )
    parser.add_argument(
        "--threshold-policy",
        default=trainer.threshold_policy,
        metavar="f1|precision=P|recall=R|fixed=T",
        help="how each label's decision threshold is chosen on out-of-fold predictions (default f1)",
    )
    parser.add_argument(
        "--label-threshold-policy",
        action="append",
        type=label_policy,
        default=None,
        metavar="LABEL=POLICY",
        help="the policy of one label, repeatable, e.g. --label-threshold-policy race_other=precision=0.8",
    )
    parser.add_argument(
        "--threshold-min-positives",
        type=int,
        default=trainer.threshold_min_positives,
        metavar="N",
        help="a label with fewer than N out-of-fold positives (or negatives) keeps the threshold 0.5",
    )
    parser.add_argument(
        "--calibration",
        default=trainer.calibration,
        choices=("prior", "platt", "none"),
        help="calibration of the exported probabilities (default prior: undo the positive-class weighting, "
        "p / (p + w (1 - p)); platt: a logistic fit on out-of-fold predictions; none)",
    )
    parser.add_argument(
        "--no-report-images",
        action="store_true",
        help="leave the thumbnails of misclassified eval images out of the HTML report (privacy)",
    )
    parser.add_argument("--no-cache", action="store_true", help="rerun every component")
    parser.add_argument(
        "--beam-arg",
        action="append",
        default=None,
        metavar="ARG",
        help="an extra Beam pipeline argument appended after the profile's, repeatable, "
        "e.g. --beam-arg=--experiments=use_runner_v2",
    )
    beam = parser.add_argument_group("Beam runner profile (see README: Beam runners)")
    beam.add_argument(
        "--beam-profile",
        default=beam_profiles.IN_MEMORY,
        choices=beam_profiles.PROFILES,
        help="where Beam-based components run (default: in-memory DirectRunner, no Beam arguments)",
    )
    beam.add_argument(
        "--beam-workers",
        type=int,
        default=None,
        metavar="N",
        help="multi-processing: worker processes (required); dataflow: max workers; flink: parallelism",
    )
    beam.add_argument("--gcp-project", default=None, help="dataflow: GCP project id")
    beam.add_argument("--gcp-region", default=None, help="dataflow: region, e.g. us-central1")
    beam.add_argument("--temp-location", default=None, metavar="GS_PATH", help="dataflow: gs:// temp folder")
    beam.add_argument(
        "--setup-file",
        default=None,
        help=f"dataflow: setup.py of this package, installed on each worker (default: {setup_file_default})",
    )
    beam.add_argument(
        "--sdk-container-image",
        default=None,
        metavar="IMAGE",
        help="dataflow: worker image that already contains this package (instead of --setup-file)",
    )
    beam.add_argument(
        "--job-endpoint",
        default=None,
        metavar="HOST:PORT",
        help=f"flink/spark/portable: Beam job server (portable: '{beam_profiles.EMBEDDED_JOB_SERVER}' for Beam's "
        "in-process one)",
    )
    beam.add_argument(
        "--beam-environment-type",
        default=None,
        choices=beam_profiles.ENVIRONMENT_TYPES,
        help=f"flink/spark/portable: SDK harness environment (default {beam_profiles.DEFAULT_ENVIRONMENT_TYPE} "
        f"at {beam_profiles.DEFAULT_EXTERNAL_ENVIRONMENT}, a Beam worker-pool sidecar)",
    )
    beam.add_argument(
        "--beam-environment-config",
        default=None,
        help="flink/spark/portable: DOCKER: SDK image; EXTERNAL: worker pool HOST:PORT; PROCESS: JSON command",
    )
    beam.add_argument(
        "--worker-check-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="remote runners: before the Beam steps, a tiny canary job must find a worker within this bound, "
        "else the run fails with the likely cause (default 120; DOCKER 600; Dataflow 900; 0: no check)",
    )
    parser.set_defaults(setup_file_default=setup_file_default)


def _float_or_none(text: str) -> float | None:
    """A number, or "none" for a gate that is off."""
    if text.strip().lower() in ("none", "off"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def label_value(text: str) -> tuple[str, float]:
    """argparse type for LABEL=NUMBER (a per-label AUC floor or decision threshold).

    Label names are checked by whoever uses them (e.g. PipelineConfig.validate).
    """
    name, sep, value = text.partition("=")
    try:
        if not sep or not name.strip():
            raise ValueError
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LABEL=NUMBER, e.g. race_other=0.65, got {text!r}") from None


def label_policy(text: str) -> tuple[str, str]:
    """argparse type for LABEL=POLICY (a per-label threshold policy; checked by PipelineConfig.validate)."""
    name, sep, policy = text.partition("=")
    if not sep or not name.strip() or not policy.strip():
        raise argparse.ArgumentTypeError(f"expected LABEL=POLICY, e.g. race_other=precision=0.8, got {text!r}")
    return name.strip(), policy.strip()


def beam_profile_from_args(args: argparse.Namespace) -> beam_profiles.BeamProfile:
    """Builds the Beam runner profile from parsed flags (validated by beam_profiles.beam_args).

    Args:
      args: flags added by add_pipeline_flags.

    Returns:
      The profile; the dataflow profile gets the runner's default setup.py unless
      --setup-file or --sdk-container-image is given.
    """
    setup_file = args.setup_file
    if setup_file is None and args.beam_profile == beam_profiles.DATAFLOW and not args.sdk_container_image:
        setup_file = args.setup_file_default
    return beam_profiles.BeamProfile(
        name=args.beam_profile,
        workers=args.beam_workers,
        gcp_project=args.gcp_project,
        gcp_region=args.gcp_region,
        temp_location=args.temp_location,
        setup_file=setup_file,
        sdk_container_image=args.sdk_container_image,
        job_endpoint=args.job_endpoint,
        environment_type=args.beam_environment_type,
        environment_config=args.beam_environment_config,
        extra_args=tuple(args.beam_arg or ()),
    )


def _spans_from_args(args: argparse.Namespace, data_dir: str) -> str | None:
    """--span as given (checked against a local folder); without it, "latest" for a local span layout."""
    if args.span is None:
        return spans.LATEST if spans.has_span_layout(data_dir) else None
    selection = spans.parse_span_selection(args.span)
    if "://" not in data_dir and data_dir:
        found = spans.find_spans(data_dir)
        if not found:
            raise ValueError(f"--span {args.span} given, but {data_dir} holds no span-<N> folders")
        if not selection.is_latest and not any(selection.first <= n <= selection.last for n in found):
            raise ValueError(f"--span {args.span}: no such span in {data_dir} (spans: {', '.join(map(str, found))})")
    return args.span


def settings_from_args(settings: type[Any], args: argparse.Namespace, **named_differently: Any) -> Any:
    """Builds a settings dataclass (TrainerConfig, GateSettings) from the flags.

    A field takes the value of the flag whose dest is its name (--epochs -> epochs), so a new
    field needs only its flag; flags that differ in name or shape (--no-class-weighting,
    repeatable LABEL=VALUE flags) are passed in ``named_differently``. Fields without a flag keep
    their defaults.

    Raises:
      ValueError: a value is invalid (the settings' own check; the message names it).
    """
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(settings) if hasattr(args, f.name)}
    return settings(**{**values, **named_differently})


def config_from_args(
    args: argparse.Namespace,
    data_dir: str,
    pipeline_root: str,
    serving_dir: str,
    metadata_path: str | None,
    **overrides: Any,
) -> PipelineConfig:
    """Builds and validates the PipelineConfig from parsed flags and runner-chosen paths.

    Args:
      args: flags added by add_pipeline_flags.
      data_dir / pipeline_root / serving_dir / metadata_path: chosen by the runner.
      overrides: other PipelineConfig fields a runner decides (e.g. the schema path inside the
        Kubeflow image).

    Raises:
      ValueError: a setting is invalid (the message names it).
    """
    config = PipelineConfig(
        data_dir=data_dir,
        pipeline_root=pipeline_root,
        serving_dir=serving_dir,
        metadata_path=metadata_path,
        pipeline_name=args.pipeline_name,
        filename_pattern=args.filename_pattern,
        spans=_spans_from_args(args, data_dir),
        max_label_drift=args.max_label_drift,
        trainer=settings_from_args(
            TrainerConfig,
            args,
            class_weighting=not args.no_class_weighting,
            label_threshold_policies=tuple(args.label_threshold_policy or ()),
            tflite_cache_dir=args.tflite_cache_dir or "",
        ),
        gates=settings_from_args(GateSettings, args, label_auc_floors=tuple(args.label_auc_floor or ())),
        max_tflite_auc_drop=args.max_tflite_auc_drop,
        report_images=not args.no_report_images,
        enable_cache=not args.no_cache,
        beam_pipeline_args=beam_profiles.beam_args(beam_profile_from_args(args)) or DEFAULT_BEAM_ARGS,
        worker_check_timeout_s=args.worker_check_timeout,
        **overrides,
    )
    config.validate()
    return config
