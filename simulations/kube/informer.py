"""A small informer and a level-triggered work loop for the world's simulated controllers.

``Informer`` does what client-go's informer does for one kind of object: list, then watch
from the list's resourceVersion (bookmarks on), re-list on 410 Gone, back off on errors,
and keep a cache of the objects as raw JSON (``dict``), calling ``on_change()`` after every
change. ``LevelLoop`` runs one ``reconcile()`` at a time in its own thread whenever it is
kicked (coalescing kicks that arrive while it runs) or when the time ``reconcile`` asked
to be woken at has come: the simulated node agent and gateway recompute what they own from
the caches, level-based, instead of reacting to single events.

I/O: the informer reads from the API server (list and watch through the ``kubernetes``
client); the loop only runs threads. Callers: simulations.nodes, simulations.gateway.
(simulations.kserve.controller keeps its own informer, older than this one.)
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes.watch
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

__all__ = ["Informer", "JsonObject", "LevelLoop", "ObjectKey", "object_key"]

LOG = logging.getLogger(__name__)

JsonObject = dict[str, Any]
ObjectKey = tuple[str, str]   # (namespace or "" for cluster-scoped objects, name)
_MAX_BACKOFF_S = 5.0
_STOP_TIMEOUT_S = 10.0


def object_key(obj: JsonObject) -> ObjectKey:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


class Informer:
    """The cache of one kind of object: ``list_call(*args)`` must be a ``kubernetes`` client
    list call (typed or custom objects, namespaced or cluster-wide)."""

    def __init__(self, name: str, list_call: Callable[..., Any], *args: Any,
                 on_change: Callable[[], None], watch_timeout_s: int = 30,
                 **list_kwargs: Any) -> None:
        self.name = name
        self._list_call = list_call
        self._args = args
        self._list_kwargs = list_kwargs
        self._on_change = on_change
        self._watch_timeout_s = watch_timeout_s
        self._lock = threading.Lock()
        self._cache: dict[ObjectKey, JsonObject] = {}
        self._stopping = threading.Event()
        self._watch: kubernetes.watch.Watch | None = None
        self._thread: threading.Thread | None = None
        self.synced = threading.Event()   # set once the first list is in the cache

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
                LOG.warning("informer %s did not stop in time", self.name)

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
                LOG.warning("%s watch failed: %s %s", self.name, error.status, error.reason)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
            except Exception as error:   # connection errors, an API server outage
                if self._stopping.is_set():
                    return
                level = (logging.WARNING if isinstance(error, urllib3.exceptions.HTTPError
                                                        | OSError) else logging.ERROR)
                LOG.log(level, "%s watch interrupted: %s", self.name, error)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)

    def _relist(self) -> str:
        response = self._list_call(*self._args, _preload_content=False, **self._list_kwargs)
        listing = json.loads(response.data)
        fresh = {object_key(item): item for item in listing.get("items") or []}
        with self._lock:
            self._cache = fresh
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
            LOG.warning("%s: unexpected watch event %r", self.name, kind)
            return resource_version
        with self._lock:
            if kind == "DELETED":
                self._cache.pop(object_key(obj), None)
            else:
                self._cache[object_key(obj)] = obj
        self._on_change()
        return new_version


class LevelLoop:
    """Calls ``reconcile()`` in one thread when kicked or when due; ``reconcile`` returns
    how many seconds until it wants to run again (None: only when kicked). An exception is
    logged and retried with a backoff."""

    def __init__(self, name: str, reconcile: Callable[[], float | None], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._reconcile = reconcile
        self._clock = clock
        self._wakeup = threading.Condition()
        self._kicked = False
        self._due: float | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.passes = 0   # completed reconciles, for tests and logs

    def kick(self) -> None:
        with self._wakeup:
            self._kicked = True
            self._wakeup.notify_all()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"loop {self.name} already started")
        self._thread = threading.Thread(target=self._run, name=f"loop-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify_all()
        if self._thread is not None:
            self._thread.join(_STOP_TIMEOUT_S)
            if self._thread.is_alive():
                LOG.warning("loop %s did not stop in time", self.name)

    def _wait(self) -> bool:
        """Wait for a kick or the due time; False when stopping."""
        with self._wakeup:
            while not self._stopping:
                now = self._clock()
                if self._kicked or (self._due is not None and now >= self._due):
                    self._kicked, self._due = False, None
                    return True
                timeout = 0.2 if self._due is None else min(0.2, self._due - now)
                self._wakeup.wait(max(timeout, 0.001))
            return False

    def _run(self) -> None:
        backoff = 0.2
        while self._wait():
            try:
                after = self._reconcile()
                backoff = 0.2
            except Exception:
                LOG.exception("%s: reconcile failed; retrying in %.1fs", self.name, backoff)
                after, backoff = backoff, min(backoff * 2, _MAX_BACKOFF_S)
            self.passes += 1
            if after is not None:
                with self._wakeup:
                    due = self._clock() + max(after, 0.0)
                    self._due = due if self._due is None else min(self._due, due)
