"""What every chaos test checks after its faults, from the API server and the controller's
logs: each rollout ended as its model deserves, no step skipped or repeated, no verdict
rewritten in any version the API server held, no duplicate Event, no traffic write after
promotion. Shared by tests/chaos/test_kill9_chaos.py and tests/chaos/test_replicas_chaos.py.

``History`` watches every version of every InferenceService in the namespace (the checks on
versions need all of them, not only the last); it resumes from the last resourceVersion
when its watch ends or the API server goes away (a restarted API server answers 410 Gone:
the versions in between are then read back from etcd, revision by revision), and says so
in ``errors`` when it cannot (a gap in the history makes the test fail, it never passes on
part of it).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import kubernetes.client
import kubernetes.watch
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from controller.kube.annotations import STATE_ANNOTATION
from controller.rollout.state import Phase, RolloutState, StepVerdict
from controller.routers.kserve_knative import GROUP, PLURAL, VERSION, WEIGHT_FIELD
from simulations.world import World
from tests.e2e.rollouts import NAMESPACE, finished

# How long the history waits for an API server that went away before it calls it a gap.
OUTAGE_PATIENCE = 120.0
GONE = 410   # the resourceVersion to resume from is older than the watch cache
MAX_CATCH_UP = 5000   # revisions read back one by one after a 410, at most


@dataclass(frozen=True)
class Version:
    """One version of an InferenceService, as the API server's watch delivered it."""

    resource_version: str
    weight: Any                   # spec.predictor's weight field (None: absent)
    state: RolloutState | None


@dataclass
class History:
    """Every version of every InferenceService in the namespace, from a watch started
    before the new models are deployed (restarted from the last resourceVersion when it
    ends, or when the API server is unreachable or unready for less than
    ``OUTAGE_PATIENCE``; after a 410 Gone, the versions it skipped are read back first)."""

    api: kubernetes.client.ApiClient
    versions: dict[str, list[Version]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    reconnects: int = 0           # watches resumed after the API server went away
    catch_ups: int = 0            # ... after a 410 Gone, with the skipped versions read back
    caught_up_revisions: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> History:
        listed = cast(dict[str, Any], kubernetes.client.CustomObjectsApi(
            self.api).list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL))
        for obj in listed["items"]:
            self._record(obj)
        self._thread = threading.Thread(target=self._watch,
                                        args=(listed["metadata"]["resourceVersion"],),
                                        daemon=True, name="isvc-history")
        self._thread.start()
        return self

    def _record(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        raw = (meta.get("annotations") or {}).get(STATE_ANNOTATION)
        try:
            state = RolloutState.from_json(raw) if raw else None
        except ValueError as err:
            self.errors.append(f"{meta['name']}@{meta['resourceVersion']}: {err}")
            state = None
        predictor = (obj.get("spec") or {}).get("predictor") or {}
        self.versions.setdefault(meta["name"], []).append(
            Version(meta["resourceVersion"], predictor.get(WEIGHT_FIELD), state))

    def _watch(self, resource_version: str) -> None:
        api = kubernetes.client.CustomObjectsApi(self.api)
        unreachable_since: float | None = None
        while not self._stop.is_set():
            watch = kubernetes.watch.Watch()
            try:
                for event in watch.stream(api.list_namespaced_custom_object, GROUP, VERSION,
                                          NAMESPACE, PLURAL, resource_version=resource_version,
                                          timeout_seconds=5, allow_watch_bookmarks=True):
                    if unreachable_since is not None:
                        unreachable_since = None
                        self.reconnects += 1
                    obj = event["object"]
                    resource_version = obj["metadata"]["resourceVersion"]
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._record(obj)
                    elif event["type"] == "ERROR":
                        self.errors.append(f"watch error: {obj}")
                        return
                    if self._stop.is_set():
                        break
                if unreachable_since is not None:   # answered (without events): back
                    unreachable_since = None
                    self.reconnects += 1
            except (urllib3.exceptions.HTTPError, OSError, ApiException) as err:
                if isinstance(err, ApiException) and err.status == GONE:
                    # A restarted API server's watch cache starts at its own revision:
                    # read the versions it skipped from etcd, then watch from there on.
                    caught_up = self._catch_up(resource_version)
                    if caught_up is None:
                        return
                    resource_version = caught_up
                    if unreachable_since is not None:
                        unreachable_since = None
                        self.reconnects += 1
                    continue
                # The API server went away or is not ready yet (a restart): resume from
                # the same resourceVersion once it is back, so no version is missed.
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if now - unreachable_since > OUTAGE_PATIENCE:
                    self.errors.append(f"watch failed: {err!r}")
                    return
                self._stop.wait(0.5)
            except Exception as err:  # the history must be complete, or the test says so
                self.errors.append(f"watch failed: {err!r}")
                return
            finally:
                watch.stop()

    def _catch_up(self, after: str) -> str | None:
        """Record every version written after ``after``, read revision by revision with
        lists at an exact resourceVersion (served by etcd, which keeps them until its
        compaction, minutes later); return the revision to watch from, or None after
        saying in ``errors`` why the history cannot be made complete. Revisions are
        etcd's, numbers: this reads the test's own control plane, not any cluster."""
        api = kubernetes.client.CustomObjectsApi(self.api)
        try:
            head = cast(dict[str, Any], api.list_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, PLURAL))["metadata"]["resourceVersion"]
            revisions = range(int(after) + 1, int(head) + 1)
            if len(revisions) > MAX_CATCH_UP:
                self.errors.append(f"watch gap of {len(revisions)} revisions after {after}")
                return None
            for revision in revisions:
                listed = cast(dict[str, Any], api.list_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, PLURAL, resource_version=str(revision),
                    resource_version_match="Exact"))
                for obj in listed["items"]:
                    if obj["metadata"]["resourceVersion"] == str(revision):
                        self._record(obj)
        except Exception as err:
            self.errors.append(f"watch gap after {after} not read back: {err!r}")
            return None
        self.catch_ups += 1
        self.caught_up_revisions += len(revisions)
        return str(head)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)


def log_records(log_file: Path) -> tuple[list[dict[str, Any]], int]:
    """The controller's JSON log lines, and how many lines were not JSON (a line cut by a
    SIGKILL mid-write is one)."""
    records, torn = [], 0
    for line in log_file.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            torn += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            torn += 1
    return records, torn


def step_problem(state: RolloutState, good: bool) -> str | None:
    """Why the verdicts of a finished rollout show a skipped or repeated step, or None."""
    steps = [v.step for v in state.verdicts]
    outcomes = [v.outcome for v in state.verdicts]
    if steps != list(range(len(steps))):
        return f"verdict steps {steps} are not one per step from 0"
    expected = ["pass"] * len(steps) if good else ["pass"] * (len(steps) - 1) + ["fail"]
    if not steps or outcomes != expected:
        return f"verdict outcomes {outcomes} for a {'good' if good else 'bad'} model"
    return None


def _steps(verdicts: tuple[StepVerdict, ...]) -> list[tuple[int, str]]:
    return [(v.step, v.outcome) for v in verdicts]


def rolled_out(world: World, name: str) -> bool:
    """Whether KServe reports the first model's revision as rolled out. A deploy before
    that (just after adoption, under load) is a race of its own, found by the kill -9 test:
    the controller took the old revision, ready at last, for the new model's canary and
    paused for ever on "the stable revision is not known"."""
    status = world.get_isvc(NAMESPACE, name).get("status") or {}
    return bool(((status.get("components") or {}).get("predictor") or {}).get(
        "latestRolledoutRevision"))


def rewritten(versions: list[Version], rollout: str) -> list[str]:
    """Versions of ``rollout``'s state whose verdicts do not extend the previous ones."""
    problems: list[str] = []
    previous: tuple[StepVerdict, ...] = ()
    for version in versions:
        if version.state is None or version.state.id != rollout:
            continue
        verdicts = version.state.verdicts
        if verdicts[:len(previous)] != previous:
            problems.append(f"@{version.resource_version}: {_steps(verdicts)} after "
                            f"{_steps(previous)}")
        previous = verdicts
    return problems


def writes_after_promotion(versions: list[Version], rollout: str) -> tuple[str, list[str]]:
    """(resourceVersion of the promotion write, the later versions whose weight differs)."""
    promoted: Version | None = None
    changed = []
    for version in versions:
        if promoted is None:
            if (version.state is not None and version.state.id == rollout
                    and version.state.phase in (Phase.PROMOTING, Phase.SUCCEEDED)):
                promoted = version
        elif version.weight != promoted.weight:
            changed.append(f"@{version.resource_version}: {WEIGHT_FIELD}={version.weight!r}")
    return ("" if promoted is None else promoted.resource_version), changed


@dataclass
class Outcomes:
    """What the API server holds for the rollouts of a chaos test, once they ended."""

    finals: dict[str, RolloutState | None]
    outcomes: Counter[str]        # "good Succeeded", "bad Failed", ...
    weight_writes_after_promotion: int
    problems: list[str]

    @property
    def verdicts(self) -> int:
        return sum(len(s.verdicts) for s in self.finals.values() if s is not None)


def rollout_outcomes(world: World, names: Mapping[str, bool], history: History) -> Outcomes:
    """For each InferenceService (name -> whether its new model ``s3://m/<name>/v2`` is
    good): it finished as its model deserves, with one verdict per step, as one rollout,
    no version rewrote a verdict, and (good) nothing changed its weight after promotion."""
    finals = {n: finished(world, n, f"s3://m/{n}/v2") for n in names}
    outcomes: Counter[str] = Counter()
    problems: list[str] = []
    weight_writes = 0
    for name, good in names.items():
        state = finals[name]
        if state is None:
            problems.append(f"{name}: not finished")
            continue
        outcomes[f"{'good' if good else 'bad'} {state.phase}"] += 1
        want = Phase.SUCCEEDED if good else Phase.FAILED
        if state.phase != want:
            problems.append(f"{name}: {state.phase}, not {want} "
                            f"({state.last_decision.reason if state.last_decision else ''})")
        if (step := step_problem(state, good)) is not None:
            problems.append(f"{name}: {step}")
        versions = history.versions.get(name, [])
        ids = {v.state.id for v in versions
               if v.state is not None and v.state.storage_uri == f"s3://m/{name}/v2"}
        if ids != {state.id}:
            problems.append(f"{name}: the new model had rollouts {sorted(ids)}, not one")
        problems += [f"{name}: verdicts rewritten {p}" for p in rewritten(versions, state.id)]
        if good:
            promoted_at, changed = writes_after_promotion(versions, state.id)
            if not promoted_at:
                problems.append(f"{name}: no promotion version in the watched history")
            weight_writes += len(changed)
            problems += [f"{name}: weight written after promotion {c}" for c in changed]
    return Outcomes(finals, outcomes, weight_writes, problems)


def duplicate_events(world: World, names: Iterable[str]) -> tuple[int, dict[Any, int]]:
    """(how many Events the objects ``names`` have, the (object, uid, reason, message)
    recorded more than once with how many times)."""
    wanted = set(names)
    events = kubernetes.client.CoreV1Api(world.admin).list_namespaced_event(NAMESPACE).items
    ours = [e for e in events if e.involved_object.name in wanted]
    seen = Counter((e.involved_object.name, e.involved_object.uid, e.reason, e.message)
                   for e in ours for _ in range(max(e.count or 1, 1)))
    return len(ours), {key: n for key, n in seen.items() if n > 1}


def traffic_writes_after_promotion(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The controller's "traffic written" log lines for a rollout after the one of its
    Promote (``records`` in the order they were written)."""
    promoted: set[str] = set()
    late = []
    for record in records:
        if record.get("event") != "traffic written":
            continue
        rollout = str(record.get("rollout"))
        if rollout in promoted:
            late.append(record)
        if record.get("action") == "Promote":
            promoted.add(rollout)
    return late
