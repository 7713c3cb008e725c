"""The Kubernetes client: connecting exactly as any client does (a kubeconfig, or the pod's
service account in-cluster), and ``KubeObjects``, the ``Objects`` of one resource (list,
get, merge-patch) straight from the API server; the daemon reads through the informer's
cache on top of it (``controller.kube.informer``). Thin: no decisions here.

Every failure leaves as ``controller.errors``' tree (``Conflict``, ``Rejected``,
``KubeError`` with the HTTP status), naming the object, chained with ``from``: callers
never see an ``ApiException`` or a ``urllib3`` error. I/O.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import structlog
import urllib3.exceptions
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from controller.errors import Conflict, KubeConfigError, KubeError, Rejected
from controller.routers.base import Ref, Resource
from controller.settings import KubernetesSettings

log = structlog.get_logger(__name__)
REQUEST_TIMEOUT = 15.0
# What a call to the API server can fail with, besides an answer with an error status.
TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, OSError)

__all__ = ["KubeConfigError", "KubeObjects", "api_client", "current_user", "user_agent"]


def user_agent(identity: str | None = None) -> str:
    """``rollwise/<version> (<identity>)``: the API server's audit log then tells the
    replicas (and the CLI) apart, where every client used to say ``OpenAPI-Generator``."""
    try:
        version = importlib.metadata.version("rollwise")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return f"rollwise/{version}" + (f" ({identity})" if identity else "")


def api_client(settings: KubernetesSettings, identity: str | None = None) -> client.ApiClient:
    """An ApiClient from settings: an explicit kubeconfig, in-cluster, or the default; its
    User-Agent names ``identity`` (the replica) when given."""
    try:
        if settings.kubeconfig is not None:
            api: client.ApiClient = config.new_client_from_config(
                config_file=str(settings.kubeconfig), context=settings.context)
        elif "KUBERNETES_SERVICE_HOST" in os.environ:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            api = client.ApiClient(configuration)
        else:
            api = config.new_client_from_config(context=settings.context)
    except (config.ConfigException, OSError, TypeError) as err:
        where = settings.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise KubeConfigError(f"cannot load Kubernetes configuration from {where}: {err}") \
            from err
    api.user_agent = user_agent(identity)
    return api


def current_user(api: client.ApiClient) -> str:
    """Who the API server thinks we are (for the audit trail of CLI commands)."""
    try:
        review = client.AuthenticationV1Api(api).create_self_subject_review(
            client.V1SelfSubjectReview(), _request_timeout=10)
    except (ApiException, *TRANSPORT_ERRORS) as err:
        raise failure("create", "a SelfSubjectReview (who am I)", err) from err
    info = review.status.user_info if review.status else None
    return (info.username if info and info.username else None) or "unknown"


def failure(verb: str, what: str, err: Exception) -> KubeError:
    """``err`` (an API answer or a transport error) in the exception tree, naming ``what``:
    a write's 409 is ``Conflict``, its 400/413/422 and an admission webhook's 403
    ``Rejected``."""
    if not isinstance(err, ApiException):
        return KubeError(f"cannot {verb} {what}: {type(err).__name__}: {err}")
    if verb == "patch" and err.status == 409:
        return Conflict(f"{what} changed since it was read", 409)
    if verb == "patch" and err.status == 403 and "denied the request" in _api_message(err):
        # An admission webhook's refusal (KServe's validator answers a bad spec.canary with
        # 403), not RBAC's: the same write cannot succeed.
        return Rejected(f"{what}: an admission webhook refused the write (HTTP 403): "
                        f"{_api_message(err)}", err.status)
    if verb == "patch" and err.status in (400, 413, 422):
        return Rejected(f"{what}: the API server refused the write (HTTP {err.status}): "
                        f"{_api_message(err)}", err.status)
    return KubeError(f"cannot {verb} {what}: HTTP {err.status}: {_api_message(err)}",
                     err.status)


class KubeObjects:
    """``Objects`` of ``resource`` through the official client (CustomObjectsApi), in
    ``namespaces`` (all when empty)."""

    def __init__(self, api_client: client.ApiClient, resource: Resource,
                 namespaces: list[str],
                 on_api_error: Callable[[str], None] | None = None) -> None:
        self._api = client.CustomObjectsApi(api_client)
        self.resource = resource
        self.namespaces = list(namespaces)
        self._on_api_error = on_api_error or (lambda verb: None)

    def _call(self, verb: str, what: str, fn: Callable[..., Any], *args: Any,
              expected: tuple[int, ...] = (), **kwargs: Any) -> Any:
        """Call the API, failures translated; they count as API errors except the
        ``expected`` statuses (a 409 on a fenced write, a 404 on a get), which are
        outcomes, not faults."""
        try:
            return fn(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except ApiException as err:
            if err.status not in expected:
                self._on_api_error(verb)
            raise failure(verb, what, err) from err
        except TRANSPORT_ERRORS as err:
            raise failure(verb, what, err) from err

    def list(self) -> list[Mapping[str, Any]]:
        r = self.resource
        if not self.namespaces:
            result = self._call("list", f"{r.plural} in all namespaces",
                                self._api.list_cluster_custom_object, r.group, r.version,
                                r.plural)
            return [self.with_kind(item) for item in result.get("items", [])]
        items: list[Mapping[str, Any]] = []
        for namespace in self.namespaces:
            result = self._call("list", f"{r.plural} in namespace {namespace}",
                                self._api.list_namespaced_custom_object, r.group, r.version,
                                namespace, r.plural)
            items += [self.with_kind(item) for item in result.get("items", [])]
        return items

    def with_kind(self, obj: Mapping[str, Any]) -> Mapping[str, Any]:
        """Items of a built-in type's List come without apiVersion and kind: say them, so
        each object goes to a router of its own kind."""
        if obj.get("kind"):
            return obj
        return {"apiVersion": self.resource.api_version, "kind": self.resource.kind, **obj}

    def get(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        r = self.resource
        try:
            result: Mapping[str, Any] = self._call(
                "get", f"{r.kind} {namespace}/{name}", self._api.get_namespaced_custom_object,
                r.group, r.version, namespace, r.plural, name, expected=(404,))
        except KubeError as err:
            if err.status == 404:
                return None
            raise
        return self.with_kind(result)

    def related(self, ref: Ref) -> Mapping[str, Any] | None:
        r = ref.resource
        if ref.selector is not None:
            return self._list_related(ref)
        if r.group == "":
            raise KubeError(f"cannot get {r.kind} {ref.namespace}/{ref.name}: only lists of "
                            "core objects are read")
        try:
            result: Mapping[str, Any] = self._call(
                "get", f"{r.kind} {ref.namespace}/{ref.name}",
                self._api.get_namespaced_custom_object, r.group, r.version, ref.namespace,
                r.plural, ref.name, expected=(404,))
        except KubeError as err:
            if err.status == 404:
                return None
            raise
        return result

    def _list_related(self, ref: Ref) -> Mapping[str, Any]:
        """The List of ``ref.resource`` in ``ref.namespace`` matching ``ref.selector``
        (core Services through CoreV1Api, the rest through the generic paths)."""
        r = ref.resource
        what = f"{r.plural} in namespace {ref.namespace}"
        selector = ref.selector or None
        if r.group == "":
            if r.plural != "services":
                raise KubeError(f"cannot list {what}: only core Services are read")
            core = client.CoreV1Api(self._api.api_client)
            listed = self._call("list", what, core.list_namespaced_service, ref.namespace,
                                label_selector=selector)
            result: Mapping[str, Any] = self._api.api_client.sanitize_for_serialization(listed)
            return result
        result = self._call("list", what, self._api.list_namespaced_custom_object, r.group,
                            r.version, ref.namespace, r.plural, label_selector=selector)
        return result

    def patch(self, namespace: str, name: str, patch: Mapping[str, Any]) -> Mapping[str, Any]:
        # A dict body is sent as application/merge-patch+json: null removes a field.
        r = self.resource
        result: Mapping[str, Any] = self._call(
            "patch", f"{r.kind} {namespace}/{name}", self._api.patch_namespaced_custom_object,
            r.group, r.version, namespace, r.plural, name, patch, expected=(409,))
        return result


def _api_message(err: ApiException) -> str:
    """The Status message of an API error, or its body, short."""
    try:
        message = str(json.loads(err.body or "{}").get("message") or "")
    except ValueError:
        message = ""
    return (message or str(err.body or err.reason or ""))[:500]
