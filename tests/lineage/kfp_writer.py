"""A training pipeline's records, written into MLMD exactly as Kubeflow Pipelines v2 writes
them (backend/src/v2/metadata/client.go and converter.go), so the lineage tests read what a
real cluster would hold.

Test helper, I/O on an MLMD store: schemaless ``system.*`` types; a ``system.Pipeline``
context and its child ``system.PipelineRun`` (custom namespace, pipeline_root,
resource_name, store_session_info); a root ``system.DAGExecution`` named ``run/<run_id>``;
``system.ContainerExecution`` tasks with display_name, task_name, parent_dag_id, pod_name,
namespace, image, cache_fingerprint, inputs; every execution associated with both
contexts and every artifact attributed to both; INPUT events at creation and OUTPUT
events at publish, each with a one-step path ``{key: <input/output name>}``; artifact
URIs ``<pipeline_root>/<pipeline>/<run_id>/<task>/<uuid>/<output>``; metadata as custom
properties (number -> double, bool -> int, dict -> struct ``{"struct": ...}``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ml_metadata.proto.metadata_store_pb2 as _pb2
from ml_metadata.metadata_store import metadata_store

pb: Any = _pb2
DEFAULT_ROOT = "minio://mlpipeline/v2/artifacts"


@dataclass(frozen=True)
class KfpRun:
    """What a test needs to know about one recorded run."""

    run_id: str
    pipeline: str
    model_uri: str
    model_id: int
    run_context_id: int
    pipeline_context_id: int
    train_execution_id: int
    evaluate_execution_id: int
    metrics_artifact_id: int | None


def s3_form(uri: str) -> str:
    """The predictor's spelling of a KFP MinIO artifact URI."""
    return uri.replace("minio://", "s3://", 1)


def _value(target: Any, key: str, value: Any) -> None:
    """KFP's StructValueToMLMDValue: number -> double, bool -> int, str, dict/list -> struct."""
    if isinstance(value, bool):
        target[key].int_value = int(value)
    elif isinstance(value, int | float):
        target[key].double_value = float(value)
    elif isinstance(value, str):
        target[key].string_value = value
    elif isinstance(value, Mapping):
        target[key].struct_value.update({"struct": dict(value)})
    else:
        target[key].struct_value.update({"list": list(value)})


class KfpWriter:
    """Writes pipeline runs as the KFP v2 driver and launcher do."""

    def __init__(self, store: metadata_store.MetadataStore, *,
                 pipeline_root: str = DEFAULT_ROOT, namespace: str = "team-a") -> None:
        self.store = store
        self.root = pipeline_root
        self.namespace = namespace
        self.session_info = json.dumps({"provider": "minio", "params": {
            "region": "minio", "endpoint": "minio-service.kubeflow:9000", "disableSSL": "true",
            "fromEnv": "false", "secretName": "mlpipeline-minio-artifact",
            "accessKeyKey": "accesskey", "secretKeyKey": "secretkey"}})

    def _context_type(self, name: str) -> int:
        return int(self.store.put_context_type(pb.ContextType(name=name)))

    def _execution_type(self, name: str) -> int:
        return int(self.store.put_execution_type(pb.ExecutionType(name=name)))

    def _artifact_type(self, name: str) -> int:
        return int(self.store.put_artifact_type(pb.ArtifactType(name=name)))

    def _artifact(self, schema: str, pipeline: str, run_id: str, task: str, output: str,
                  metadata: Mapping[str, Any]) -> Any:
        uri = f"{self.root}/{pipeline}/{run_id}/{task}/{uuid.uuid4()}/{output}"
        artifact = pb.Artifact(type_id=self._artifact_type(schema), uri=uri,
                               state=pb.Artifact.LIVE)
        for key, value in metadata.items():
            _value(artifact.custom_properties, key, value)
        artifact.custom_properties["display_name"].string_value = output
        artifact.custom_properties["store_session_info"].string_value = self.session_info
        return artifact

    @staticmethod
    def _event(kind: str, key: str) -> Any:
        event = pb.Event(type=pb.Event.Type.Value(kind))
        event.path.steps.add().key = key
        return event

    def _task(self, contexts: list[Any], dag_id: int, run_id: str, task: str,
              inputs: list[tuple[Any, str]], outputs: list[tuple[Any, str]],
              parameters: Mapping[str, Any]) -> tuple[int, list[int]]:
        """A container task: created RUNNING with its INPUT events, then published
        COMPLETE with its OUTPUT events (two writes, as driver and launcher do)."""
        execution = pb.Execution(type_id=self._execution_type("system.ContainerExecution"),
                                 last_known_state=pb.Execution.RUNNING)
        custom = execution.custom_properties
        custom["display_name"].string_value = task
        custom["task_name"].string_value = task
        custom["parent_dag_id"].int_value = dag_id
        custom["pod_name"].string_value = f"{run_id}-system-container-impl-{abs(hash(task))}"
        custom["namespace"].string_value = self.namespace
        custom["image"].string_value = "python:3.11"
        custom["cache_fingerprint"].string_value = uuid.uuid4().hex
        if parameters:   # an empty Value would crash MLMD (no oneof set)
            custom["inputs"].struct_value.update(dict(parameters))
        execution_id, _, _ = self.store.put_execution(
            execution, [(a, self._event("INPUT", key)) for a, key in inputs], contexts)
        execution.id = execution_id
        execution.last_known_state = pb.Execution.COMPLETE
        _, artifact_ids, _ = self.store.put_execution(
            execution, [(a, self._event("OUTPUT", key)) for a, key in outputs], contexts)
        return int(execution_id), [int(i) for i in artifact_ids]

    def run(self, pipeline: str = "iris-training", run_id: str | None = None, *,
            metrics: Mapping[str, float | int | bool] | None = None,
            classification: bool = True) -> KfpRun:
        """One run: ``train`` (dataset -> model), then ``evaluate`` (model -> metrics)."""
        run_id = run_id or str(uuid.uuid4())
        pipeline_ctx = self.store.get_context_by_type_and_name("system.Pipeline", pipeline)
        if pipeline_ctx is None:   # getOrInsertContext: one per pipeline name
            pipeline_ctx = pb.Context(type_id=self._context_type("system.Pipeline"),
                                      name=pipeline)
            [pipeline_ctx.id] = self.store.put_contexts([pipeline_ctx])
        run_ctx = pb.Context(type_id=self._context_type("system.PipelineRun"), name=run_id)
        for key, value in (("namespace", self.namespace),
                           ("pipeline_root", f"{self.root}/{pipeline}/{run_id}"),
                           ("resource_name", f"run-resource-{run_id[:8]}"),
                           ("store_session_info", self.session_info)):
            run_ctx.custom_properties[key].string_value = value
        [run_ctx.id] = self.store.put_contexts([run_ctx])
        self.store.put_parent_contexts([pb.ParentContext(child_id=run_ctx.id,
                                                         parent_id=pipeline_ctx.id)])
        contexts = [pipeline_ctx, run_ctx]

        dag = pb.Execution(type_id=self._execution_type("system.DAGExecution"),
                           name=f"run/{run_id}", last_known_state=pb.Execution.RUNNING)
        dag.custom_properties["display_name"].string_value = ""
        dag.custom_properties["task_name"].string_value = ""
        dag_id, _, _ = self.store.put_execution(dag, [], contexts)

        dataset = self._artifact("system.Dataset", pipeline, run_id, "importer", "artifact",
                                 {})
        model = self._artifact("system.Model", pipeline, run_id, "train", "model",
                               {"framework": "sklearn", "hyperparameters": {"C": 1.0}})
        train_id, [model_id] = self._task(contexts, dag_id, run_id, "train",
                                          [(dataset, "dataset")], [(model, "model")],
                                          {"learning_rate": 0.1})
        model.id = model_id
        outputs: list[tuple[Any, str]] = []
        if metrics is not None:
            outputs.append((self._artifact("system.Metrics", pipeline, run_id, "evaluate",
                                           "metrics", metrics), "metrics"))
        if classification:
            outputs.append((self._artifact(
                "system.ClassificationMetrics", pipeline, run_id, "evaluate",
                "classification_metrics",
                {"confusionMatrix": {"annotationSpecs": [{"displayName": "a"}],
                                     "rows": [{"row": [9, 1]}, {"row": [2, 8]}]}}),
                "classification_metrics"))
        evaluate_id, output_ids = self._task(contexts, dag_id, run_id, "evaluate",
                                             [(model, "model")], outputs, {})
        dag.id = dag_id
        dag.last_known_state = pb.Execution.COMPLETE
        self.store.put_execution(dag, [], contexts)
        return KfpRun(run_id=run_id, pipeline=pipeline, model_uri=model.uri,
                      model_id=model_id, run_context_id=int(run_ctx.id),
                      pipeline_context_id=int(pipeline_ctx.id), train_execution_id=train_id,
                      evaluate_execution_id=evaluate_id,
                      metrics_artifact_id=output_ids[0] if metrics is not None else None)
