"""The Kubeflow container entrypoint's input fixes and the GCS directory-marker cleanup (no TFX run)."""

import json

import pytest
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from pipeline import gcs_markers, kfp_entrypoint

EXAMPLES_SCHEMA = "title: tfx.Examples\ntype: object\nproperties:\n  span:\n    type: integer\n"
INPUTS_SPEC = {
    "artifacts": {"examples": {"artifactType": {"instanceSchema": EXAMPLES_SCHEMA}}},
    "parameters": {"custom_config": {"parameterType": "STRING"}},
}


def _oss_executor_input() -> dict:
    """What open-source KFP's driver hands a step (ToRuntimeArtifact inputs, executor-logs output)."""
    return {
        "inputs": {
            "artifacts": {"examples": {"artifacts": [{
                "name": "42",
                "uri": "gs://b/root/ImageExampleGen/1/examples",
                "type": {"instanceSchema": ""},
                "metadata": {"span": 3.0, "split_names": '["train", "eval"]', "display_name": "examples",
                             "store_session_info": '{"Provider":"gs"}', "files_found": 12.0},
            }]}},
            "parameterValues": {"custom_config": "{}"},
        },
        "outputs": {
            "artifacts": {
                "model": {"artifacts": [{"name": "model", "uri": "gs://b/root/Trainer/2/model",
                                         "type": {"instanceSchema": "title: tfx.Model\ntype: object\n"}}]},
                "executor-logs": {"artifacts": [{"name": "executor-logs", "uri": "gs://b/root/Trainer/2/executor-logs",
                                                 "type": {"schemaTitle": "system.Artifact"}}]},
            },
            "outputFile": "/tmp/out/output_metadata.json",
        },
    }


def _parse(document: dict, message):
    return json_format.ParseDict(document, message, ignore_unknown_fields=True)


def test_untyped_inputs_get_their_declared_type_and_the_backends_own_fields_go():
    executor_input = _parse(_oss_executor_input(), pipeline_spec_pb2.ExecutorInput())
    spec = _parse(INPUTS_SPEC, pipeline_spec_pb2.ComponentInputsSpec())
    changes = kfp_entrypoint.normalize_executor_input(executor_input, spec)
    (examples,) = executor_input.inputs.artifacts["examples"].artifacts
    assert kfp_entrypoint.type_title(examples.type) == "tfx.Examples"
    assert set(examples.metadata.fields) == {"span", "split_names", "files_found"}
    assert list(executor_input.outputs.artifacts) == ["model"]
    assert any("executor-logs" in c for c in changes) and any("input examples" in c for c in changes)


def test_tfx_parses_the_fixed_input_with_its_properties():
    """TFX's own parser on the result: the type class, INT properties from floats, custom properties."""
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils
    from tfx.types import standard_artifacts

    executor_input = _parse(_oss_executor_input(), pipeline_spec_pb2.ExecutorInput())
    with pytest.raises(AttributeError):  # what TFX 1.16 does with open-source KFP's input unchanged
        kubeflow_v2_entrypoint_utils.parse_raw_artifact_dict(executor_input.inputs.artifacts)
    spec = _parse(INPUTS_SPEC, pipeline_spec_pb2.ComponentInputsSpec())
    kfp_entrypoint.normalize_executor_input(executor_input, spec)
    (examples,) = kubeflow_v2_entrypoint_utils.parse_raw_artifact_dict(executor_input.inputs.artifacts)["examples"]
    assert isinstance(examples, standard_artifacts.Examples)
    assert examples.span == 3 and examples.split_names == '["train", "eval"]'
    assert examples.get_int_custom_property("files_found") == 12
    assert not examples.has_custom_property("display_name")


def test_vertex_inputs_pass_unchanged():
    document = _oss_executor_input()
    document["inputs"]["artifacts"]["examples"]["artifacts"][0]["type"] = {"schemaTitle": "tfx.Examples"}
    del document["outputs"]["artifacts"]["executor-logs"]
    executor_input = _parse(document, pipeline_spec_pb2.ExecutorInput())
    before = json_format.MessageToDict(executor_input)
    changes = kfp_entrypoint.normalize_executor_input(executor_input, None)
    after = json_format.MessageToDict(executor_input)
    assert changes == []
    assert after["inputs"]["artifacts"]["examples"]["artifacts"][0]["type"] == {"schemaTitle": "tfx.Examples"}
    assert after["outputs"] == before["outputs"]


@pytest.mark.parametrize("spec", [None, {"artifacts": {}}])
def test_an_untyped_input_without_a_declared_type_is_a_clear_error(spec):
    executor_input = _parse(_oss_executor_input(), pipeline_spec_pb2.ExecutorInput())
    inputs_spec = _parse(spec, pipeline_spec_pb2.ComponentInputsSpec()) if spec is not None else None
    with pytest.raises(kfp_entrypoint.EntrypointError, match="input artifact 'examples'.*declares no TFX type"):
        kfp_entrypoint.normalize_executor_input(executor_input, inputs_spec)


def test_arguments_are_rewritten_in_place_and_beam_arguments_kept():
    argv = [
        "--executor_class_path", "tfx.components.trainer.executor.GenericExecutor",
        "--json_serialized_invocation_args", json.dumps(_oss_executor_input()),
        "--json_serialized_inputs_spec_args", json.dumps(INPUTS_SPEC),
        "--runner=DirectRunner",
    ]
    rewritten, executor_input = kfp_entrypoint.rewrite_arguments(argv)
    assert rewritten[:2] == argv[:2] and rewritten[4:] == argv[4:]
    fixed = json.loads(rewritten[3])
    assert fixed["inputs"]["artifacts"]["examples"]["artifacts"][0]["type"]["instanceSchema"] == EXAMPLES_SCHEMA
    assert kfp_entrypoint.output_uris(executor_input) == ["gs://b/root/Trainer/2/model"]
    with pytest.raises(kfp_entrypoint.EntrypointError, match="missing"):
        kfp_entrypoint.rewrite_arguments(argv[:2])
    assert kfp_entrypoint.main(argv[:2]) == 2  # one line on stderr, no traceback


class _Blob:
    def __init__(self, name: str, size: int, deleted: list):
        self.name, self.size, self._deleted = name, size, deleted

    def delete(self):
        self._deleted.append(self.name)


class _FakeStorage:
    """A listing as GCS returns it after TF 2.16 wrote an artifact: objects plus zero-byte folder markers."""

    def __init__(self, names: dict[str, int]):
        self.names, self.deleted, self.listed = names, [], []

    def list_blobs(self, bucket, prefix=None):
        self.listed.append((bucket, prefix))
        return [_Blob(n, s, self.deleted) for n, s in sorted(self.names.items()) if n.startswith(prefix or "")]


def test_directory_markers_under_an_artifact_are_removed_and_nothing_else():
    storage = _FakeStorage({
        "root/Trainer/model/5/": 0,
        "root/Trainer/model/5/Format-Serving/": 0,
        "root/Trainer/model/5/Format-Serving/saved_model.pb": 1234,
        "root/Trainer/model/5/Format-Serving/variables/": 0,
        "root/Trainer/model/5/Format-Serving/empty.txt": 0,  # an empty file is not a marker
        "root/Trainer/model/50/": 0,  # another artifact that shares the prefix text
        "root/Trainer/model_run/5/": 0,
    })
    assert gcs_markers.remove_directory_markers("gs://bucket/root/Trainer/model/5", storage) == 3
    assert storage.listed == [("bucket", "root/Trainer/model/5/")]
    assert sorted(storage.deleted) == [
        "root/Trainer/model/5/",
        "root/Trainer/model/5/Format-Serving/",
        "root/Trainer/model/5/Format-Serving/variables/",
    ]


def test_only_gcs_outputs_are_cleaned_and_a_failure_fails_the_step():
    seen = []
    assert kfp_entrypoint.clean_outputs(["ram://x/y", "/local/z", "gs://b/a"], lambda uri: seen.append(uri) or 2) == 2
    assert seen == ["gs://b/a"]

    def broken(uri):
        raise PermissionError("storage.objects.delete denied")

    with pytest.raises(kfp_entrypoint.EntrypointError, match="gs://b/a.*PermissionError"):
        kfp_entrypoint.clean_outputs(["gs://b/a"], broken)
    with pytest.raises(ValueError, match="not a gs://"):
        gcs_markers.split_gcs_uri("s3://b/a")
