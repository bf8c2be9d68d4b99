"""Shared by the Kubeflow tests (tests/test_kfp_*.py): a fake kfp.Client, a small package, the
pipeline config compiled for a cluster, and the graph of a compiled spec and of the local pipeline.

No KFP server or Kubernetes cluster exists on these machines. FakeKfpClient is an in-memory FAKE
of the few kfp.Client methods runner_kfp uses (no server behind it), answering with
kfp_server_api's own model classes and reading packages with the function kfp.Client uses for that.
"""

import dataclasses
import itertools
import json
import os
import types

from components.trainer.config import TrainerConfig
from pipeline import kubeflow
from pipeline.config import PipelineConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = "europe-docker.pkg.dev/facepipe-test/images/facepipe:0.1.0"
# `runner_kfp.py compile` with every required flag; cases append the flag under test.
COMPILE_TO_GCS = [
    "compile", "--image", IMAGE, "--data-dir", "gs://d", "--pipeline-root", "gs://r", "--serving-dir", "gs://s"
]
SECRET = "s3cr3t-t0ken-value-4f1d"


# ---------------------------------------------------------------------------------------------
# A fake kfp.Client (no server exists here)


class FakeKfpClient:
    """FAKE, in-memory stand-in for the kfp.Client (kfp 2.5) methods runner_kfp uses.

    Keeps experiments and recurring runs in dicts, records every call in ``calls`` (in order),
    serves list_recurring_runs in pages of ``page_limit``, and reads packages with kfp's own
    package reader, so a package kfp.Client would reject is rejected here too.
    """

    def __init__(self, token: str | None = None, page_limit: int = 2):
        import kfp_server_api

        self.api = kfp_server_api
        self.token = token
        self.page_limit = page_limit
        self.calls: list[tuple] = []
        self.experiments: dict[str, object] = {}
        self.recurring: dict[str, object] = {}
        self.runs: dict[str, dict] = {}
        self.fail_create_recurring: Exception | None = None
        self._ids = itertools.count(1)

    @staticmethod
    def _read_package(path: str) -> None:
        from kfp.client.client import _extract_pipeline_yaml  # what kfp.Client uses to read a package

        _extract_pipeline_yaml(path)

    def create_experiment(self, name, description=None, namespace=None):
        self.calls.append(("create_experiment", name))
        if name not in self.experiments:
            self.experiments[name] = self.api.V2beta1Experiment(
                experiment_id=f"exp-{next(self._ids)}", display_name=name, namespace=namespace
            )
        return self.experiments[name]

    def get_experiment(self, experiment_id=None, experiment_name=None, namespace=None):
        self.calls.append(("get_experiment", experiment_name))
        if experiment_name not in self.experiments:
            raise ValueError(f"No experiment is found with name {experiment_name}.")  # kfp's message
        return self.experiments[experiment_name]

    def create_run_from_pipeline_package(self, pipeline_file, arguments=None, run_name=None, experiment_id=None, **_):
        self._read_package(pipeline_file)
        run_id = f"run-{next(self._ids)}"
        self.calls.append(("create_run", run_id, run_name))
        self.runs[run_id] = {"experiment_id": experiment_id, "name": run_name, "params": dict(arguments or {})}
        return types.SimpleNamespace(run_id=run_id)

    def create_recurring_run(
        self,
        experiment_id,
        job_name,
        cron_expression=None,
        pipeline_package_path=None,
        params=None,
        max_concurrency=1,
        no_catchup=None,
        enabled=True,
        **_,
    ):
        self._read_package(pipeline_package_path)
        if self.fail_create_recurring is not None:
            raise self.fail_create_recurring
        recurring_run_id = f"rr-{next(self._ids)}"
        self.calls.append(("create_recurring_run", recurring_run_id, job_name))
        self.recurring[recurring_run_id] = self.api.V2beta1RecurringRun(
            recurring_run_id=recurring_run_id,
            display_name=job_name,
            experiment_id=experiment_id,
            trigger=self.api.V2beta1Trigger(cron_schedule=self.api.V2beta1CronSchedule(cron=cron_expression)),
            runtime_config=self.api.V2beta1RuntimeConfig(parameters=dict(params or {})),
            max_concurrency=str(max_concurrency),
            no_catchup=no_catchup,
            status="ENABLED" if enabled else "DISABLED",
            created_at="2026-01-01T00:00:00Z",
        )
        return self.recurring[recurring_run_id]

    def list_recurring_runs(
        self, page_token="", page_size=10, sort_by="", experiment_id=None, namespace=None, filter=None
    ):  # noqa: A002  (kfp's name)
        self.calls.append(("list_recurring_runs", experiment_id, page_token))
        matching = [r for r in self.recurring.values() if experiment_id is None or r.experiment_id == experiment_id]
        start = int(page_token or 0)
        size = min(page_size, self.page_limit)
        page = matching[start : start + size]
        more = start + size < len(matching)
        return self.api.V2beta1ListRecurringRunsResponse(
            recurring_runs=page or None, total_size=len(matching), next_page_token=str(start + size) if more else None
        )

    def delete_recurring_run(self, recurring_run_id):
        self.calls.append(("delete_recurring_run", recurring_run_id))
        del self.recurring[recurring_run_id]
        return {}


MINI_SPEC = {
    # A small but valid KFP pipeline spec with two parameters, for client-logic tests.
    "pipelineInfo": {"name": "facepipe"},
    "schemaVersion": "2.1.0",
    "sdkVersion": "test",
    "components": {},
    "deploymentSpec": {},
    "root": {
        "dag": {"tasks": {}},
        "inputDefinitions": {
            "parameters": {
                "data_root": {"parameterType": "STRING", "defaultValue": "gs://b/faces", "isOptional": True},
                "trainer_config": {
                    "parameterType": "STRING",
                    "defaultValue": json.dumps({"batch_size": 32, "epochs": 10, "image_size": 128}),
                    "isOptional": True,
                },
                "max_images": {"parameterType": "NUMBER_INTEGER", "defaultValue": 5, "isOptional": True},
            }
        },
    },
}


def write_mini_package(folder) -> str:
    """MINI_SPEC written as a package in folder; returns its path."""
    path = str(folder / "facepipe.yaml")
    kubeflow.write_package(json.loads(json.dumps(MINI_SPEC)), path)
    return path


# ---------------------------------------------------------------------------------------------
# The pipeline compiled for a cluster, and graphs to compare


def kfp_config(**changes) -> PipelineConfig:
    config = PipelineConfig(
        data_dir="gs://facepipe-test/faces",
        pipeline_root="gs://facepipe-test/root",
        serving_dir="gs://facepipe-test/serving",
        schema_path=kubeflow.CONTAINER_SCHEMA_PATH,
        trainer=TrainerConfig(epochs=7),
    )
    return dataclasses.replace(config, **changes)


def compile_flat_and_spans(out) -> dict:
    """Compiles the pipeline twice into out: flat data folder, and span folders (spans="latest")."""
    flat = kubeflow.compile_pipeline(kfp_config(), IMAGE, str(out / "facepipe.yaml"))
    spans = kubeflow.compile_pipeline(kfp_config(spans="latest"), IMAGE, str(out / "facepipe-spans.yaml"))
    return {"flat": (flat, str(out / "facepipe.yaml")), "spans": (spans, str(out / "facepipe-spans.yaml"))}


def kfp_graph(spec: dict) -> tuple[set, set]:
    edges, wiring = set(), set()
    for name, task in spec["root"]["dag"]["tasks"].items():
        for dep in task.get("dependentTasks", []):
            edges.add((dep, name))
        for key, source in task.get("inputs", {}).get("artifacts", {}).items():
            producer = source["taskOutputArtifact"]["producerTask"]
            edges.add((producer, name))
            wiring.add((name, key, producer, source["taskOutputArtifact"]["outputArtifactKey"]))
    return edges, wiring


def local_graph(config: PipelineConfig) -> tuple[set, set, set]:
    from tfx.dsl.compiler import compiler

    from pipeline.pipeline import create_pipeline

    ir = compiler.Compiler().compile(create_pipeline(config))
    nodes, edges, wiring = set(), set(), set()
    for node in ir.nodes:
        pn = node.pipeline_node
        nodes.add(pn.node_info.id)
        edges |= {(up, pn.node_info.id) for up in pn.upstream_nodes}
        for key, channels in pn.inputs.inputs.items():
            for c in channels.channels:
                wiring.add((pn.node_info.id, key, c.producer_node_query.id, c.output_key))
    return nodes, edges, wiring
