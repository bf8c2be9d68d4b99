"""Test setup: Keras 2 (tf_keras) everywhere, set before TensorFlow is first imported.

Also the tiny end-to-end pipeline run that several e2e test modules share (the pipeline,
the report built from its real Evaluator output, batch prediction with its pushed model), and the
small KFP package the client-side Kubeflow tests upload to their fake client.
"""

import os

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

E2E_NUM_IMAGES = 50


def run_paths(root) -> dict[str, str]:
    """Where a local run under ``root`` keeps its pipeline root, serving folder and ML Metadata.

    PipelineConfig keyword arguments: ``PipelineConfig(data_dir=..., **run_paths(root))``.
    """
    return {
        "pipeline_root": str(root / "pipeline_root"),
        "serving_dir": str(root / "serving"),
        "metadata_path": str(root / "pipeline_root" / "metadata.sqlite"),
    }


@pytest.fixture(scope="session")
def e2e_runs(tmp_path_factory):
    """Runs the real pipeline three times on 50 generated images on one pipeline root.

    The second run is fully cached; the third asks for a macro AUC of 0.99 and is refused (its
    Evaluator and gate re-run, nothing is pushed); it is the third of the root's runs in ML
    Metadata (tests may add later ones). The index of runs (reports/index.html) lists them all.

    Returns:
      (config, generation report, first summary, second summary, ML Metadata store).
    """
    import dataclasses
    import io

    from ml_metadata.metadata_store import metadata_store
    from tfx import v1 as tfx

    from components import synthetic_data
    from components.evaluation.settings import GateSettings
    from components.trainer.config import TrainerConfig
    from pipeline.config import PipelineConfig
    from pipeline.local_run import run_local

    root = tmp_path_factory.mktemp("e2e")
    data_dir = root / "data"
    report = synthetic_data.generate(
        data_dir, synthetic_data.SyntheticSpec(num_images=E2E_NUM_IMAGES, seed=7, balanced=True)
    )
    config = PipelineConfig(
        data_dir=str(data_dir),
        **run_paths(root),
        pipeline_name="facepipe-e2e",
        train_buckets=1,  # 50/50 so that every label has positives and negatives in eval
        eval_buckets=1,
        trainer=TrainerConfig(image_size=64, epochs=3),
        gates=GateSettings(min_macro_auc=0.0),  # tiny random-ish data: the gate itself is tested elsewhere
    )
    first = run_local(config, out=io.StringIO())
    second = run_local(config, out=io.StringIO())
    run_local(dataclasses.replace(config, gates=GateSettings(min_macro_auc=0.99)), out=io.StringIO())  # refused
    store = metadata_store.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path)
    )
    return config, report, first, second, store


@pytest.fixture
def package(tmp_path):
    """A small compiled-looking KFP package (tests/kfp_helpers.MINI_SPEC) for the client-side Kubeflow tests."""
    from tests.kfp_helpers import write_mini_package

    return write_mini_package(tmp_path)
