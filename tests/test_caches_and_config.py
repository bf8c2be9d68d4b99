"""Cache keys see every code and weights change; output folders with glob characters are refused."""

import importlib
import json
import os
import pathlib

import pytest

from components.trainer.config import TrainerConfig
from pipeline import config as config_lib
from pipeline import pipeline as pipeline_def
from pipeline.config import PipelineConfig, code_fingerprint, component_modules

REPO = pathlib.Path(__file__).resolve().parent.parent


def _config(tmp_path, **overrides) -> PipelineConfig:
    values = dict(data_dir=str(tmp_path / "data"), pipeline_root=str(tmp_path / "root"),
                  serving_dir=str(tmp_path / "serving"))
    values.update(overrides)
    return PipelineConfig(**values)


def _cache_inputs(config: PipelineConfig) -> dict[str, str]:
    """Each component's execution properties, as text: what TFX's cache key sees of it."""
    built = pipeline_def.create_pipeline(config)
    return {c.id: json.dumps(sorted((k, str(v)) for k, v in c.exec_properties.items())) for c in built.components}


@pytest.fixture()
def edited(monkeypatch):
    """Makes one source file read as if a line had been appended to it (the repository is not touched)."""

    def edit(relative: str) -> None:
        target = REPO / relative
        real = pathlib.Path.read_bytes

        def read_bytes(self):
            data = real(self)
            return data + b"\n# appended\n" if self.resolve() == target else data

        monkeypatch.setattr(pathlib.Path, "read_bytes", read_bytes)

    return edit


def test_appending_to_fast_metrics_changes_the_evaluators_cache_key(tmp_path, edited):
    config = _config(tmp_path)
    before = _cache_inputs(config)
    edited("components/fast_metrics.py")
    after = _cache_inputs(config)
    assert before[pipeline_def.EVALUATOR] != after[pipeline_def.EVALUATOR]
    assert before[pipeline_def.TRANSFORM] == after[pipeline_def.TRANSFORM]  # which does not load it


def test_every_component_that_imports_a_module_sees_its_changes(tmp_path, edited):
    config = _config(tmp_path)
    before = _cache_inputs(config)
    edited("components/base/labels.py")  # imported by most components, directly or through others
    after = _cache_inputs(config)
    changed = {node for node in before if before[node] != after[node]}
    assert changed >= {
        pipeline_def.EXAMPLE_GEN, pipeline_def.LABEL_DRIFT, pipeline_def.TRANSFORM, pipeline_def.TRAINER,
        # these two reach components.base.labels only through another module of ours (drift, evaluation)
        pipeline_def.ANOMALY_GATE, pipeline_def.EVALUATION_GATE,
    }
    assert pipeline_def.PUSHER not in changed


def test_a_weights_file_changed_in_place_changes_the_trainers_cache_key(tmp_path):
    weights = tmp_path / "weights.h5"
    weights.write_bytes(b"A" * 4096)
    config = _config(tmp_path, trainer=TrainerConfig(backbone="mobilenet_v2", weights_file=str(weights)))
    before = _cache_inputs(config)
    stat = os.stat(weights)
    weights.write_bytes(b"B" * 4096)  # same size ...
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ... and the same modification time
    after = _cache_inputs(config)
    assert before[pipeline_def.TRAINER] != after[pipeline_def.TRAINER]
    assert before[pipeline_def.EVALUATOR] == after[pipeline_def.EVALUATOR]


def _package(root: pathlib.Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    importlib.invalidate_caches()


def test_component_modules_follows_imports_and_config_strings(tmp_path, monkeypatch):
    _package(tmp_path, {
        "fpdemo/__init__.py": "",
        "fpdemo/entry.py": "import json\nfrom fpdemo import helper\n",
        "fpdemo/helper.py": "def f():\n    import fpdemo.sub.deep  # inside a function\n",
        "fpdemo/sub/__init__.py": "",
        "fpdemo/sub/deep.py": "from . import deeper\nfrom .deeper import VALUE\n",
        "fpdemo/sub/deeper.py": "VALUE = 1\n",
        "fpdemo/metrics.py": "class Metric:\n    pass\n",
        "fpdemo/unused.py": "",
    })
    monkeypatch.syspath_prepend(str(tmp_path))
    modules = component_modules("fpdemo.entry.run_fn", packages=("fpdemo",))
    assert modules == ("fpdemo.__init__", "fpdemo.entry", "fpdemo.helper", "fpdemo.sub.__init__", "fpdemo.sub.deep",
                       "fpdemo.sub.deeper")
    with_config = component_modules(config={"metrics": [{"module": "fpdemo.metrics", "class_name": "Metric"}]},
                                    packages=("fpdemo",))
    assert with_config == ("fpdemo.__init__", "fpdemo.metrics")
    before = code_fingerprint(*modules)
    with open(tmp_path / "fpdemo" / "sub" / "deeper.py", "a") as f:
        f.write("OTHER = 2\n")
    assert code_fingerprint(*modules) != before
    with pytest.raises(ValueError, match="names no module"):
        component_modules("json", packages=("fpdemo",))


@pytest.mark.parametrize("field", ["pipeline_root", "serving_dir"])
@pytest.mark.parametrize("folder", ["out[1]", "out*", "out?", "o]ut", "back\\slash"])
def test_output_folders_with_glob_characters_are_refused(tmp_path, field, folder):
    with pytest.raises(ValueError, match="would read it as a file pattern") as info:
        _config(tmp_path, **{field: str(tmp_path / folder)}).validate()
    assert "\n" not in str(info.value)


def test_a_data_folder_with_glob_characters_is_accepted(tmp_path):
    _config(tmp_path, data_dir=str(tmp_path / "faces[1]")).validate()
    assert config_lib.GLOB_CHARACTERS == "*?[]\\"
