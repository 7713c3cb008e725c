"""A simulated KServe controller process: watches InferenceServices and writes their status.

I/O: a thin loop around the pure :func:`simulations.kserve.rules.reconcile` (Knative mode)
and :func:`simulations.kserve.standard.reconcile` (Standard mode, ``spec.canary[]``), picked
per object as KServe's ``GetDeploymentMode`` does. It does what KServe's controller-runtime
manager does for the predictor path: an informer
(list, then watch from the list's resourceVersion, re-list on 410 Gone), a work queue that
deduplicates keys, one worker, and a status write through the ``status`` subresource that
fails on a stale resourceVersion (409) and is then retried on the re-read object.

Standard mode: the predictor Deployments and Services live in memory too, and their pods
come up like revisions (``ready_delay`` after a ReplicaSet gets pods, or never: then the
progress deadline passes and the model server crash-loops). The HTTPRoutes are real
objects (the Gateway API CRDs are installed); with ``accept_routes`` this process also plays
the gateway KServe's routes point at and writes their ``status.parents`` at once, as a
conformant implementation would (``httproute.gateway_status``). A spec KServe's validating
webhook would refuse is not acted on: the last admitted spec keeps being served and the
refusal is shown in the ``SpecAccepted`` condition (``standard.admission_error``).

Knative is not running here, so the child Knative Service and its Revisions live in memory,
keyed by the InferenceService's uid (a deleted and re-created InferenceService starts over at
revision 00001, as its new Knative Service would). A revision becomes ready ``ready_delay``
seconds after it was created; ``None`` means never, and Knative then reports it failed
(``ProgressDeadlineExceeded``) after ``progress_deadline`` seconds. Timers re-trigger the
reconcile when a revision's readiness changes, as Knative's own status update would.

Follows kserve/kserve (aaac4e29) ``pkg/controller/v1beta1/inferenceservice/controller.go``:
``SetupWithManager`` (``For(InferenceService)`` without a predicate, so KServe's own status
write re-triggers it; ``Owns`` the Knative Service, so Knative's status changes do too) and
``updateStatus`` (skip the write when semantically equal). The decisions are in
:mod:`simulations.kserve.rules`, which names the files it follows.

What KServe does beyond the status (the finalizer ``inferenceservice.finalizers``, the
VirtualService, the model ConfigMap) is not simulated: without a finalizer, deleting an
InferenceService never waits for this process. :meth:`SimulatedKServe.reconcile` and
:meth:`SimulatedKServe.run_pending` are for callers that do not :meth:`~SimulatedKServe.start`
the threads; do not mix the two.
"""

from __future__ import annotations

import copy
import hashlib
import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import kubernetes.client
import kubernetes.watch
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from simulations.kserve import httproute, rules, standard

LOG = logging.getLogger(__name__)

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"
#: The ``controllerName`` of the gateway this process plays for KServe's routes.
GATEWAY_CONTROLLER = "rollwise.io/simulated-gateway"
_POD_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # k8s rand.SafeEncodeString

JsonObject = dict[str, Any]
Key = tuple[str, str]


@dataclass(frozen=True)
class RevisionEvent:
    """A revision was created, or a Standard-mode ReplicaSet got pods: the world may start a
    model endpoint for it.

    For Standard mode ``revision`` is the ReplicaSet (``{deployment}-{pod-template-hash}``),
    ``deployment`` the Deployment (``{isvc}[-{predictor name}]-predictor``) and ``pod_name``
    the name its pod gets (``{replicaset}-{suffix}``); both are empty for a Knative revision.
    """

    namespace: str
    isvc: str
    revision: str
    predictor: Mapping[str, Any]
    deployment: str = ""
    pod_name: str = ""


class _CustomObjects(Protocol):
    """The part of ``kubernetes.client.CustomObjectsApi`` this controller uses."""

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> Any: ...

    def patch_namespaced_custom_object_status(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any
    ) -> Any: ...

    def list_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str
    ) -> Any: ...

    def list_cluster_custom_object(self, group: str, version: str, plural: str) -> Any: ...

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: Any
    ) -> Any: ...

    def replace_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any
    ) -> Any: ...

    def delete_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> Any: ...


class _Watch(Protocol):
    """The part of ``kubernetes.watch.Watch`` this controller uses."""

    def stream(
        self, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Iterator[JsonObject]: ...

    def stop(self) -> None: ...


_new_watch: Callable[[], _Watch] = kubernetes.watch.Watch


@dataclass
class _Timer:
    """When something started by the simulation becomes ready, or fails (delay ``None``)."""

    ready_at: float | None
    failed_at: float | None

    @classmethod
    def starting(cls, now: float, delay: float | None, deadline: float) -> _Timer:
        if delay is None:
            return cls(None, now + deadline)
        return cls(now + max(delay, 0.0), None)

    @property
    def due(self) -> float:
        due = self.ready_at if self.ready_at is not None else self.failed_at
        assert due is not None
        return due

    def readiness(self, now: float, failed: rules.Readiness) -> rules.Readiness:
        if self.ready_at is not None and now >= self.ready_at:
            return rules.READY_REVISION
        if self.failed_at is not None and now >= self.failed_at:
            return failed
        return rules.PENDING


@dataclass
class _RevisionRecord:
    revision: rules.Revision
    timer: _Timer

    def at(self, now: float) -> rules.Revision:
        return replace(self.revision, readiness=self.timer.readiness(now, rules.NEVER_READY))


@dataclass
class _Pods:
    """The pods of one Standard-mode ReplicaSet, since it last got any."""

    deployment: str
    pod_name: str
    timer: _Timer


@dataclass
class _Tracked:
    """Simulated children of one InferenceService (one uid)."""

    uid: str
    knative: rules.KnativeService | None = None
    revisions: list[_RevisionRecord] = field(default_factory=list)
    #: The spec KServe's webhook last admitted (what is served while a newer one is refused).
    admitted: rules.InferenceService | None = None
    #: Standard mode: predictor Deployments by name, pods by ReplicaSet, pod sets started.
    deployments: dict[str, standard.Deployment] = field(default_factory=dict)
    pods: dict[str, _Pods] = field(default_factory=dict)
    pod_starts: int = 0
    #: What we last sent and what the API server gave back for it: if the server normalises
    #: a field (schema pruning or defaulting), the same write is not sent again and again.
    last_sent: JsonObject | None = None
    last_returned: JsonObject | None = None


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> JsonObject:
    """An RFC 7386 JSON merge patch turning ``old`` into ``new`` (lists are replaced)."""
    patch: JsonObject = {key: None for key in old if key not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            sub = merge_patch(before, value)
            if sub:
                patch[key] = sub
        elif key not in old or before != value:
            patch[key] = copy.deepcopy(value)
    return patch


def _key(obj: Mapping[str, Any]) -> Key:
    metadata = obj["metadata"]
    return str(metadata["namespace"]), str(metadata["name"])


class SimulatedKServe:
    """KServe in Serverless mode for the InferenceServices of one namespace (or all)."""

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        *,
        namespace: str | None = None,
        ready_delay: Callable[[Mapping[str, Any]], float | None] = lambda predictor: 1.0,
        on_revision_created: Callable[[RevisionEvent], None] | None = None,
        on_revision_deleted: Callable[[str, str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        progress_deadline: float = 10.0,
        settings: rules.Settings = rules.DEFAULT_SETTINGS,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        watch_timeout: int = 30,
        accept_routes: bool = True,
    ) -> None:
        """``progress_deadline``: seconds until a never-ready revision (or Standard-mode
        ReplicaSet) is reported failed (Knative's and the Deployment's default is 600 s; the
        simulation shortens it). ``wall_clock`` stamps the conditions' ``lastTransitionTime``;
        ``clock`` drives readiness timers. ``accept_routes``: also write, as the gateway,
        the status of the HTTPRoutes of Standard-mode objects (turn it off when a gateway
        implementation runs in the world).
        """
        self._api: _CustomObjects = kubernetes.client.CustomObjectsApi(api_client)
        self._namespace = namespace
        self._ready_delay = ready_delay
        self._on_created = on_revision_created
        self._on_deleted = on_revision_deleted
        self._clock = clock
        self._progress_deadline = progress_deadline
        self._settings = settings
        self._wall_clock = wall_clock
        self._watch_timeout = watch_timeout
        self._accept_routes = accept_routes

        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._cache: dict[Key, JsonObject] = {}
        self._tracked: dict[Key, _Tracked] = {}
        self._queue: dict[Key, None] = {}
        self._timers: list[tuple[float, int, Key]] = []
        self._timer_seq = 0
        self._watch: _Watch | None = None
        self._threads: list[threading.Thread] = []

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the watch and the worker threads."""
        if self._threads:
            raise RuntimeError("SimulatedKServe already started")
        self._stopping.clear()
        for target, name in ((self._watch_loop, "watch"), (self._work_loop, "worker")):
            thread = threading.Thread(target=target, name=f"simulated-kserve-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop and join the threads, waiting at most ``timeout`` seconds in all."""
        self._stopping.set()
        watch = self._watch
        if watch is not None:
            watch.stop()
        with self._wakeup:
            self._wakeup.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                LOG.warning("simulated KServe thread %s did not stop in time", thread.name)
        self._threads = []

    def __enter__(self) -> SimulatedKServe:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def revisions(self, namespace: str, name: str) -> list[rules.Revision]:
        """The revisions of an InferenceService with their readiness now, oldest first."""
        now = self._clock()
        with self._lock:
            tracked = self._tracked.get((namespace, name))
            records = list(tracked.revisions) if tracked else []
        return [record.at(now) for record in records]

    def enqueue(self, namespace: str, name: str) -> None:
        """Ask for a reconcile of one InferenceService, read afresh from the API server (as if
        a watch event had delivered it); for callers that run without the watch thread."""
        with self._wakeup:
            self._cache.pop((namespace, name), None)
            self._enqueue_locked((namespace, name))

    def knative_service(self, namespace: str, name: str) -> rules.KnativeService | None:
        """The simulated child Knative Service, for tests and the world."""
        with self._lock:
            tracked = self._tracked.get((namespace, name))
            return tracked.knative if tracked else None

    # --- the informer -----------------------------------------------------------------------

    def _list(self) -> tuple[list[JsonObject], str]:
        if self._namespace is None:
            listing = self._api.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        else:
            listing = self._api.list_namespaced_custom_object(
                GROUP, VERSION, self._namespace, PLURAL
            )
        return list(listing.get("items") or []), str(listing["metadata"]["resourceVersion"])

    def _stream_events(self, resource_version: str) -> Iterator[JsonObject]:
        """Watch events from ``resource_version``; raises ``ApiException(410)`` when too old."""
        watch = _new_watch()
        self._watch = watch
        kwargs: dict[str, Any] = {
            "resource_version": resource_version,
            "timeout_seconds": self._watch_timeout,
            "allow_watch_bookmarks": True,
            "_request_timeout": (10, self._watch_timeout + 10),
        }
        try:
            if self._namespace is None:
                stream = watch.stream(
                    self._api.list_cluster_custom_object, GROUP, VERSION, PLURAL, **kwargs
                )
            else:
                stream = watch.stream(
                    self._api.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self._namespace,
                    PLURAL,
                    **kwargs,
                )
            yield from stream
        finally:
            watch.stop()
            self._watch = None

    def _relist(self) -> str:
        items, resource_version = self._list()
        seen = {_key(item): item for item in items}
        with self._wakeup:
            for key in set(self._cache) - set(seen):
                del self._cache[key]
                self._enqueue_locked(key)
            for key, item in seen.items():
                self._cache[key] = item
                self._enqueue_locked(key)
        return resource_version

    def _watch_loop(self) -> None:
        resource_version: str | None = None
        backoff = 0.2
        while not self._stopping.is_set():
            try:
                if resource_version is None:
                    resource_version = self._relist()
                for event in self._stream_events(resource_version):
                    if self._stopping.is_set():
                        return
                    resource_version = self._handle_event(event, resource_version)
                backoff = 0.2
            except ApiException as exc:
                if exc.status == 410:
                    LOG.info("InferenceService watch expired (410 Gone); re-listing")
                    resource_version = None
                    continue
                LOG.warning("InferenceService watch failed: %s %s", exc.status, exc.reason)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                # e.g. 429 "storage is (re)initializing" right after the CRD is established.
                if self._stopping.is_set():
                    return
                LOG.warning("InferenceService watch interrupted: %s", exc)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:
                if self._stopping.is_set():
                    return
                LOG.exception("InferenceService watch failed")
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _handle_event(self, event: Mapping[str, Any], resource_version: str) -> str:
        kind = event.get("type")
        obj: JsonObject = event.get("raw_object") or event.get("object") or {}
        new_version = str((obj.get("metadata") or {}).get("resourceVersion") or resource_version)
        if kind == "BOOKMARK":
            return new_version
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            LOG.warning("unexpected watch event %r", kind)
            return resource_version
        key = _key(obj)
        with self._wakeup:
            if kind == "DELETED":
                self._cache.pop(key, None)
            else:
                self._cache[key] = obj
            self._enqueue_locked(key)
        return new_version

    # --- the work queue ---------------------------------------------------------------------

    def _enqueue_locked(self, key: Key) -> None:
        self._queue[key] = None
        self._wakeup.notify_all()

    def _schedule_locked(self, key: Key, at: float) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (at, self._timer_seq, key))
        self._wakeup.notify_all()

    def _pop_due_locked(self) -> Key | None:
        now = self._clock()
        while self._timers and self._timers[0][0] <= now:
            self._queue[heapq.heappop(self._timers)[2]] = None
        if not self._queue:
            return None
        key = next(iter(self._queue))
        del self._queue[key]
        return key

    def _next_key(self) -> Key | None:
        """The next key to reconcile, waiting for one (or for a timer) while running."""
        with self._wakeup:
            while not self._stopping.is_set():
                key = self._pop_due_locked()
                if key is not None:
                    return key
                # A fake clock may move without notifying us: look again at least every 0.2 s.
                wait = 0.2
                if self._timers:
                    wait = min(wait, self._timers[0][0] - self._clock())
                self._wakeup.wait(max(wait, 0.001))
        return None

    def run_pending(self, max_reconciles: int = 1000) -> int:
        """Reconcile, in this thread, everything queued or due by ``clock`` now.

        For a caller that drives a fake clock without starting the threads (tests, a
        deterministic world); returns how many reconciles ran.
        """
        for count in range(max_reconciles):
            with self._lock:
                key = self._pop_due_locked()
            if key is None:
                return count
            self.reconcile(key)
        raise RuntimeError(f"still busy after {max_reconciles} reconciles")

    def _work_loop(self) -> None:
        while True:
            key = self._next_key()
            if key is None:
                return
            try:
                self.reconcile(key)
            except Exception:
                LOG.exception("reconcile of InferenceService %s/%s failed", *key)
                with self._wakeup:
                    self._schedule_locked(key, self._clock() + 1.0)

    # --- one reconcile ----------------------------------------------------------------------

    def reconcile(self, key: Key, max_conflicts: int = 5) -> None:
        """Reconcile one InferenceService now (the worker calls this; tests may too).

        Reads the watch cache, or the API server when the cache does not have the object.
        """
        with self._lock:
            obj = self._cache.get(key)
        if obj is None:
            obj = self._get(key)
        for _ in range(max_conflicts):
            if obj is None:
                self._forget(key)
                return
            if (obj.get("metadata") or {}).get("deletionTimestamp"):
                return  # KServe stops at deletion; the children go with the object.
            try:
                self._reconcile_object(key, obj)
                return
            except ApiException as exc:
                if exc.status not in (404, 409):
                    raise
                LOG.debug("status write for %s/%s: %s; re-reading", *key, exc.status)
                obj = self._get(key)
        with self._wakeup:
            self._enqueue_locked(key)

    def _get(self, key: Key) -> JsonObject | None:
        try:
            obj: JsonObject = self._api.get_namespaced_custom_object(
                GROUP, VERSION, key[0], PLURAL, key[1]
            )
        except ApiException as exc:
            if exc.status == 404:
                with self._lock:
                    self._cache.pop(key, None)
                return None
            raise
        with self._lock:
            self._cache[key] = obj
        return obj

    def _tracked_for(self, key: Key, uid: str) -> _Tracked:
        with self._lock:
            tracked = self._tracked.get(key)
        if tracked is not None and tracked.uid == uid:
            return tracked
        if tracked is not None:
            self._forget(key)  # deleted and re-created under the same name
        tracked = _Tracked(uid=uid)
        with self._lock:
            self._tracked[key] = tracked
        return tracked

    def _reconcile_object(self, key: Key, obj: JsonObject) -> None:
        """Admission first (what KServe's webhook would have refused is not acted on), then
        the reconcile of the object's deployment mode, then the status write."""
        tracked = self._tracked_for(key, str(obj["metadata"]["uid"]))
        current: JsonObject = obj.get("status") or {}
        isvc = rules.InferenceService.from_object(obj)
        recorded_mode = str(current.get("deploymentMode") or "")
        refusal = standard.admission_error(isvc, tracked.admitted, recorded_mode, self._settings)
        if refusal is None:
            tracked.admitted = isvc
        else:
            LOG.warning("InferenceService %s/%s: %s", *key, refusal)
        acting = tracked.admitted
        mode = standard.deployment_mode(isvc.annotations, recorded_mode, self._settings)
        now = self._wall_clock()
        if acting is None or mode == standard.MODEL_MESH:
            shown = mode if mode != standard.KNATIVE else self._settings.deployment_mode
            status = standard.initial_status(current, shown, now)
        elif mode == standard.STANDARD:
            status = self._reconcile_standard(key, tracked, acting, current)
        else:
            status = self._reconcile_knative(key, tracked, acting, current)
        self._write_status(key, tracked, obj, standard.admit(status, current, refusal, now))

    def _reconcile_knative(
        self, key: Key, tracked: _Tracked, isvc: rules.InferenceService, current: JsonObject
    ) -> JsonObject:
        now = self._clock()
        with self._lock:
            revisions = [record.at(now) for record in tracked.revisions]
            knative = tracked.knative
        result = rules.reconcile(
            isvc, current, knative, revisions, self._wall_clock(), self._settings
        )
        created = self._record(key, tracked, result)
        self._notify_created(key, created)
        if result.error is not None:
            LOG.warning("InferenceService %s/%s: %s", *key, result.error)
        if result.requeue:
            with self._wakeup:
                self._enqueue_locked(key)
        return result.status

    def _reconcile_standard(
        self, key: Key, tracked: _Tracked, isvc: rules.InferenceService, current: JsonObject
    ) -> JsonObject:
        """One Standard-mode pass: the pure reconcile over the in-memory Deployments (pods'
        readiness from their timers) and the routes as read; then the route writes, the
        gateway's status on them, and the pods started or stopped for the world."""
        now = self._clock()
        with self._lock:
            before = {
                name: self._with_readiness(deployment, tracked, now)
                for name, deployment in tracked.deployments.items()
            }
        names = (rules.predictor_service_name(isvc.name), isvc.name)
        routes = {name: self._get_route(key[0], name) for name in names}
        result = standard.reconcile(
            isvc, current, before, routes, self._wall_clock(), self._settings
        )
        for write in result.route_writes:
            self._write_route(key[0], write)
        routes_changed = False
        if self._accept_routes:
            routes_changed = self._accept(key[0], names, result.services)
        self._record_pods(key, tracked, isvc, result.deployments)
        with self._wakeup:
            if result.requeue or result.route_writes or routes_changed:
                self._enqueue_locked(key)
            if result.requeue_after is not None:
                self._schedule_locked(key, self._clock() + result.requeue_after)
        return result.status

    def _with_readiness(
        self, deployment: standard.Deployment, tracked: _Tracked, now: float
    ) -> standard.Deployment:
        """The Deployment with each ReplicaSet's readiness as its pods' timer says now."""
        sets = []
        for rs in deployment.replica_sets:
            pods = tracked.pods.get(rs.name)
            readiness = (
                pods.timer.readiness(now, standard.MODEL_LOAD_FAILED)
                if pods is not None and rs.replicas > 0
                else rules.PENDING
            )
            sets.append(replace(rs, readiness=readiness))
        return replace(deployment, replica_sets=tuple(sets))

    def _record_pods(
        self,
        key: Key,
        tracked: _Tracked,
        isvc: rules.InferenceService,
        deployments: Mapping[str, standard.Deployment],
    ) -> None:
        """Keep the Deployments; start timers (and tell the world) for ReplicaSets that got
        pods, and tell it about those whose pods are gone."""
        now = self._clock()
        running = {
            rs.name: (deployment.name, rs)
            for deployment in deployments.values()
            for rs in deployment.pod_sets()
        }
        started: list[RevisionEvent] = []
        stopped: list[str] = []
        with self._wakeup:
            tracked.deployments = dict(deployments)
            for name in [n for n in tracked.pods if n not in running]:
                del tracked.pods[name]
                stopped.append(name)
            for name, (deployment, rs) in running.items():
                if name in tracked.pods:
                    continue
                tracked.pod_starts += 1
                suffix = _pod_suffix(f"{tracked.uid}/{name}/{tracked.pod_starts}")
                timer = _Timer.starting(
                    now, self._ready_delay(rs.predictor), self._progress_deadline
                )
                tracked.pods[name] = _Pods(deployment, f"{name}-{suffix}", timer)
                self._schedule_locked(key, timer.due)
                started.append(RevisionEvent(key[0], isvc.name, name, rs.predictor,
                                             deployment, f"{name}-{suffix}"))
        for name in stopped:
            self._notify_deleted(key, name)
        for event in started:
            self._notify(event)

    def ready_backends(self, namespace: str, service: str) -> list[str]:
        """The ReplicaSets whose pods are ready behind a Standard-mode predictor Service
        (an EndpointSlice's view of it), for the world's traffic."""
        now = self._clock()
        with self._lock:
            found = []
            for (ns, _), tracked in self._tracked.items():
                if ns != namespace or service not in tracked.deployments:
                    continue
                for rs in tracked.deployments[service].pod_sets():
                    pods = tracked.pods.get(rs.name)
                    if pods is not None and pods.timer.readiness(
                        now, standard.MODEL_LOAD_FAILED
                    ).is_ready:
                        found.append(rs.name)
            return found

    def deployments(self, namespace: str, name: str) -> dict[str, standard.Deployment]:
        """The simulated predictor Deployments of a Standard-mode InferenceService."""
        with self._lock:
            tracked = self._tracked.get((namespace, name))
            return dict(tracked.deployments) if tracked else {}

    # --- HTTPRoutes (and the gateway's status on them) --------------------------------------

    def _get_route(self, namespace: str, name: str) -> JsonObject | None:
        try:
            route: JsonObject = self._api.get_namespaced_custom_object(
                httproute.GATEWAY_GROUP, httproute.GATEWAY_VERSION, namespace,
                httproute.HTTPROUTES, name,
            )  # fmt: skip
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return route

    def _write_route(self, namespace: str, write: standard.RouteWrite) -> None:
        """Create, or update with the resourceVersion read (a 409 fails the reconcile,
        which is then retried on a fresh read, as controller-runtime's requeue does)."""
        args = (httproute.GATEWAY_GROUP, httproute.GATEWAY_VERSION, namespace, httproute.HTTPROUTES)
        if not write.resource_version:
            self._api.create_namespaced_custom_object(*args, write.body)
            return
        body = copy.deepcopy(write.body)
        body["metadata"]["resourceVersion"] = write.resource_version
        self._api.replace_namespaced_custom_object(*args, write.name, body)

    def _accept(self, namespace: str, names: tuple[str, ...], services: frozenset[str]) -> bool:
        """The gateway KServe's routes point at: status at each route's generation."""
        changed = False
        for name in names:
            route = self._get_route(namespace, name)
            if route is None:
                continue
            status = httproute.gateway_status(route, services, GATEWAY_CONTROLLER,
                                             self._wall_clock())
            if status == (route.get("status") or {}):
                continue
            body = {"metadata": {"resourceVersion": route["metadata"]["resourceVersion"]},
                    "status": status}
            self._api.patch_namespaced_custom_object_status(
                httproute.GATEWAY_GROUP, httproute.GATEWAY_VERSION, namespace,
                httproute.HTTPROUTES, name, body,
            )  # fmt: skip
            changed = True
        return changed

    def _delete_routes(self, namespace: str, name: str, uid: str) -> None:
        """What the garbage collector does for routes owned by a deleted InferenceService."""
        for route_name in (rules.predictor_service_name(name), name):
            route = self._get_route(namespace, route_name)
            owners = (route or {}).get("metadata", {}).get("ownerReferences") or []
            if not any(o.get("uid") == uid for o in owners):
                continue
            try:
                self._api.delete_namespaced_custom_object(
                    httproute.GATEWAY_GROUP, httproute.GATEWAY_VERSION, namespace,
                    httproute.HTTPROUTES, route_name,
                )  # fmt: skip
            except ApiException as exc:
                if exc.status != 404:
                    raise

    def _write_status(
        self, key: Key, tracked: _Tracked, obj: JsonObject, result_status: JsonObject
    ) -> None:
        """``updateStatus``: a merge patch of what changed, fenced by resourceVersion."""
        current: JsonObject = obj.get("status") or {}
        if result_status == current:
            return
        if current == tracked.last_returned and result_status == tracked.last_sent:
            return  # the server normalised our last write; sending it again changes nothing
        body = {
            "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
            "status": merge_patch(current, result_status),
        }
        written: JsonObject = self._api.patch_namespaced_custom_object_status(
            GROUP, VERSION, key[0], PLURAL, key[1], body
        )
        with self._wakeup:
            tracked.last_sent = copy.deepcopy(result_status)
            tracked.last_returned = copy.deepcopy(written.get("status") or {})
            self._cache[key] = written
            # The write re-triggers KServe (its ``For`` watch has no predicate); the watch
            # event would too, and the queue merges the two.
            self._enqueue_locked(key)

    def _record(
        self, key: Key, tracked: _Tracked, result: rules.ReconcileResult
    ) -> list[rules.Revision]:
        """Keep the new Knative state; start the readiness timers of new revisions."""
        now = self._clock()
        created: list[rules.Revision] = []
        with self._wakeup:
            tracked.knative = result.knative_service
            for revision in result.revisions_to_create:
                timer = _Timer.starting(
                    now, self._ready_delay(revision.predictor), self._progress_deadline
                )
                tracked.revisions.append(_RevisionRecord(revision, timer))
                self._schedule_locked(key, timer.due)
                created.append(revision)
        return created

    def _notify_created(self, key: Key, created: list[rules.Revision]) -> None:
        for revision in created:
            self._notify(RevisionEvent(key[0], key[1], revision.name, revision.predictor))

    def _notify(self, event: RevisionEvent) -> None:
        if self._on_created is None:
            return
        try:
            self._on_created(event)
        except Exception:
            LOG.exception("on_revision_created failed for %s", event.revision)

    def _notify_deleted(self, key: Key, revision: str) -> None:
        if self._on_deleted is None:
            return
        try:
            self._on_deleted(key[0], key[1], revision)
        except Exception:
            LOG.exception("on_revision_deleted failed for %s", revision)

    def _forget(self, key: Key) -> None:
        """The InferenceService is gone: its Knative Service and revisions go with it, and
        in Standard mode its Deployments (pods) and the HTTPRoutes it owned."""
        with self._lock:
            tracked = self._tracked.pop(key, None)
        if tracked is None:
            return
        if tracked.deployments:
            self._delete_routes(key[0], key[1], tracked.uid)
        for record in tracked.revisions:
            self._notify_deleted(key, record.revision.name)
        for name in tracked.pods:
            self._notify_deleted(key, name)


def _pod_suffix(seed: str) -> str:
    """The five characters Kubernetes appends to a ReplicaSet's pod names, derived from
    ``seed`` so that a run is reproducible."""
    digest = int(hashlib.sha256(seed.encode()).hexdigest()[:12], 16)
    out = []
    for _ in range(5):
        digest, digit = divmod(digest, len(_POD_SUFFIX_ALPHABET))
        out.append(_POD_SUFFIX_ALPHABET[digit])
    return "".join(out)
