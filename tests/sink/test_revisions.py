"""Pod -> revision from the owner chain, on the in-memory fake."""

from __future__ import annotations

import pytest

from controller.errors import KubeError
from controller.sink.revisions import FakeOwners, Owner, RevisionMapper


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_knative_pod_maps_to_the_revision_that_owns_its_deployment() -> None:
    owners = FakeOwners()
    owners.knative_pod("models", "iris-predictor-00002", "iris-predictor-00002-deployment-"
                       "7c9f8d6b5-x2k4q", "iris-predictor-00002-deployment-7c9f8d6b5")
    mapper = RevisionMapper(owners)
    assert mapper.revision("models", "iris-predictor-00002-deployment-7c9f8d6b5-x2k4q") == (
        "iris-predictor-00002")


def test_a_standard_mode_pod_maps_to_its_deployment() -> None:
    owners = FakeOwners()
    replica_set = "iris-rw-3f2a-predictor-5d8c7b9f4"
    owners.standard_pod("models", "iris", "iris-rw-3f2a-predictor", f"{replica_set}-q7w2e",
                        replica_set)
    assert RevisionMapper(owners).revision(
        "models", "iris-rw-3f2a-predictor-5d8c7b9f4-q7w2e") == "iris-rw-3f2a-predictor"


def test_the_name_is_never_guessed() -> None:
    """A pod named like a Knative revision's, but whose Deployment no Revision owns, is the
    Deployment's; a pod the API server does not know, or a bare pod, is no revision."""
    owners = FakeOwners()
    owners.add("models", "Pod", "fake-predictor-00001-deployment-abc-xyz",
               Owner("apps/v1", "ReplicaSet", "rs"))
    owners.add("models", "ReplicaSet", "rs", Owner("apps/v1", "Deployment", "actual"))
    owners.add("models", "Deployment", "actual", None)
    owners.add("models", "Pod", "bare", None)
    owners.add("models", "Pod", "stateful-0", Owner("apps/v1", "StatefulSet", "stateful"))
    mapper = RevisionMapper(owners)
    assert mapper.revision("models", "fake-predictor-00001-deployment-abc-xyz") == "actual"
    assert mapper.revision("models", "iris-predictor-00001-deployment-abc-xyz") is None
    assert mapper.revision("models", "bare") is None
    assert mapper.revision("models", "stateful-0") is None
    # a pod in another namespace is another pod
    assert mapper.revision("other", "fake-predictor-00001-deployment-abc-xyz") is None


def test_answers_are_cached_and_pods_of_one_replica_set_share_it() -> None:
    owners = FakeOwners()
    for suffix in ("aaaaa", "bbbbb"):
        owners.knative_pod("models", "m-predictor-00001", f"m-rs-{suffix}", "m-rs")
    mapper = RevisionMapper(owners)
    for _ in range(100):
        assert mapper.revision("models", "m-rs-aaaaa") == "m-predictor-00001"
    assert len(owners.reads) == 3                    # pod, replicaset, deployment
    assert mapper.revision("models", "m-rs-bbbbb") == "m-predictor-00001"
    assert len(owners.reads) == 4                    # only the second pod


def test_the_cache_is_bounded() -> None:
    owners = FakeOwners()
    for i in range(10):
        owners.knative_pod("models", f"m-predictor-{i:05}", f"pod-{i}", f"rs-{i}")
    mapper = RevisionMapper(owners, capacity=4)
    for i in range(10):
        mapper.revision("models", f"pod-{i}")
    assert len(mapper._pods) == 4 and len(mapper._sets) == 4
    reads = len(owners.reads)
    mapper.revision("models", "pod-0")               # evicted: read again
    assert len(owners.reads) == reads + 3


def test_an_unknown_pod_is_asked_again_only_after_a_while() -> None:
    clock = Clock()
    owners = FakeOwners()
    mapper = RevisionMapper(owners, negative_seconds=30, clock=clock)
    assert mapper.revision("models", "early-pod") is None
    owners.knative_pod("models", "m-predictor-00001", "early-pod", "rs")
    clock.now = 10
    assert mapper.revision("models", "early-pod") is None      # cached "no revision"
    assert len(owners.reads) == 1
    clock.now = 31
    assert mapper.revision("models", "early-pod") == "m-predictor-00001"


def test_api_failures_are_kube_errors_and_not_cached() -> None:
    owners = FakeOwners()
    owners.knative_pod("models", "m-predictor-00001", "p", "rs")
    owners.fail = 503
    mapper = RevisionMapper(owners)
    with pytest.raises(KubeError, match="Pod models/p"):
        mapper.revision("models", "p")
    owners.fail = None
    assert mapper.revision("models", "p") == "m-predictor-00001"
