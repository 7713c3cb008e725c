"""The reconciler: one pass over every managed object, reading like the story of a rollout.

For each object: find its policy, read its state and what serves (through the traffic
router that drives it, ``controller.routers``), judge the canary when its analysis is due
(``controller.judging``: the pass never waits on a slow metric source), let the state
machine decide, then write traffic and state together in one patch fenced by
resourceVersion (on 409 do nothing: the next pass re-reads). Side effects (Events,
metrics, logs) follow the committed write only. Each object is reconciled inside its own
error boundary; an object no router can drive is reported on itself and left alone.

I/O through the protocols it is given (``controller.kube.Objects``, ``Analyzer``,
``EventRecorder``, ``GateEvaluator``), so tests run it on the shipped in-memory fakes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol

import structlog

from controller.errors import Conflict, Rejected, RollwiseError, Unsupported
from controller.judging import (
    AnalysisRequest,
    Analyzer,
    BackgroundJudge,
    InlineJudge,
    JudgeRunner,
    request_for,
)
from controller.kube import ChildWriter, EventRecorder, Objects
from controller.kube.annotations import STATE_ANNOTATION, NothingToRestore
from controller.kube.managed import Managed, read_managed, rollout_patch
from controller.policy.model import RolloutPolicy
from controller.policystore import PolicyStore
from controller.rollout.machine import (
    MAX_EVENT_MESSAGE,
    Event,
    GateResult,
    Judgement,
    Result,
    decide,
    gate_due,
    state_problem,
    with_event_records,
)
from controller.rollout.seal import Sealer
from controller.rollout.snapshot import RolloutSnapshot
from controller.rollout.state import Phase, RolloutState
from controller.routers.base import HasChildren, Ref, TrafficRouter
from controller.telemetry import Telemetry

log = structlog.get_logger(__name__)


class GateEvaluator(Protocol):
    def evaluate(self, managed: Managed, policy: RolloutPolicy) -> GateResult | None:
        """The pre-rollout gate for the model being rolled out; ``waiting`` (or None) while
        it is not known yet."""


class NoLineageGate:
    """Used when no lineage backend is configured: a policy that asks for a pre-rollout
    gate cannot be satisfied, so the model is blocked with a reason that says so."""

    def evaluate(self, managed: Managed, policy: RolloutPolicy) -> GateResult | None:
        return GateResult(False, "no lineage backend is configured to read the model's "
                                 "evaluation (settings: mlmd)")


@dataclass(frozen=True)
class Source:
    """The objects of one more resource (a router's beside the first one's) and
    the Events recorder that names their kind."""

    objects: Objects
    events: EventRecorder


@dataclass
class Reconciler:
    objects: Objects                # the objects of the first router's resource
    routers: Sequence[TrafficRouter]  # asked in order: the first that supports one drives it
    policies: PolicyStore
    analyzer: Analyzer
    events: EventRecorder
    telemetry: Telemetry
    sealer: Sealer                 # what the controller reads back, it verifies it wrote
    gates: GateEvaluator = field(default_factory=NoLineageGate)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now().astimezone())
    is_leader: Callable[[], bool] = field(default=lambda: True)
    # Side effects that follow a committed transition (notifier, lineage worker). Each
    # must return at once and make its record match the snapshot (idempotent).
    observers: Sequence[Callable[[RolloutSnapshot], None]] = ()
    # Judge on a worker thread (the daemon), so a slow metric source never holds up a
    # pass; inline (tests) judges within the pass.
    background: bool = False
    # How often a rollout under analysis is looked at (the daemon: every tick).
    look_every: timedelta = timedelta(seconds=10)
    _caught_up: bool = False
    _last_analysis: dict[str, datetime] = field(default_factory=dict)
    _reported: dict[str, str] = field(default_factory=dict)
    _failing: dict[str, str] = field(default_factory=dict)   # key -> why, while it fails
    # A pass that has not seen an object for longer than this (the API was unreachable,
    # the process was stopped) restarts its watch: timeouts never count such gaps.
    watch_gap: timedelta = timedelta(seconds=30)
    # key -> (watched without a gap since, last seen)
    _watched: dict[str, tuple[datetime, datetime]] = field(default_factory=dict)
    # The objects of the other routers' resources, listed, read and written like ``objects``.
    extra: Sequence[Source] = ()
    # Writes the objects a router makes beside its own (``HasChildren``: a canary
    # Deployment, the route's weights); None: such routers' objects get none.
    children: ChildWriter | None = None
    # A pass skips an object its last reconcile left quiet (no rollout in flight: none yet
    # or ended; no command pending; no failure) until its resourceVersion changes, the
    # policies change, leadership is regained, or ``resync`` has passed since all objects
    # were last reconciled: work per pass grows with the objects that need work, not with
    # the objects that exist (issue 17). key -> (resourceVersion, phase for the gauge).
    resync: timedelta = timedelta(minutes=5)
    _quiet: dict[str, tuple[str, Phase | None]] = field(default_factory=dict)
    _resynced_at: datetime | None = None
    _runner: JudgeRunner = field(init=False)
    # Per pass: where each object was listed (its Objects and Events), by key; and the
    # related objects read (the routes and Services of a namespace are read once a pass,
    # whatever the number of Deployments there; forgotten after any child write).
    _source: dict[str, Source] = field(default_factory=dict)
    _related: dict[Ref, Mapping[str, Any] | None] = field(default_factory=dict)
    _reset_pending: bool = False

    def __post_init__(self) -> None:
        self._runner = (BackgroundJudge if self.background else InlineJudge)(
            self.analyzer, self._judged)

    def run_once(self) -> None:
        """One pass over every managed object that may need work (objects left quiet by
        their last reconcile and unchanged since are skipped: ``resync``).

        Only a failure to list the objects fails the pass (the API is unreachable: nothing
        can be done anywhere). Everything about one object happens inside its own error
        boundary: a broken object gets a Warning Event and a metric, and the others go on,
        rollbacks included."""
        started = time.monotonic()
        self._apply_reset()
        now = self.clock()
        reload = self.policies.reload()
        if reload.changed:
            self.telemetry.policy_problems.set(len(reload.problems))
        listing = [(source, obj) for source in (Source(self.objects, self.events), *self.extra)
                   for obj in source.objects.list()]
        objects = [obj for _, obj in listing]
        self._source = {_key_of(obj): source for source, obj in listing}
        self._related.clear()
        listed = {_key_of(obj) for obj in objects}
        for key in set(self._failing) - listed:
            self._failing.pop(key)  # deleted, or no longer watched
        if reload.changed or self._resynced_at is None or now - self._resynced_at >= self.resync:
            self._quiet.clear()
            self._resynced_at = now
        phases: dict[str, int] = {}
        active = []
        for obj in objects:
            quiet = self._quiet.get(_key_of(obj))
            if quiet is not None and quiet[0] == str(_meta(obj).get("resourceVersion", "")):
                if quiet[1] is not None:
                    phases[quiet[1]] = phases.get(quiet[1], 0) + 1
                continue
            self._quiet.pop(_key_of(obj), None)
            active.append(obj)
        self.telemetry.objects_skipped.set(len(objects) - len(active))
        managed = [m for m in (self._read(obj) for obj in active) if m is not None]
        judgements = self._judge(managed, self._actionable(managed), now)
        if not self._caught_up:
            # After a (re)start, side effects missed during an outage or a crash are caught
            # up from the committed state of every rollout.
            for item in managed:
                if item.state is not None:
                    self._guarded(item, "catch-up", partial(self._catch_up, item))
            self._caught_up = True
        for item in managed:
            if not self.is_leader():
                log.warning("lost leadership mid-pass; stopping")
                return
            state = self._guarded(item, "reconcile", partial(
                self._reconcile, item, judgements.get(item.key), now))
            if state is not None:
                phases[state.phase] = phases.get(state.phase, 0) + 1
        for phase_gauge in Phase:
            self.telemetry.rollouts.labels(str(phase_gauge)).set(phases.get(phase_gauge, 0))
        self.telemetry.objects_failing.set(len(self._failing))
        self.telemetry.reconcile_seconds.observe(time.monotonic() - started)
        self.telemetry.last_tick.set(time.time())

    def reset(self) -> None:
        """Forget what this process knew (leadership was lost and gained again): the next
        pass catches up side effects again, judges afresh and counts timeouts from then.
        Safe to call from another thread: the pass applies it when it starts."""
        self._reset_pending = True

    def _apply_reset(self) -> None:
        if not self._reset_pending:
            return
        self._reset_pending = False
        self._caught_up = False
        self._quiet.clear()
        self._last_analysis.clear()
        self._watched.clear()
        self._reported.clear()
        self._runner.collect()   # judgements of the previous leadership: dropped

    def _watch(self, key: str, now: datetime) -> datetime:
        since, last = self._watched.get(key, (now, now))
        if now - last > self.watch_gap:
            since = now
        self._watched[key] = (since, now)
        return since

    # -- the error boundary of one object --------------------------------------------------

    def _read(self, obj: Mapping[str, Any]) -> Managed | None:
        try:
            managed = read_managed(obj, self.routers, self.sealer, self._read_related)
            if managed is not None and self._sync_children(managed, obj, managed.state):
                # What serves is read after the children match the committed state, so a
                # write not yet applied (a crash after the commit) is never a hand edit.
                managed = read_managed(obj, self.routers, self.sealer, self._read_related)
        except Conflict:
            log.info("a child object changed since read; retrying next pass", key=_key_of(obj))
            return None
        except Exception as err:  # a malformed object must not stop the others
            meta = _meta(obj)
            self._object_failed(_key_of(obj), str(meta.get("namespace", "")),
                                str(meta.get("name", "")), str(meta.get("uid", "")), "read", err)
            return None
        if managed is None:
            self._failing.pop(_key_of(obj), None)
        return managed

    def _sync_children(self, item: Managed, obj: Mapping[str, Any],
                       state: RolloutState | None) -> bool:
        """Make the router's children match ``state`` (the committed one); whether anything
        was written. Never on an unreadable state: nothing is known to match."""
        router = item.router
        if (self.children is None or not isinstance(router, HasChildren)
                or item.state_error is not None or not self.is_leader()):
            return False
        writes = router.children(obj, item.related, state)
        if writes:
            self._related.clear()
            self.children.apply(writes)
        return bool(writes)

    def _read_related(self, ref: Ref) -> Mapping[str, Any] | None:
        if ref not in self._related:
            self._related[ref] = self.objects.related(ref)
        return self._related[ref]

    def _events_of(self, key: str) -> EventRecorder:
        source = self._source.get(key)
        return self.events if source is None else source.events

    def _guarded(self, item: Managed, stage: str,
                 work: Callable[[], RolloutState | None]) -> RolloutState | None:
        try:
            state = work()
        except Exception as err:
            self._object_failed(item.key, item.namespace, item.name, item.uid, stage, err)
            return item.state if stage == "reconcile" else None
        if stage == "reconcile":
            self._failing.pop(item.key, None)
        return state

    def _object_failed(self, key: str, namespace: str, name: str, uid: str, stage: str,
                       err: Exception) -> None:
        """Report once per distinct failure: a log line with the traceback for a bug, a
        Warning Event on the object, the metrics. An object no router can drive is one
        such failure, with its own Event reason."""
        why = f"{type(err).__name__}: {err}"[:MAX_EVENT_MESSAGE - 100]
        self.telemetry.object_errors.labels(stage).inc()
        if self._failing.get(key) == why:
            return
        self._failing[key] = why
        expected = isinstance(err, RollwiseError)
        (log.error if expected else log.exception)(
            "object not reconciled", namespace=namespace, name=name, stage=stage, error=why)
        if namespace and name:
            self._events_of(key).record(namespace, name, uid,
                               key=f"failed:{uid}:{hashlib.sha256(why.encode()).hexdigest()}",
                               reason="Unsupported" if isinstance(err, Unsupported)
                               else "ReconcileFailed", warning=True, at=self.clock(),
                               message=f"not reconciled ({stage}): {why}; other rollouts "
                                       "are not affected")

    def _actionable(self, managed: Sequence[Managed]) -> list[Managed]:
        """The objects whose state can be acted on under their policy (the rest are reported
        by ``_reconcile``); judging needs a state that fits its policy."""
        usable = []
        for item in managed:
            policy = self.policies.get(item.policy)
            if policy is None or item.state_error is not None:
                continue
            if item.state is not None and state_problem(item.state, policy.spec) is not None:
                continue
            usable.append(item)
        return usable

    def _catch_up(self, item: Managed) -> RolloutState | None:
        assert item.state is not None
        self._record_events(item, item.state)
        self._observe(item, item.state, ())
        return item.state

    # -- analysis -----------------------------------------------------------------------

    def _judge(self, managed: Sequence[Managed], actionable: Sequence[Managed],
               now: datetime) -> dict[str, Judgement]:
        """The judgements this pass acts on: those finished since the last pass, and this
        pass's own with an inline runner. Due rollouts are handed to the runner, which
        never makes the pass wait (a background runner judges on its own thread)."""
        current = {m.key: m.state for m in managed}
        judgements = self._collect(current)
        due = []
        for item in actionable:
            policy = self.policies.get(item.policy)
            state = item.state
            if state is None or policy is None:
                continue
            request = request_for(item.key, item.namespace, item.name, state, policy)
            if request is None:
                continue
            # Looks come every look_every (a few seconds: anytime-valid tests may look as
            # often as they like; a gross regression is caught within seconds), at most
            # once an interval when the interval is shorter.
            every = min(self.look_every, policy.spec.analysis.interval)
            last = self._last_analysis.get(item.key)
            if last is not None and now - last < every:
                continue
            if now - request.step_started_at < every:
                continue  # a step that young has no samples to judge yet
            due.append(request)
        if due and self._runner.submit(due, now):
            for request in due:
                self._last_analysis[request.key] = now
        judgements.update(self._collect(current))
        return judgements

    def _collect(self, current: Mapping[str, RolloutState | None]) -> dict[str, Judgement]:
        fresh = {}
        for request, judgement in self._runner.collect():
            if request.key in current and request.still_current(current[request.key]):
                fresh[request.key] = judgement
            else:
                log.info("judgement dropped: the rollout moved on while it was judged",
                         key=request.key, rollout=request.rollout_id, step=request.step)
        return fresh

    def _judged(self, seconds: float, finished: Sequence[tuple[AnalysisRequest, Judgement]]
                ) -> None:
        self.telemetry.analysis_seconds.observe(seconds)
        for _, judgement in finished:
            self.telemetry.decisions.labels(
                "missing" if judgement.missing else judgement.outcome).inc()

    def close(self) -> None:
        self._runner.close()

    # -- one object ---------------------------------------------------------------------

    def _report_once(self, item: Managed, key: str, reason: str, message: str) -> None:
        """Problems that persist (missing policy, unreadable state) are reported once."""
        if self._reported.get(item.key) == key:
            return
        self._reported[item.key] = key
        log.error(message, namespace=item.namespace, name=item.name, reason=reason)
        self._events_of(item.key).record(item.namespace, item.name, item.uid, key=f"{key}",
                                         reason=reason, message=message, warning=True,
                                         at=self.clock())

    def _reconcile(self, item: Managed, judgement: Judgement | None,
                   now: datetime) -> RolloutState | None:
        bound = log.bind(namespace=item.namespace, name=item.name,
                         revision=item.state.revision if item.state else None)
        policy = self.policies.get(item.policy)
        if policy is None:
            why = "; ".join(str(p) for p in self.policies.problems) or "no such policy"
            self._report_once(item, f"policy-missing:{item.policy}:{why}", "PolicyNotFound",
                              f"policy {item.policy!r} is not loaded: {why}")
            return item.state
        problem = item.state_error or (
            None if item.state is None else state_problem(item.state, policy.spec))
        if problem is not None:
            self._report_once(item, f"state:{problem}", "StateUnreadable",
                              f"{problem}; not acting until it is fixed, or removed with "
                              f"`kubectl annotate {item.router.resource.kind.lower()} "
                              f"{item.name} -n {item.namespace} {STATE_ANNOTATION}-` "
                              "(Rollwise then adopts what serves)")
            return None
        problems = self.policies.problems_for(item.policy)
        if problems:
            # The last good version stays in force; say so on the object that uses it.
            self._report_once(item, f"policy-invalid:{item.policy}:{problems[0]}",
                              "PolicyInvalid",
                              f"policy {item.policy!r} has an invalid edit; its last good "
                              f"version stays in force: {problems[0]}")
        else:
            self._reported.pop(item.key, None)
        gate = (self.gates.evaluate(item, policy)
                if gate_due(item.state, policy.spec, item.observation) else None)
        observation = replace(item.observation, watched_since=self._watch(item.key, now))
        result = decide(item.state, item.policy, policy.spec, observation, now,
                        judgement=judgement, commands=item.commands, gate=gate,
                        router=item.router)
        if not self._changed(item, result, item.bad_commands):
            if not item.commands and (result.state is None or result.state.phase.terminal):
                # Nothing to do, and nothing will be until the object changes: quiet. (A
                # write, or a write that met a 409, never gets here: read again next pass.)
                self._quiet[item.key] = (item.resource_version,
                                         None if result.state is None else result.state.phase)
            return result.state
        assert result.state is not None
        result = with_event_records(result)
        assert result.state is not None
        for why in item.bad_commands:
            bound.warning("unreadable command dropped", error=why)
            self._events_of(item.key).record(item.namespace, item.name, item.uid,
                               key=f"refused:{item.uid}:{why}", reason="CommandRefused",
                               message=why[:MAX_EVENT_MESSAGE], warning=True, at=now)
        try:
            patch = rollout_patch(item, result.state, result.traffic, result.handled,
                                  sealer=self.sealer, promoted=result.promoted)
        except NothingToRestore as err:
            bound.warning("cannot restore the previous spec", error=str(err))
            self._events_of(item.key).record(item.namespace, item.name, item.uid,
                               key=f"{result.state.id}:no-restore", reason="RestoreFailed",
                               message=str(err), warning=True, at=now)
            patch = rollout_patch(item, result.state, None, result.handled, sealer=self.sealer,
                                  promoted=result.promoted)
        if not self.is_leader():
            return item.state
        source = self._source.get(item.key)
        objects = self.objects if source is None else source.objects
        try:
            written = objects.patch(item.namespace, item.name, patch)
        except Conflict:
            self.telemetry.conflicts.inc()
            bound.info("object changed since read; retrying next pass")
            return item.state
        except Rejected as err:
            # Our own write is invalid for the API server (e.g. the object's annotations are
            # over 256 KiB with ours added): report it on the object; retrying cannot help.
            raise Rejected(f"{err}; the rollout state could not be written") from err
        try:
            self._sync_children(item, written, result.state)   # at once, not next pass
        except RollwiseError as err:
            bound.info("children not written yet; next pass", error=str(err))
        self._after_commit(item, result, bound)
        return result.state

    @staticmethod
    def _changed(item: Managed, result: Result, dropped: Sequence[str]) -> bool:
        return (result.state != item.state or result.traffic is not None
                or bool(result.handled) or bool(dropped))

    def _after_commit(self, item: Managed, result: Result,
                      bound: structlog.typing.FilteringBoundLogger) -> None:
        state = result.state
        assert state is not None
        self._record_events(item, state)
        for event in result.events:
            self.telemetry.transitions.labels(event.reason).inc()
            (bound.warning if event.warning else bound.info)(
                event.message, reason=event.reason, phase=str(state.phase), step=state.step,
                rollout=state.id, revision=state.revision)
        if result.traffic is not None:
            bound.info("traffic written", action=type(result.traffic).__name__,
                       rollout=state.id, phase=str(state.phase))
        self._observe(item, state, result.events)

    def _record_events(self, item: Managed, state: RolloutState) -> None:
        for record in state.last_events:
            self._events_of(item.key).record(item.namespace, item.name, item.uid, key=record.key,
                               reason=record.reason, message=record.message,
                               warning=record.warning, at=state.phase_since)

    def _observe(self, item: Managed, state: RolloutState,
                 events: Sequence[Event]) -> None:
        snapshot = RolloutSnapshot(item.namespace, item.name, item.uid, item.policy, state,
                                   item.url, tuple(events))
        for observer in self.observers:
            try:
                observer(snapshot)
            except Exception as err:  # a side effect never blocks a decision
                log.error("side effect failed", observer=repr(observer), error=str(err),
                          namespace=item.namespace, name=item.name)


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    return meta if isinstance(meta, Mapping) else {}


def _key_of(obj: Mapping[str, Any]) -> str:
    meta = _meta(obj)
    return f"{meta.get('namespace', '?')}/{meta.get('name', '?')}"

