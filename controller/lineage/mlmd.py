"""The ML Metadata (MLMD) backend of ``LineageStore``: rollouts recorded the way Kubeflow
Pipelines v2 records its runs, so the KFP UI and any MLMD client can follow a model from
its training run to the endpoint that serves it, and the pre-rollout gate can read the
model's evaluation.

I/O. The only module that imports ``ml_metadata`` (an import-linter contract): every
``ml_metadata`` error leaves as ``LineageUnavailable`` chained to the original.

What Rollwise writes (types are created on first use; KFP's are schemaless, ours typed):

- execution ``rollwise.Rollout`` named by the rollout id (MLMD names are unique per type:
  the idempotence key); properties namespace, inference_service, policy, from_revision,
  to_revision, outcome (the phase), model_uri, baseline_model_uri, started_at; custom
  display_name, reason, state_at, one ``step_<n>_verdict`` and ``approval_<n>`` struct each;
  state RUNNING, then COMPLETE (Succeeded), FAILED (Failed), CANCELED (Aborted, Superseded);
- INPUT events from the ``system.Model`` artifacts (keys ``model``, ``baseline_model``);
  a model no pipeline recorded is registered (``system.Model``, URI = the storageUri);
- on promotion, an OUTPUT event (key ``endpoint``) to a ``rollwise.Deployment`` artifact
  (URI = the endpoint URL, name ``<ns>/<name>@<revision>``, property revision);
- context ``rollwise.InferenceService`` named ``<ns>/<name>``: the execution is associated
  with it and its artifacts attributed to it; the deployment artifact is also attributed
  to the ``system.PipelineRun`` that trained the model (never the execution: the KFP UI
  would take an execution with no task_name in a run context for the run's root DAG).

Idempotence: ``record`` reads what exists (by type and name), writes the execution, the
missing events and the context in one atomic ``put_execution``, then the attributions
(which MLMD ignores when present). Any number of calls, from any process, after any
crash, converge on one execution per rollout; a snapshot older than the stored one
(``state_at``) is not written.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from hashlib import sha256
from typing import Any, Literal

import ml_metadata.proto.metadata_store_pb2 as _pb2
from ml_metadata import errors
from ml_metadata.metadata_store import metadata_store

from controller.analysis.looks import step_totals
from controller.lineage import Evaluation, LineageUnavailable, LineageView
from controller.rollout.snapshot import RolloutSnapshot
from controller.rollout.state import Phase, RolloutState
from controller.settings import MLMDSettings

pb: Any = _pb2  # generated protobuf module: no type stubs, so its classes are Any

ROLLOUT_TYPE = "rollwise.Rollout"
DEPLOYMENT_TYPE = "rollwise.Deployment"
SERVICE_TYPE = "rollwise.InferenceService"
MODEL_TYPE = "system.Model"
METRICS_TYPES = ("system.Metrics", "system.ClassificationMetrics")
RUN_TYPE = "system.PipelineRun"
PIPELINE_TYPE = "system.Pipeline"
NOT_METRICS = frozenset({"display_name", "store_session_info"})

MODEL_KEY = "model"
BASELINE_KEY = "baseline_model"
ENDPOINT_KEY = "endpoint"
REGISTERED_BY = "registered_by"            # custom property on models Rollwise registered

_ROLLOUT_PROPERTIES = ("namespace", "inference_service", "policy", "from_revision",
                       "to_revision", "outcome", "model_uri", "baseline_model_uri",
                       "started_at")
_DEPLOYMENT_PROPERTIES = ("namespace", "inference_service", "revision")
_SERVICE_PROPERTIES = ("namespace", "inference_service")

_STATES = {Phase.SUCCEEDED: "COMPLETE", Phase.FAILED: "FAILED", Phase.ABORTED: "CANCELED",
           Phase.SUPERSEDED: "CANCELED"}
_ERROR_TEXT = 400                          # MLMD errors can carry whole SQL statements

Kind = Literal["artifact", "execution", "context"]


# --- pure helpers ------------------------------------------------------------------------


def uri_variants(uri: str) -> tuple[str, ...]:
    """The URIs under which MLMD may hold the object ``uri`` names: KFP records
    ``minio://bucket/key`` where a predictor says ``s3://bucket/key`` (same object in KFP's
    MinIO), and a directory may be written with or without its trailing slash."""
    base = uri.rstrip("/") or uri
    scheme, sep, rest = base.partition("://")
    forms = [base]
    if sep and scheme in ("s3", "minio"):
        forms.append(f"{'minio' if scheme == 's3' else 's3'}://{rest}")
    variants = [uri] + [v for form in forms for v in (form, f"{form}/")]
    return tuple(dict.fromkeys(variants))


def execution_state(phase: Phase) -> str:
    """The MLMD ``last_known_state`` name for a rollout phase."""
    return _STATES.get(phase, "RUNNING")


def state_time(state: RolloutState) -> datetime:
    """When this state was last changed: orders snapshots of one rollout."""
    times = [state.started_at, state.phase_since]
    times += [v.at for v in state.verdicts] + [a.at for a in state.approvals]
    if state.last_decision is not None:
        times.append(state.last_decision.at)
    return max(times, key=lambda t: t.timestamp())


def verdict_records(state: RolloutState) -> dict[str, dict[str, Any]]:
    """Custom-property name -> record for each step verdict of this rollout (verdicts of
    an earlier attempt, kept in the state across ``retry``, belong to that attempt)."""
    started = state.started_at.timestamp()
    records: dict[str, dict[str, Any]] = {}
    for verdict in state.verdicts:
        if verdict.at.timestamp() < started:
            continue
        record: dict[str, Any] = {"step": verdict.step + 1, "outcome": verdict.outcome,
                                  "reason": verdict.reason, "at": verdict.at.isoformat()}
        counts = step_totals(state.evidence, verdict.step)
        if counts:
            record["counts"] = _jsonable(counts)
        key = f"step_{verdict.step + 1}_verdict"
        suffix = 2
        while key in records:
            key = f"step_{verdict.step + 1}_verdict_{suffix}"
            suffix += 1
        records[key] = record
    return records


def approval_records(state: RolloutState) -> dict[str, dict[str, Any]]:
    """Custom-property name -> record for each human approval: who, when, how."""
    return {f"approval_{i}": {"step": a.step + 1, "by": a.by, "via": a.via,
                              "at": a.at.isoformat()}
            for i, a in enumerate(state.approvals, start=1)}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _external_model_id(uri: str) -> str:
    # external_id is VARCHAR(255) and unique: a hash keeps long URIs within it.
    return f"rollwise-model-{sha256(uri.encode()).hexdigest()[:40]}"


def _validate(snapshot: RolloutSnapshot) -> None:
    """Refuse a snapshot that cannot be recorded, naming what is wrong with it."""
    state = snapshot.state
    for label, value in (("namespace", snapshot.namespace), ("name", snapshot.name),
                         ("rollout id", state.id), ("storage_uri", state.storage_uri)):
        if not value or not value.strip():
            raise ValueError(f"cannot record rollout {state.id!r} of "
                             f"{snapshot.namespace}/{snapshot.name}: empty {label} {value!r}")


def _number(value: Any) -> float | None:
    """A custom property's numeric value (KFP writes numbers as double, bools as int)."""
    kind = value.WhichOneof("value")
    if kind == "double_value":
        return float(value.double_value)
    if kind == "int_value":
        return float(value.int_value)
    return None


def _plain(value: Any) -> Any:
    """An MLMD value as plain JSON-friendly Python."""
    kind = value.WhichOneof("value")
    if kind == "struct_value":
        return _from_struct_value(value.struct_value)
    if kind is None:
        return None
    return getattr(value, kind)


def _from_struct_value(struct: Any) -> dict[str, Any]:
    """A protobuf Struct as plain Python (numbers come back as floats: 2.0 shows as 2)."""
    return {key: _from_proto_value(struct.fields[key]) for key in sorted(struct.fields)}


def _from_proto_value(value: Any) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return _from_struct_value(value.struct_value)
    if kind == "list_value":
        return [_from_proto_value(v) for v in value.list_value.values]
    if kind == "number_value":
        number = float(value.number_value)
        return int(number) if math.isfinite(number) and number == int(number) else number
    if kind in ("string_value", "bool_value"):
        return getattr(value, kind)
    return None


def _text(node: Any, key: str, *, custom: bool = False) -> str:
    props = node.custom_properties if custom else node.properties
    return str(props[key].string_value) if key in props else ""


def _set(props: Any, key: str, value: str | None) -> None:
    if value:
        props[key].string_value = value


def _describe(settings: MLMDSettings) -> str:
    if settings.backend == "sqlite":
        return f"sqlite:{settings.sqlite_path}"
    if settings.backend == "mysql":
        return (f"mysql://{settings.mysql_user}@{settings.mysql_host}:{settings.mysql_port}/"
                f"{settings.mysql_database}")
    return f"grpc://{settings.grpc_host}:{settings.grpc_port}"


def _revisions(rollouts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The endpoint's revisions in the order rollouts met them, and the model each served
    (a baseline revision served the rollout's baseline model; a promoted one its model)."""
    revisions: dict[str, dict[str, Any]] = {}
    for rollout in rollouts:
        baseline = rollout["from_revision"]
        if baseline and baseline not in revisions:
            revisions[baseline] = {"revision": baseline, "model_uri": rollout["baseline_model_uri"],
                                   "deployed_by": None, "url": None}
        promoted = rollout["to_revision"]
        if promoted and rollout["endpoint_artifact_id"] is not None:
            revisions[promoted] = {"revision": promoted, "model_uri": rollout["model_uri"],
                                   "deployed_by": rollout["id"], "url": rollout["endpoint"]}
    return list(revisions.values())


@dataclass(frozen=True)
class _Run:
    """A KFP run that produced a model: its context and the producing execution."""

    context: Any
    execution: Any


# --- the store ---------------------------------------------------------------------------


class MLMDLineageStore:
    """``LineageStore`` on MLMD: SQLite file (embedded), MySQL, or Kubeflow's gRPC service.

    Thread-safe (one lock: MLMD's client is not meant for concurrent use). Connects
    lazily and reconnects after any error, so an outage ends by itself.
    """

    def __init__(self, settings: MLMDSettings, *, read_only: bool = False,
                 timeout_seconds: float = 10.0) -> None:
        if timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be positive, got {timeout_seconds!r}")
        self._settings = settings
        self._read_only = read_only
        self._timeout = timeout_seconds
        self._lock = threading.RLock()
        self._mlmd: Any = None
        self._type_ids: dict[tuple[Kind, str], int] = {}
        self.where = _describe(settings)

    # -- connection ---------------------------------------------------------------------

    def _config(self) -> Any:
        s = self._settings
        if s.backend == "grpc":
            return pb.MetadataStoreClientConfig(host=s.grpc_host, port=s.grpc_port,
                                                client_timeout_sec=self._timeout)
        config = pb.ConnectionConfig()
        if s.backend == "sqlite":
            config.sqlite.filename_uri = str(s.sqlite_path)
            mode = pb.SqliteMetadataSourceConfig
            config.sqlite.connection_mode = (mode.READONLY if self._read_only
                                             else mode.READWRITE_OPENCREATE)
            return config
        config.mysql.host = s.mysql_host
        config.mysql.port = s.mysql_port
        config.mysql.database = s.mysql_database
        config.mysql.user = s.mysql_user
        if s.mysql_password is not None:
            config.mysql.password = s.mysql_password.get_secret_value()
        config.mysql.skip_db_creation = self._read_only
        return config

    def _open(self) -> Any:
        if (self._read_only and self._settings.backend == "sqlite"
                and not self._settings.sqlite_path.is_file()):
            raise LineageUnavailable(f"no MLMD database at {self._settings.sqlite_path}")
        try:
            return metadata_store.MetadataStore(self._config())
        except (RuntimeError, ValueError, errors.StatusError) as err:
            raise LineageUnavailable(f"cannot open MLMD at {self.where}: "
                                     f"{str(err)[:_ERROR_TEXT]}") from err

    @contextmanager
    def _session(self, what: str) -> Iterator[Any]:
        """The connected store, under the lock; MLMD errors become LineageUnavailable and
        drop the connection so that the next call reconnects."""
        with self._lock:
            if self._mlmd is None:
                self._mlmd = self._open()
            try:
                yield self._mlmd
            except errors.StatusError as err:
                self.close()
                message = str(err).strip().splitlines()[0] if str(err).strip() else ""
                raise LineageUnavailable(f"MLMD at {self.where}: {what} failed: "
                                         f"{type(err).__name__}: {message[:_ERROR_TEXT]}"
                                         ) from err

    def close(self) -> None:
        """Forget the connection (the next call opens a new one)."""
        with self._lock:
            self._mlmd = None
            self._type_ids.clear()

    def _type_id(self, store: Any, kind: Kind, name: str,
                 properties: Sequence[str] = ()) -> int:
        """Get or create a type (properties are strings); extra or missing fields are
        accepted so that a type another writer created, such as KFP's, is reused."""
        key = (kind, name)
        if key not in self._type_ids:
            type_class, put = {
                "artifact": (pb.ArtifactType, store.put_artifact_type),
                "execution": (pb.ExecutionType, store.put_execution_type),
                "context": (pb.ContextType, store.put_context_type),
            }[kind]
            message = type_class(name=name, properties={p: pb.STRING for p in properties})
            self._type_ids[key] = int(put(message, can_add_fields=True, can_omit_fields=True))
        return self._type_ids[key]

    # -- record -------------------------------------------------------------------------

    def record(self, snapshot: RolloutSnapshot) -> int:
        """Make MLMD match this rollout; returns its execution id."""
        _validate(snapshot)
        if self._read_only:
            raise ValueError(f"this lineage store ({self.where}) was opened read-only")
        with self._session(f"recording rollout {snapshot.state.id}") as store:
            return self._record(store, snapshot)

    def _record(self, store: Any, snapshot: RolloutSnapshot) -> int:
        state = snapshot.state
        rollout_type = self._type_id(store, "execution", ROLLOUT_TYPE, _ROLLOUT_PROPERTIES)
        existing = store.get_execution_by_type_and_name(ROLLOUT_TYPE, state.id)
        if existing is not None and self._is_newer(existing, state):
            return int(existing.id)
        service = self._service_context(store, snapshot)
        model = self._model_artifact(store, state.storage_uri)
        baseline = None
        if state.baseline_storage_uri:
            same = state.baseline_storage_uri in uri_variants(state.storage_uri)
            baseline = model if same else self._model_artifact(store,
                                                               state.baseline_storage_uri)
        deployment = self._deployment_artifact(store, snapshot)
        execution = self._execution(rollout_type, snapshot, existing)

        have: set[tuple[int, int]] = set()
        if existing is not None:
            have = {(e.artifact_id, e.type)
                    for e in store.get_events_by_execution_ids([existing.id])}
        wanted = [(model, pb.Event.INPUT, MODEL_KEY), (baseline, pb.Event.INPUT, BASELINE_KEY),
                  (deployment, pb.Event.OUTPUT, ENDPOINT_KEY)]
        pairs: list[tuple[Any, Any]] = []
        seen: set[tuple[str, int, int]] = set()
        for artifact, event_type, key in wanted:
            if artifact is None:
                continue
            stored = artifact.HasField("id")
            # MLMD allows one event per (artifact, execution, type): a model that is also
            # the baseline is one INPUT.
            marker = ("stored", artifact.id, event_type) if stored else (
                "new", id(artifact), event_type)
            if marker in seen or (stored and (artifact.id, event_type) in have):
                continue
            seen.add(marker)
            event = pb.Event(type=event_type)
            event.path.steps.add().key = key
            pairs.append((artifact, event))
        execution_id, artifact_ids, context_ids = store.put_execution(
            execution, pairs, [service], reuse_context_if_already_exist=True)
        for (artifact, _), artifact_id in zip(pairs, artifact_ids, strict=True):
            artifact.id = artifact_id
        self._attribute(store, int(execution_id), int(context_ids[0]), model,
                        [a for a in (model, baseline, deployment) if a is not None],
                        deployment)
        return int(execution_id)

    @staticmethod
    def _is_newer(existing: Any, state: RolloutState) -> bool:
        """True when MLMD already holds a later snapshot of this rollout than ``state``."""
        stored = _text(existing, "state_at", custom=True)
        if not stored:
            return False
        try:
            return datetime.fromisoformat(stored).timestamp() > state_time(state).timestamp()
        except ValueError:
            return False

    def _service_context(self, store: Any, snapshot: RolloutSnapshot) -> Any:
        type_id = self._type_id(store, "context", SERVICE_TYPE, _SERVICE_PROPERTIES)
        context = store.get_context_by_type_and_name(SERVICE_TYPE, snapshot.key)
        if context is None:
            context = pb.Context(type_id=type_id, name=snapshot.key)
        _set(context.properties, "namespace", snapshot.namespace)
        _set(context.properties, "inference_service", snapshot.name)
        _set(context.custom_properties, "display_name", snapshot.key)
        _set(context.custom_properties, "uid", snapshot.uid)
        _set(context.custom_properties, "url", snapshot.url)
        return context

    def _find_models(self, store: Any, uri: str) -> list[Any]:
        """``system.Model`` artifacts stored under any form of ``uri``, oldest first."""
        found: dict[int, Any] = {}
        for candidate in uri_variants(uri):
            for artifact in store.get_artifacts_by_uri(candidate):
                if artifact.type == MODEL_TYPE:
                    found[int(artifact.id)] = artifact
        return [found[i] for i in sorted(found)]

    def _model_artifact(self, store: Any, uri: str) -> Any:
        """The model artifact for ``uri``: the one a pipeline produced if any, else one
        registered earlier, else a new registration (inserted with the execution)."""
        models = self._find_models(store, uri)
        if models:
            produced = {e.artifact_id for e in store.get_events_by_artifact_ids(
                [m.id for m in models]) if e.type == pb.Event.OUTPUT}
            return next((m for m in reversed(models) if m.id in produced), models[-1])
        artifact = pb.Artifact(type_id=self._type_id(store, "artifact", MODEL_TYPE), uri=uri,
                               external_id=_external_model_id(uri), state=pb.Artifact.LIVE)
        _set(artifact.custom_properties, "display_name", uri.rstrip("/").rsplit("/", 1)[-1])
        _set(artifact.custom_properties, REGISTERED_BY, "rollwise")
        return artifact

    def _deployment_artifact(self, store: Any, snapshot: RolloutSnapshot) -> Any:
        """On promotion: the endpoint serving the new revision."""
        state = snapshot.state
        if state.phase != Phase.SUCCEEDED or not state.revision:
            return None
        type_id = self._type_id(store, "artifact", DEPLOYMENT_TYPE, _DEPLOYMENT_PROPERTIES)
        name = f"{snapshot.key}@{state.revision}"
        artifact = store.get_artifact_by_type_and_name(DEPLOYMENT_TYPE, name)
        if artifact is None:
            artifact = pb.Artifact(type_id=type_id, name=name, state=pb.Artifact.LIVE,
                                   uri=snapshot.url or f"kserve://{snapshot.key}")
        elif snapshot.url:
            artifact.uri = snapshot.url
        _set(artifact.properties, "namespace", snapshot.namespace)
        _set(artifact.properties, "inference_service", snapshot.name)
        _set(artifact.properties, "revision", state.revision)
        _set(artifact.custom_properties, "display_name", f"{snapshot.key} {state.revision}")
        return artifact

    @staticmethod
    def _execution(type_id: int, snapshot: RolloutSnapshot, existing: Any) -> Any:
        """The full execution as this snapshot says it is (MLMD replaces all properties)."""
        state = snapshot.state
        execution = pb.Execution(type_id=type_id, name=state.id)
        if existing is not None:
            execution.id = existing.id
        execution.last_known_state = pb.Execution.State.Value(execution_state(state.phase))
        props, custom = execution.properties, execution.custom_properties
        for key, value in (("namespace", snapshot.namespace), ("inference_service", snapshot.name),
                           ("policy", state.policy or snapshot.policy),
                           ("from_revision", state.baseline_revision),
                           ("to_revision", state.revision), ("outcome", str(state.phase)),
                           ("model_uri", state.storage_uri),
                           ("baseline_model_uri", state.baseline_storage_uri),
                           ("started_at", state.started_at.isoformat())):
            _set(props, key, value)
        _set(custom, "display_name", f"rollout {snapshot.key} {state.id}")
        _set(custom, "reason", state.last_decision.reason if state.last_decision else "")
        _set(custom, "last_verdict", state.last_verdict)
        _set(custom, "state_at", state_time(state).isoformat())
        for key, record in {**verdict_records(state), **approval_records(state)}.items():
            custom[key].struct_value.update(record)
        return execution

    def _attribute(self, store: Any, execution_id: int, context_id: int, model: Any,
                   artifacts: Sequence[Any], deployment: Any) -> None:
        """Attributions and the association (MLMD keeps existing ones as they are)."""
        attributions = [pb.Attribution(artifact_id=a.id, context_id=context_id)
                        for a in artifacts]
        if deployment is not None:
            attributions += [pb.Attribution(artifact_id=deployment.id, context_id=run.context.id)
                             for run in self._training_runs(store, [model.id])]
        store.put_attributions_and_associations(
            attributions, [pb.Association(execution_id=execution_id, context_id=context_id)])

    # -- evaluation -----------------------------------------------------------------------

    def _training_runs(self, store: Any, model_ids: Sequence[int]) -> list[_Run]:
        """KFP runs whose executions output these models, newest execution first."""
        if not model_ids:
            return []
        producers = sorted({int(e.execution_id) for e in store.get_events_by_artifact_ids(
            list(model_ids)) if e.type == pb.Event.OUTPUT}, reverse=True)
        runs: list[_Run] = []
        for execution in store.get_executions_by_id(producers) if producers else ():
            runs += [_Run(context, execution)
                     for context in store.get_contexts_by_execution(execution.id)
                     if context.type == RUN_TYPE]
        return sorted(runs, key=lambda r: -int(r.execution.id))

    @staticmethod
    def _run_metrics(store: Any, run: Any) -> tuple[dict[str, float], list[str]]:
        """Every numeric custom property of the run's metrics artifacts, as KFP reads them
        (later artifacts win on a name clash), and which artifacts they came from."""
        metrics: dict[str, float] = {}
        sources: list[str] = []
        for artifact in sorted(store.get_artifacts_by_context(run.id), key=lambda a: a.id):
            if artifact.type not in METRICS_TYPES:
                continue
            found = {k: n for k, v in artifact.custom_properties.items()
                     if k not in NOT_METRICS and (n := _number(v)) is not None}
            if found:
                metrics.update(found)
                label = _text(artifact, "display_name", custom=True) or artifact.type
                sources.append(f"{label} #{artifact.id}")
        return dict(sorted(metrics.items())), sources

    def evaluation(self, model_uri: str) -> Evaluation | None:
        """model -> OUTPUT event -> producing execution -> its ``system.PipelineRun`` ->
        the run's ``system.Metrics`` / ``system.ClassificationMetrics`` artifacts."""
        if not model_uri or not model_uri.strip():
            raise ValueError(f"model_uri must name a model, got {model_uri!r}")
        with self._session(f"reading the evaluation of {model_uri}") as store:
            models = self._find_models(store, model_uri)
            for run in self._training_runs(store, [m.id for m in models]):
                metrics, sources = self._run_metrics(store, run.context)
                if metrics:
                    return Evaluation(model_uri=model_uri, metrics=metrics, run=run.context.name,
                                      source=f"MLMD {self.where}: run {run.context.name}, "
                                             f"{', '.join(sources)}")
            return None

    # -- view ------------------------------------------------------------------------------

    def view(self, namespace: str, name: str) -> LineageView:
        """Endpoint -> revisions -> models -> training runs -> evaluation -> rollouts."""
        key = f"{namespace}/{name}"
        with self._session(f"reading the lineage of {key}") as store:
            context = store.get_context_by_type_and_name(SERVICE_TYPE, key)
            if context is None:
                return LineageView(endpoint=key, extra={"recorded": False})
            executions = sorted(store.get_executions_by_context(context.id),
                                key=lambda e: (_text(e, "started_at"), e.id))
            events = store.get_events_by_execution_ids([e.id for e in executions]) \
                if executions else []
            artifact_ids = sorted({int(e.artifact_id) for e in events})
            artifacts = {int(a.id): a for a in store.get_artifacts_by_id(artifact_ids)} \
                if artifact_ids else {}
            by_execution: dict[int, dict[str, Any]] = {}
            for event in events:
                step = event.path.steps[0].key if event.path.steps else ""
                artifact = artifacts.get(int(event.artifact_id))
                if artifact is not None:
                    by_execution.setdefault(int(event.execution_id), {})[step] = artifact
            rollouts = [self._rollout_view(e, by_execution.get(int(e.id), {}))
                        for e in executions]
            models = self._models_view(store, executions, by_execution, rollouts)
            return LineageView(
                endpoint=key, rollouts=tuple(rollouts), models=tuple(models),
                extra={"recorded": True, "context_id": int(context.id),
                       "url": _text(context, "url", custom=True) or None,
                       "revisions": _revisions(rollouts), "backend": self.where})

    @staticmethod
    def _rollout_view(execution: Any, linked: Mapping[str, Any]) -> dict[str, Any]:
        custom = execution.custom_properties
        verdicts = [_plain(custom[k]) for k in sorted(custom) if k.startswith("step_")]
        verdicts.sort(key=lambda v: (v.get("step", 0), v.get("at", "")))
        approvals = [_plain(custom[k]) for k in sorted(custom, key=lambda k: (len(k), k))
                     if k.startswith("approval_")]
        endpoint = linked.get(ENDPOINT_KEY)
        return {
            "id": execution.name, "execution_id": int(execution.id),
            "state": pb.Execution.State.Name(execution.last_known_state),
            **{p: _text(execution, p) or None for p in _ROLLOUT_PROPERTIES},
            "reason": _text(execution, "reason", custom=True),
            "verdicts": verdicts, "approvals": approvals,
            "approvers": list(dict.fromkeys(a.get("by", "") for a in approvals)),
            "model_artifact_id": int(linked[MODEL_KEY].id) if MODEL_KEY in linked else None,
            "endpoint": endpoint.uri if endpoint is not None else None,
            "endpoint_artifact_id": int(endpoint.id) if endpoint is not None else None,
        }

    def _models_view(self, store: Any, executions: Sequence[Any],
                     by_execution: Mapping[int, Mapping[str, Any]],
                     rollouts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Each model this endpoint rolled out or replaced, with its training run and
        evaluation, the revisions that served it, and the rollouts it took part in."""
        models: dict[int, dict[str, Any]] = {}
        for execution, rollout in zip(executions, rollouts, strict=True):
            linked = by_execution.get(int(execution.id), {})
            for key, role, revision in (
                    (BASELINE_KEY, "baseline", rollout["from_revision"]),
                    (MODEL_KEY, "candidate", rollout["to_revision"]
                     if rollout["endpoint_artifact_id"] is not None else None)):
                artifact = linked.get(key)
                if artifact is None:
                    continue
                entry = models.get(int(artifact.id))
                if entry is None:
                    entry = models[int(artifact.id)] = self._model_view(store, artifact)
                entry["rollouts"].append({"id": rollout["id"], "role": role,
                                          "outcome": rollout["outcome"]})
                if revision and revision not in entry["revisions"]:
                    entry["revisions"].append(revision)
        return list(models.values())

    def _model_view(self, store: Any, artifact: Any) -> dict[str, Any]:
        runs = self._training_runs(store, [artifact.id])
        run_view: dict[str, Any] | None = None
        for run in runs:
            metrics, sources = self._run_metrics(store, run.context)
            parents = store.get_parent_contexts_by_context(run.context.id)
            run_view = {
                "name": run.context.name, "context_id": int(run.context.id),
                "pipeline": next((p.name for p in parents if p.type == PIPELINE_TYPE), None),
                "execution_id": int(run.execution.id),
                "task": _text(run.execution, "display_name", custom=True)
                or _text(run.execution, "task_name", custom=True),
                "metrics": metrics, "metrics_from": sources,
            }
            if metrics:
                break
        return {
            "uri": artifact.uri, "artifact_id": int(artifact.id),
            "registered_by_rollwise": _text(artifact, REGISTERED_BY, custom=True) == "rollwise",
            "run": run_view, "revisions": [], "rollouts": [],
        }
