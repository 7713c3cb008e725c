"""The split-brain rule the replicas tests read the audit log with
(``tests.e2e.audit.split_brain_writes``), on hand-made calls: it must catch each way a
replica can write without the Lease, and accept what ``controller.leader`` allows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.e2e.audit import (
    Call,
    holders,
    managed_writes,
    split_brain_writes,
    written_before_reacquiring,
)

T0 = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)
A, B = "rollwise/0.1 (host-aaaaaa)", "rollwise/0.1 (host-bbbbbb)"
DEADLINE = 2.0


def call(agent: str, at: float, verb: str = "patch", resource: str = "inferenceservices",
         code: int = 200, took: float = 0.01) -> Call:
    received = T0 + timedelta(seconds=at)
    return Call(received, received + timedelta(seconds=took), agent, verb, resource, code,
                "x", "models")


def renew(agent: str, at: float, code: int = 200) -> Call:
    return call(agent, at, "update", "leases", code)


def test_writes_of_the_holder_within_its_deadline_are_accepted() -> None:
    calls = [renew(A, 0), call(A, 0.5), renew(A, 1), call(A, 2.9), renew(B, 5), call(B, 5.5)]
    assert split_brain_writes(calls, DEADLINE) == []
    assert holders(calls) == [A, B]


def test_a_write_while_another_replica_holds_the_lease_is_split_brain() -> None:
    found = split_brain_writes([renew(A, 0), renew(B, 4), call(A, 4.5)], DEADLINE)
    assert len(found) == 1 and "the Lease was" in found[0] and B in found[0]


def test_a_write_after_the_renew_deadline_is_split_brain_even_if_nobody_took_over() -> None:
    found = split_brain_writes([renew(A, 0), renew(A, 1, code=409), call(A, 2.5)], DEADLINE)
    assert len(found) == 1 and "renew deadline" in found[0]


def test_a_write_completing_after_another_replica_took_the_lease_is_split_brain() -> None:
    calls = [renew(A, 0), call(A, 1.0, took=4.0), renew(B, 3.5)]
    found = split_brain_writes(calls, DEADLINE)
    assert len(found) == 1 and "completed after" in found[0]


def test_before_any_lease_write_and_failed_writes() -> None:
    assert len(split_brain_writes([call(A, 0), renew(A, 1)], DEADLINE)) == 1
    refused = [renew(A, 0), renew(B, 4), call(A, 4.5, code=409), call(A, 4.6, "get")]
    assert split_brain_writes(refused, DEADLINE) == []   # fenced or a read: not a write
    assert managed_writes(refused) == []


def test_a_thawed_replica_may_write_only_once_it_holds_the_lease_again() -> None:
    thaw = T0 + timedelta(seconds=10)
    calls = [renew(A, 0), call(A, 0.5), renew(B, 4), call(B, 9), call(A, 10.5, code=409),
             call(A, 11), renew(A, 12, code=409), renew(A, 20), call(A, 20.5)]
    assert written_before_reacquiring(calls, "(host-aaaaaa)", thaw) == [calls[5]]
    assert written_before_reacquiring(calls[:5] + calls[6:], "(host-aaaaaa)", thaw) == []


def test_only_the_named_resources_count() -> None:
    events = [renew(A, 0), renew(B, 4), call(A, 4.5, "create", "events", 201)]
    assert split_brain_writes(events, DEADLINE) == []
    assert len(split_brain_writes(events, DEADLINE, frozenset({"events"}))) == 1
