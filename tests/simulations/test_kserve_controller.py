"""Tests for simulations.kserve.controller: the loop around the pure rules.

Unit tests drive the controller against an in-memory API server (resourceVersions, merge
patches on the status subresource, 409 on a stale resourceVersion, a watch that expires with
410) and a fake clock. The e2e test runs it against the real kube-apiserver with the real
KServe CRD (``cluster`` fixture).
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import kubernetes.client
import pytest
from kubernetes.client.exceptions import ApiException

from controller.kube.fakes import merge_patch as apply_merge_patch
from simulations.kserve import controller as controller_module
from simulations.kserve.controller import RevisionEvent, SimulatedKServe, merge_patch

NS = "models"
NAME = "iris"
KEY = (NS, NAME)
R1, R2, R3 = (f"{NAME}-predictor-0000{n}" for n in (1, 2, 3))


def predictor(uri: str = "s3://models/iris/v1", canary: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": uri}}
    if canary is not None:
        spec["canaryTrafficPercent"] = canary
    return spec


class FakeApiServer:
    """InferenceServices in memory, with the API semantics the controller relies on."""

    def __init__(self, prune_status: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.lock = threading.Condition()
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[tuple[int, dict[str, Any]]] = []
        self.version = 0
        self.expired_before = 0  # watches from an older resourceVersion get 410 Gone
        self.status_patches: list[dict[str, Any]] = []
        self.conflicts = 0
        self.prune_status = prune_status

    def _bump(self, obj: dict[str, Any], kind: str) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.events.append((self.version, {"type": kind, "raw_object": copy.deepcopy(obj)}))
        self.lock.notify_all()

    def create(self, name: str = NAME, spec: dict[str, Any] | None = None) -> dict[str, Any]:
        with self.lock:
            obj: dict[str, Any] = {
                "apiVersion": "serving.kserve.io/v1beta1",
                "kind": "InferenceService",
                "metadata": {
                    "name": name,
                    "namespace": NS,
                    "uid": str(uuid.uuid4()),
                    "generation": 1,
                },
                "spec": {"predictor": spec or predictor()},
            }
            self.objects[(NS, name)] = obj
            self._bump(obj, "ADDED")
            return copy.deepcopy(obj)

    def set_predictor(self, spec: dict[str, Any], name: str = NAME) -> None:
        with self.lock:
            obj = self.objects[(NS, name)]
            obj["spec"]["predictor"] = spec
            obj["metadata"]["generation"] += 1
            self._bump(obj, "MODIFIED")

    def annotate(self, key: str, value: str, name: str = NAME) -> None:
        """A metadata change by someone else: bumps resourceVersion, not generation."""
        with self.lock:
            obj = self.objects[(NS, name)]
            obj["metadata"].setdefault("annotations", {})[key] = value
            self._bump(obj, "MODIFIED")

    def delete(self, name: str = NAME) -> None:
        with self.lock:
            obj = self.objects.pop((NS, name))
            self._bump(obj, "DELETED")

    def status(self, name: str = NAME) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.objects[(NS, name)].get("status") or {})

    # --- the CustomObjectsApi surface ---------------------------------------------------------

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> dict[str, Any]:
        with self.lock:
            if (namespace, name) not in self.objects:
                raise ApiException(status=404, reason="Not Found")
            return copy.deepcopy(self.objects[(namespace, name)])

    def patch_namespaced_custom_object_status(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any
    ) -> dict[str, Any]:
        with self.lock:
            obj = self.objects.get((namespace, name))
            if obj is None:
                raise ApiException(status=404, reason="Not Found")
            wanted = body.get("metadata", {}).get("resourceVersion")
            if wanted is not None and wanted != obj["metadata"]["resourceVersion"]:
                self.conflicts += 1
                raise ApiException(status=409, reason="Conflict")
            self.status_patches.append(copy.deepcopy(body))
            obj["status"] = apply_merge_patch(obj.get("status") or {}, body["status"])
            if self.prune_status is not None:
                self.prune_status(obj["status"])
            self._bump(obj, "MODIFIED")
            return copy.deepcopy(obj)

    def list_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, **kwargs: Any
    ) -> dict[str, Any]:
        with self.lock:
            items = [copy.deepcopy(o) for k, o in self.objects.items() if k[0] == namespace]
            return {"items": items, "metadata": {"resourceVersion": str(self.version)}}

    def list_cluster_custom_object(
        self, group: str, version: str, plural: str, **kwargs: Any
    ) -> dict[str, Any]:
        with self.lock:
            items = [copy.deepcopy(o) for o in self.objects.values()]
            return {"items": items, "metadata": {"resourceVersion": str(self.version)}}


class FakeWatch:
    """``kubernetes.watch.Watch`` over a FakeApiServer's event log."""

    def __init__(self, server: FakeApiServer) -> None:
        self.server = server
        self.stopped = False

    def stream(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Iterator[Any]:
        server = self.server
        since = int(kwargs["resource_version"])
        deadline = time.monotonic() + kwargs.get("timeout_seconds", 5)
        with server.lock:
            if since < server.expired_before:
                raise ApiException(status=410, reason="Gone")
        while not self.stopped and time.monotonic() < deadline:
            with server.lock:
                pending = [event for rv, event in server.events if rv > since]
                if not pending:
                    server.lock.wait(0.05)
                    continue
                since = max(rv for rv, _ in server.events)
            yield from (copy.deepcopy(event) for event in pending)

    def stop(self) -> None:
        self.stopped = True


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def server() -> FakeApiServer:
    return FakeApiServer()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_controller(
    server: FakeApiServer,
    clock: Callable[[], float],
    **kwargs: Any,
) -> SimulatedKServe:
    sim = SimulatedKServe(kubernetes.client.ApiClient(), namespace=NS, clock=clock, **kwargs)
    sim._api = server  # the in-memory API server stands in for CustomObjectsApi
    return sim


def traffic(status: Mapping[str, Any]) -> list[tuple[str, bool, int, str]]:
    entries = status.get("components", {}).get("predictor", {}).get("traffic", [])
    return [
        (t["revisionName"], t["latestRevision"], t["percent"], t.get("tag", "")) for t in entries
    ]


def condition(status: Mapping[str, Any], type_: str) -> dict[str, Any]:
    return next(dict(c) for c in status["conditions"] if c["type"] == type_)


# --- merge patches ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "patch"),
    [
        pytest.param({"a": 1}, {"a": 1}, {}, id="equal-is-empty"),
        pytest.param({"a": 1, "b": 2}, {"a": 1}, {"b": None}, id="removed-key-is-null"),
        pytest.param({"a": {"x": 1, "y": 2}}, {"a": {"x": 1}}, {"a": {"y": None}}, id="nested"),
        pytest.param({"t": [1, 2]}, {"t": [2]}, {"t": [2]}, id="lists-are-replaced"),
        pytest.param({}, {"a": {"b": 1}}, {"a": {"b": 1}}, id="added-subtree"),
        pytest.param({"a": {"b": 1}}, {"a": 3}, {"a": 3}, id="object-replaced-by-scalar"),
    ],
)
def test_merge_patch(old: dict[str, Any], new: dict[str, Any], patch: dict[str, Any]) -> None:
    assert merge_patch(old, new) == patch
    assert apply_merge_patch(old, merge_patch(old, new)) == new


# --- the loop, driven synchronously ------------------------------------------------------------


def test_revision_lifecycle_with_a_fake_clock(server: FakeApiServer, clock: FakeClock) -> None:
    created: list[RevisionEvent] = []
    sim = make_controller(
        server, clock, ready_delay=lambda p: 2.0, on_revision_created=created.append
    )
    server.create()
    sim.enqueue(*KEY)
    sim.run_pending()
    status = server.status()
    assert status["components"]["predictor"]["latestCreatedRevision"] == R1
    assert condition(status, "Ready")["status"] == "Unknown"
    assert [(e.revision, e.predictor["model"]["storageUri"]) for e in created] == [
        (R1, "s3://models/iris/v1")
    ]
    assert [r.readiness.status for r in sim.revisions(*KEY)] == ["Unknown"]

    clock.advance(1.9)
    assert sim.run_pending() == 0  # nothing due yet
    clock.advance(0.1)
    sim.run_pending()
    status = server.status()
    assert traffic(status) == [(R1, True, 100, "")]
    assert condition(status, "Ready")["status"] == "True"
    assert status["url"] == f"http://{NAME}.{NS}.example.com"

    # Canary: new storageUri and 10 %.
    server.set_predictor(predictor("s3://models/iris/v2", 10))
    sim.enqueue(*KEY)
    sim.run_pending()
    assert traffic(server.status()) == [(R1, True, 10, ""), (R1, False, 90, "prev")]
    clock.advance(2.0)
    sim.run_pending()
    assert traffic(server.status()) == [(R2, True, 10, ""), (R1, False, 90, "prev")]
    assert [e.revision for e in created] == [R1, R2]

    server.set_predictor(predictor("s3://models/iris/v2"))
    sim.enqueue(*KEY)
    sim.run_pending()
    status = server.status()
    assert traffic(status) == [(R2, True, 100, "")]
    predictor_status = status["components"]["predictor"]
    assert (
        predictor_status["latestRolledoutRevision"],
        predictor_status["previousRolledoutRevision"],
    ) == (R2, R1)
    # A settled controller writes nothing more.
    writes = len(server.status_patches)
    sim.enqueue(*KEY)
    sim.run_pending()
    assert len(server.status_patches) == writes


def test_status_patch_is_fenced_by_resource_version(
    server: FakeApiServer, clock: FakeClock
) -> None:
    sim = make_controller(server, clock)
    server.create()
    sim.enqueue(*KEY)
    sim.run_pending()
    first = server.status_patches[0]
    assert first["metadata"]["resourceVersion"] == "1"
    assert set(first) == {"metadata", "status"}
    # Every write was a merge patch turning the stored status into KServe's.
    assert server.status()["deploymentMode"] == "Knative"


def test_conflict_rereads_and_retries(
    server: FakeApiServer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = make_controller(server, clock)
    server.create()
    sim.enqueue(*KEY)
    sim.run_pending()
    clock.advance(1.0)
    # Someone else writes the object after the controller cached it: its write gets 409.
    original_patch = server.patch_namespaced_custom_object_status
    conflicts = iter([True])

    def patch_with_interference(*args: Any) -> dict[str, Any]:
        if next(conflicts, False):  # an annotation KServe keeps out of the revision template
            server.annotate("kubectl.kubernetes.io/last-applied-configuration", "{}")
        return original_patch(*args)

    monkeypatch.setattr(server, "patch_namespaced_custom_object_status", patch_with_interference)
    writes = len(server.status_patches)
    sim.run_pending()
    status = server.status()
    assert traffic(status) == [(R1, True, 100, "")]
    assert condition(status, "Ready")["status"] == "True"
    assert len(server.status_patches) > writes
    assert server.conflicts == 1
    assert [r.name for r in sim.revisions(*KEY)] == [R1]


def test_never_ready_revision_fails_after_the_progress_deadline(
    server: FakeApiServer, clock: FakeClock
) -> None:
    sim = make_controller(
        server,
        clock,
        ready_delay=lambda p: None if p["model"]["storageUri"].endswith("broken") else 1.0,
        progress_deadline=30.0,
    )
    server.create()
    sim.enqueue(*KEY)
    sim.run_pending()
    clock.advance(1.0)
    sim.run_pending()
    assert condition(server.status(), "Ready")["status"] == "True"
    server.set_predictor(predictor("s3://models/iris/broken", 10))
    sim.enqueue(*KEY)
    sim.run_pending()
    clock.advance(29.0)
    sim.run_pending()
    assert condition(server.status(), "PredictorReady")["status"] == "Unknown"
    clock.advance(1.0)
    sim.run_pending()
    status = server.status()
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "RevisionFailed")
    assert traffic(status) == [(R1, True, 10, ""), (R1, False, 90, "prev")]
    assert [r.readiness.status for r in sim.revisions(*KEY)] == ["True", "False"]


def test_delete_and_recreate_starts_over(server: FakeApiServer, clock: FakeClock) -> None:
    deleted: list[tuple[str, str, str]] = []
    sim = make_controller(server, clock, on_revision_deleted=lambda *a: deleted.append(a))
    server.create()
    sim.enqueue(*KEY)
    sim.run_pending()
    server.set_predictor(predictor("s3://models/iris/v2"))
    sim.enqueue(*KEY)
    sim.run_pending()
    assert [r.name for r in sim.revisions(*KEY)] == [R1, R2]

    server.delete()
    server.create()  # same name, new uid; the controller missed the deletion
    sim.enqueue(*KEY)
    sim.run_pending()
    assert deleted == [(NS, NAME, R1), (NS, NAME, R2)]
    assert [r.name for r in sim.revisions(*KEY)] == [R1]
    assert server.status()["observedGeneration"] == 1

    server.delete()
    sim.enqueue(*KEY)
    sim.run_pending()
    assert deleted[-1] == (NS, NAME, R1)
    assert sim.revisions(*KEY) == []
    assert sim.knative_service(*KEY) is None


def test_server_normalisation_does_not_cause_a_write_loop(clock: FakeClock) -> None:
    """If the API server prunes a field KServe writes, the same write is not repeated."""

    def prune(status: dict[str, Any]) -> None:
        status.pop("deploymentMode", None)

    server = FakeApiServer(prune_status=prune)
    sim = make_controller(server, clock)
    server.create()
    sim.enqueue(*KEY)
    sim.run_pending()
    clock.advance(1.0)
    sim.run_pending()
    writes = len(server.status_patches)
    for _ in range(3):
        sim.enqueue(*KEY)
        sim.run_pending()
    assert len(server.status_patches) == writes


# --- the loop, with its threads ------------------------------------------------------------------


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def test_threads_watch_relist_on_410_and_stop(
    server: FakeApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(controller_module, "_new_watch", lambda: FakeWatch(server))
    relists: list[str] = []
    original_list = server.list_namespaced_custom_object

    def counting_list(*args: Any, **kwargs: Any) -> dict[str, Any]:
        listing = original_list(*args, **kwargs)
        relists.append(listing["metadata"]["resourceVersion"])
        return listing

    monkeypatch.setattr(server, "list_namespaced_custom_object", counting_list)
    sim = make_controller(server, time.monotonic, ready_delay=lambda p: 0.05, watch_timeout=1)
    server.create()
    with sim:
        wait_for(lambda: traffic(server.status()) == [(R1, True, 100, "")])
        with server.lock:  # the watch history is gone: the next watch gets 410 Gone
            server.expired_before = server.version + 1_000_000
        wait_for(lambda: len(relists) >= 2)  # 410 Gone -> list again
        server.set_predictor(predictor("s3://models/iris/v2", 10))
        wait_for(lambda: traffic(server.status()) == [(R2, True, 10, ""), (R1, False, 90, "prev")])
        started = time.monotonic()
    assert time.monotonic() - started < 5.0


# --- against the real kube-apiserver and the real KServe CRD -------------------------------------


@pytest.mark.e2e
def test_against_the_real_api_server(cluster: Any) -> None:
    created: list[RevisionEvent] = []
    deleted: list[tuple[str, str, str]] = []
    namespace = f"kserve-sim-{uuid.uuid4().hex[:8]}"
    with cluster.admin_api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        custom = kubernetes.client.CustomObjectsApi(api)
        core.create_namespace(
            kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=namespace))
        )

        def get() -> dict[str, Any]:
            obj = custom.get_namespaced_custom_object(
                "serving.kserve.io", "v1beta1", namespace, "inferenceservices", NAME
            )
            assert isinstance(obj, dict)
            return obj

        def set_predictor(spec: dict[str, Any]) -> None:
            # A merge patch; null removes canaryTrafficPercent when the spec has none.
            body = {"spec": {"predictor": {"canaryTrafficPercent": None, **spec}}}
            custom.patch_namespaced_custom_object(
                "serving.kserve.io", "v1beta1", namespace, "inferenceservices", NAME, body
            )

        def settled_traffic() -> list[tuple[str, bool, int, str]]:
            return traffic(get().get("status") or {})

        sim = SimulatedKServe(
            api,
            namespace=namespace,
            ready_delay=lambda p: 0.3,
            on_revision_created=created.append,
            on_revision_deleted=lambda *a: deleted.append(a),
        )
        try:
            with sim:
                custom.create_namespaced_custom_object(
                    "serving.kserve.io",
                    "v1beta1",
                    namespace,
                    "inferenceservices",
                    {
                        "apiVersion": "serving.kserve.io/v1beta1",
                        "kind": "InferenceService",
                        "metadata": {"name": NAME, "namespace": namespace},
                        "spec": {"predictor": predictor()},
                    },
                )
                wait_for(lambda: settled_traffic() == [(R1, True, 100, "")], 30)
                status = get()["status"]
                assert condition(status, "Ready")["status"] == "True"
                assert status["url"] == f"http://{NAME}.{namespace}.example.com"
                assert status["components"]["predictor"]["latestRolledoutRevision"] == R1

                set_predictor(predictor("s3://models/iris/v2", 10))
                wait_for(
                    lambda: settled_traffic() == [(R2, True, 10, ""), (R1, False, 90, "prev")], 30
                )
                prev = get()["status"]["components"]["predictor"]["traffic"][1]
                assert prev["url"] == f"http://prev-{NAME}-predictor.{namespace}.example.com"

                set_predictor(predictor("s3://models/iris/v2", 100))
                wait_for(lambda: settled_traffic() == [(R2, True, 100, "")], 30)
                predictor_status = get()["status"]["components"]["predictor"]
                assert predictor_status["latestRolledoutRevision"] == R2
                assert predictor_status["previousRolledoutRevision"] == R1
                set_predictor(predictor("s3://models/iris/v2"))  # same Knative Service spec
                wait_for(lambda: get()["metadata"]["generation"] == 4, 30)

                set_predictor(predictor("s3://models/iris/v3", 10))
                wait_for(
                    lambda: settled_traffic() == [(R3, True, 10, ""), (R2, False, 90, "prev")], 30
                )
                set_predictor(predictor("s3://models/iris/v3", 0))
                wait_for(
                    lambda: settled_traffic() == [(R3, True, 0, ""), (R2, False, 100, "prev")], 30
                )
                obj = get()
                ksvc = sim.knative_service(namespace, NAME)
                assert ksvc is not None
                # kserve#6081: the Knative Service's counter, not the InferenceService's.
                assert obj["status"]["observedGeneration"] == ksvc.generation
                assert obj["metadata"]["generation"] == 6
                assert ksvc.generation == 5
                assert [e.revision for e in created] == [R1, R2, R3]

                custom.delete_namespaced_custom_object(
                    "serving.kserve.io", "v1beta1", namespace, "inferenceservices", NAME
                )
                wait_for(lambda: len(deleted) == 3, 30)
                assert sorted(r for _, _, r in deleted) == [R1, R2, R3]
        finally:
            core.delete_namespace(namespace)
