"""The rollout state machine: (state, policy, observation, judgement, commands, now) -> result.

Pure: no I/O, no clock (``now`` comes in), no randomness (rollout ids derive from
the spec hash and the time). The reconciler feeds it what it read and applies
what it returns: at most one traffic change and the new state, in one request.
Like Flagger's ``advanceCanary``, it is a run of guard clauses: each returns, so
one tick makes at most one transition and every transition says why.

It speaks of revisions, canary weights and the split in force, never of a serving
layer: the traffic router that drives the object (``controller.routers``) reads what
serves into the ``Observation``, turns the traffic actions returned here into its
spec, and tells the machine, as ``Serving``, whether a promotion or a rollback is in
effect and how its messages name the weight. What the machine relies on: a weight P
sends P% to the latest ready revision and the rest to the stable (rolled-out) one; a
spec change without a weight would send everything to the new model once ready; and
after a promotion, a lower weight without a spec change would roll back to the
revision before the stable one — so once promoted, this machine never touches traffic
again until the spec changes.

Also here, as rules rather than reconciler code: when the pre-rollout gate is asked
(``gate_due``), when the serving spec is recorded as the last good one
(``Result.promoted``), and the idempotency keys of a transition's Events
(``with_event_records``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from controller.policy.durations import format_duration
from controller.policy.model import PolicySpec
from controller.rollout.state import (
    Approval,
    Command,
    Decision,
    EventRecord,
    Observation,
    Pause,
    PauseReason,
    Phase,
    RolloutState,
    StepVerdict,
)

MAX_HANDLED_COMMANDS = 50
MAX_EVENT_MESSAGE = 1024       # an Event's message, as people read it (and kept in the state)


# --- inputs the reconciler derives from the judge and the lineage gate --------------------


@dataclass(frozen=True)
class Judgement:
    """The combined analysis verdict of this tick, as the state machine needs it."""

    outcome: Literal["pass", "fail", "continue"]
    reason: str
    missing: bool = False                  # some check had no usable data
    # The evidence to keep in the state (``controller.analysis.looks``), opaque here: while
    # the step goes on, and if it ends at this look (its open interval closed). None: keep
    # what the state has.
    evidence: Mapping[str, Any] | None = None
    closing: Mapping[str, Any] | None = None
    # Whether this look is worth a write when nothing else changes: an interval closed.
    # Looks in between (every few seconds) only act when they decide something.
    changed: bool = True
    # Something people should know about this rollout's evidence, told once as a Normal
    # Event (stable's history was short, so the evidence is weighed conservatively).
    notice: str | None = None

    @property
    def ending_evidence(self) -> Mapping[str, Any] | None:
        return self.closing if self.closing is not None else self.evidence


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reason: str
    # Not known yet (lineage has not answered, or cannot be reached): the model waits at
    # 0%, never promoted on an unanswered gate, and people are told why.
    waiting: bool = False


# --- outputs -------------------------------------------------------------------------


@dataclass(frozen=True)
class SetCanary:
    percent: int


@dataclass(frozen=True)
class Promote:
    """All traffic to the canary, which becomes the stable revision."""


@dataclass(frozen=True)
class RollBack:
    """Canary weight 0: all traffic back to the stable (last rolled-out) revision."""


@dataclass(frozen=True)
class RestoreSpec:
    """Put the last promoted spec back (``onFailure.restorePreviousSpec``, for teams
    without GitOps). Only after the rollback is confirmed, so traffic is already on the
    stable revision; the serving layer then rolls the known-good model out as a new
    revision, held at weight 0, which Rollwise analyses like any deploy."""


TrafficAction = SetCanary | Promote | RollBack | RestoreSpec


class Serving(Protocol):
    """What the machine asks of the traffic router that drives the object
    (``controller.routers.base.TrafficRouter``): pure answers about what serves."""

    @property
    def weight_field(self) -> str:
        """How the object names the canary weight, for messages people act on."""

    def in_effect(self, action: Promote | RollBack, obs: Observation,
                  canary: str | None) -> bool:
        """Whether the serving layer reports ``action`` in effect for the ``canary``
        revision: read from its status, never from Rollwise's own write."""


@dataclass(frozen=True)
class Event:
    """A transition worth telling people about: a Kubernetes Event, a metric, a message."""

    kind: str          # the notification event name (policy.notifications.slack.events)
    reason: str        # Kubernetes Event reason, CamelCase
    message: str
    warning: bool = False
    # Told once per rollout step whatever its message: a notice whose numbers change from
    # one look to the next (stable's history found so far) is one Event, not one a look.
    once: bool = False


@dataclass(frozen=True)
class Result:
    state: RolloutState | None
    traffic: TrafficAction | None = None
    events: tuple[Event, ...] = ()
    handled: tuple[str, ...] = ()          # command ids consumed (their annotations go)
    # The spec that serves is now the stable one (a confirmed promotion, or the serving
    # revision adopted): the write records it as the last good spec, which
    # onFailure.restorePreviousSpec may put back.
    promoted: bool = False

    @property
    def ended(self) -> bool:
        return self.state is not None and self.state.phase.terminal


# --- the machine -----------------------------------------------------------------------


def decide(
    state: RolloutState | None,
    policy_name: str,
    policy: PolicySpec,
    obs: Observation,
    now: datetime,
    *,
    judgement: Judgement | None = None,
    commands: Sequence[Command] = (),
    gate: GateResult | None = None,
    router: Serving,
) -> Result:
    """One tick of one rollout, on an object driven by ``router``. ``judgement`` is given
    while the phase is analysing; ``gate`` once the pre-rollout gate was evaluated (None:
    not yet, or no gate; ``gate_due`` says when to evaluate it)."""
    pending = sorted((c for c in commands if state is None or c.id not in
                      state.handled_commands), key=lambda c: (c.at, c.id))
    if state is None or obs.spec_hash != state.spec_hash:
        return _new_model(state, policy_name, policy, obs, now, router)
    ctx = _Tick(state, policy, obs, now, router)
    if pending:
        return ctx.command(pending[0])
    return ctx.advance(judgement, gate)


def gate_due(state: RolloutState | None, policy: PolicySpec, obs: Observation) -> bool:
    """Whether the pre-rollout gate is asked this tick: the policy has one, and the
    rollout is Pending for the spec that serves (a newer spec starts a new rollout first).
    Evaluating it reads lineage, so the caller asks only when this says so."""
    return (policy.gates.pre_rollout is not None and state is not None
            and state.phase == Phase.PENDING and obs.spec_hash == state.spec_hash)


def with_event_records(result: Result) -> Result:
    """The result with its Events kept in the state it commits (replacing the previous
    transition's): what a restart needs to record an Event it missed. Each Event's key is
    derived from the rollout, the reason, the step, the moment of the transition and the
    message, so recording it again is a no-op, while an Event that happens again in the
    same phase with another message (a second hold for missing data, with another cause)
    is an Event of its own, not a 409 that loses it."""
    state = result.state
    if state is None:
        return result
    records = tuple(
        EventRecord(key=(f"{state.id}:{e.reason}:{state.step}" if e.once else
                         f"{state.id}:{e.reason}:{state.step}:{state.phase_since.isoformat()}"
                         f":{hashlib.sha256(e.message.encode()).hexdigest()[:12]}"),
                    reason=e.reason, message=e.message[:MAX_EVENT_MESSAGE], warning=e.warning)
        for e in result.events)
    return replace(result, state=state.evolve(last_events=records))


def state_problem(state: RolloutState, policy: PolicySpec) -> str | None:
    """Why ``state`` cannot be acted on under ``policy``, or None when it can.

    A stored state that points outside the policy (a step beyond its steps, after a policy
    edit removed some, or a hand-written annotation) or that breaks the machine's own
    invariants would crash the tick or, worse, be silently accepted. The reconciler reports
    it as StateUnreadable instead and leaves the object alone."""
    steps = len(policy.steps)
    if not 0 <= state.step < steps:
        return (f"step {state.step} is outside policy {state.policy!r}'s steps 0-{steps - 1} "
                "(did the policy lose steps mid-rollout?)")
    if state.expected_percent is not None and not 0 <= state.expected_percent <= 100:
        return f"expected_percent {state.expected_percent} is not a percentage"
    for approval in state.approvals:
        if not 0 <= approval.step < steps:
            return f"an approval of step {approval.step} is outside the policy's steps"
    if state.ending is not None and not state.ending.terminal:
        return f"ending {state.ending} is not a terminal phase"
    moments = [state.started_at, state.phase_since, state.step_started_at, state.missing_since]
    if state.pause is not None:
        moments += [state.pause.since, state.pause.until, state.pause.reminded_at]
    if any(m is not None and m.utcoffset() is None for m in moments):
        return "a timestamp has no time zone"
    return None


def _new_model(previous: RolloutState | None, policy_name: str, policy: PolicySpec,
               obs: Observation, now: datetime, router: Serving) -> Result:
    """A model spec Rollwise has not rolled out yet (or the first sight of this object)."""
    rollout_id = f"{obs.spec_hash[:12]}-{int(now.timestamp())}"
    if previous is None and obs.latest_rolled_out is None and obs.latest_created is None:
        # The serving layer reports no revision yet: nothing to adopt. Adopting nothing
        # would make the first revision it reports look like a new model's canary (found
        # by the kill -9 chaos test); the next pass looks again.
        return Result(None)
    if previous is None and (obs.latest_rolled_out is None or (
            obs.latest_created == obs.latest_rolled_out and obs.canary_percent is None)):
        # Adopt what serves now as the stable baseline: there is nothing to compare with.
        adopted = RolloutState(
            id=rollout_id, policy=policy_name, spec_hash=obs.spec_hash, phase=Phase.SUCCEEDED,
            started_at=now, phase_since=now, storage_uri=obs.storage_uri,
            revision=obs.latest_rolled_out or obs.latest_created,
            last_decision=Decision("adopt", "serving revision adopted as the stable baseline",
                                   now))
        return Result(adopted, events=(Event("started", "Adopted",
                                             "now managed by Rollwise; the serving revision is "
                                             "the stable baseline"),), promoted=True)
    events: list[Event] = []
    if previous is not None and not previous.phase.terminal:
        events.append(Event("aborted", "Superseded",
                            f"rollout {previous.id} superseded by a newer model", warning=True))
    start_percent = 0 if policy.gates.pre_rollout is not None else policy.steps[0].weight
    reason = (f"new model {obs.storage_uri or obs.spec_hash[:12]}: canary held at "
              f"{start_percent}% until its revision is ready")
    state = RolloutState(
        id=rollout_id, policy=policy_name, spec_hash=obs.spec_hash, phase=Phase.PENDING,
        started_at=now, phase_since=now, storage_uri=obs.storage_uri,
        baseline_storage_uri=_stable_uri(previous),
        # What serves as stable: the serving layer's rolled-out revision, else (a new model
        # deployed before the serving layer reported the adopted one as rolled out) the
        # revision Rollwise adopted or promoted last.
        baseline_revision=obs.latest_rolled_out or (
            previous.revision if previous is not None and previous.phase == Phase.SUCCEEDED
            else None),
        known_revision=(previous.revision if previous is not None and previous.revision
                        else obs.latest_rolled_out),
        expected_percent=start_percent,
        last_decision=Decision("start", reason, now))
    events.append(Event("started", "RolloutStarted", reason))
    traffic = None if obs.canary_percent == start_percent else SetCanary(start_percent)
    if obs.canary_percent is None and previous is not None:
        events.append(Event("analysisDegraded", "UnguardedDeploy",
                            f"the model changed without {router.weight_field} (admission "
                            f"webhook down?); pulled back to {start_percent}%", warning=True))
    return Result(state, traffic, tuple(events))


def _fmt(value: timedelta) -> str:
    """Durations in messages people read: whole seconds."""
    return format_duration(timedelta(seconds=round(value.total_seconds())))


def _stable_uri(previous: RolloutState | None) -> str | None:
    """The model that serves as stable while a new one rolls out."""
    if previous is None:
        return None
    if previous.phase == Phase.SUCCEEDED:
        return previous.storage_uri or None
    return previous.baseline_storage_uri


class _Tick:
    """The guard clauses of one tick for an existing rollout."""

    def __init__(self, state: RolloutState, policy: PolicySpec, obs: Observation,
                 now: datetime, router: Serving) -> None:
        self.state = state
        self.policy = policy
        self.obs = obs
        self.now = now
        self.router = router

    # -- helpers ---------------------------------------------------------------------

    def _to(self, phase: Phase, action: str, reason: str, **changes: object) -> RolloutState:
        return self.state.evolve(phase=phase, phase_since=self.now,
                                 last_decision=Decision(action, reason, self.now), **changes)

    def _roll_back(self, reason: str, *, kind: str = "rolledBack",
                   ending: Phase = Phase.FAILED, handled: tuple[str, ...] = ()) -> Result:
        state = self._to(Phase.ROLLING_BACK, "rollback", reason, expected_percent=0,
                         pause=None, ending=ending)
        state = state.evolve(handled_commands=_remember(state, handled))
        event = Event(kind, "RollingBack", reason, warning=True)
        return Result(state, RollBack(), (event,), handled)

    def _weight(self, step: int) -> int:
        return self.policy.steps[step].weight

    def _enter_step(self, step: int, reason: str, evidence: Mapping[str, Any] | None,
                    handled: tuple[str, ...] = ()) -> Result:
        """Move to ``step`` keeping ``evidence`` (None: the state's); the last step (100%) is
        the promotion."""
        kept = self.state.evidence if evidence is None else evidence
        if self._weight(step) == 100:
            state = self._to(Phase.PROMOTING, "promote", reason, step=step, pause=None,
                             expected_percent=None, evidence=kept,
                             step_started_at=self.now)
            state = state.evolve(handled_commands=_remember(state, handled))
            return Result(state, Promote(), (Event("stepAdvanced", "Promoting", reason),),
                          handled)
        percent = self._weight(step)
        state = self._to(Phase.PROGRESSING, "advance", reason, step=step, pause=None,
                         expected_percent=percent, step_started_at=self.now,
                         evidence=kept, missing_since=None)
        state = state.evolve(handled_commands=_remember(state, handled))
        return Result(state, SetCanary(percent),
                      (Event("stepAdvanced", "StepAdvanced", reason),), handled)

    def _pause(self, reason: PauseReason, message: str, *, until: datetime | None = None,
               kind: str = "paused", warning: bool = False, **changes: object) -> Result:
        pause = Pause(reason, self.now, until, message)
        state = self._to(Phase.PAUSED, "pause", message, pause=pause, **changes)
        return Result(state, None, (Event(kind, "Paused", message, warning=warning),))

    def _note(self, **changes: object) -> Result:
        """No transition; record what changed (e.g. the latest verdict) if anything."""
        state = self.state.evolve(**changes)
        return Result(state if state != self.state else self.state)

    # -- operator commands --------------------------------------------------------------

    def command(self, cmd: Command) -> Result:
        state, handled = self.state, (cmd.id,)
        who = f"{cmd.by} via {cmd.via}"

        def ignored(why: str) -> Result:
            new = state.evolve(handled_commands=_remember(state, handled))
            return Result(new, None, (Event("analysisDegraded", "CommandIgnored",
                                            f"{cmd.action} by {who} ignored: {why}",
                                            warning=True),), handled)

        if cmd.rollout is not None and cmd.rollout != state.id:
            return ignored(f"it was meant for rollout {cmd.rollout}, now {state.id}")
        refusal = self._unauthorized(cmd)
        if refusal is not None:
            new = state.evolve(handled_commands=_remember(state, handled))
            return Result(new, None, (Event("analysisDegraded", "CommandRefused",
                                            f"{cmd.action} by {who} refused: {refusal}",
                                            warning=True),), handled)
        if cmd.action == "retry":
            if state.phase not in (Phase.FAILED, Phase.ABORTED, Phase.BLOCKED):
                return ignored(f"only a failed, aborted or blocked rollout can be retried "
                               f"(phase {state.phase})")
            return self._retry(cmd, handled)
        if state.phase.terminal:
            return ignored(f"the rollout has ended ({state.phase})")
        if state.phase in (Phase.PROMOTING, Phase.ROLLING_BACK):
            # Once promotion is written, lowering the weight without a spec change would roll
            # back to the revision before the stable one: deploy again instead.
            return ignored(f"the rollout is already {state.phase}")
        if cmd.action == "abort":
            return self._roll_back(f"aborted by {who}" + (f": {cmd.reason}" if cmd.reason else ""),
                                   kind="aborted", ending=Phase.ABORTED, handled=handled)
        if cmd.action == "promote":
            if self.obs.latest_ready is None or self.obs.latest_ready != state.revision:
                return ignored("the canary revision is not ready")
            return self._enter_step(len(self.policy.steps) - 1,
                                    f"promoted by {who}, skipping the remaining analysis",
                                    None, handled)
        if cmd.action == "pause":
            if state.phase == Phase.PAUSED:
                return ignored("already paused")
            result = self._pause(PauseReason.OPERATOR, f"paused by {who}")
            assert result.state is not None
            return Result(result.state.evolve(handled_commands=_remember(result.state, handled)),
                          None, result.events, handled)
        if cmd.action == "resume":
            if state.phase != Phase.PAUSED or state.pause is None:
                return ignored("not paused")
            if state.pause.reason == PauseReason.APPROVAL:
                return ignored("this pause needs an approval (rollwise approve)")
            return self._resume(f"resumed by {who}", handled)
        # approve
        if state.phase != Phase.PAUSED or state.pause is None or (
                state.pause.reason != PauseReason.APPROVAL):
            return ignored("no approval is pending")
        if cmd.step is not None and cmd.step != state.step:
            return ignored(f"it approves step {cmd.step}, the pending one is step {state.step}")
        approvals = (*state.approvals, Approval(state.step, cmd.by, cmd.via, self.now))
        self.state = state.evolve(approvals=approvals)
        # The paused step goes on being judged into the same ledger until now.
        result = self._enter_step(state.step + 1, f"step {state.step + 1} "
                                  f"({self._weight(state.step)}%) approved by {who}",
                                  None, handled)
        approved = Event("approved", "Approved", f"approved by {who}")
        return Result(result.state, result.traffic, (approved, *result.events), handled)

    def _unauthorized(self, cmd: Command) -> str | None:
        """Why the writer of ``cmd`` may not give it, or None. Approving a step and promoting
        (which skips the analysis left) are the approvers' when the policy names any: the
        Kubernetes users and groups for commands the API server authenticated, the Slack
        lists for clicks (the Slack handler checked those before it wrote the command).
        Other commands are for anyone RBAC lets write them: an abort or a pause can only
        make a rollout safer, a retry or a resume only re-runs the analysis."""
        approvers = self.policy.approvers
        if cmd.action not in ("approve", "promote") or not approvers.restricted:
            return None
        if cmd.via == "slack":
            return None
        if cmd.via == "kubernetes" and approvers.allows_kubernetes(cmd.by, cmd.groups):
            return None
        return (f"{cmd.by} is not an approver of this policy (spec.approvers.kubernetesUsers "
                "and kubernetesGroups)")

    def _retry(self, cmd: Command, handled: tuple[str, ...]) -> Result:
        reason = f"retried by {cmd.by} via {cmd.via}"
        state = self._to(Phase.WAITING_READY if self.state.revision else Phase.PENDING,
                         "retry", reason, id=f"{self.state.id.split('-')[0]}-"
                         f"{int(self.now.timestamp())}", started_at=self.now, step=0,
                         pause=None, approvals=(), evidence={}, missing_since=None,
                         ending=None, expected_percent=self._weight(0), step_started_at=None)
        state = state.evolve(handled_commands=_remember(state, handled))
        return Result(state, SetCanary(self._weight(0)),
                      (Event("started", "RolloutRetried", reason),), handled)

    def _resume(self, reason: str, handled: tuple[str, ...] = ()) -> Result:
        percent = self._weight(self.state.step)
        state = self._to(Phase.PROGRESSING, "resume", reason, pause=None,
                         expected_percent=percent, step_started_at=self.now,
                         missing_since=None)
        state = state.evolve(handled_commands=_remember(state, handled))
        traffic = None if self.obs.canary_percent == percent else SetCanary(percent)
        return Result(state, traffic, (Event("resumed", "Resumed", reason),), handled)

    # -- the story of a rollout -----------------------------------------------------------

    def advance(self, judgement: Judgement | None, gate: GateResult | None) -> Result:
        state, obs = self.state, self.obs
        if state.phase.terminal:
            return Result(state)
        if state.phase == Phase.PROMOTING:
            return self._confirm_promotion()
        if state.phase == Phase.ROLLING_BACK:
            return self._confirm_rollback()
        if state.phase != Phase.BLOCKED and obs.canary_percent != state.expected_percent and not (
                state.pause is not None and state.pause.reason == PauseReason.MANUAL_EDIT):
            return self._pause(
                PauseReason.MANUAL_EDIT,
                f"{self.router.weight_field} changed by hand to {obs.canary_percent} (Rollwise set "
                f"{state.expected_percent}); paused, not fighting it — resume with "
                "`rollwise resume`", warning=True, expected_percent=obs.canary_percent)
        if state.pause is not None and state.pause.reason == PauseReason.MANUAL_EDIT and (
                obs.canary_percent != state.expected_percent):
            return self._note(expected_percent=obs.canary_percent)
        if state.phase in (Phase.PENDING, Phase.BLOCKED):
            return self._pending(gate)
        if state.phase == Phase.WAITING_READY:
            return self._waiting_ready()
        result = self._analysing(judgement)
        if judgement is None or judgement.notice is None or result.state is None or (
                result.state.phase.terminal):
            return result
        return replace(result, events=(*result.events, Event(
            "analysisDegraded", "HistoryShort", judgement.notice, once=True)))

    def _confirm_promotion(self) -> Result:
        """Trust the serving layer's status, not our own write: promoted when it says so."""
        state = self.state
        if self.router.in_effect(Promote(), self.obs, state.revision):
            done = self._to(Phase.SUCCEEDED, "promoted",
                            f"{state.revision} serves 100% of traffic", ending=None)
            return Result(done, None, (Event("promoted", "Promoted", done.last_decision.reason
                                             if done.last_decision else ""),), promoted=True)
        return Result(state)

    def _confirm_rollback(self) -> Result:
        state = self.state
        if self.router.in_effect(RollBack(), self.obs, state.revision):
            ending = state.ending or Phase.FAILED
            reason = state.last_decision.reason if state.last_decision else "rolled back"
            done = self._to(ending, "rolled-back", reason, ending=None)
            kind = "aborted" if ending == Phase.ABORTED else "rolledBack"
            events = [Event(kind, "RolledBack" if kind == "rolledBack" else "Aborted", reason,
                            warning=True)]
            restore = None
            if ending == Phase.FAILED and self.policy.on_failure.restore_previous_spec:
                restore = RestoreSpec()
                events.append(Event("rolledBack", "RestoringSpec",
                                    "restoring the last promoted spec "
                                    "(onFailure.restorePreviousSpec)"))
            return Result(done, restore, tuple(events))
        return Result(state)

    def _pending(self, gate: GateResult | None) -> Result:
        state, obs = self.state, self.obs
        if self.policy.gates.pre_rollout is not None:
            if gate is None:
                return Result(state)
            if gate.waiting:
                return self._gate_waiting(gate.reason)
            if not gate.passed:
                if state.phase == Phase.BLOCKED:
                    return Result(state)
                blocked = self._to(Phase.BLOCKED, "block", f"pre-rollout gate: {gate.reason}")
                return Result(blocked, None if obs.canary_percent == 0 else SetCanary(0),
                              (Event("blocked", "Blocked", f"pre-rollout gate: {gate.reason}",
                                     warning=True),))
        created = obs.latest_created
        if created is None or created == state.known_revision:
            if self._timed_out():
                return self._roll_back(f"no new revision appeared within "
                                       f"{_fmt(self.policy.ready_timeout)}")
            return Result(state)
        first = self._weight(0)
        reason = f"revision {created} created; waiting for it to be ready"
        moved = self._to(Phase.WAITING_READY, "wait-ready", reason, revision=created,
                         expected_percent=first,
                         baseline_revision=state.baseline_revision or obs.latest_rolled_out)
        return Result(moved, None if obs.canary_percent == first else SetCanary(first))

    def _gate_waiting(self, why: str) -> Result:
        """The pre-rollout gate cannot be asked yet: hold the model at 0% and say why, once
        per distinct reason (a write only when the reason changes)."""
        state = self.state
        reason = f"waiting for the pre-rollout gate: {why}; the new model is not promoted"
        if state.last_decision is not None and state.last_decision.reason == reason:
            return Result(state)
        waiting = state.evolve(last_decision=Decision("gate-wait", reason, self.now))
        return Result(waiting, None,
                      (Event("analysisDegraded", "GateWaiting", reason, warning=True),))

    def _unrouted(self) -> Result:
        """The canary is ready and its weight asks for traffic, but the serving layer routes
        none to it: its metrics would judge a canary that never served, so pause and say
        why (resumable once the serving layer routes it)."""
        return self._pause(PauseReason.UNROUTED,
                           f"{self.obs.unrouted}; paused, the canary is not judged while it "
                           "serves nothing", warning=True)

    def _waiting_ready(self) -> Result:
        state, obs = self.state, self.obs
        if obs.unrouted and obs.latest_created == state.revision:
            return self._unrouted()
        if obs.revision_failure and obs.latest_created == state.revision:
            return self._roll_back(f"revision {state.revision} failed: {obs.revision_failure}")
        if obs.latest_ready == state.revision:
            reason = f"revision {state.revision} is ready; step 1 at {self._weight(0)}%"
            moved = self._to(Phase.PROGRESSING, "progress", reason, step=0,
                             step_started_at=self.now)
            return Result(moved, None, (Event("stepAdvanced", "Progressing", reason),))
        if self._timed_out():
            return self._roll_back(f"revision {state.revision} not ready within "
                                   f"{_fmt(self.policy.ready_timeout)}")
        return Result(state)

    def _timed_out(self) -> bool:
        """readyTimeout, counted only over time this controller was watching: what the
        cluster shows decides (a revision that appeared or became ready moves on however
        late), and a controller that was down (crash, failover, API outage) never blames
        the revision for its own absence."""
        since = self.state.started_at
        if self.obs.watched_since is not None:
            since = max(since, self.obs.watched_since)
        return self.now - since > self.policy.ready_timeout

    def _analysing(self, judgement: Judgement | None) -> Result:
        state, now, policy = self.state, self.now, self.policy
        if state.baseline_revision is None and judgement is None:
            # Nothing to compare the canary with: missing data (held, then onMissingData),
            # never a rollout that waits in silence for ever.
            judgement = Judgement("continue", "the stable revision is not known (the serving "
                                  "layer reports no rolled-out revision)", missing=True,
                                  changed=False)
        verdict_line = "" if judgement is None else f"{judgement.outcome}: {judgement.reason}"
        if judgement is not None and judgement.outcome == "fail":
            self.state = state.evolve(verdicts=(*state.verdicts, StepVerdict(
                state.step, "fail", judgement.reason, now)), last_verdict=verdict_line,
                evidence=judgement.ending_evidence or state.evidence)
            return self._roll_back(f"analysis failed at step {state.step + 1} "
                                   f"({self._weight(state.step)}%): {judgement.reason}")
        if state.phase == Phase.PAUSED:
            return self._paused(judgement, verdict_line)
        if self.obs.unrouted:
            return self._unrouted()
        if judgement is None:
            return Result(state)
        if judgement.missing:
            # What the look learnt is kept even while a check waits for data: a ledger
            # anchored at the end of a warm-up, then lost, would re-anchor at every look and
            # never see a request (found end to end: drift "missing" for ever).
            if judgement.changed:
                state = self.state = state.evolve(evidence=judgement.evidence
                                                  or state.evidence)
            since = state.missing_since or now
            if now - since >= policy.on_missing_data.after:
                message = (f"metrics missing for {_fmt(now - since)}: {judgement.reason}")
                if policy.on_missing_data.action == "rollback":
                    return self._roll_back(message)
                return self._pause(PauseReason.MISSING_DATA, message, warning=True,
                                   last_verdict=verdict_line)
            if state.missing_since is None:
                changed = state.evolve(missing_since=now, last_verdict=verdict_line)
                return Result(changed, None, (Event(
                    "analysisDegraded", "MetricsMissing",
                    f"holding at {self._weight(state.step)}%: {judgement.reason}",
                    warning=True),))
            return self._note(last_verdict=verdict_line)
        step_age = now - (state.step_started_at or now)
        if judgement.outcome == "pass" and step_age >= policy.min_duration(state.step):
            return self._step_passed(judgement, verdict_line)
        if step_age >= policy.on_inconclusive.deadline:
            message = (f"no verdict after {_fmt(step_age)} at step {state.step + 1}: "
                       f"{judgement.reason}")
            if policy.on_inconclusive.action == "rollback":
                return self._roll_back(message)
            return self._pause(PauseReason.INCONCLUSIVE, message, warning=True,
                               last_verdict=verdict_line)
        if not judgement.changed:
            return self._note(missing_since=None)
        return self._note(last_verdict=verdict_line, missing_since=None,
                          evidence=judgement.evidence or state.evidence)

    def _step_passed(self, judgement: Judgement, verdict_line: str) -> Result:
        now = self.now
        state = self.state.evolve(last_verdict=verdict_line, missing_since=None, verdicts=(
            *self.state.verdicts, StepVerdict(self.state.step, "pass", judgement.reason, now)))
        self.state = state
        step = self.policy.steps[state.step]
        passed = f"step {state.step + 1} ({step.weight}%) passed: {judgement.reason}"
        if step.pause is not None and step.pause.approval is not None:
            approval = step.pause.approval
            return self._pause(PauseReason.APPROVAL,
                               f"{passed}; waiting for approval to go to "
                               f"{self._weight(state.step + 1)}%",
                               until=now + approval.timeout, kind="approvalRequested",
                               evidence=judgement.evidence or state.evidence)
        if step.pause is not None and step.pause.duration is not None:
            return self._pause(PauseReason.DURATION,
                               f"{passed}; holding for {_fmt(step.pause.duration)}",
                               until=now + step.pause.duration,
                               evidence=judgement.evidence or state.evidence)
        return self._enter_step(state.step + 1, passed, judgement.ending_evidence)

    def _paused(self, judgement: Judgement | None, verdict_line: str) -> Result:
        state, now = self.state, self.now
        pause = state.pause
        if verdict_line and judgement is not None and judgement.changed:
            state = self.state = state.evolve(last_verdict=verdict_line,
                                              evidence=judgement.evidence or state.evidence)
        if pause is None:
            return self._resume("pause without a reason cleared")
        if pause.until is not None and now >= pause.until:
            if pause.reason == PauseReason.DURATION:
                return self._enter_step(state.step + 1, f"held step {state.step + 1} for "
                                        f"{_fmt(now - pause.since)}", None)
            if pause.reason == PauseReason.APPROVAL:
                approval = self.policy.steps[state.step].pause
                assert approval is not None and approval.approval is not None
                if approval.approval.on_timeout == "rollback":
                    return self._roll_back(f"nobody approved step {state.step + 2} within "
                                           f"{_fmt(approval.approval.timeout)}")
                reminded = pause.reminded_at or pause.since
                if now - reminded >= approval.approval.remind_every:
                    reminder = state.evolve(pause=Pause(pause.reason, pause.since, pause.until,
                                                        pause.message, reminded_at=now))
                    return Result(reminder, None, (Event(
                        "approvalRequested", "ApprovalReminder",
                        f"still waiting for approval: {pause.message}"),))
        return Result(state)


def _remember(state: RolloutState, handled: tuple[str, ...]) -> tuple[str, ...]:
    return (*state.handled_commands, *handled)[-MAX_HANDLED_COMMANDS:]


