"""The config tree: PipelineConfig holds the TrainerConfig and the GateSettings (fast: no TensorFlow)."""

import argparse
import json

import pytest

from components.evaluation.settings import GateSettings
from components.trainer.config import TrainerConfig
from pipeline import cli
from pipeline.config import PipelineConfig


@pytest.fixture(scope="module")
def parser():
    parser = argparse.ArgumentParser()
    cli.add_pipeline_flags(parser)
    return parser


def _config(parser, argv: str, tmp_path) -> PipelineConfig:
    return cli.config_from_args(parser.parse_args(argv.split()), str(tmp_path), str(tmp_path / "r"),
                                str(tmp_path / "s"), None)


def test_the_flags_defaults_are_the_settings_defaults(parser, tmp_path):
    config = _config(parser, "", tmp_path)
    assert config.trainer == TrainerConfig()
    assert config.gates == GateSettings()


def test_flags_reach_their_settings_by_name_and_by_hand(parser, tmp_path):
    config = _config(
        parser,
        "--epochs 4 --batch-size 8 --backbone mobilenet_v2 --fine-tune-layers 2 --no-class-weighting "
        "--label-threshold-policy race_other=precision=0.8 --tflite-cache-dir /c --min-macro-auc 0.6 "
        "--max-fairness-gap none --label-auc-floor female=0.65 --require-significance",
        tmp_path,
    )
    assert (config.trainer.epochs, config.trainer.batch_size, config.trainer.backbone) == (4, 8, "mobilenet_v2")
    assert config.trainer.fine_tune_layers == 2 and config.trainer.class_weighting is False
    assert config.trainer.label_threshold_policies == (("race_other", "precision=0.8"),)
    assert config.trainer.tflite_cache_dir == "/c"
    assert config.gates == GateSettings(min_macro_auc=0.6, max_fairness_gap=None,
                                        label_auc_floors=(("female", 0.65),), require_significance=True)


def test_settings_from_args_fills_only_the_fields_a_flag_names():
    args = argparse.Namespace(epochs=5, dropout=0.1, not_a_field=1)
    assert cli.settings_from_args(TrainerConfig, args, seed=7) == TrainerConfig(epochs=5, dropout=0.1, seed=7)


def test_the_custom_config_round_trips_with_the_same_keys():
    config = TrainerConfig(epochs=4, label_threshold_policies=(("race_other", "precision=0.8"),), code_version="x")
    custom = json.loads(json.dumps(config.to_custom_config()))  # what the Trainer receives
    assert custom["label_threshold_policies"] == {"race_other": "precision=0.8"}
    assert list(custom) == [f for f in TrainerConfig.__dataclass_fields__]
    assert TrainerConfig.from_custom_config({**custom, "unknown": 1}) == config
    assert TrainerConfig.from_custom_config(None) == TrainerConfig()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: TrainerConfig(epochs=0), "epochs must be >= 1"),
        (lambda: TrainerConfig(image_size=8), "image size must be within 32-1024"),
        (lambda: TrainerConfig(backbone="alexnet"), "unknown backbone"),
        (lambda: TrainerConfig(weights_file="w.h5"), "bundled weights"),
        (lambda: TrainerConfig(embedding_engine="gpu"), "embedding engine must be one of"),
        (lambda: TrainerConfig(label_threshold_policies=(("nose", "f1"),)), "unknown label"),
        (lambda: TrainerConfig.from_custom_config({"dropout": 1.0}), "dropout must be within"),  # a runtime value
        (lambda: GateSettings(min_macro_auc=1.5), "min macro AUC"),
        (lambda: GateSettings(max_auc_regression=-0.1), "max AUC regression"),
    ],
)
def test_each_setting_is_checked_where_it_is_declared(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_the_pipeline_checks_the_gates_label_names(tmp_path):
    config = PipelineConfig(str(tmp_path), str(tmp_path / "r"), str(tmp_path / "s"),
                            gates=GateSettings(label_auc_floors=(("nose", 0.6),)))
    with pytest.raises(ValueError, match="unknown label 'nose'"):
        config.validate()
