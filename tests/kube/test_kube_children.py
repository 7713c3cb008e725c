"""KubeChildren and KubeObjects' list reads at their boundary: the exact calls for each
write and read, creates and deletes idempotent, a stale fenced patch a Conflict (no fault),
every other failure a KubeError naming the object."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controller.errors import Conflict, KubeError
from controller.kube.children import KubeChildren
from controller.kube.client import KubeObjects
from controller.routers.base import Ref, Write
from controller.routers.deployment_gateway import DEPLOYMENTS, REPLICASETS, SERVICES
from controller.routers.kserve_standard import HTTPROUTES


class Recorder:
    """Any API method: recorded with its arguments, answered with the next answer."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, method: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            kwargs.pop("_request_timeout")
            self.calls.append((method, args, kwargs))
            answer = self.answers.pop(0) if self.answers else {}
            if isinstance(answer, BaseException):
                raise answer
            return answer
        return call


def api_error(status: int) -> ApiException:
    err = ApiException(status=status, reason="Reason")
    err.body = json.dumps({"kind": "Status", "message": f"status {status}"})
    return err


def children(*answers: Any) -> tuple[KubeChildren, Recorder, Recorder, list[str]]:
    counted: list[str] = []
    kube = KubeChildren(client.ApiClient(), on_api_error=counted.append)
    custom, core = Recorder(*answers), Recorder(*answers)
    kube._custom, kube._core = custom, core  # type: ignore[assignment]
    return kube, custom, core, counted


def test_each_write_is_the_exact_call() -> None:
    kube, custom, core, counted = children()
    body = {"metadata": {"name": "churn-canary"}, "spec": {"replicas": 2}}
    kube.apply([Write("create", DEPLOYMENTS, "models", "churn-canary", body),
                Write("patch", HTTPROUTES, "models", "churn", {"spec": {"rules": []}}),
                Write("delete", DEPLOYMENTS, "models", "churn-canary")])
    assert custom.calls == [
        ("create_namespaced_custom_object", ("apps", "v1", "models", "deployments", body), {}),
        ("patch_namespaced_custom_object", ("gateway.networking.k8s.io", "v1", "models",
                                            "httproutes", "churn", {"spec": {"rules": []}}), {}),
        ("delete_namespaced_custom_object", ("apps", "v1", "models", "deployments",
                                             "churn-canary"), {})]
    service = {"metadata": {"name": "churn-canary"}, "spec": {"ports": [
        {"name": "http", "port": 80, "targetPort": "http"}]}}
    kube.apply([Write("create", SERVICES, "models", "churn-canary", service),
                Write("delete", SERVICES, "models", "churn-canary")])
    (create, args, _), delete = core.calls
    assert create == "create_namespaced_service" and args[0] == "models"
    assert client.ApiClient().sanitize_for_serialization(args[1]) == {
        "apiVersion": "v1", "kind": "Service", **service}
    assert delete == ("delete_namespaced_service", ("churn-canary", "models"), {})
    assert counted == []


def test_creates_and_deletes_are_idempotent_and_a_stale_patch_a_conflict() -> None:
    kube, _, _, counted = children(api_error(409), api_error(404), api_error(409))
    kube.apply([Write("create", DEPLOYMENTS, "models", "churn-canary", {}),
                Write("delete", DEPLOYMENTS, "models", "churn-canary")])
    with pytest.raises(Conflict, match="HTTPRoute models/churn changed since"):
        kube.apply([Write("patch", HTTPROUTES, "models", "churn", {})])
    assert counted == []


def test_other_failures_are_kube_errors_naming_the_object_and_stop_the_rest() -> None:
    kube, custom, _, counted = children(api_error(403))
    with pytest.raises(KubeError, match="cannot create Deployment models/churn-canary: "
                                        "HTTP 403"):
        kube.apply([Write("create", DEPLOYMENTS, "models", "churn-canary", {}),
                    Write("patch", HTTPROUTES, "models", "churn", {})])
    assert len(custom.calls) == 1 and counted == ["create"]
    with pytest.raises(KubeError, match="only creating and deleting core Services"):
        kube.apply([Write("patch", SERVICES, "models", "churn", {})])


def test_lists_of_related_objects_are_read_by_label_selector() -> None:
    kube = KubeObjects(client.ApiClient(), DEPLOYMENTS, ["models"])
    custom = Recorder({"items": [{"metadata": {"name": "churn-abc"}}]})
    kube._api = custom  # type: ignore[assignment]
    listed = kube.related(Ref(REPLICASETS, "models", "", selector="app=churn"))
    assert listed == {"items": [{"metadata": {"name": "churn-abc"}}]}
    assert custom.calls == [("list_namespaced_custom_object",
                             ("apps", "v1", "models", "replicasets"),
                             {"label_selector": "app=churn"})]
    with pytest.raises(KubeError, match="only lists of core objects"):
        kube.related(Ref(SERVICES, "models", "churn"))
