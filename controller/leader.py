"""Leader election on a coordination.k8s.io Lease: our own small loop with client-go's
rules, in which no error ends the loop and leading is a deadline, never a flag. I/O (a
thread, and the Lease adapter ``controller.kube.leases``); every decision is taken on an
injected clock, so the unit tests drive ``attempt()`` on a fake clock with
``controller.kube.fakes.InMemoryLeases``.

Callers: ``controller.daemon`` builds ``LeaderElector(KubeLeases(...), ...)``; the
reconciler asks ``is_leader()`` before each object and again right before each write.

Why not the kubernetes client's ``leaderelection`` module: its renew loop catches no
exception (a ``ConnectionRefusedError`` during an API-server outage killed the thread, the
only code that could clear its leader flag) and the flag was not tied to a deadline, so a
leader that could no longer renew kept writing while a new replica took the expired Lease.

The rules (client-go's ``tryAcquireOrRenew``):

- Every ``retry_period`` each replica makes one attempt. The leader replaces its own
  record, fenced by the resourceVersion of its last successful write (on a conflict it
  re-reads at once; after any other failure it reads before writing). Any other replica
  reads the Lease and takes it when there is none, when ``holderIdentity`` is empty, when
  it names this replica, or when the observed record (holder, renewTime, resourceVersion)
  has not changed for ``lease_duration`` as measured on the LOCAL monotonic clock from the
  moment this replica first saw it. Remote timestamps are written for people and never
  compared with the local clock, so clock skew between nodes does not matter.
- ``is_leader()`` is computed at every call: true only while
  ``clock() - renewed_at < renew_deadline``, where ``renewed_at`` is the moment the last
  successful write of our record was SENT (read before the attempt's first request), not
  when its answer arrived. A request that hangs cannot extend it; a lost answer can only
  shorten it. Every request has a client timeout shorter than ``renew_deadline``
  (``KubeLeases``: half of it, one attempt, no urllib3 retries), which bounds how late the
  loop notices, never whether ``is_leader()`` is right.

Why two replicas never both believe they lead. Let A's last successful write be sent at s.
The API server applies it after s, and A believes it leads until s + renew_deadline, no
longer. Another replica B can lead only after a write fenced by the resourceVersion of a
record it observed unchanged for lease_duration; that write succeeds only if nothing was
written since B's observation, so the record B observed is A's last one (or a later record
of A's, and then the argument holds with a later s; a write of A's that was applied but
whose answer was lost only makes the record newer). B read it after it was applied, hence
after s, and waited lease_duration from then: B's write is sent, and B starts believing,
no sooner than s + lease_duration > s + renew_deadline, when A has stopped believing. The
margin lease_duration - renew_deadline absorbs the two monotonic clocks' different rates.

What the argument does not cover, as in client-go: a Lease with an empty holder, or none,
is taken at once. That is safe for a release, because a replica stops believing before it
writes the release; a Lease deleted by hand while a leader holds it can give two leaders
until the old leader's next attempt (one retry period and one request). And
``is_leader()`` speaks for the instant it is asked: a write sent later (a process paused
between the check and the send) is what the resourceVersion fence on every object write
is for.

On losing leadership (deadline passed, someone else holds the Lease) the elector calls
``on_stopped``, goes back to being a candidate and keeps trying: after an API-server outage
the replica can lead again (``on_started`` once more). It no longer ends the process, as it
did with the library: the deadline already stopped every write, an exit would only add a
restart and a cold start to an outage, and a replica that exits at every outage can lose
both replicas at once. ``on_started`` is where the daemon resets its per-process caches
to what a fresh process would have.

Every exception in the loop (409 conflicts, ``ApiException``, urllib3 errors,
``ConnectionRefusedError``, timeouts, anything) is caught, counted by kind
(``failure_counts()``, and ``on_error`` for the metric) and logged rate-limited: the first
failure of a streak, then one line per lease duration with the count, and one line when
requests succeed again.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import structlog

from controller.errors import LeaseConflict, LeaseUnavailable
from controller.kube import LeaseClient, LeaseRecord
from controller.settings import LeaderElectionSettings

log = structlog.get_logger(__name__)
CONFLICT = "conflict"


def _nothing() -> None:
    return None


def _now() -> datetime:
    return datetime.now(UTC)


def _kind(err: BaseException) -> str:
    if isinstance(err, LeaseConflict):
        return CONFLICT
    return err.kind if isinstance(err, LeaseUnavailable) else type(err).__name__


def _key(record: LeaseRecord) -> tuple[str | None, datetime | None, str | None]:
    return record.holder, record.renew_time, record.resource_version


class _FailureLog:
    """Rate-limited logging of failed attempts: the first of a streak, then at most one
    line every ``every`` seconds with the count, and one line when an attempt succeeds."""

    def __init__(self, bound: structlog.typing.FilteringBoundLogger, every: float) -> None:
        self._log, self._every = bound, every
        self._streak = 0
        self._last_line: float | None = None

    def failed(self, now: float, kind: str, err: BaseException) -> None:
        self._streak += 1
        if self._last_line is not None and now - self._last_line < self._every:
            return
        self._last_line = now
        (self._log.info if kind == CONFLICT else self._log.warning)(
            "lease request failed; retrying" if self._streak == 1
            else "lease requests still failing; retrying",
            kind=kind, error=str(err) or repr(err), failures_in_a_row=self._streak)

    def succeeded(self) -> None:
        if self._streak:
            self._log.info("lease requests succeed again", failures_in_a_row=self._streak)
        self._streak, self._last_line = 0, None


class LeaderElector:
    """One replica's candidacy for the Lease ``settings.lease_name`` in ``namespace``."""

    def __init__(self, leases: LeaseClient, settings: LeaderElectionSettings, namespace: str,
                 identity: str, *, clock: Callable[[], float] = time.monotonic,
                 on_started: Callable[[], None] = _nothing,
                 on_stopped: Callable[[], None] = _nothing,
                 on_error: Callable[[str], None] = lambda kind: None) -> None:
        self.identity = identity
        self._leases, self._namespace, self._name = leases, namespace, settings.lease_name
        self._duration = float(settings.lease_duration_seconds)
        self._deadline = float(settings.renew_deadline_seconds)
        self._retry = float(settings.retry_period_seconds)
        self._clock = clock
        self._on_started, self._on_stopped, self._on_error = on_started, on_stopped, on_error
        self._log = log.bind(identity=identity, lease=f"{namespace}/{settings.lease_name}")
        self._failure_log = _FailureLog(self._log, self._duration)
        self._failures: Counter[str] = Counter()
        self._changed = threading.Condition()     # guards the fields below
        self._renewed_at: float | None = None     # send time of our last successful write
        self._known: LeaseRecord | None = None    # that write's answer, until a failure
        self._observed: tuple[str | None, datetime | None, str | None] | None = None
        self._observed_at = 0.0                   # local time it was first seen
        self._leading = False                     # on_started called, on_stopped not yet
        self._halted: str | None = None           # "released" or "stopped": never again
        self._lost = ""                           # why, when someone else holds the Lease
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="leader-election")

    # -- the interface ------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End the loop (it writes nothing more) and stop believing; idempotent."""
        self._halt_as("stopped")

    def is_leader(self) -> bool:
        with self._changed:
            return self._leads_at(self._clock())

    def wait(self, timeout: float) -> bool:
        """Block until this replica leads (True) or ``timeout`` seconds pass (False)."""
        end = time.monotonic() + timeout
        with self._changed:
            while not self._leads_at(self._clock()):
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, self._retry))
            return True

    def release(self) -> None:
        """On a clean shutdown, stop believing, end the loop, then clear holderIdentity so
        a follower takes over at its next retry rather than after a whole lease duration
        (what each upgrade would cost). Failing to release only means the Lease expires."""
        self._halt_as("released")
        with self._changed:
            held_once = self._renewed_at is not None
        if not held_once:
            return
        try:
            current = self._leases.get(self._namespace, self._name)
            if current is None or current.holder != self.identity:
                return
            self._leases.replace(self._namespace, self._name, replace(
                current, holder=None, lease_duration_seconds=1, acquire_time=_now(),
                renew_time=_now()))
            self._log.info("released the leader lease")
        except Exception as err:
            self._log.warning("could not release the leader lease; it will expire",
                              kind=_kind(err), error=str(err) or repr(err))

    def failure_counts(self) -> dict[str, int]:
        """Failed attempts so far, by kind (``conflict``, ``http-503``, exception name)."""
        with self._changed:
            return dict(self._failures)

    # -- one attempt --------------------------------------------------------------------

    def attempt(self) -> None:
        """One round of the loop: acquire or renew. Never raises; the loop calls it every
        retry_period, the unit tests call it directly on a fake clock."""
        self._sync()
        with self._changed:
            if self._halted:
                return
        sent = self._clock()
        try:
            written = self._exchange()
        except Exception as err:
            self._failed(err)
        else:
            self._failure_log.succeeded()
            if written is not None:
                self._won(sent, written)
        self._sync()

    def _exchange(self) -> LeaseRecord | None:
        """The requests of one attempt; returns our record when we wrote it, else None."""
        with self._changed:
            known = self._known
        if known is not None:
            try:
                return self._leases.replace(self._namespace, self._name, self._renewal(known))
            except LeaseConflict as err:   # changed behind us (maybe our own lost answer)
                self._failed(err)
        current = self._leases.get(self._namespace, self._name)
        seen = self._clock()
        if current is None:
            return self._leases.create(self._namespace, self._name, LeaseRecord(
                holder=self.identity, lease_duration_seconds=int(self._duration),
                acquire_time=_now(), renew_time=_now()))
        if current.holder == self.identity:
            return self._leases.replace(self._namespace, self._name, self._renewal(current))
        self._sync()   # a deadline that passed while this attempt was on its way says so
        with self._changed:
            if self._observed != _key(current):
                if current.holder and (self._observed is None
                                       or self._observed[0] != current.holder):
                    self._log.info("the lease is held by another replica", holder=current.holder)
                self._observed, self._observed_at = _key(current), seen
            if current.holder and seen - self._observed_at < self._duration:
                if self._renewed_at is not None:   # not ours now: step down at once (if
                    # our deadline still ran, the Lease was edited or deleted by hand)
                    self._renewed_at, self._lost = None, f"the lease is held by {current.holder}"
                return None
        return self._leases.replace(self._namespace, self._name, replace(
            current, holder=self.identity, lease_duration_seconds=int(self._duration),
            acquire_time=_now(), renew_time=_now(),
            lease_transitions=current.lease_transitions + 1))

    def _renewal(self, ours: LeaseRecord) -> LeaseRecord:
        return replace(ours, lease_duration_seconds=int(self._duration), renew_time=_now())

    def _won(self, sent: float, record: LeaseRecord) -> None:
        with self._changed:
            self._known = record
            self._observed, self._observed_at = _key(record), self._clock()
        self._sync()   # a deadline that passed while this write was on its way is a loss
        with self._changed:
            self._renewed_at = sent
            self._changed.notify_all()

    def _failed(self, err: BaseException) -> None:
        kind = _kind(err)
        with self._changed:
            self._known = None   # whatever happened, read the Lease before writing again
            self._failures[kind] += 1
        self._failure_log.failed(self._clock(), kind, err)
        if kind != CONFLICT:
            self._call(self._on_error, kind)

    # -- leading or not -----------------------------------------------------------------

    def _leads_at(self, now: float) -> bool:
        return (self._halted is None and self._renewed_at is not None
                and now - self._renewed_at < self._deadline)

    def _sync(self) -> None:
        """Call on_started or on_stopped when is_leader() changed since the last call."""
        with self._changed:
            now = self._clock()
            leading = self._leads_at(now)
            if leading == self._leading:
                return
            self._leading = leading
            if self._halted:
                why = self._halted
            elif self._renewed_at is None:
                why = self._lost
            else:
                why = (f"renew deadline passed: the last successful renewal was sent "
                       f"{now - self._renewed_at:.1f} s ago (renew_deadline "
                       f"{self._deadline:g} s)")
        if leading:
            self._log.info("became leader")
            self._call(self._on_started)
        else:
            self._log.warning("stopped leading", reason=why)
            self._call(self._on_stopped)

    def _call(self, callback: Callable[..., None], *args: str) -> None:
        try:
            callback(*args)
        except Exception as err:   # a callback's failure is not the election's
            self._log.error("leader election callback failed", callback=repr(callback),
                            error=str(err) or repr(err))

    def _halt_as(self, why: str) -> None:
        with self._changed:
            self._halted = self._halted or why
            self._changed.notify_all()
        self._halt.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self._deadline)
        self._sync()

    def _run(self) -> None:
        while not self._halt.is_set():
            self.attempt()
            self._halt.wait(self._pause())

    def _pause(self) -> float:
        """retry_period, or less when the deadline comes first (to say so on time)."""
        with self._changed:
            if self._renewed_at is None:
                return self._retry
            left = self._renewed_at + self._deadline - self._clock()
        return min(self._retry, left + 0.01) if left > 0 else self._retry


class AlwaysLeader:
    """Leader election switched off (a single replica, or tests)."""

    def start(self) -> None:
        return None

    def is_leader(self) -> bool:
        return True

    def wait(self, timeout: float) -> bool:
        return True

    def release(self) -> None:
        return None
