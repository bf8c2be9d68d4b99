"""Flags shared by the runners, turned into one PipelineConfig."""

from __future__ import annotations

import argparse

from pipeline.config import BACKBONES, DEFAULT_BEAM_ARGS, PipelineConfig


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (no usage block), exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {message} (see --help)\n")


def add_pipeline_flags(parser: argparse.ArgumentParser) -> None:
    """Adds the flags every runner accepts."""
    defaults = PipelineConfig(data_dir="", pipeline_root="", serving_dir="")
    parser.add_argument("--pipeline-name", default=defaults.pipeline_name, help="name in ML Metadata and serving")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="training epochs of the head")
    parser.add_argument("--image-size", type=int, default=defaults.image_size, help="input size in pixels")
    parser.add_argument("--backbone", default=defaults.backbone, choices=BACKBONES, help="frozen pretrained backbone")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument(
        "--filename-pattern",
        default=defaults.filename_pattern,
        help="regex with named groups age, gender, race (default: UTKFace names)",
    )
    parser.add_argument(
        "--min-macro-auc",
        type=float,
        default=defaults.min_macro_auc,
        help="bless only models with at least this macro-average AUC",
    )
    parser.add_argument(
        "--max-auc-regression",
        type=float,
        default=defaults.max_auc_regression,
        help="allowed macro-AUC drop against the latest blessed model",
    )
    parser.add_argument("--no-cache", action="store_true", help="rerun every component")
    parser.add_argument(
        "--beam-arg",
        action="append",
        default=None,
        metavar="ARG",
        help="a Beam pipeline argument, repeatable, e.g. --beam-arg=--direct_running_mode=multi_processing "
        "--beam-arg=--direct_num_workers=2 (default: none, i.e. in-memory DirectRunner)",
    )


def config_from_args(
    args: argparse.Namespace, data_dir: str, pipeline_root: str, serving_dir: str, metadata_path: str | None
) -> PipelineConfig:
    """Builds and validates the PipelineConfig from parsed flags and runner-chosen paths.

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
        backbone=args.backbone,
        image_size=args.image_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        min_macro_auc=args.min_macro_auc,
        max_auc_regression=args.max_auc_regression,
        enable_cache=not args.no_cache,
        beam_pipeline_args=tuple(args.beam_arg) if args.beam_arg else DEFAULT_BEAM_ARGS,
    )
    config.validate()
    return config
