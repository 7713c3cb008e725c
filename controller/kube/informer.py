"""An informer: one LIST, then a watch from its resourceVersion, and a cache every reader uses.

What client-go's reflector and store do for one kind of object, with the official client:
list, watch from the list's resourceVersion with bookmarks on, carry on from the last
version seen when a watch ends or fails (backing off on errors), list again on 410 Gone,
and keep the objects as the API server returned them (raw JSON), calling ``on_change()``
after every change. ``CachedObjects`` is the controller's ``Objects`` on top of it: a pass
reads the cache instead of LISTing the API server every tick; writes still go to the API
server, fenced by the resourceVersion the reader saw, so a stale cache costs a 409 and a
retry at the next pass, never a lost update (issue 17).

I/O: the API server, through the ``kubernetes`` client. Callers: the daemon (through
``CachedObjects``), simulations' node agent and gateway (``Informer``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import kubernetes.watch
import structlog
import urllib3.exceptions
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controller.errors import KubeError
from controller.kube.client import KubeObjects
from controller.routers.base import Ref

__all__ = ["CachedObjects", "Informer", "JsonObject", "ObjectKey", "object_key"]

log = structlog.get_logger(__name__)

JsonObject = dict[str, Any]
ObjectKey = tuple[str, str]   # (namespace or "" for cluster-scoped objects, name)
_MAX_BACKOFF_S = 5.0
_STOP_TIMEOUT_S = 10.0


def object_key(obj: Mapping[str, Any]) -> ObjectKey:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


class Informer:
    """The cache of one kind of object: ``list_call(*args)`` must be a ``kubernetes`` client
    list call (typed or custom objects, namespaced or cluster-wide)."""

    def __init__(self, name: str, list_call: Callable[..., Any], *args: Any,
                 on_change: Callable[[], None], watch_timeout_s: int = 30,
                 on_relist: Callable[[], None] = lambda: None,
                 relevant: Callable[[JsonObject], bool] = lambda obj: True,
                 **list_kwargs: Any) -> None:
        self.name = name
        self._list_call = list_call
        self._args = args
        self._list_kwargs = list_kwargs
        self._on_change = on_change
        self._on_relist = on_relist
        self._relevant = relevant      # which changes call on_change (all are cached)
        self._watch_timeout_s = watch_timeout_s
        self._lock = threading.Lock()
        self._cache: dict[ObjectKey, JsonObject] = {}
        self._stopping = threading.Event()
        self._watch: kubernetes.watch.Watch | None = None
        self._thread: threading.Thread | None = None
        self.synced = threading.Event()   # set once the first list is in the cache
        self.lists = 0                    # LISTs sent: one, plus one per 410 Gone

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"informer {self.name} already started")
        self._thread = threading.Thread(target=self._run, name=f"informer-{self.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        watch = self._watch
        if watch is not None:
            watch.stop()
        if self._thread is not None:
            self._thread.join(_STOP_TIMEOUT_S)
            if self._thread.is_alive():
                log.warning("informer did not stop in time", informer=self.name)

    def items(self) -> list[JsonObject]:
        """A snapshot of the cached objects (never mutate them)."""
        with self._lock:
            return list(self._cache.values())

    def get(self, namespace: str, name: str) -> JsonObject | None:
        with self._lock:
            return self._cache.get((namespace, name))

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        resource_version: str | None = None
        backoff = 0.2
        while not self._stopping.is_set():
            try:
                if resource_version is None:
                    resource_version = self._relist()
                for event in self._events(resource_version):
                    if self._stopping.is_set():
                        return
                    resource_version = self._apply(event, resource_version)
                backoff = 0.2
            except ApiException as error:
                if error.status == 410:
                    resource_version = None   # too old: list again
                    continue
                log.warning("watch failed", informer=self.name, status=error.status,
                            reason=error.reason)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
            except Exception as error:   # connection errors, an API server outage
                if self._stopping.is_set():
                    return
                transport = isinstance(error, urllib3.exceptions.HTTPError | OSError)
                (log.warning if transport else log.error)(
                    "watch interrupted", informer=self.name, error=str(error))
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)

    def _relist(self) -> str:
        response = self._list_call(*self._args, _preload_content=False, **self._list_kwargs)
        listing = json.loads(response.data)
        fresh = {object_key(item): item for item in listing.get("items") or []}
        with self._lock:
            self._cache = fresh
        self.lists += 1
        self._on_relist()
        self.synced.set()
        self._on_change()
        return str(listing["metadata"]["resourceVersion"])

    def _events(self, resource_version: str) -> Iterator[JsonObject]:
        watch = kubernetes.watch.Watch()
        self._watch = watch
        try:
            yield from watch.stream(
                self._list_call, *self._args, resource_version=resource_version,
                timeout_seconds=self._watch_timeout_s, allow_watch_bookmarks=True,
                _request_timeout=(10, self._watch_timeout_s + 10), **self._list_kwargs)
        finally:
            watch.stop()
            self._watch = None

    def _apply(self, event: JsonObject, resource_version: str) -> str:
        kind = event.get("type")
        obj: JsonObject = event.get("raw_object") or {}
        new_version = str((obj.get("metadata") or {}).get("resourceVersion")
                          or resource_version)
        if kind == "BOOKMARK":
            return new_version
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            log.warning("unexpected watch event", informer=self.name, type=kind)
            return resource_version
        with self._lock:
            if kind == "DELETED":
                self._cache.pop(object_key(obj), None)
            else:
                self._cache[object_key(obj)] = obj
        if self._relevant(obj):
            self._on_change()
        return new_version


class CachedObjects:
    """``Objects`` read from informers (one per watched namespace, or one cluster-wide),
    written through ``api`` (a ``KubeObjects`` of the same resource and namespaces).

    ``watch_forever`` starts the informers; until they have listed, reads wait up to
    ``sync_timeout`` seconds and then fail (a pass that fails, never an empty world)."""

    def __init__(self, api: KubeObjects, api_client: client.ApiClient, *,
                 sync_timeout: float = 30.0,
                 on_relist: Callable[[], None] = lambda: None) -> None:
        self._api = api
        self.resource = api.resource
        self._sync_timeout = sync_timeout
        self._on_relist = on_relist
        self._custom = client.CustomObjectsApi(api_client)
        self._wake: Callable[[], None] = lambda: None
        self._relevant: Callable[[Mapping[str, Any]], bool] = lambda obj: True
        r = self.resource
        if api.namespaces:
            self.informers = [
                Informer(f"{r.plural}-{ns}", self._custom.list_namespaced_custom_object,
                         r.group, r.version, ns, r.plural, on_change=self._changed,
                         on_relist=on_relist, relevant=self._relevant_change)
                for ns in api.namespaces]
        else:
            self.informers = [
                Informer(f"{r.plural}-all", self._custom.list_cluster_custom_object,
                         r.group, r.version, r.plural, on_change=self._changed,
                         on_relist=on_relist, relevant=self._relevant_change)]

    def _changed(self) -> None:
        self._wake()

    def _relevant_change(self, obj: JsonObject) -> bool:
        return self._relevant(obj)

    def _synced(self) -> None:
        for informer in self.informers:
            if not informer.synced.wait(self._sync_timeout):
                raise KubeError(f"the cache of {self.resource.plural} ({informer.name}) has "
                                f"not listed from the API server in {self._sync_timeout:g}s")

    def list(self) -> list[Mapping[str, Any]]:
        self._synced()
        # Items of a built-in type's List come without their kind: the API's reader says it.
        return [self._api.with_kind(obj) for informer in self.informers
                for obj in informer.items()]

    def get(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        self._synced()
        for informer in self.informers:
            found = informer.get(namespace, name)
            if found is not None:
                return self._api.with_kind(found)
        return None

    def related(self, ref: Ref) -> Mapping[str, Any] | None:
        return self._api.related(ref)

    def patch(self, namespace: str, name: str, patch: Mapping[str, Any]) -> Mapping[str, Any]:
        return self._api.patch(namespace, name, patch)

    def watch_forever(self, wake: Callable[[], None], stop: threading.Event,
                      relevant: Callable[[Mapping[str, Any]], bool] | None = None) -> None:
        """Start the informers; every change they see (of an object ``relevant`` says
        matters, when given: most Deployments are nobody's rollout) wakes the reconciler;
        every change is cached. They stop with ``stop``."""
        self._wake = wake
        if relevant is not None:
            self._relevant = relevant
        for informer in self.informers:
            informer.start()

        def stopper() -> None:
            stop.wait()
            for informer in self.informers:
                informer.stop()

        threading.Thread(target=stopper, name="informers-stop", daemon=True).start()
