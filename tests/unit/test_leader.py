"""Leader election (controller/leader.py) on a fake clock and ``InMemoryLeases``: errors of
every kind never end the loop, leading ends exactly at the renew deadline (also while a
renew request hangs), takeover, re-acquisition after an outage, conflicts, release; and a
hypothesis property: two or three electors on one store, with failures, delays and pauses
on a shared simulated clock, never both believe they lead at the same instant."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
import urllib3.exceptions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controller.errors import LeaseConflict, LeaseUnavailable
from controller.kube import LeaseRecord
from controller.kube.client import api_client, user_agent
from controller.kube.fakes import InMemoryLeases
from controller.kube.leases import KubeLeases
from controller.leader import LeaderElector
from controller.settings import KubernetesSettings, LeaderElectionSettings

NS, NAME = "rollwise-system", "rollwise-controller"
SETTINGS = LeaderElectionSettings(lease_duration_seconds=15, renew_deadline_seconds=10,
                                  retry_period_seconds=2)


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Calls:
    """Records on_started / on_stopped in order."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def started(self) -> None:
        self.seen.append("started")

    def stopped(self) -> None:
        self.seen.append("stopped")


def elector(leases: InMemoryLeases, clock: Clock, identity: str = "a",
            calls: Calls | None = None, settings: LeaderElectionSettings = SETTINGS,
            on_error: Callable[[str], None] = lambda kind: None) -> LeaderElector:
    calls = calls or Calls()
    return LeaderElector(leases, settings, NS, identity, clock=clock,
                         on_started=calls.started, on_stopped=calls.stopped, on_error=on_error)


def at(clock: Clock, when: float, *electors: LeaderElector) -> None:
    """Move the clock to ``when`` and let each elector make one attempt."""
    clock.now = when
    for each in electors:
        each.attempt()


ERRORS: list[BaseException] = [
    ConnectionRefusedError(111, "Connection refused"),
    ConnectionResetError(104, "Connection reset by peer"),
    TimeoutError("timed out"),
    socket.gaierror(-2, "Name or service not known"),
    urllib3.exceptions.NewConnectionError(None, "Failed to establish a new connection"),  # type: ignore[arg-type]
    urllib3.exceptions.ReadTimeoutError(None, "/", "Read timed out."),  # type: ignore[arg-type]
    urllib3.exceptions.ProtocolError("Connection aborted."),
    urllib3.exceptions.MaxRetryError(None, "/"),  # type: ignore[arg-type]
    ApiException(status=500, reason="Internal Server Error"),
    ApiException(status=503, reason="Service Unavailable"),
    ApiException(status=429, reason="Too Many Requests"),
    ApiException(status=403, reason="Forbidden"),
    LeaseUnavailable("cannot read Lease: HTTP 504", "http-504"),
    LeaseConflict("changed"),
    ValueError("bad JSON in the answer"),
    KeyError("spec"),
    RuntimeError("anything at all"),
]


# -- acquire, renew ------------------------------------------------------------------------


def test_the_first_replica_creates_the_lease_and_then_renews_it_without_reading() -> None:
    leases, clock, calls = InMemoryLeases(), Clock(), Calls()
    a = elector(leases, clock, calls=calls)
    at(clock, 0.0, a)
    assert a.is_leader() and calls.seen == ["started"]
    stored = leases.stored(NS, NAME)
    assert stored is not None and stored.holder == "a" and stored.lease_duration_seconds == 15
    at(clock, 2.0, a)
    at(clock, 4.0, a)
    assert leases.calls == ["get", "create", "replace", "replace"]
    renewed = leases.stored(NS, NAME)
    assert renewed is not None and renewed.acquire_time == stored.acquire_time
    assert renewed.lease_transitions == 0 and calls.seen == ["started"]


def test_a_follower_that_sees_renewals_never_takes_over() -> None:
    leases, clock = InMemoryLeases(), Clock()
    a, b = elector(leases, clock, "a"), elector(leases, clock, "b")
    for second in range(0, 120, 2):
        at(clock, float(second), a, b)
        assert a.is_leader() and not b.is_leader()


@pytest.mark.parametrize("renew_time", [datetime(2000, 1, 1, tzinfo=UTC),
                                        datetime(2999, 1, 1, tzinfo=UTC)],
                         ids=["stamped-in-the-past", "stamped-in-the-future"])
def test_expiry_is_measured_on_the_local_clock_never_from_the_lease_timestamps(
        renew_time: datetime) -> None:
    leases, clock = InMemoryLeases(), Clock()
    leases.put(NS, NAME, LeaseRecord("x", 15, renew_time, renew_time, 3))
    b = elector(leases, clock, "b")
    at(clock, 100.0, b)                # first seen now: 15 s from here, whatever it says
    at(clock, 114.9, b)
    assert not b.is_leader()
    at(clock, 115.0, b)
    assert b.is_leader()
    stored = leases.stored(NS, NAME)
    assert stored is not None and stored.holder == "b" and stored.lease_transitions == 4


def test_takeover_after_expiry_and_the_old_leader_learns_it_at_its_next_attempt() -> None:
    leases, clock = InMemoryLeases(), Clock()
    a_calls, b_calls = Calls(), Calls()
    a, b = elector(leases, clock, "a", a_calls), elector(leases, clock, "b", b_calls)
    at(clock, 0.0, a, b)                # a leads, b first sees a's record at 0
    # a is paused from now on (SIGSTOP): it makes no attempt.
    for second in (2.0, 9.9):
        at(clock, second, b)
        assert a.is_leader() and not b.is_leader()
    clock.now = 10.0
    assert not a.is_leader()            # its deadline: before b may even try
    at(clock, 14.9, b)
    assert not b.is_leader()
    at(clock, 15.0, b)
    assert b.is_leader() and b_calls.seen == ["started"]
    at(clock, 16.0, a)                  # a resumes: its renew meets b's record
    assert not a.is_leader() and b.is_leader()
    assert a_calls.seen == ["started", "stopped"]
    assert a.failure_counts() == {"conflict": 1}
    at(clock, 18.0, a, b)
    assert not a.is_leader() and b.is_leader()


# -- the renew deadline --------------------------------------------------------------------


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_failing_renewals_end_leading_exactly_at_the_renew_deadline(
        error: BaseException) -> None:
    leases, clock, calls = InMemoryLeases(), Clock(), Calls()
    kinds: list[str] = []
    a = elector(leases, clock, calls=calls, on_error=kinds.append)
    at(clock, 0.0, a)
    leases.fail_next(*[error] * 20)
    for second in (2.0, 4.0, 6.0, 8.0):
        at(clock, second, a)
    clock.now = 9.999
    assert a.is_leader()
    clock.now = 10.0
    assert not a.is_leader()
    at(clock, 10.0, a)
    assert calls.seen == ["started", "stopped"]
    conflict = isinstance(error, LeaseConflict)   # on a renewal it re-reads at once
    assert sum(a.failure_counts().values()) == (6 if conflict else 5)
    assert len(kinds) == (0 if conflict else 5)   # 409s are outcomes, not API errors


class Gate:
    """An interceptor that holds one verb's request until opened (a hung API server)."""

    def __init__(self, verb: str) -> None:
        self.verb, self.entered, self.opened = verb, threading.Event(), threading.Event()

    def __call__(self, verb: str, stage: str) -> None:
        if verb == self.verb and stage == "request":
            self.entered.set()
            assert self.opened.wait(10), "the test never opened the gate"


@pytest.mark.parametrize("answer", ["applied", "lost"])
def test_leading_ends_at_the_deadline_while_a_renew_request_hangs(answer: str) -> None:
    leases, clock, calls = InMemoryLeases(), Clock(), Calls()
    a = elector(leases, clock, calls=calls)
    at(clock, 0.0, a)
    gate = Gate("replace")
    leases.interceptor = gate
    clock.now = 2.0
    hung = threading.Thread(target=a.attempt)
    hung.start()
    assert gate.entered.wait(10)
    clock.now = 9.999
    assert a.is_leader()                # the renewal sent at 0 still proves the lease
    clock.now = 10.0
    assert not a.is_leader()            # ... and no longer, though the answer is pending
    clock.now = 11.0
    if answer == "lost":
        leases.fail_next(TimeoutError("read timed out"), verb="replace")
    gate.opened.set()
    hung.join(10)
    if answer == "lost":
        assert not a.is_leader() and calls.seen == ["started", "stopped"]
    else:   # written, and sent at 2: it proves the lease until 12, after a gap it admits
        assert a.is_leader() and calls.seen == ["started", "stopped", "started"]
        clock.now = 12.0
        assert not a.is_leader()


def test_a_renewal_whose_answer_comes_after_its_own_deadline_does_not_lead() -> None:
    leases, clock, calls = InMemoryLeases(), Clock(), Calls()
    a = elector(leases, clock, calls=calls)
    at(clock, 0.0, a)

    def slow(verb: str, stage: str) -> None:
        if stage == "response":
            clock.advance(12.0)
    leases.interceptor = slow
    at(clock, 2.0, a)                   # sent at 2, answered at 14
    assert not a.is_leader() and calls.seen == ["started", "stopped"]


# -- outages, conflicts, the loop ----------------------------------------------------------


def test_after_an_outage_the_old_leader_leads_again() -> None:
    leases, clock = InMemoryLeases(), Clock()
    a_calls = Calls()
    a, b = elector(leases, clock, "a", a_calls), elector(leases, clock, "b")
    at(clock, 0.0, a, b)
    leases.fail_next(*[ConnectionRefusedError(111, "refused")] * 28)   # 14 rounds of two
    for second in range(2, 30, 2):
        at(clock, float(second), a, b)
        assert not b.is_leader()
        assert a.is_leader() == (second < 10)
    at(clock, 30.0, a, b)
    assert a.is_leader() and not b.is_leader()
    assert a_calls.seen == ["started", "stopped", "started"]


def test_after_an_outage_a_follower_takes_a_lease_whose_holder_is_gone() -> None:
    leases, clock = InMemoryLeases(), Clock()
    a, b = elector(leases, clock, "a"), elector(leases, clock, "b")
    at(clock, 0.0, a, b)
    # a dies; the API server is down from 1 to 30 s: b keeps trying through it.
    leases.fail_next(*[ConnectionRefusedError(111, "refused")] * 14)
    for second in range(2, 30, 2):
        at(clock, float(second), b)
        assert not b.is_leader()
    at(clock, 30.0, b)                  # a's record unchanged for 30 s of b's clock
    assert b.is_leader()


def test_a_lost_answer_to_a_renewal_is_read_back_at_the_next_attempt() -> None:
    leases, clock, calls = InMemoryLeases(), Clock(), Calls()
    a = elector(leases, clock, calls=calls)
    at(clock, 0.0, a)
    leases.fail_next(TimeoutError("answer lost"), verb="replace", after_applying=True)
    at(clock, 2.0, a)                   # applied, but a does not know its resourceVersion
    at(clock, 4.0, a)                   # so it reads the Lease: the holder is a
    assert a.is_leader() and calls.seen == ["started"]
    assert a.failure_counts() == {"TimeoutError": 1}
    assert leases.calls[-3:] == ["replace", "get", "replace"]
    clock.now = 13.9
    assert a.is_leader()                # the renewal sent at 4 counts


def test_two_candidates_racing_for_an_expired_lease_give_one_leader() -> None:
    leases, clock = InMemoryLeases(), Clock()
    leases.put(NS, NAME, LeaseRecord("gone", 15))
    b, c = elector(leases, clock, "b"), elector(leases, clock, "c")
    at(clock, 0.0, b, c)
    clock.now = 15.0
    raced = False

    def b_writes_first(verb: str, stage: str) -> None:
        nonlocal raced
        if verb == "replace" and stage == "request" and not raced:
            raced = True                # c has read the expired record; b goes first
            leases.interceptor = None
            b.attempt()
    leases.interceptor = b_writes_first
    c.attempt()
    assert b.is_leader() and not c.is_leader()
    assert c.failure_counts() == {"conflict": 1}
    at(clock, 16.0, c)
    assert not c.is_leader()


def test_a_lease_taken_by_hand_ends_leading_at_the_next_attempt() -> None:
    leases, clock, calls = InMemoryLeases(), Clock(), Calls()
    a = elector(leases, clock, calls=calls)
    at(clock, 0.0, a)
    leases.put(NS, NAME, LeaseRecord("intruder", 15))
    at(clock, 2.0, a)                   # within its deadline, but the Lease says otherwise
    assert not a.is_leader() and calls.seen == ["started", "stopped"]
    assert leases.calls[-2:] == ["replace", "get"] and a.failure_counts() == {"conflict": 1}


def test_a_leader_frozen_mid_attempt_says_its_deadline_passed_not_who_took_over() -> None:
    leases, clock = InMemoryLeases(), Clock()
    a = elector(leases, clock)
    at(clock, 0.0, a)
    leases.fail_next(TimeoutError("timed out"))
    at(clock, 2.0, a)                   # a reads before its next write

    def frozen_after_the_read(verb: str, stage: str) -> None:
        if verb == "get" and stage == "request":     # b took the Lease meanwhile ...
            leases.put(NS, NAME, LeaseRecord("b", 15))
        if verb == "get" and stage == "response":    # ... and a was frozen 20 s here
            clock.advance(20.0)
    leases.interceptor = frozen_after_the_read
    with structlog.testing.capture_logs() as lines:
        at(clock, 3.0, a)
    assert [line["reason"] for line in lines if line["event"] == "stopped leading"] == [
        "renew deadline passed: the last successful renewal was sent 23.0 s ago "
        "(renew_deadline 10 s)"]


@pytest.fixture
def fast() -> LeaderElectionSettings:
    """Periods of 20 ms for the tests that run the real loop thread (no timing asserted:
    they only wait, bounded, for an outcome)."""
    periods: dict[str, Any] = {"lease_duration_seconds": 0.3, "renew_deadline_seconds": 0.2,
                               "retry_period_seconds": 0.02}   # below what settings allow
    return LeaderElectionSettings.model_construct(enabled=True, lease_name=NAME, **periods)


def test_the_loop_thread_survives_a_storm_of_every_error_and_a_failing_callback(
        fast: LeaderElectionSettings) -> None:
    leases = InMemoryLeases()
    leases.fail_next(*ERRORS * 3)

    def broken() -> None:
        raise RuntimeError("a callback that fails")
    a = LeaderElector(leases, fast, NS, "a", on_started=broken, on_stopped=broken)
    a.start()
    try:
        assert a.wait(10), "the loop never led after the storm"
        assert sum(a.failure_counts().values()) == len(ERRORS) * 3
        leases.fail_next(*ERRORS * 3)   # a second storm, while leading
        leases.fail_next(*ERRORS * 3, after_applying=True)
        assert _eventually(lambda: not a.is_leader()) and a.wait(10)
    finally:
        a.release()
    assert not a.is_leader()


def _eventually(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    stop = threading.Event()
    for _ in range(int(seconds / 0.01)):
        if condition():
            return True
        stop.wait(0.01)
    return False


def test_failures_are_logged_rate_limited_and_counted() -> None:
    leases, clock = InMemoryLeases(), Clock()
    a = elector(leases, clock)
    leases.fail_next(*[ConnectionRefusedError(111, "refused")] * 100)
    with structlog.testing.capture_logs() as lines:
        for tenth in range(101):        # 100 failures in 10 s, then a success
            at(clock, tenth / 10, a)
    failed = [line for line in lines if "failing" in line["event"] or "failed" in line["event"]]
    assert len(failed) == 1 and failed[0]["kind"] == "ConnectionRefusedError"
    assert [line["failures_in_a_row"] for line in lines
            if line["event"] == "lease requests succeed again"] == [100]
    assert a.failure_counts() == {"ConnectionRefusedError": 100}
    with structlog.testing.capture_logs() as lines:
        leases.fail_next(*[ConnectionRefusedError(111, "refused")] * 40)
        for second in range(11, 51):   # one line per lease duration (15 s), not per retry
            at(clock, float(second), a)
    assert len([line for line in lines if "fail" in line["event"]]) == 3


# -- release -------------------------------------------------------------------------------


def test_release_clears_the_holder_so_a_follower_takes_over_at_once() -> None:
    leases, clock, calls = InMemoryLeases(), Clock(), Calls()
    a, b = elector(leases, clock, "a", calls), elector(leases, clock, "b")
    at(clock, 0.0, a, b)
    a.release()
    assert not a.is_leader() and calls.seen == ["started", "stopped"]
    stored = leases.stored(NS, NAME)
    assert stored is not None and stored.holder is None
    at(clock, 1.0, b)
    assert b.is_leader()
    before = len(leases.calls)
    at(clock, 2.0, a)                   # a released elector never writes again
    assert len(leases.calls) == before and not a.is_leader()


def test_release_by_a_follower_writes_nothing_and_a_failed_release_is_survived() -> None:
    leases, clock = InMemoryLeases(), Clock()
    a, b = elector(leases, clock, "a"), elector(leases, clock, "b")
    at(clock, 0.0, a, b)
    before = len(leases.calls)
    b.release()
    assert len(leases.calls) == before
    leases.fail_next(ConnectionRefusedError(111, "refused"))
    with structlog.testing.capture_logs() as lines:
        a.release()
    assert not a.is_leader()
    assert [line["event"] for line in lines if "release" in line["event"]] == [
        "could not release the leader lease; it will expire"]


# -- the Kubernetes adapter ----------------------------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[tuple[str, list[socket.socket]]]:
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""
    accepted: list[socket.socket] = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.1)
        stop = threading.Event()

        def accept() -> None:
            while not stop.is_set():
                try:
                    accepted.append(server.accept()[0])
                except TimeoutError:
                    continue
        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.getsockname()[1]}", accepted
        finally:
            stop.set()
            thread.join(5)
            for connection in accepted:
                connection.close()


def test_kube_leases_make_one_bounded_attempt_per_request(
        silent_server: tuple[str, list[socket.socket]]) -> None:
    url, accepted = silent_server
    api = client.ApiClient(client.Configuration(host=url))
    api.user_agent = "rollwise/test (a)"
    settings = LeaderElectionSettings(lease_duration_seconds=3, renew_deadline_seconds=2,
                                      retry_period_seconds=1)
    leases = KubeLeases(api, settings)
    assert leases.timeout < settings.renew_deadline_seconds
    with pytest.raises(LeaseUnavailable, match=f"cannot read Lease {NS}/{NAME}") as raised:
        leases.get(NS, NAME)
    assert raised.value.kind == "ReadTimeoutError"
    assert len(accepted) == 1, "urllib3 retried: a request could outlast the renew deadline"
    assert api.configuration.retries is None   # the daemon's own client is left alone


def test_kube_leases_translate_refused_connections_and_name_the_lease() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    leases = KubeLeases(client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{port}")),
                        SETTINGS)
    with pytest.raises(LeaseUnavailable, match=f"cannot replace Lease {NS}/{NAME}"):
        leases.replace(NS, NAME, LeaseRecord("a", 15, resource_version="7"))


def test_the_user_agent_names_the_replica(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n")
    api = api_client(KubernetesSettings(kubeconfig=kubeconfig), "rollwise-a-1f2e3d")
    assert api.user_agent == f"{user_agent()} (rollwise-a-1f2e3d)"
    assert user_agent().startswith("rollwise/")
    assert KubeLeases(api, SETTINGS)._api.api_client.user_agent == api.user_agent


# -- the property: never two leaders -------------------------------------------------------


class Conductor:
    """Runs each elector's attempts in its own worker thread, one thread at a time. Every
    Lease call stops twice (before the store applies it, before its caller gets the
    answer) until the test resumes it, with a fault or not; meanwhile the others go on
    and the shared clock moves. So every interleaving of requests in flight, delays,
    lost answers and paused replicas can be played."""

    IDLE, RUNNING = "idle", "running"

    def __init__(self, leases: InMemoryLeases, electors: list[LeaderElector]) -> None:
        self.electors = electors
        self._cv = threading.Condition()
        self._state = [self.IDLE] * len(electors)
        self._orders: list[tuple[str, BaseException | None] | None] = [None] * len(electors)
        self._local = threading.local()
        leases.interceptor = self._park
        self._workers = [threading.Thread(target=self._work, args=(i,), daemon=True)
                         for i in range(len(electors))]
        for worker in self._workers:
            worker.start()

    def parked(self, i: int) -> bool:
        return self._state[i] not in (self.IDLE, self.RUNNING)

    def go(self, i: int, fault: BaseException | None) -> None:
        """Elector i's next move: start an attempt when idle, else let its parked call go
        on (raising ``fault`` there, if any)."""
        self._order(i, "attempt" if self._state[i] == self.IDLE else "resume", fault)

    def finish(self) -> None:
        for i in range(len(self.electors)):
            while self.parked(i):
                self._order(i, "resume", RuntimeError("the test ends"))
            with self._cv:
                self._orders[i] = ("quit", None)
                self._cv.notify_all()
        for worker in self._workers:
            worker.join(5)

    def _order(self, i: int, what: str, fault: BaseException | None) -> None:
        with self._cv:
            self._state[i], self._orders[i] = self.RUNNING, (what, fault)
            self._cv.notify_all()
            assert self._cv.wait_for(lambda: self._state[i] != self.RUNNING, 10), "stuck"

    def _take(self, i: int) -> tuple[str, BaseException | None]:
        with self._cv:
            self._cv.wait_for(lambda: self._orders[i] is not None)
            order = self._orders[i]
            assert order is not None
            self._orders[i] = None
            return order

    def _work(self, i: int) -> None:
        self._local.index = i
        while self._take(i)[0] == "attempt":
            self.electors[i].attempt()
            with self._cv:
                self._state[i] = self.IDLE
                self._cv.notify_all()

    def _park(self, verb: str, stage: str) -> None:
        i = self._local.index
        with self._cv:
            self._state[i] = f"{verb}:{stage}"
            self._cv.notify_all()
        _, fault = self._take(i)
        if fault is not None:
            raise fault


FAULTS: list[BaseException | None] = [*[None] * 6, ConnectionRefusedError(111, "refused"),
                                      TimeoutError("timed out"), OSError("reset")]
ACTIONS = st.one_of(
    st.tuples(st.just("tick"), st.sampled_from([0.05, 0.2, 0.5, 1.0, 2.0, 4.0, 8.0])),
    st.tuples(st.just("go"), st.integers(0, 2), st.integers(0, len(FAULTS) - 1)),
    st.tuples(st.just("burst"), st.integers(0, 2), st.integers(1, 12)),  # fast, no fault
)
TIMINGS = [LeaderElectionSettings(lease_duration_seconds=d, renew_deadline_seconds=r,
                                  retry_period_seconds=1) for d, r in ((15, 10), (6, 4), (3, 2))]


Action = tuple[str, float] | tuple[str, int, int]


def play(count: int, timing: LeaderElectionSettings, actions: list[Action]) -> list[str]:
    """Play ``actions``; after each one at most one elector may believe it leads. Returns
    who led after each action ("" for nobody)."""
    leases, clock = InMemoryLeases(), Clock()
    electors = [elector(leases, clock, "abc"[i], settings=timing) for i in range(count)]
    conductor = Conductor(leases, electors)
    history = []

    def check(now: float) -> str:
        leaders = [e.identity for e in electors if e.is_leader()]
        assert len(leaders) <= 1, f"two leaders at t={now}: {leaders}"
        return "".join(leaders)
    try:
        for action in actions:
            if action[0] == "tick":
                clock.advance(float(action[1]))
            elif action[0] == "go":
                conductor.go(int(action[1]) % count, FAULTS[int(action[2])])  # type: ignore[misc]
            else:
                for _ in range(int(action[2])):  # type: ignore[misc]
                    conductor.go(int(action[1]) % count, None)
                    check(clock.now)
            history.append(check(clock.now))
    finally:
        conductor.finish()
    return history


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(count=st.integers(2, 3), timing=st.sampled_from(TIMINGS),
       actions=st.lists(ACTIONS, max_size=80))
def test_never_two_leaders_whatever_fails_hangs_or_pauses(
        count: int, timing: LeaderElectionSettings, actions: list[Action]) -> None:
    play(count, timing, actions)


def test_the_conductor_plays_a_takeover_while_the_old_renewal_is_in_flight() -> None:
    """The schedule the property is about, spelled out: a creates the Lease at 0, its
    renewal sent at 9 is held before the store applies it; a stops believing at 10; b,
    which saw a's record at 9, takes the Lease at 24; a's renewal then meets a conflict,
    and a, re-reading, follows b."""
    a: Action = ("go", 0, 0)
    b: Action = ("go", 1, 0)
    history = play(2, TIMINGS[0], [
        a, a, a, a, a,                  # get, create: a leads
        ("tick", 9.0), a,               # a's renewal, held before the store applies it
        b, b, b,                        # b reads a's record at 9
        ("tick", 0.999), ("tick", 0.001),   # t = 10: a's deadline
        ("tick", 14.0),                 # t = 24
        b, b, b, b, b,                  # b: expired, claimed
        a, a, a,                        # a: 409, get, b holds it
    ])
    assert history[4] == "a" and history[10] == "a" and history[11] == ""
    assert history[17] == "b" and history[-1] == "b"


def test_the_conductor_plays_a_renewal_answered_late_while_a_follower_waits() -> None:
    """Leading counts from when a renewal was SENT: a's renewal is sent and applied at 2,
    its answer arrives at 8. b saw the renewed record at 2 and takes the Lease at 17. Had
    a counted from the answer (8 + 10 = 18), both would lead from 17 to 18."""
    a: Action = ("go", 0, 0)
    b: Action = ("go", 1, 0)
    history = play(2, TIMINGS[0], [
        a, a, a, a, a,                  # 0-4: a creates the Lease at 0
        ("tick", 2.0), a, a,            # 5-7: a's renewal sent, applied; answer held
        b, b, b,                        # 8-10: b reads the renewed record at 2
        ("tick", 6.0), a,               # 11-12: t = 8: a gets its answer
        ("tick", 3.999), ("tick", 0.001),   # 13-14: t = 12: a's deadline (2 + 10)
        ("tick", 5.0),                  # 15: t = 17
        b, b, b, b, b,                  # 16-20: expired for b (2 + 15): b claims it
    ])
    assert history[12] == "a" and history[13] == "a" and history[14] == ""
    assert history[-1] == "b"
