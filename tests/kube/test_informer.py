"""The informer and ``CachedObjects`` (issue 17, item 1): one LIST, then a watch, and every
read from the cache; on the real kube-apiserver, through an outage too, and the loop's
410 Gone and error paths on a scripted stream."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controller.errors import KubeError
from controller.kube.client import KubeObjects
from controller.kube.informer import CachedObjects, Informer, JsonObject
from controller.routers.kserve_knative import GROUP, KNATIVE, PLURAL, VERSION
from simulations.kube.build import Binaries
from simulations.kube.controlplane import ControlPlane
from tests.e2e.rollouts import wait_for

pytestmark = pytest.mark.e2e


def isvc(name: str, uri: str = "s3://m/v1") -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InferenceService",
            "metadata": {"name": name},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"},
                                             "storageUri": uri}}}}


@pytest.fixture(scope="module")
def plane(kube_binaries: Binaries) -> Iterator[ControlPlane]:
    plane = ControlPlane(binaries=kube_binaries)
    with plane:
        yield plane


@pytest.fixture
def namespace(plane: ControlPlane) -> str:
    name = f"inf-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(plane.cluster.admin_api_client()).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


class Counting:
    """Wraps a client list call, counting the LISTs (not the watches) it serves."""

    def __init__(self, call: Callable[..., Any]) -> None:
        self.call = call
        self.lists = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("watch"):
            self.lists += 1
        return self.call(*args, **kwargs)


def test_one_list_then_the_watch_keeps_the_cache(plane: ControlPlane, namespace: str) -> None:
    api = plane.cluster.admin_api_client()
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, isvc("before"))
    objects = CachedObjects(KubeObjects(api, KNATIVE.resource, [namespace]), api)
    counting = Counting(objects.informers[0]._list_call)
    objects.informers[0]._list_call = counting
    woken = threading.Event()
    stop = threading.Event()
    objects.watch_forever(woken.set, stop)
    try:
        assert [o["metadata"]["name"] for o in objects.list()] == ["before"]
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, isvc("after"))
        wait_for(lambda: objects.get(namespace, "after"), 20, "the watch to add 'after'")
        assert woken.is_set()
        written = objects.patch(namespace, "after", {"metadata": {"labels": {"v": "2"}}})
        wait_for(lambda: (o := objects.get(namespace, "after")) is not None
                 and o["metadata"]["resourceVersion"] == written["metadata"]["resourceVersion"],
                 20, "our own write in the cache")
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "before")
        wait_for(lambda: objects.get(namespace, "before") is None, 20, "the delete")
        for _ in range(50):            # fifty passes read the cache, none the API server
            assert [o["metadata"]["name"] for o in objects.list()] == ["after"]
        assert counting.lists == 1
    finally:
        stop.set()


def test_the_cache_serves_through_an_api_server_outage_and_catches_up(
        plane: ControlPlane, namespace: str) -> None:
    api = plane.cluster.admin_api_client()
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, isvc("m"))
    objects = CachedObjects(KubeObjects(api, KNATIVE.resource, [namespace]), api)
    stop = threading.Event()
    objects.watch_forever(lambda: None, stop)
    try:
        assert len(objects.list()) == 1
        plane.stop_apiserver()
        try:
            time.sleep(2)
            # What was last seen is still what a pass reads; a write fails, fenced.
            assert [o["metadata"]["name"] for o in objects.list()] == ["m"]
        finally:
            plane.start_apiserver()
        api = plane.cluster.admin_api_client()
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, isvc("later"))
        wait_for(lambda: objects.get(namespace, "later"), 30, "the watch to resume")
    finally:
        stop.set()


def test_reads_before_the_first_list_fail_naming_the_cache(plane: ControlPlane) -> None:
    api = plane.cluster.admin_api_client()
    objects = CachedObjects(KubeObjects(api, KNATIVE.resource, []), api, sync_timeout=0.1)
    with pytest.raises(KubeError, match=r"cache of inferenceservices .* has not listed"):
        objects.list()


class Scripted(Informer):
    """An informer whose LIST and watch answers are scripted: each watch is the next list of
    events, or an exception to raise."""

    def __init__(self, watches: list[list[JsonObject] | BaseException]) -> None:
        super().__init__("scripted", lambda: None, on_change=self.changed)
        self.watches = watches
        self.listed: list[int] = []
        self.watched_from: list[str] = []
        self.changes = 0
        self.done = threading.Event()

    def changed(self) -> None:
        self.changes += 1

    def _relist(self) -> str:
        self.listed.append(len(self.watched_from))
        self.synced.set()
        return f"{100 * len(self.listed)}"

    def _events(self, resource_version: str) -> Iterator[JsonObject]:
        self.watched_from.append(resource_version)
        if not self.watches:
            self.done.set()
            self._stopping.wait()
            return
        answer = self.watches.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        yield from answer


def event(kind: str, name: str, rv: str) -> JsonObject:
    return {"type": kind, "raw_object": {"metadata": {"namespace": "ns", "name": name,
                                                      "resourceVersion": rv}}}


def test_the_loop_carries_on_from_the_last_version_and_lists_again_only_on_410() -> None:
    gone = ApiException(status=410, reason="Expired")
    refused = ApiException(status=500, reason="Internal")
    informer = Scripted([
        [event("ADDED", "a", "101"), event("BOOKMARK", "", "150")],
        ConnectionRefusedError("API server down"),
        refused,
        [event("MODIFIED", "a", "151"), event("ADDED", "b", "152")],
        gone,
        [event("DELETED", "a", "201")],
    ])
    informer.start()
    try:
        assert informer.done.wait(20)
    finally:
        informer.stop()
    # One list at the start, one after the 410; errors resume from the last version seen
    # (the bookmark's, then the last event's).
    assert informer.listed == [0, 5]
    assert informer.watched_from == ["100", "150", "150", "150", "152", "200", "201"]
    assert [o["metadata"]["name"] for o in informer.items()] == ["b"]
    assert informer.changes == 4   # ADDED, MODIFIED, ADDED, DELETED; bookmarks are no change
