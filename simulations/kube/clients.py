"""Kubeconfig files and `kubernetes` API clients for the simulated control plane.

Every client made here has a default (connect, read) timeout, so a call against a
control plane whose etcd died errors out instead of hanging; a call may still
pass its own `_request_timeout`. Also the optimistic-concurrency helper
`update_with_retry` that the harness's own helpers use.

I/O: writes kubeconfig files; the clients talk to the API server.
Callers: simulations.kube.controlplane, the pytest plugin, tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import kubernetes.client
import kubernetes.config
import urllib3
import yaml
from kubernetes.client.exceptions import ApiException

__all__ = [
    "DEFAULT_REQUEST_TIMEOUT",
    "api_client_from_kubeconfig",
    "update_with_retry",
    "write_kubeconfig",
]

# (connect, read) seconds for calls that name no `_request_timeout` of their own.
# As long as the longest admission webhook timeout (30s); a watch that may stay
# silent longer must pass its own timeout.
DEFAULT_REQUEST_TIMEOUT: tuple[float, float] = (5.0, 30.0)
# Retry refused connections, but never a request the server may have received:
# urllib3 retries timed-out GETs three times by default, which turns one 30s
# timeout into two minutes when etcd is gone.
_RETRIES = urllib3.Retry(total=3, connect=3, read=0, status=0, redirect=0)
HTTP_CONFLICT = 409

T = TypeVar("T")


class _BoundedApiClient(kubernetes.client.ApiClient):
    """An ApiClient whose calls time out by default instead of waiting forever."""

    def call_api(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("_request_timeout") is None:
            kwargs["_request_timeout"] = DEFAULT_REQUEST_TIMEOUT
        return super().call_api(*args, **kwargs)


def api_client_from_kubeconfig(kubeconfig: Path) -> kubernetes.client.ApiClient:
    """A client for the identity and server `kubeconfig` names, with default timeouts."""
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(kubeconfig), client_configuration=configuration, persist_config=False
    )
    configuration.retries = _RETRIES
    return _BoundedApiClient(configuration)


def write_kubeconfig(path: Path, *, server: str, ca_cert: Path, user: str, token: str,
                     namespace: str) -> Path:
    """Write a single-context kubeconfig (also usable by kubectl) readable only by its owner."""
    cluster_name = "rollwise-simulation"
    context_name = f"{user}@{cluster_name}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": cluster_name,
             "cluster": {"server": server, "certificate-authority": str(ca_cert)}},
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {"name": context_name,
             "context": {"cluster": cluster_name, "user": user, "namespace": namespace}},
        ],
        "current-context": context_name,
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
    return path


def update_with_retry(read: Callable[[], T], mutate: Callable[[T], T],
                      write: Callable[[T], T], attempts: int = 5) -> T:
    """Read, mutate and write an object, starting over from a fresh read on HTTP 409.

    Kubernetes rejects a write whose resourceVersion is no longer current; the
    remedy is to re-read and re-apply the change, never to drop the version.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    for attempt in range(1, attempts + 1):
        try:
            return write(mutate(read()))
        except ApiException as error:
            if error.status != HTTP_CONFLICT or attempt == attempts:
                raise
    raise AssertionError("unreachable: the last attempt returns or raises")
