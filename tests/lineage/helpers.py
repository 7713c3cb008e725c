"""Helpers for the lineage tests: a plain MLMD client, and the snapshots of one rollout's
story as the state machine produces them (pure data)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import ml_metadata.proto.metadata_store_pb2 as _pb2
from ml_metadata.metadata_store import metadata_store

from controller.analysis import looks
from controller.analysis.ledger import Block, EventLedger, Tally
from controller.rollout.snapshot import RolloutSnapshot
from controller.rollout.state import (
    Approval,
    Decision,
    Pause,
    PauseReason,
    Phase,
    RolloutState,
    StepVerdict,
)

pb: Any = _pb2
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
NAMESPACE, NAME = "team-a", "iris"
URL = "http://iris.team-a.example.com"


def raw_store(path: Path) -> Any:
    """A plain ml_metadata client on the file, as another tool would open it."""
    config = pb.ConnectionConfig()
    config.sqlite.filename_uri = str(path)
    config.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    return metadata_store.MetadataStore(config)


def evidence(blocks: tuple[tuple[int, float, float, float, float], ...]) -> dict[str, Any]:
    """An error-rate check's evidence with one interval per (step, canary requests, canary
    errors, stable requests, stable errors)."""
    ledger = EventLedger(blocks=tuple(Block(step, False, Tally(n_c, e_c, n_b, e_b, e_c))
                                      for step, n_c, e_c, n_b, e_b in blocks))
    return {"error-rate": looks.to_json(ledger)}


def snapshot(state: RolloutState, *, url: str | None = URL) -> RolloutSnapshot:
    return RolloutSnapshot(namespace=NAMESPACE, name=NAME, uid="uid-1", policy="canary",
                           state=state, url=url)


def story(model_uri: str, baseline_uri: str | None, *, rollout_id: str = "5f2c9a-1772355600",
          start: datetime = T0, baseline_revision: str = "iris-predictor-00001",
          revision: str = "iris-predictor-00002") -> list[RolloutSnapshot]:
    """The snapshots a two-step rollout with one approval produces, in order, ending in
    promotion: Pending, Progressing, Paused (approval), Progressing, Promoting, Succeeded."""
    t = [start + timedelta(minutes=5 * i) for i in range(7)]
    pending = RolloutState(
        id=rollout_id, policy="canary", spec_hash="5f2c9a" * 5, phase=Phase.PENDING,
        started_at=t[0], phase_since=t[0], storage_uri=model_uri,
        baseline_storage_uri=baseline_uri, baseline_revision=baseline_revision,
        known_revision=baseline_revision,
        last_decision=Decision("start", "new model; waiting for its revision", t[0]))
    progressing = pending.evolve(
        phase=Phase.PROGRESSING, phase_since=t[1], revision=revision,
        step_started_at=t[1], expected_percent=10,
        last_decision=Decision("advance", "revision ready; step 1 (10%)", t[1]))
    passed = StepVerdict(0, "pass", "error rate 0.2% vs 0.3% (p=0.01)", t[2])
    paused = progressing.evolve(
        phase=Phase.PAUSED, phase_since=t[2], verdicts=(passed,),
        evidence=evidence(((0, 1200, 2, 10800, 30),)),
        pause=Pause(PauseReason.APPROVAL, t[2], t[2] + timedelta(hours=1), "approve 50%"),
        last_verdict="pass: error rate 0.2% vs 0.3%",
        last_decision=Decision("pause", "waiting for approval", t[2]))
    approved = paused.evolve(
        phase=Phase.PROGRESSING, phase_since=t[3], step=1, step_started_at=t[3], pause=None,
        expected_percent=50, approvals=(Approval(0, "alice@example.com", "slack", t[3]),),
        last_decision=Decision("advance", "step 2 (50%) approved by alice", t[3]))
    promoting = approved.evolve(
        phase=Phase.PROMOTING, phase_since=t[4], step=2, expected_percent=None,
        verdicts=(passed, StepVerdict(1, "pass", "latency p99 120ms vs 118ms", t[4])),
        evidence=evidence(((0, 1200, 2, 10800, 30), (1, 6000, 5, 6000, 6))),
        last_decision=Decision("promote", "step 2 passed", t[4]))
    succeeded = promoting.evolve(
        phase=Phase.SUCCEEDED, phase_since=t[5],
        last_decision=Decision("promoted", "KServe confirmed the promotion", t[5]))
    return [snapshot(s) for s in (pending, progressing, paused, approved, promoting, succeeded)]


def ended(last: RolloutSnapshot, phase: Phase, reason: str,
          after: timedelta = timedelta(minutes=1)) -> RolloutSnapshot:
    """The same rollout ended otherwise (rolled back, aborted, superseded)."""
    at = last.state.phase_since + after
    state = last.state.evolve(phase=phase, phase_since=at, last_decision=Decision(
        "end", reason, at))
    return replace(last, state=state)



ROLLED_BACK_ID = "77aa-1772370000"


def record_promotion_then_rollback(store: Any, v1_uri: str, v2_uri: str,
                                   reason: str) -> list[RolloutSnapshot]:
    """v1 -> v2 promoted with an approval, then v3 (no pipeline behind it) rolled back
    two hours later with ``reason``: the history the lineage view tells. Returns the
    first rollout's snapshots."""
    first = story(v2_uri, v1_uri)
    second = story("s3://models/iris/v3", v2_uri, rollout_id=ROLLED_BACK_ID,
                   start=first[-1].state.phase_since + timedelta(hours=2),
                   baseline_revision="iris-predictor-00002", revision="iris-predictor-00003")
    for snap in (*first, second[0], second[1], ended(second[1], Phase.FAILED, reason)):
        store.record(snap)
    return first
