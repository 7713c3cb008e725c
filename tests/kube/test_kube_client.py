"""KubeObjects at its boundary: the exact calls it makes for its resource, and every failure
translated into the exception tree naming the object (never an ApiException or a urllib3
error), with only real faults counted as API errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
import urllib3.exceptions
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controller.errors import Conflict, KubeError, Rejected
from controller.kube.client import KubeObjects
from controller.routers.kserve_knative import KNATIVE


class Answers:
    """CustomObjectsApi's calls, recorded; each answers with the next result or raises."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def _answer(self, verb: str, *args: Any, **kwargs: Any) -> Any:
        assert kwargs == {"_request_timeout": 15.0}
        self.calls.append((verb, args))
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def list_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> Any:
        return self._answer("list", *args, **kwargs)

    def get_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> Any:
        return self._answer("get", *args, **kwargs)

    def patch_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> Any:
        return self._answer("patch", *args, **kwargs)


def api_error(status: int, message: str = "") -> ApiException:
    err = ApiException(status=status, reason="Reason")
    err.body = json.dumps({"kind": "Status", "message": message})
    return err


def objects(*answers: Any) -> tuple[KubeObjects, Answers, list[str]]:
    counted: list[str] = []
    kube = KubeObjects(client.ApiClient(), KNATIVE.resource, ["models"],
                       on_api_error=counted.append)
    fake = Answers(*answers)
    kube._api = fake  # type: ignore[assignment]
    return kube, fake, counted


GVR = ("serving.kserve.io", "v1beta1")


def test_it_calls_the_api_for_its_resource_exactly() -> None:
    kube, api, counted = objects({"items": [{"a": 1}]}, {"b": 2}, {"c": 3})
    # Items of a List (built-in types) come without their kind: it is said, so that each
    # object goes to a router of its kind.
    typed = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService"}
    assert kube.list() == [{**typed, "a": 1}]
    assert kube.get("models", "churn") == {**typed, "b": 2}
    patch = {"metadata": {"resourceVersion": "7"}}
    assert kube.patch("models", "churn", patch) == {"c": 3}
    assert api.calls == [("list", (*GVR, "models", "inferenceservices")),
                         ("get", (*GVR, "models", "inferenceservices", "churn")),
                         ("patch", (*GVR, "models", "inferenceservices", "churn", patch))]
    assert counted == []


def test_a_gone_object_is_none_and_no_fault() -> None:
    kube, _, counted = objects(api_error(404))
    assert kube.get("models", "churn") is None and counted == []


def test_a_stale_write_is_a_conflict_and_no_fault() -> None:
    kube, _, counted = objects(api_error(409, "the object has been modified"))
    with pytest.raises(Conflict, match="InferenceService models/churn changed since"):
        kube.patch("models", "churn", {})
    assert counted == []


def test_an_invalid_write_is_rejected_with_the_api_servers_words() -> None:
    kube, _, counted = objects(api_error(422, "metadata.annotations: Too long"))
    with pytest.raises(Rejected, match=r"models/churn: .*HTTP 422.*Too long") as raised:
        kube.patch("models", "churn", {})
    assert raised.value.status == 422 and counted == ["patch"]


@pytest.mark.parametrize(("verb", "call", "answer", "named", "status"), [
    ("list", lambda k: k.list(), api_error(403, "forbidden: rollwise"),
     "cannot list inferenceservices in namespace models: HTTP 403: forbidden", 403),
    ("get", lambda k: k.get("models", "churn"), api_error(500, "etcd"),
     "cannot get InferenceService models/churn: HTTP 500: etcd", 500),
    ("patch", lambda k: k.patch("models", "churn", {}), api_error(404, "not found"),
     "cannot patch InferenceService models/churn: HTTP 404", 404),
])
def test_other_answers_are_kube_errors_naming_the_object(
        verb: str, call: Any, answer: ApiException, named: str, status: int) -> None:
    kube, _, counted = objects(answer)
    with pytest.raises(KubeError, match=named) as raised:
        call(kube)
    assert raised.value.status == status and counted == [verb]
    assert isinstance(raised.value.__cause__, ApiException)


def test_a_transport_failure_is_a_kube_error_without_a_status() -> None:
    refused = urllib3.exceptions.MaxRetryError(None, "/apis", "Connection refused")  # type: ignore[arg-type]
    kube, _, _ = objects(refused)
    with pytest.raises(KubeError, match="cannot list inferenceservices in namespace "
                                        "models: MaxRetryError") as raised:
        kube.list()
    assert raised.value.status is None


def test_an_admission_webhooks_refusal_is_rejected_and_rbacs_is_not() -> None:
    """KServe's validating webhook answers a bad spec.canary with 403; RBAC's 403 is a
    different fault (a missing grant), left a plain KubeError."""
    denied = ('admission webhook "inferenceservice.kserve-webhook-server.validator" denied '
              'the request: canary "rw-1" minReplicas (3) must not exceed stable predictor '
              'minReplicas (1)')
    kube, _, counted = objects(api_error(403, denied))
    with pytest.raises(Rejected, match=r"InferenceService models/churn: an admission webhook "
                                       r"refused the write \(HTTP 403\).*minReplicas") as raised:
        kube.patch("models", "churn", {})
    assert raised.value.status == 403 and counted == ["patch"]
    kube, _, _ = objects(api_error(403, 'inferenceservices "churn" is forbidden: User '
                                        '"system:serviceaccount:x:y" cannot patch resource'))
    with pytest.raises(KubeError) as forbidden:
        kube.patch("models", "churn", {})
    assert not isinstance(forbidden.value, Rejected)


def test_a_related_object_is_read_by_its_own_resource() -> None:
    from controller.routers.base import Ref
    from controller.routers.kserve_standard import HTTPROUTES

    kube, api, counted = objects({"kind": "HTTPRoute"}, api_error(404))
    assert kube.related(Ref(HTTPROUTES, "models", "iris")) == {"kind": "HTTPRoute"}
    assert kube.related(Ref(HTTPROUTES, "models", "iris-predictor")) is None
    assert api.calls == [
        ("get", ("gateway.networking.k8s.io", "v1", "models", "httproutes", "iris")),
        ("get", ("gateway.networking.k8s.io", "v1", "models", "httproutes", "iris-predictor"))]
    assert counted == []
