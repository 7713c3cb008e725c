"""The real kube-apiserver (the simulated control plane) accepts every built-in object the
overlays install, admits the controller's pod under Pod Security "restricted", sends the
commands webhook exactly the writes that bring a command (its CEL match condition, as the
API server evaluates it), and gives the controller's account exactly the seal Secret and
its own name (SelfSubjectReview) with the shipped RBAC.

Mostly server-side dry runs; what is created (scratch namespaces, a webhook configuration
calling a recorder on 127.0.0.1, an admission policy) is removed afterwards. The custom
resources (cert-manager, Prometheus Operator) are left out: their CRDs are not installed
in the simulated control plane.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml
from admission_recorder import AdmissionRecorder
from deploy_helpers import (
    DEPLOY,
    OVERLAYS,
    WATCHED_EXAMPLE,
    Manifest,
    documented_ingress,
    find,
)
from kubernetes.client.exceptions import ApiException

from controller.kube.client import current_user
from simulations.kube.build import Binaries
from simulations.kube.controlplane import Cluster, ControlPlane

pytestmark = pytest.mark.e2e

Render = Callable[[Path], list[Manifest]]
KUBECTL_TIMEOUT_S = 60
CUSTOM_RESOURCES = {"cert-manager.io/v1", "monitoring.coreos.com/v1"}
GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
COMMANDS = "rollwise.io/commands"
# How long the API server may take to start using a new webhook configuration or
# admission policy (its informers pick them up asynchronously).
EFFECTIVE_WITHIN_S = 30.0
RBAC_KINDS = {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
UNWATCHED = "another-team"


def _kubectl(binaries: Binaries, cluster: Cluster, *args: str,
             stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binaries.kubectl), "--kubeconfig", str(cluster.admin_kubeconfig),
         "--request-timeout=30s", *args],
        input=stdin, capture_output=True, text=True, timeout=KUBECTL_TIMEOUT_S, check=False)


@pytest.fixture(scope="module")
def namespaced_cluster(render: Render, kube_binaries: Binaries,
                       tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A control plane of its own with the namespaced install's RBAC (and nothing
    cluster-wide for the controller), its watched namespaces and one it does not watch."""
    objects = render(DEPLOY / "overlays" / "namespaced")
    namespaces = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
                  for name in (*WATCHED_EXAMPLE, UNWATCHED)]
    manifest = tmp_path_factory.mktemp("namespaced-install") / "rbac.yaml"
    manifest.write_text(yaml.safe_dump_all(
        namespaces + [o for o in objects if o["kind"] in RBAC_KINDS]))
    with ControlPlane(manifests=[manifest], binaries=kube_binaries) as running:
        yield running


def _cluster_for(request: pytest.FixtureRequest, overlay: str) -> Cluster:
    """The session's control plane holds deploy/rbac (cluster-wide); the namespaced
    install gets its own."""
    fixture = "namespaced_cluster" if overlay == "namespaced" else "cluster"
    found: Cluster = request.getfixturevalue(fixture)
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_api_server_accepts_every_built_in_object(
        render: Render, kube_binaries: Binaries, request: pytest.FixtureRequest,
        overlay: str) -> None:
    objects = [o for o in render(DEPLOY / "overlays" / overlay)
               if o["apiVersion"] not in CUSTOM_RESOURCES]
    # The Ingress of docs/operations.md too, where the docs put it.
    result = _kubectl(kube_binaries, _cluster_for(request, overlay), "apply",
                      "--dry-run=server", "-f", "-",
                      stdin=yaml.safe_dump_all([*objects, documented_ingress()]))
    assert result.returncode == 0, result.stderr


def test_the_controller_pod_is_admitted_under_pod_security_restricted(
        render: Render, kube_binaries: Binaries, cluster: Cluster) -> None:
    objects = render(DEPLOY / "overlays" / "prod")
    template = find(objects, "Deployment", "rollwise-controller")["spec"]["template"]
    namespace = f"rollwise-psa-{uuid.uuid4().hex[:6]}"
    pod: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "rollwise-controller", "namespace": namespace,
                     "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }
    setup = [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": namespace, "labels": {
             "pod-security.kubernetes.io/enforce": "restricted",
             "pod-security.kubernetes.io/enforce-version": "latest"}}},
        # No controller-manager here creates service accounts; the pod names this one.
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": template["spec"]["serviceAccountName"], "namespace": namespace}},
    ]
    created = _kubectl(kube_binaries, cluster, "create", "-f", "-",
                       stdin=yaml.safe_dump_all(setup))
    assert created.returncode == 0, created.stderr
    try:
        result = _kubectl(kube_binaries, cluster, "create", "--dry-run=server", "-f", "-",
                          stdin=yaml.safe_dump(pod))
        assert result.returncode == 0, result.stderr
        assert "violate" not in result.stderr, result.stderr
    finally:
        _kubectl(kube_binaries, cluster, "delete", "namespace", namespace, "--wait=false")


# -- helpers for the tests that write -------------------------------------------------


def _uid() -> str:
    return uuid.uuid4().hex[:6]


@contextlib.contextmanager
def _namespace(admin_api: kubernetes.client.ApiClient, name: str) -> Iterator[str]:
    core = kubernetes.client.CoreV1Api(admin_api)
    core.create_namespace(kubernetes.client.V1Namespace(
        metadata=kubernetes.client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        core.delete_namespace(name)


def _isvc(name: str, annotations: dict[str, str] | None = None,
          labels: dict[str, str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if annotations:
        metadata["annotations"] = annotations
    if labels:
        metadata["labels"] = labels
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InferenceService",
            "metadata": metadata,
            "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"},
                                             "storageUri": f"s3://models/{name}/v1"}}}}


def _eventually(what: str, attempt: Callable[[], bool]) -> None:
    """Retry until the API server shows the new configuration in effect (bounded)."""
    deadline = time.monotonic() + EFFECTIVE_WITHIN_S
    while not attempt():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not in effect after {EFFECTIVE_WITHIN_S:.0f}s")
        time.sleep(0.2)


@contextlib.contextmanager
def _installed(binaries: Binaries, cluster: Cluster, objects: list[Manifest]) -> Iterator[None]:
    """Objects created as admin for the duration of the block."""
    manifest = yaml.safe_dump_all(objects)
    created = _kubectl(binaries, cluster, "create", "-f", "-", stdin=manifest)
    assert created.returncode == 0, created.stderr
    try:
        yield
    finally:
        _kubectl(binaries, cluster, "delete", "--ignore-not-found", "-f", "-", stdin=manifest)


@contextlib.contextmanager
def _recording_webhooks(binaries: Binaries, cluster: Cluster, objects: list[Manifest],
                        workdir: Path, probe_namespace: str) -> Iterator[AdmissionRecorder]:
    """The shipped webhook configuration, registered with every webhook calling a
    recorder; in effect (a probe write in `probe_namespace` reached it) when yielded."""
    shipped = find(objects, "MutatingWebhookConfiguration", "rollwise")
    with (cluster.admin_api_client() as admin_api,
          AdmissionRecorder(workdir, shipped) as recorder):
        custom = kubernetes.client.CustomObjectsApi(admin_api)
        config = recorder.configuration(f"rollwise-check-{_uid()}")
        with _installed(binaries, cluster, [config]):
            custom.create_namespaced_custom_object(GROUP, VERSION, probe_namespace, PLURAL,
                                                   _isvc("webhook-probe"))
            tries = iter(range(1_000_000))

            def probe_reaches_the_webhook() -> bool:
                custom.patch_namespaced_custom_object(
                    GROUP, VERSION, probe_namespace, PLURAL, "webhook-probe",
                    {"metadata": {"annotations": {COMMANDS: str(next(tries))}}})
                return any(c.name == "webhook-probe" and c.path == "/commands"
                           for c in recorder.take())

            _eventually(f"webhook configuration {config['metadata']['name']}",
                        probe_reaches_the_webhook)
            custom.delete_namespaced_custom_object(GROUP, VERSION, probe_namespace, PLURAL,
                                                   "webhook-probe")
            recorder.take()
            yield recorder


def _calls_per_write(admin_api: kubernetes.client.ApiClient, namespace: str,
                     recorder: AdmissionRecorder) -> dict[str, list[str]]:
    """Every kind of write a person, KServe or the controller makes, and which webhook
    calls ("<path> <operation>") each one caused."""
    custom = kubernetes.client.CustomObjectsApi(admin_api)
    one = json.dumps([{"id": "c1", "command": "approve"}])
    two = json.dumps([{"id": "c1", "command": "approve"}, {"id": "c2", "command": "pause"}])

    def create(body: dict[str, Any]) -> None:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    def patch(name: str, body: dict[str, Any]) -> Callable[[], object]:
        return lambda: custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, body)

    writes: list[tuple[str, Callable[[], object]]] = [
        ("create without annotations", lambda: create(_isvc("plain"))),
        ("create with a command", lambda: create(_isvc("commanded", {COMMANDS: one}))),
        ("annotate something else", patch("commanded", {"metadata": {"annotations": {
            "example.com/note": "x"}}})),
        ("edit the spec, commands unchanged", patch("commanded", {"spec": {"predictor": {
            "model": {"storageUri": "s3://models/commanded/v2"}}}})),
        ("add a command", patch("commanded", {"metadata": {"annotations": {COMMANDS: two}}})),
        ("first annotation is a command", patch("plain", {"metadata": {"annotations": {
            COMMANDS: one}}})),
        ("drop the commands", patch("commanded", {"metadata": {"annotations": {
            COMMANDS: None}}})),
        ("create opted out with a command", lambda: create(_isvc(
            "opted-out", {COMMANDS: one}, {"rollwise.io/webhook": "disabled"}))),
        # The canary guard is called only for objects that opted in (its match condition).
        ("opt in", patch("plain", {"metadata": {"annotations": {
            "rollwise.io/policy": "fast"}}})),
        ("edit the spec of an opted-in model", patch("plain", {"spec": {"predictor": {
            "model": {"storageUri": "s3://models/plain/v2"}}}})),
    ]
    calls = {}
    for what, write in writes:
        write()
        # Distinct calls: a patch that meets a concurrent write (the simulated KServe
        # updating the status) is retried inside the API server, admission included.
        calls[what] = sorted({f"{c.path} {c.operation}" for c in recorder.take()})
    return calls


# Which writes reach which webhook, wherever the webhooks apply.
CALLS_WHERE_SELECTED = {
    "create without annotations": [],
    "create with a command": ["/commands CREATE"],
    "annotate something else": [],
    "edit the spec, commands unchanged": [],
    "add a command": ["/commands UPDATE"],
    "first annotation is a command": ["/commands UPDATE"],
    "drop the commands": [],
    "create opted out with a command": [],
    "opt in": ["/mutate UPDATE"],
    "edit the spec of an opted-in model": ["/mutate UPDATE"],
}


def test_the_commands_webhook_gets_exactly_the_writes_that_bring_a_command(
        render: Render, kube_binaries: Binaries, cluster: Cluster,
        admin_api: kubernetes.client.ApiClient, tmp_path: Path) -> None:
    objects = render(DEPLOY / "overlays" / "prod")
    with (_namespace(admin_api, f"rollwise-cel-{_uid()}") as namespace,
          _recording_webhooks(kube_binaries, cluster, objects, tmp_path,
                              namespace) as recorder):
        assert _calls_per_write(admin_api, namespace, recorder) == CALLS_WHERE_SELECTED


def test_the_namespaced_webhooks_are_called_for_watched_namespaces_only(
        render: Render, kube_binaries: Binaries, namespaced_cluster: Cluster,
        tmp_path: Path) -> None:
    objects = render(DEPLOY / "overlays" / "namespaced")
    watched = WATCHED_EXAMPLE[0]
    with (namespaced_cluster.admin_api_client() as admin_api,
          _recording_webhooks(kube_binaries, namespaced_cluster, objects, tmp_path,
                              watched) as recorder):
        assert _calls_per_write(admin_api, watched, recorder) == CALLS_WHERE_SELECTED
        assert _calls_per_write(admin_api, UNWATCHED, recorder) == {
            write: [] for write in CALLS_WHERE_SELECTED}


# -- the controller's identity and the seal Secret ------------------------------------


@pytest.mark.parametrize("overlay", ["prod", "namespaced"])
def test_the_controller_learns_its_own_name(request: pytest.FixtureRequest,
                                            overlay: str) -> None:
    # SelfSubjectReview: granted to every authenticated user by system:basic-user, not by
    # anything the install ships.
    cluster = _cluster_for(request, overlay)
    with cluster.controller_api_client() as api:
        assert current_user(api) == (f"system:serviceaccount:{cluster.controller_namespace}:"
                                     f"{cluster.controller_service_account}")


def _status(call: Callable[[], object]) -> int:
    try:
        call()
    except ApiException as err:
        return int(err.status)
    return 200


def _secret(name: str) -> kubernetes.client.V1Secret:
    return kubernetes.client.V1Secret(metadata=kubernetes.client.V1ObjectMeta(name=name),
                                      string_data={"key": "not-a-real-key"})


def test_the_controller_may_read_and_create_only_the_seal_secret(
        render: Render, kube_binaries: Binaries, cluster: Cluster,
        admin_api: kubernetes.client.ApiClient,
        controller_api: kubernetes.client.ApiClient) -> None:
    objects = render(DEPLOY / "overlays" / "prod")
    namespace = cluster.controller_namespace
    core = kubernetes.client.CoreV1Api(controller_api)

    def create(name: str, where: str = namespace) -> int:
        return _status(lambda: core.create_namespaced_secret(where, _secret(name),
                                                             dry_run="All"))

    # The shipped RBAC alone (deploy/rbac): get by name, create any name here, nothing else.
    assert _status(lambda: core.read_namespaced_secret("rollwise-seal", namespace)) == 404
    assert _status(lambda: core.read_namespaced_secret("rollwise-slack", namespace)) == 403
    assert _status(lambda: core.list_namespaced_secret(namespace)) == 403
    assert create("rollwise-seal") == 200
    assert create("rollwise-seal", "default") == 403
    assert create("not-the-seal") == 200, "RBAC cannot limit a create by name"
    # The shipped admission policy takes the rest away.
    policy = [o for o in objects if o["metadata"]["name"] == "rollwise-seal-secret-only"]
    assert {o["kind"] for o in policy} == {"ValidatingAdmissionPolicy",
                                           "ValidatingAdmissionPolicyBinding"}
    with _installed(kube_binaries, cluster, policy):
        _eventually("the seal admission policy", lambda: create("not-the-seal") == 403)
        assert create("rollwise-seal") == 200
        admin = kubernetes.client.CoreV1Api(admin_api)
        assert _status(lambda: admin.create_namespaced_secret(
            namespace, _secret("not-the-seal"), dry_run="All")) == 200, "others unaffected"


# -- the namespaced install ------------------------------------------------------------


def test_the_namespaced_controller_writes_in_watched_namespaces_only(
        namespaced_cluster: Cluster) -> None:
    with (namespaced_cluster.admin_api_client() as admin_api,
          namespaced_cluster.controller_api_client() as controller_api):
        for namespace in (*WATCHED_EXAMPLE, UNWATCHED):
            kubernetes.client.CustomObjectsApi(admin_api).create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, _isvc("model"))
        custom = kubernetes.client.CustomObjectsApi(controller_api)
        core = kubernetes.client.CoreV1Api(controller_api)

        def patch(namespace: str) -> int:
            return _status(lambda: custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, "model",
                {"spec": {"predictor": {"canaryTrafficPercent": 10}}}))

        def event(namespace: str) -> int:
            about = kubernetes.client.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}", kind="InferenceService", name="model",
                namespace=namespace)
            body = kubernetes.client.CoreV1Event(
                metadata=kubernetes.client.V1ObjectMeta(generate_name="model."),
                involved_object=about, reason="Check", message="namespaced install check")
            return _status(lambda: core.create_namespaced_event(namespace, body,
                                                                dry_run="All"))

        def listing(namespace: str) -> int:
            return _status(lambda: custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL))

        outcome = {ns: (listing(ns), patch(ns), event(ns))
                   for ns in (*WATCHED_EXAMPLE, UNWATCHED)}
        assert outcome == {**{ns: (200, 200, 200) for ns in WATCHED_EXAMPLE},
                           UNWATCHED: (403, 403, 403)}
        # No grant across namespaces either.
        assert _status(lambda: custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)) == 403
        # The controller's own namespace keeps the seal key's Role.
        assert _status(lambda: core.read_namespaced_secret(
            "rollwise-seal", namespaced_cluster.controller_namespace)) == 404
