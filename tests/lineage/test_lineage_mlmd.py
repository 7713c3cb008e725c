"""The MLMD backend on a real SQLite MLMD pre-populated as Kubeflow Pipelines v2 writes it:
the lineage graph queried back through the ml_metadata API, idempotence across crashes and
restarts, the view, and error translation."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import ml_metadata.proto.metadata_store_pb2 as _pb2
import pytest
from ml_metadata import errors

from controller.lineage import LineageUnavailable
from controller.lineage.mlmd import (
    DEPLOYMENT_TYPE,
    MODEL_TYPE,
    ROLLOUT_TYPE,
    SERVICE_TYPE,
    MLMDLineageStore,
    uri_variants,
)
from controller.rollout.state import Phase, StepVerdict
from controller.settings import MLMDSettings
from tests.lineage.helpers import (
    NAME,
    NAMESPACE,
    ROLLED_BACK_ID,
    URL,
    ended,
    raw_store,
    record_promotion_then_rollback,
    story,
)
from tests.lineage.kfp_writer import KfpRun, KfpWriter, s3_form

pb: Any = _pb2


def state_name(execution: Any) -> str:
    return str(pb.Execution.State.Name(execution.last_known_state))


def props(node: Any) -> dict[str, Any]:
    return {k: getattr(v, v.WhichOneof("value")) for k, v in node.properties.items()}


def struct(node: Any, key: str) -> dict[str, Any]:
    from google.protobuf import json_format  # type: ignore[import-untyped]

    result: dict[str, Any] = json_format.MessageToDict(node.custom_properties[key].struct_value)
    return result


def counts(raw: Any) -> dict[str, int]:
    """How many nodes of each kind Rollwise could have duplicated."""
    executions = raw.get_executions_by_type(ROLLOUT_TYPE)
    return {
        "executions": len(executions),
        "events": len(raw.get_events_by_execution_ids([e.id for e in executions]))
        if executions else 0,
        "models": len(raw.get_artifacts_by_type(MODEL_TYPE)),
        "deployments": len(raw.get_artifacts_by_type(DEPLOYMENT_TYPE)),
        "contexts": len(raw.get_contexts_by_type(SERVICE_TYPE)),
        "attributions": sum(len(raw.get_artifacts_by_context(c.id))
                            for c in raw.get_contexts_by_type(SERVICE_TYPE)),
    }


def test_uri_forms_of_one_object() -> None:
    assert uri_variants("s3://mlpipeline/v2/x/model") == (
        "s3://mlpipeline/v2/x/model", "s3://mlpipeline/v2/x/model/",
        "minio://mlpipeline/v2/x/model", "minio://mlpipeline/v2/x/model/")
    assert uri_variants("gs://b/m/") == ("gs://b/m/", "gs://b/m")


def test_a_rollout_is_traceable_from_training_run_to_endpoint(
        store: MLMDLineageStore, trained: tuple[KfpRun, KfpRun], db: Path) -> None:
    v1, v2 = trained
    raw = raw_store(db)
    snapshots = story(s3_form(v2.model_uri), s3_form(v1.model_uri))
    seen_states = []
    for snap in snapshots:
        execution_id = store.record(snap)
        seen_states.append(state_name(raw.get_executions_by_id([execution_id])[0]))
    assert seen_states == ["RUNNING"] * 5 + ["COMPLETE"]

    [execution] = raw.get_executions_by_type(ROLLOUT_TYPE)
    assert execution.name == snapshots[0].state.id
    assert props(execution) == {
        "namespace": NAMESPACE, "inference_service": NAME, "policy": "canary",
        "from_revision": "iris-predictor-00001", "to_revision": "iris-predictor-00002",
        "outcome": "Succeeded", "model_uri": s3_form(v2.model_uri),
        "baseline_model_uri": s3_form(v1.model_uri),
        "started_at": snapshots[0].state.started_at.isoformat()}
    custom = execution.custom_properties
    assert custom["display_name"].string_value == f"rollout team-a/iris {execution.name}"
    assert struct(execution, "step_1_verdict") == {
        "step": 1.0, "outcome": "pass", "reason": "error rate 0.2% vs 0.3% (p=0.01)",
        "at": "2026-03-01T09:10:00+00:00",
        "counts": {"error-rate": {"canary_requests": 1200.0, "canary_events": 2.0,
                                  "stable_requests": 10800.0, "stable_events": 30.0}}}
    assert struct(execution, "step_2_verdict")["reason"] == "latency p99 120ms vs 118ms"
    assert struct(execution, "approval_1") == {
        "step": 1.0, "by": "alice@example.com", "via": "slack",
        "at": "2026-03-01T09:15:00+00:00"}

    # Events: INPUT from KFP's own model artifacts (matched s3:// -> minio://), OUTPUT to
    # the endpoint. No model was registered twice.
    events = {(e.artifact_id, pb.Event.Type.Name(e.type), e.path.steps[0].key)
              for e in raw.get_events_by_execution_ids([execution.id])}
    [deployment] = raw.get_artifacts_by_type(DEPLOYMENT_TYPE)
    assert events == {(v2.model_id, "INPUT", "model"), (v1.model_id, "INPUT", "baseline_model"),
                      (deployment.id, "OUTPUT", "endpoint")}
    assert len(raw.get_artifacts_by_type(MODEL_TYPE)) == 2
    assert deployment.uri == URL
    assert deployment.name == "team-a/iris@iris-predictor-00002"
    assert props(deployment)["revision"] == "iris-predictor-00002"
    assert deployment.custom_properties["display_name"].string_value == (
        "team-a/iris iris-predictor-00002")

    # The InferenceService context groups the rollout and its artifacts.
    [service] = raw.get_contexts_by_type(SERVICE_TYPE)
    assert service.name == "team-a/iris"
    assert [e.id for e in raw.get_executions_by_context(service.id)] == [execution.id]
    assert {a.id for a in raw.get_artifacts_by_context(service.id)} == {
        v1.model_id, v2.model_id, deployment.id}
    # The deployment is attributed to the run that trained the model; the execution is
    # never put in a system.PipelineRun context (the KFP UI would take it for the root DAG).
    assert deployment.id in {a.id for a in raw.get_artifacts_by_context(v2.run_context_id)}
    assert [c.type for c in raw.get_contexts_by_execution(execution.id)] == [SERVICE_TYPE]
    assert execution.id not in {e.id for e in raw.get_executions_by_context(v2.run_context_id)}
    # Lineage explorer path: endpoint <- rollout <- model <- train execution.
    producers = {e.execution_id for e in raw.get_events_by_artifact_ids([v2.model_id])
                 if e.type == pb.Event.OUTPUT}
    assert producers == {v2.train_execution_id}


def test_rollback_fails_the_execution_and_deploys_nothing(
        store: MLMDLineageStore, trained: tuple[KfpRun, KfpRun], db: Path) -> None:
    v1, v2 = trained
    snapshots = story(s3_form(v2.model_uri), s3_form(v1.model_uri))
    for snap in snapshots[:2]:
        store.record(snap)
    failed = ended(snapshots[1], Phase.FAILED, "analysis failed at step 1: error rate")
    failed = replace(failed, state=failed.state.evolve(verdicts=(StepVerdict(
        0, "fail", "error rate 4% vs 0.3%", failed.state.phase_since),)))
    execution_id = store.record(failed)
    raw = raw_store(db)
    [execution] = raw.get_executions_by_id([execution_id])
    assert state_name(execution) == "FAILED"
    assert props(execution)["outcome"] == "Failed"
    assert struct(execution, "step_1_verdict")["outcome"] == "fail"
    assert raw.get_artifacts_by_type(DEPLOYMENT_TYPE) == []
    assert {pb.Event.Type.Name(e.type) for e in raw.get_events_by_execution_ids(
        [execution_id])} == {"INPUT"}


@pytest.mark.parametrize("phase", [Phase.ABORTED, Phase.SUPERSEDED])
def test_abort_and_supersede_cancel_the_execution(
        phase: Phase, store: MLMDLineageStore, trained: tuple[KfpRun, KfpRun],
        db: Path) -> None:
    v1, v2 = trained
    progressing = story(s3_form(v2.model_uri), s3_form(v1.model_uri))[1]
    store.record(progressing)
    execution_id = store.record(ended(progressing, phase, f"{phase} by bob"))
    assert state_name(raw_store(db).get_executions_by_id([execution_id])[0]) == "CANCELED"


def test_crash_and_resume_never_duplicates(trained: tuple[KfpRun, KfpRun], db: Path) -> None:
    """A controller records half a rollout and dies; its successor (a new store on the
    same file) replays every snapshot, some twice, then the later ones."""
    v1, v2 = trained
    snapshots = story(s3_form(v2.model_uri), s3_form(v1.model_uri))
    settings = MLMDSettings(backend="sqlite", sqlite_path=db)
    first = MLMDLineageStore(settings)
    ids = {first.record(s) for s in snapshots[:3]}
    first.close()
    del first

    second = MLMDLineageStore(settings)
    for snap in snapshots[:3] + snapshots[:3] + snapshots[3:] + snapshots[3:]:
        ids.add(second.record(snap))
    third = MLMDLineageStore(settings)
    ids.add(third.record(snapshots[-1]))
    assert len(ids) == 1
    raw = raw_store(db)
    assert counts(raw) == {"executions": 1, "events": 3, "models": 2, "deployments": 1,
                           "contexts": 1, "attributions": 3}
    [execution] = raw.get_executions_by_type(ROLLOUT_TYPE)
    assert state_name(execution) == "COMPLETE"
    assert sorted(k for k in execution.custom_properties if k.startswith(("step_", "approval")))\
        == ["approval_1", "step_1_verdict", "step_2_verdict"]


def test_a_late_older_snapshot_does_not_rewind_the_record(
        store: MLMDLineageStore, trained: tuple[KfpRun, KfpRun], db: Path) -> None:
    v1, v2 = trained
    snapshots = story(s3_form(v2.model_uri), s3_form(v1.model_uri))
    store.record(snapshots[-1])
    store.record(snapshots[1])            # e.g. a retry that arrived after the promotion
    [execution] = raw_store(db).get_executions_by_type(ROLLOUT_TYPE)
    assert state_name(execution) == "COMPLETE"
    assert props(execution)["outcome"] == "Succeeded"


def test_a_model_no_pipeline_recorded_is_registered_once(
        store: MLMDLineageStore, db: Path) -> None:
    snapshots = story("s3://models/iris/v3", "s3://models/iris/v2")
    for snap in snapshots + snapshots:
        store.record(snap)
    retried = story("s3://models/iris/v3", "s3://models/iris/v2", rollout_id="5f2c9a-1772359999",
                    start=snapshots[-1].state.phase_since + timedelta(hours=1))
    store.record(retried[0])
    raw = raw_store(db)
    models = raw.get_artifacts_by_type(MODEL_TYPE)
    assert sorted(m.uri for m in models) == ["s3://models/iris/v2", "s3://models/iris/v3"]
    assert {m.custom_properties["registered_by"].string_value for m in models} == {"rollwise"}
    assert {m.custom_properties["display_name"].string_value for m in models} == {"v2", "v3"}
    assert store.evaluation("s3://models/iris/v3") is None
    assert len(raw.get_executions_by_type(ROLLOUT_TYPE)) == 2


def test_redeploying_the_serving_model_records_one_input(
        store: MLMDLineageStore, db: Path) -> None:
    snap = story("s3://models/iris/v2", "s3://models/iris/v2/")[0]
    execution_id = store.record(snap)
    store.record(snap)
    events = raw_store(db).get_events_by_execution_ids([execution_id])
    assert [(pb.Event.Type.Name(e.type), e.path.steps[0].key) for e in events] == [
        ("INPUT", "model")]


def test_verdicts_of_an_earlier_attempt_stay_with_that_attempt(
        store: MLMDLineageStore, db: Path) -> None:
    first = story("s3://m/v2", "s3://m/v1")[2]              # paused after step 1 passed
    later = first.state.phase_since + timedelta(minutes=30)
    retried = replace(first, state=first.state.evolve(
        id="5f2c9a-1772400000", phase=Phase.WAITING_READY, started_at=later,
        phase_since=later, approvals=()))
    execution_id = store.record(retried)
    [execution] = raw_store(db).get_executions_by_id([execution_id])
    assert not [k for k in execution.custom_properties if k.startswith("step_")]


def test_the_evaluation_is_the_run_that_trained_the_model(
        store: MLMDLineageStore, kfp: KfpWriter) -> None:
    run = kfp.run(run_id="run-eval", metrics={"accuracy": 0.95, "auc": 0.97, "passed": True})
    for uri in (run.model_uri, s3_form(run.model_uri), s3_form(run.model_uri) + "/"):
        evaluation = store.evaluation(uri)
        assert evaluation is not None
        assert evaluation.model_uri == uri
        assert evaluation.run == "run-eval"
        # every numeric custom property but display_name/store_session_info; the
        # confusion matrix (a struct) is no metric
        assert dict(evaluation.metrics) == {"accuracy": 0.95, "auc": 0.97, "passed": 1.0}
        assert f"metrics #{run.metrics_artifact_id}" in evaluation.source


def test_the_view_tells_the_whole_story(store: MLMDLineageStore,
                                        trained: tuple[KfpRun, KfpRun]) -> None:
    v1, v2 = trained
    first = record_promotion_then_rollback(store, s3_form(v1.model_uri), s3_form(v2.model_uri),
                                           "analysis failed at step 1")

    view = store.view(NAMESPACE, NAME)
    assert view.endpoint == "team-a/iris"
    assert view.extra["url"] == URL
    assert [(r["id"], r["outcome"], r["state"]) for r in view.rollouts] == [
        (first[0].state.id, "Succeeded", "COMPLETE"),
        (ROLLED_BACK_ID, "Failed", "FAILED")]
    assert view.rollouts[0]["approvers"] == ["alice@example.com"]
    assert [v["step"] for v in view.rollouts[0]["verdicts"]] == [1, 2]  # type: ignore[attr-defined]
    assert view.extra["revisions"] == [
        {"revision": "iris-predictor-00001", "model_uri": s3_form(v1.model_uri),
         "deployed_by": None, "url": None},
        {"revision": "iris-predictor-00002", "model_uri": s3_form(v2.model_uri),
         "deployed_by": first[0].state.id, "url": URL}]
    models = {m["artifact_id"]: m for m in view.models}
    assert models[v2.model_id]["run"]["name"] == "run-v2"  # type: ignore[index]
    assert models[v2.model_id]["run"]["pipeline"] == "iris-training"  # type: ignore[index]
    assert models[v2.model_id]["run"]["metrics"] == {  # type: ignore[index]
        "accuracy": 0.95, "auc": 0.96, "passed": 1.0}
    assert models[v2.model_id]["revisions"] == ["iris-predictor-00002"]
    assert [(r["id"], r["role"]) for r in models[v2.model_id]["rollouts"]] == [  # type: ignore[attr-defined]
        (first[0].state.id, "candidate"), (ROLLED_BACK_ID, "baseline")]
    registered = [m for m in view.models if m["uri"] == "s3://models/iris/v3"]
    assert registered[0]["registered_by_rollwise"] is True
    assert registered[0]["run"] is None
    assert store.view(NAMESPACE, "unknown").extra == {"recorded": False}


# --- errors ------------------------------------------------------------------------------


def test_an_unreachable_grpc_service_is_lineage_unavailable() -> None:
    from tests.lineage.mlmd_grpc import free_port

    store = MLMDLineageStore(MLMDSettings(backend="grpc", grpc_host="127.0.0.1",
                                          grpc_port=free_port()), timeout_seconds=2)
    with pytest.raises(LineageUnavailable, match=re.escape("grpc://127.0.0.1")) as caught:
        store.evaluation("s3://m/v2")
    assert isinstance(caught.value.__cause__, errors.UnavailableError)


def test_an_unopenable_sqlite_file_is_lineage_unavailable(tmp_path: Path) -> None:
    store = MLMDLineageStore(MLMDSettings(backend="sqlite",
                                          sqlite_path=tmp_path / "missing-dir" / "x.sqlite"))
    with pytest.raises(LineageUnavailable, match="cannot open MLMD") as caught:
        store.record(story("s3://m/v2", None)[0])
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_an_unreachable_mysql_is_lineage_unavailable() -> None:
    from tests.lineage.mlmd_grpc import free_port

    store = MLMDLineageStore(MLMDSettings(backend="mysql", mysql_host="127.0.0.1",
                                          mysql_port=free_port()))
    with pytest.raises(LineageUnavailable, match=re.escape("mysql://root@127.0.0.1")):
        store.view(NAMESPACE, NAME)


def test_read_only_store_neither_creates_nor_writes(tmp_path: Path, db: Path) -> None:
    missing = MLMDLineageStore(MLMDSettings(backend="sqlite", sqlite_path=tmp_path / "no.db"),
                               read_only=True)
    with pytest.raises(LineageUnavailable, match="no MLMD database at"):
        missing.view(NAMESPACE, NAME)
    assert not (tmp_path / "no.db").exists()
    MLMDLineageStore(MLMDSettings(backend="sqlite", sqlite_path=db)).record(
        story("s3://m/v2", None)[0])
    reader = MLMDLineageStore(MLMDSettings(backend="sqlite", sqlite_path=db), read_only=True)
    assert len(reader.view(NAMESPACE, NAME).rollouts) == 1
    with pytest.raises(ValueError, match="read-only"):
        reader.record(story("s3://m/v2", None)[0])


def test_bad_input_is_refused_naming_the_value(store: MLMDLineageStore) -> None:
    snap = story("s3://m/v2", None)[0]
    empty = replace(snap, state=snap.state.evolve(storage_uri=""))
    with pytest.raises(ValueError, match="empty storage_uri ''"):
        store.record(empty)
    with pytest.raises(ValueError, match="model_uri must name a model, got ' '"):
        store.evaluation(" ")
    with pytest.raises(ValueError, match="timeout_seconds must be positive, got 0"):
        MLMDLineageStore(MLMDSettings(), timeout_seconds=0)
