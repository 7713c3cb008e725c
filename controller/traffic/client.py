"""The Kubernetes adapter for InferenceServices: list, get, merge-patch, and a watch that
wakes the reconciler. Thin: no decisions here. I/O."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from controller.traffic import Conflict, Rejected
from controller.traffic.kserve import GROUP, PLURAL, VERSION

log = structlog.get_logger(__name__)
REQUEST_TIMEOUT = 15.0


class KubeInferenceServices:
    """InferenceServices through the official client (CustomObjectsApi)."""

    def __init__(self, api_client: client.ApiClient, namespaces: list[str],
                 on_api_error: Callable[[str], None] | None = None) -> None:
        self._api = client.CustomObjectsApi(api_client)
        self._namespaces = namespaces
        self._on_api_error = on_api_error or (lambda verb: None)

    def _call(self, verb: str, fn: Callable[..., Any], *args: Any,
              expected: tuple[int, ...] = (), **kwargs: Any) -> Any:
        """Call the API; failures count as API errors except the ``expected`` statuses (a
        409 on a fenced write, a 404 on a get), which are outcomes, not faults."""
        try:
            return fn(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except ApiException as err:
            if err.status not in expected:
                self._on_api_error(verb)
            raise

    def list(self) -> list[Mapping[str, Any]]:
        if not self._namespaces:
            result = self._call("list", self._api.list_cluster_custom_object, GROUP, VERSION,
                                PLURAL)
            return list(result.get("items", []))
        items: list[Mapping[str, Any]] = []
        for namespace in self._namespaces:
            result = self._call("list", self._api.list_namespaced_custom_object, GROUP,
                                VERSION, namespace, PLURAL)
            items += result.get("items", [])
        return items

    def get(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        try:
            result: Mapping[str, Any] = self._call(
                "get", self._api.get_namespaced_custom_object, GROUP, VERSION, namespace,
                PLURAL, name, expected=(404,))
            return result
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def patch(self, namespace: str, name: str, patch: Mapping[str, Any]) -> Mapping[str, Any]:
        # A dict body is sent as application/merge-patch+json: null removes a field.
        try:
            result: Mapping[str, Any] = self._call(
                "patch", self._api.patch_namespaced_custom_object, GROUP, VERSION, namespace,
                PLURAL, name, patch, expected=(409,))
            return result
        except ApiException as err:
            if err.status == 409:
                raise Conflict(f"{namespace}/{name} changed since it was read") from err
            if err.status in (400, 413, 422):
                raise Rejected(f"{namespace}/{name}: the API server refused the write "
                               f"(HTTP {err.status}): {_api_message(err)}") from err
            raise

    def watch_forever(self, wake: Callable[[], None], stop: threading.Event) -> None:
        """Wake the reconciler on every change, so a deploy is seen within seconds rather
        than at the next tick. Restarts the watch on errors and on 410 Gone."""
        namespaces: list[str | None] = list(self._namespaces) or [None]
        threads = [threading.Thread(target=self._watch_one, args=(ns, wake, stop), daemon=True,
                                    name=f"watch-{ns or 'all'}") for ns in namespaces]
        for thread in threads:
            thread.start()

    def _watch_one(self, namespace: str | None, wake: Callable[[], None],
                   stop: threading.Event) -> None:
        while not stop.is_set():
            watcher = watch.Watch()
            try:
                if namespace is None:
                    stream = watcher.stream(self._api.list_cluster_custom_object, GROUP, VERSION,
                                            PLURAL, timeout_seconds=60)
                else:
                    stream = watcher.stream(self._api.list_namespaced_custom_object, GROUP,
                                            VERSION, namespace, PLURAL, timeout_seconds=60)
                for _event in stream:
                    wake()
                    if stop.is_set():
                        break
            except Exception as err:  # the watch is only a wake-up; the tick lists anyway
                log.warning("watch interrupted; restarting", namespace=namespace,
                            error=str(err))
                stop.wait(2.0)
            finally:
                watcher.stop()


def _api_message(err: ApiException) -> str:
    """The Status message of an API error, or its body, short."""
    try:
        message = str(json.loads(err.body or "{}").get("message") or "")
    except ValueError:
        message = ""
    return (message or str(err.body or err.reason or ""))[:500]
