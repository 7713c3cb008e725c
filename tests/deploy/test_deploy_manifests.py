"""`kubectl apply -k deploy/overlays/<prod|dev>` installs a controller that is valid
Kubernetes, least-privileged, locked down, wired together consistently, and configured
with settings the controller actually has."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from deploy_helpers import (
    CLUSTER_WIDE,
    DEPLOY,
    ROOT,
    WATCHED_EXAMPLE,
    Manifest,
    container_port,
    controller_container,
    env_of,
    find,
    is_sink,
    listen_port,
    validate_schema,
)

from controller.policystore import PolicyStore
from controller.settings import load_settings, unknown_variables
from simulations.kube.build import Binaries

Render = Callable[[Path], list[Manifest]]

# Custom resources whose schemas kubernetes-validate does not ship (it knows the built-in
# API only). They are skipped by exact kind, so a typo in a built-in kind still fails;
# the wiring tests below check the fields of these objects that Rollwise relies on.
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),   # Prometheus Operator
    ("monitoring.coreos.com/v1", "PrometheusRule"),   # Prometheus Operator
    ("cert-manager.io/v1", "Certificate"),            # cert-manager
    ("cert-manager.io/v1", "Issuer"),                 # cert-manager
}
RBAC_KINDS = {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}


def _key(obj: Manifest) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def _pod_spec(objects: list[Manifest]) -> dict[str, Any]:
    return dict(find(objects, "Deployment", "rollwise-controller")["spec"]["template"]["spec"])


# -- rendering and schemas -------------------------------------------------------------


def test_overlay_renders_the_whole_controller(everything: list[Manifest]) -> None:
    kinds = {o["kind"] for o in everything}
    assert {"Namespace", "ServiceAccount", "Deployment", "Service", "ConfigMap",
            "MutatingWebhookConfiguration", "Certificate", "Issuer", "NetworkPolicy",
            "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule"} <= kinds
    assert len({_key(o) for o in everything}) == len(everything), "an object is defined twice"


def test_every_object_carries_the_app_label(everything: list[Manifest]) -> None:
    # `kubectl apply --prune -l app.kubernetes.io/name=rollwise` (docs/operations.md) and
    # `kubectl get -l` find exactly what was installed.
    unlabelled = [_key(o) for o in everything
                  if o["metadata"].get("labels", {}).get("app.kubernetes.io/name") != "rollwise"]
    assert not unlabelled


def test_mlmd_mysql_component_renders_on_top_of_prod(render: Render, tmp_path: Path) -> None:
    # kustomize refuses absolute paths in a kustomization: refer to the repo relatively.
    prod = os.path.relpath(DEPLOY / "overlays" / "prod", tmp_path)
    component = os.path.relpath(DEPLOY / "base" / "mlmd-mysql", tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        f"resources: [{prod}]\ncomponents: [{component}]\n")
    env = env_of(controller_container(render(tmp_path)))
    assert env["ROLLWISE_MLMD__BACKEND"] == "mysql"
    assert env["ROLLWISE_MLMD__MYSQL_PASSWORD_FILE"].startswith("/etc/rollwise/secrets/")
    assert "ROLLWISE_MLMD__GRPC_HOST" not in env


def test_every_object_validates_against_the_kubernetes_schemas(
        everything: list[Manifest], kube_binaries: Binaries) -> None:
    checked = []
    for obj in everything:
        if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
            continue
        validate_schema(obj, kube_binaries.version)
        checked.append(obj["kind"])
    assert "Deployment" in checked and "MutatingWebhookConfiguration" in checked


def test_no_secret_values_are_shipped(everything: list[Manifest], objects: list[Manifest]
                                     ) -> None:
    assert not [o for o in everything if o["kind"] == "Secret"], "ship references, not Secrets"
    for name, value in env_of(controller_container(objects)).items():
        if re.search(r"TOKEN|SECRET|PASSWORD", name):
            assert name.endswith("_FILE") and str(value).startswith("/etc/rollwise/secrets/"), (
                f"{name}: secrets are passed as mounted files")


# -- permissions and pod security ------------------------------------------------------


@pytest.mark.parametrize("overlay", CLUSTER_WIDE)
def test_rbac_is_exactly_the_reviewed_deploy_rbac(render: Render, overlay: str) -> None:
    # The namespaced install's RBAC: test_deploy_namespaced.py.
    reviewed = sorted(render(DEPLOY / "rbac"), key=_key)
    installed = sorted((o for o in render(DEPLOY / "overlays" / overlay)
                        if o["kind"] in RBAC_KINDS and not is_sink(o)), key=_key)
    assert installed == reviewed


def test_the_controller_only_reads_the_routes_kserve_owns(render: Render) -> None:
    """The Standard-mode router needs get on HTTPRoutes (never watch or any write on
    KServe's); the Deployment router lists the routes of a namespace and patches the
    user's backendRefs weights, nothing else (no watch, update or delete)."""
    rules = find(render(DEPLOY / "rbac"), "ClusterRole", "rollwise-controller")["rules"]
    gateway = [r for r in rules if set(r["apiGroups"]) & {"gateway.networking.k8s.io", "*"}]
    assert gateway == [{"apiGroups": ["gateway.networking.k8s.io"],
                        "resources": ["httproutes"], "verbs": ["get"]},
                       {"apiGroups": ["gateway.networking.k8s.io"],
                        "resources": ["httproutes"], "verbs": ["list", "patch"]}]


def test_the_deployment_router_grants_are_only_what_it_uses(render: Render) -> None:
    """Deployments: read, watch, patch, and create/delete (the canary); ReplicaSets only
    listed; Services listed, created and deleted (the canary's), never patched."""
    rules = find(render(DEPLOY / "rbac"), "ClusterRole", "rollwise-controller")["rules"]
    apps = {(r["resources"][0], tuple(r["verbs"])) for r in rules if r["apiGroups"] == ["apps"]}
    assert apps == {("deployments", ("get", "list", "watch", "patch", "create", "delete")),
                    ("replicasets", ("list",))}
    core = [r for r in rules if r["apiGroups"] == [""] and "services" in r["resources"]]
    assert core == [{"apiGroups": [""], "resources": ["services"],
                     "verbs": ["list", "create", "delete"]}]


def test_the_controller_runs_as_the_account_the_rbac_binds(objects: list[Manifest]) -> None:
    account = find(objects, "ServiceAccount")
    deployment = find(objects, "Deployment", "rollwise-controller")
    assert _pod_spec(objects)["serviceAccountName"] == account["metadata"]["name"]
    for binding in (o for o in objects if o["kind"] in {"RoleBinding", "ClusterRoleBinding"}):
        assert {"kind": "ServiceAccount", "name": account["metadata"]["name"],
                "namespace": account["metadata"]["namespace"]} in binding["subjects"]
    # The Lease and the seal Secret are in the pod's namespace, where their Roles are.
    for name in ("rollwise-leader-election", "rollwise-seal"):
        role = find(objects, "Role", name)
        assert role["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    lease_ns = env_of(controller_container(objects))["ROLLWISE_LEADER_ELECTION__LEASE_NAMESPACE"]
    assert lease_ns == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_pod_security_context_is_restrictive(objects: list[Manifest]) -> None:
    pod = _pod_spec(objects)
    pod_ctx = pod.get("securityContext", {})
    assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    for container in pod["containers"] + pod.get("initContainers", []):
        ctx = container.get("securityContext", {})

        def effective(field: str, ctx: dict[str, Any] = ctx) -> Any:
            return ctx.get(field, pod_ctx.get(field))

        where = f"container {container['name']}"
        assert effective("runAsNonRoot") is True, where
        assert isinstance(effective("runAsUser"), int) and effective("runAsUser") > 0, where
        assert ctx.get("readOnlyRootFilesystem") is True, where
        assert ctx.get("allowPrivilegeEscalation") is False, where
        assert ctx.get("privileged", False) is False, where
        assert "ALL" in ctx.get("capabilities", {}).get("drop", []), where
        assert not ctx.get("capabilities", {}).get("add"), where
        assert (effective("seccompProfile") or {}).get("type") == "RuntimeDefault", where
        limits = container.get("resources", {}).get("limits", {})
        requests = container.get("resources", {}).get("requests", {})
        assert {"cpu", "memory"} <= limits.keys() and {"cpu", "memory"} <= requests.keys()
    namespace = find(objects, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_only_writable_paths_are_emptydirs(objects: list[Manifest]) -> None:
    pod = _pod_spec(objects)
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in controller_container(objects)["volumeMounts"]:
        if not mount.get("readOnly"):
            assert "emptyDir" in volumes[mount["name"]], mount["mountPath"]
    assert any(m["mountPath"] == "/tmp" for m in controller_container(objects)["volumeMounts"])


# -- the controller's configuration ----------------------------------------------------


def _settings_from(objects: list[Manifest], tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> Any:
    """The controller's settings as the pod would load them (mounted files faked)."""
    for key in list(os.environ):
        if key.startswith("ROLLWISE_"):
            monkeypatch.delenv(key)
    env = env_of(controller_container(objects))
    for name, value in env.items():
        if isinstance(value, dict):   # downward API: the pod's own namespace
            value = find(objects, "Deployment")["metadata"]["namespace"]
        elif name.endswith("_FILE"):  # a mounted Secret: stand in a file with a dummy value
            stand_in = tmp_path / name
            stand_in.write_text("not-a-real-secret\n")
            value = str(stand_in)
        monkeypatch.setenv(name, value)
    return load_settings()


def test_every_variable_is_a_controller_setting(objects: list[Manifest]) -> None:
    env = env_of(controller_container(objects))
    assert unknown_variables({k: "" for k in env if k.startswith("ROLLWISE_")}) == []


def _service_link_variables(objects: list[Manifest]) -> set[str]:
    """What the kubelet adds to the environment for each Service of the pod's namespace
    while enableServiceLinks is on (pkg/kubelet/envvars)."""
    namespace = find(objects, "Deployment")["metadata"]["namespace"]
    names = set()
    for service in objects:
        if service["kind"] != "Service" or service["metadata"]["namespace"] != namespace:
            continue
        prefix = service["metadata"]["name"].upper().replace("-", "_")
        names |= {f"{prefix}_SERVICE_HOST", f"{prefix}_SERVICE_PORT", f"{prefix}_PORT"}
        for port in service["spec"]["ports"]:
            base = f"{prefix}_PORT_{port['port']}_{port.get('protocol', 'TCP')}"
            names |= {base, f"{base}_PROTO", f"{base}_PORT", f"{base}_ADDR"}
    return names


def test_the_kubelet_adds_no_variable_the_controller_rejects(objects: list[Manifest]) -> None:
    env = set(env_of(controller_container(objects)))
    if _pod_spec(objects).get("enableServiceLinks", True):
        env |= _service_link_variables(objects)
    assert unknown_variables({k: "" for k in env}) == [], (
        "Services named rollwise-* inject ROLLWISE_* variables: keep enableServiceLinks off")


def test_the_settings_load_as_the_pod_loads_them(
        objects: list[Manifest], overlay: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings_from(objects, tmp_path, monkeypatch)
    assert settings.leader_election.enabled is True
    assert settings.leader_election.lease_namespace == "rollwise-system"
    assert settings.listen_address == "0.0.0.0:8080"
    assert settings.slack.listen_address == "0.0.0.0:8081"
    assert settings.webhook.listen_address == "0.0.0.0:9443"
    assert settings.webhook.cert_file is not None
    assert settings.policy_dir == Path("/etc/rollwise/policies")
    assert settings.kubernetes.namespaces == (
        list(WATCHED_EXAMPLE) if overlay == "namespaced" else [])
    if overlay != "dev":
        assert (settings.mlmd.backend, settings.mlmd.grpc_host, settings.mlmd.grpc_port) == (
            "grpc", "metadata-grpc-service.kubeflow", 8080)
        assert settings.slack.bot_token is not None
        assert settings.slack.signing_secret is not None
    else:
        assert settings.mlmd.backend == "sqlite"
        assert settings.slack.bot_token is None


def test_dev_keeps_sqlite_on_a_per_pod_emptydir(render: Render) -> None:
    objects = render(DEPLOY / "overlays" / "dev")
    container = controller_container(objects)
    path = Path(env_of(container)["ROLLWISE_MLMD__SQLITE_PATH"])
    assert path.is_absolute()
    (mount,) = [m for m in container["volumeMounts"] if path.is_relative_to(m["mountPath"])]
    volumes = {v["name"]: v for v in _pod_spec(objects)["volumes"]}
    assert "emptyDir" in volumes[mount["name"]], "SQLite must never sit on a shared volume"


def test_overlays_differ_only_in_the_deployment(render: Render) -> None:
    prod = {_key(o): o for o in render(DEPLOY / "overlays" / "prod")}
    dev = {_key(o): o for o in render(DEPLOY / "overlays" / "dev")}
    assert prod.keys() == dev.keys()
    differing = sorted(k for k in prod if prod[k] != dev[k])
    assert differing == [("Deployment", "rollwise-system", "rollwise-controller"),
                         ("Deployment", "rollwise-system", "rollwise-prediction-sink")]
    sink = ("Deployment", "rollwise-system", "rollwise-prediction-sink")

    def without_image(deployment: Manifest) -> Any:
        spec = deployment["spec"]["template"]["spec"]
        return {**spec, "containers": [{**c, "image": None} for c in spec["containers"]]}

    assert without_image(prod[sink]) == without_image(dev[sink]), "the sink differs by image"


# -- policies as the controller sees them ----------------------------------------------


def _mount_configmap(directory: Path, data: dict[str, str]) -> None:
    """Lay out a ConfigMap volume as the kubelet does: files behind ..data symlinks."""
    stamp = directory / "..2026_01_01_00_00_00.000000000"
    stamp.mkdir(parents=True)
    for key, text in data.items():
        (stamp / key).write_text(text)
        (directory / key).symlink_to(f"..data/{key}")
    (directory / "..data").symlink_to(stamp.name)


def test_the_policy_configmaps_hold_every_policy_file(objects: list[Manifest]) -> None:
    policies = find(objects, "ConfigMap", "rollwise-policies")["data"]
    histograms = find(objects, "ConfigMap", "rollwise-reference-histograms")["data"]
    on_disk = ROOT / "policies"
    assert sorted(policies) == sorted(p.name for p in on_disk.glob("*.y*ml")), (
        "add the new file to policies/Kustomization")
    assert sorted(histograms) == sorted(
        p.name for p in (on_disk / "reference-histograms").glob("*.y*ml"))
    for key, text in policies.items():
        assert text == (on_disk / key).read_text()


def test_the_mounted_policies_load_with_their_reference_histograms(
        objects: list[Manifest], tmp_path: Path) -> None:
    volumes = {v["name"]: v for v in _pod_spec(objects)["volumes"]}
    root = tmp_path / "root"
    # Parents first, so the nested mount lands inside the policy mount as in the pod.
    mounts = sorted(controller_container(objects)["volumeMounts"], key=lambda m: m["mountPath"])
    for mount in mounts:
        source = volumes[mount["name"]].get("configMap")
        if source is None:
            continue
        data = find(objects, "ConfigMap", source["name"])["data"]
        _mount_configmap(root / mount["mountPath"].lstrip("/"), data)
    policy_dir = env_of(controller_container(objects))["ROLLWISE_POLICY_DIR"]
    store = PolicyStore(root / policy_dir.lstrip("/"))
    reload = store.reload()
    assert reload.problems == ()
    assert store.names() == ["conservative", "drift-guard", "fast"]
    drift = store.get("drift-guard")
    assert drift is not None
    trained = [c for c in drift.spec.analysis.checks
               if getattr(c, "reference", None) is not None and c.reference.file]
    assert trained and all(c.reference.histogram is not None for c in trained)


# -- wiring between objects ------------------------------------------------------------


WEBHOOK_PATHS = {"canary-guard.rollwise.io": "/mutate", "commands.rollwise.io": "/commands"}


def test_the_webhooks_are_wired_end_to_end(objects: list[Manifest]) -> None:
    config = find(objects, "MutatingWebhookConfiguration")
    hooks = config["webhooks"]
    assert {h["name"]: h["clientConfig"]["service"]["path"] for h in hooks} == WEBHOOK_PATHS
    env = env_of(controller_container(objects))
    refs = [hook["clientConfig"]["service"] for hook in hooks]
    for ref in refs:
        # The Service each calls forwards to the port the controller serves TLS on.
        service = find(objects, "Service", ref["name"])
        assert service["metadata"]["namespace"] == ref["namespace"]
        (port,) = [p for p in service["spec"]["ports"] if p["port"] == ref["port"]]
        assert container_port(objects, port["targetPort"]) == listen_port(
            env["ROLLWISE_WEBHOOK__LISTEN_ADDRESS"]) == 9443
    ref = refs[0]
    assert all((r["name"], r["namespace"]) == (ref["name"], ref["namespace"]) for r in refs)
    # cert-manager injects the CA of the Certificate whose Secret the pod mounts, issued
    # for the name the API server dials.
    cert = find(objects, "Certificate")
    namespace, _, name = config["metadata"]["annotations"][
        "cert-manager.io/inject-ca-from"].partition("/")
    assert (namespace, name) == (cert["metadata"]["namespace"], cert["metadata"]["name"])
    assert f"{ref['name']}.{ref['namespace']}.svc" in cert["spec"]["dnsNames"]
    issuer = find(objects, "Issuer", cert["spec"]["issuerRef"]["name"])
    assert issuer["metadata"]["namespace"] == cert["metadata"]["namespace"]
    volumes = {v["name"]: v for v in _pod_spec(objects)["volumes"]}
    (mount,) = [m for m in controller_container(objects)["volumeMounts"]
                if env["ROLLWISE_WEBHOOK__CERT_FILE"].startswith(m["mountPath"] + "/")]
    assert volumes[mount["name"]]["secret"]["secretName"] == cert["spec"]["secretName"]
    assert Path(env["ROLLWISE_WEBHOOK__KEY_FILE"]).parent == Path(mount["mountPath"])


def test_probes_metrics_and_services_use_the_listen_port(objects: list[Manifest]) -> None:
    container = controller_container(objects)
    listen = listen_port(env_of(container)["ROLLWISE_LISTEN_ADDRESS"])
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container_port(objects, container[probe]["httpGet"]["port"]) == listen
    # The routes exist in the daemon (it registers them by literal path).
    daemon = (ROOT / "controller" / "daemon.py").read_text()
    for route in ("/healthz", "/readyz", "/metrics"):
        assert f'("GET", "{route}")' in daemon
    deployment = find(objects, "Deployment", "rollwise-controller")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    monitor = find(objects, "ServiceMonitor")
    scraped = [s for s in objects if s["kind"] == "Service" and
               monitor["spec"]["selector"]["matchLabels"].items()
               <= s["metadata"].get("labels", {}).items()]
    assert [s["metadata"]["name"] for s in scraped] == ["rollwise-controller"], (
        "the alerts select job=rollwise-controller, the name of the scraped Service")
    (endpoint,) = monitor["spec"]["endpoints"]
    (port,) = [p for p in scraped[0]["spec"]["ports"] if p["name"] == endpoint["port"]]
    assert container_port(objects, port["targetPort"]) == listen
    for service in (o for o in objects if o["kind"] == "Service"):
        assert service["spec"]["selector"].items() <= pod_labels.items()


def test_two_replicas_and_a_disruption_budget_that_keeps_one(objects: list[Manifest]) -> None:
    deployment = find(objects, "Deployment", "rollwise-controller")
    assert deployment["spec"]["replicas"] == 2
    pdb = find(objects, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items())
    env = env_of(controller_container(objects))
    assert env["ROLLWISE_LEADER_ELECTION__ENABLED"] == "true"


def _allows_egress(policy: Manifest, namespace: str, port: int) -> bool:
    for rule in policy["spec"]["egress"]:
        ports = {p["port"] for p in rule.get("ports", [])}
        if ports and port not in ports:
            continue
        peers = rule.get("to")
        if not peers or any(
                p.get("namespaceSelector", {}).get("matchLabels", {}).get(
                    "kubernetes.io/metadata.name") == namespace for p in peers):
            return True
    return False


def test_the_network_policy_lets_the_pod_reach_what_it_is_configured_to(
        objects: list[Manifest]) -> None:
    policy = find(objects, "NetworkPolicy")
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    env = env_of(controller_container(objects))
    # Prometheus and MLMD: wherever the settings point, the policy lets the pod through.
    prometheus = re.fullmatch(r"https?://[^.]+\.([^.:/]+)[^:]*:(\d+)",
                              env["ROLLWISE_PROMETHEUS__URL"])
    assert prometheus, env["ROLLWISE_PROMETHEUS__URL"]
    assert _allows_egress(policy, prometheus[1], int(prometheus[2]))
    if env["ROLLWISE_MLMD__BACKEND"] == "grpc":
        namespace = env["ROLLWISE_MLMD__GRPC_HOST"].split(".")[1]
        assert _allows_egress(policy, namespace, int(env["ROLLWISE_MLMD__GRPC_PORT"]))
    assert _allows_egress(policy, "kube-system", 53)       # DNS
    assert _allows_egress(policy, "anywhere", 443)          # API server, Slack
    # In: one opening per face (test_deploy_faces.py).
