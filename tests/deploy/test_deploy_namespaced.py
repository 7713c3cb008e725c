"""The namespaced install (deploy/overlays/namespaced; issue 14, defect 7): the controller
watches, may write in, and is called by the API server for exactly the same namespaces,
and holds no cluster-wide grant on InferenceServices.

Pure checks of the rendered overlay; test_deploy_server_side.py shows the same on the
real API server (patch allowed in a watched namespace, Forbidden in another).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from deploy_helpers import (
    DEPLOY,
    WATCHED_EXAMPLE,
    Manifest,
    controller_container,
    env_of,
    find,
)

Render = Callable[[Path], list[Manifest]]

# What the controller needs in every namespace it watches: (group, resource) -> verbs.
NEEDED_PER_NAMESPACE = {("serving.kserve.io", "inferenceservices"): {"get", "list", "watch",
                                                                      "patch"},
                        ("", "events"): {"create"},
                        # KServe Standard mode: the split in force is read from its routes.
                        ("gateway.networking.k8s.io", "httproutes"): {"get", "list", "patch"},
                        # Plain Deployments: the user's, the canary, its Service.
                        ("apps", "deployments"): {"get", "list", "watch", "patch", "create",
                                                  "delete"},
                        ("apps", "replicasets"): {"list"},
                        ("", "services"): {"list", "create", "delete"}}
# Namespaces that must never be selected, beside the watched ones.
OTHERS = ("default", "kube-system", "rollwise-system", "another-team")


@pytest.fixture(scope="module")
def namespaced(render: Render) -> list[Manifest]:
    return render(DEPLOY / "overlays" / "namespaced")


def _account(objects: list[Manifest]) -> dict[str, str]:
    deployment = find(objects, "Deployment", "rollwise-controller")
    return {"kind": "ServiceAccount",
            "name": deployment["spec"]["template"]["spec"]["serviceAccountName"],
            "namespace": deployment["metadata"]["namespace"]}


def _grants(rules: Iterable[Manifest]) -> dict[tuple[str, str], set[str]]:
    """(group, resource) -> verbs granted on every object of it (rules limited to some
    names do not count)."""
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        if rule.get("resourceNames"):
            continue
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def _namespaces_with_the_controller_role(objects: list[Manifest]) -> set[str]:
    """Namespaces where a RoleBinding gives the controller's account a Role with every
    verb it needs on InferenceServices and Events."""
    roles = {(o["metadata"]["namespace"], o["metadata"]["name"]): o
             for o in objects if o["kind"] == "Role"}
    found = set()
    for binding in (o for o in objects if o["kind"] == "RoleBinding"):
        if _account(objects) not in binding["subjects"]:
            continue
        namespace = binding["metadata"]["namespace"]
        assert binding["roleRef"]["kind"] == "Role", f"{namespace}: bound to a ClusterRole"
        role = roles[(namespace, binding["roleRef"]["name"])]
        granted = _grants(role["rules"])
        if all(verbs <= granted.get(key, set()) for key, verbs in NEEDED_PER_NAMESPACE.items()):
            found.add(namespace)
    return found


def _selects(selector: Manifest, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector applied to one object's labels."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = (expression["key"], expression["operator"],
                                 expression.get("values", []))
        present = key in labels
        outcome = {"In": present and labels.get(key) in values,
                   "NotIn": not (present and labels.get(key) in values),
                   "Exists": present, "DoesNotExist": not present}
        assert operator in outcome, f"unknown selector operator {operator!r}"
        if not outcome[operator]:
            return False
    return True


def _selected_namespaces(hook: Manifest, candidates: Iterable[str]) -> set[str]:
    # The API server labels every namespace with its own name.
    return {ns for ns in candidates
            if _selects(hook["namespaceSelector"], {"kubernetes.io/metadata.name": ns})}


def _watched(objects: list[Manifest]) -> set[str]:
    value = env_of(controller_container(objects))["ROLLWISE_KUBERNETES__NAMESPACES"]
    return {part.strip() for part in str(value).split(",") if part.strip()}


def test_watched_writable_and_admitted_namespaces_are_the_same(
        namespaced: list[Manifest]) -> None:
    watched = _watched(namespaced)
    assert watched == set(WATCHED_EXAMPLE)
    assert _namespaces_with_the_controller_role(namespaced) == watched
    config = find(namespaced, "MutatingWebhookConfiguration", "rollwise")
    for hook in config["webhooks"]:
        assert _selected_namespaces(hook, watched | set(OTHERS)) == watched, hook["name"]


def test_no_cluster_scoped_grant_on_inferenceservices(namespaced: list[Manifest]) -> None:
    cluster_roles = [o for o in namespaced if o["kind"] == "ClusterRole"]
    assert not [o["metadata"]["name"] for o in cluster_roles
                if {("serving.kserve.io", "inferenceservices"), ("serving.kserve.io", "*"),
                    ("*", "*")} & _grants(o["rules"]).keys()]
    assert not [o for o in namespaced if o["kind"] == "ClusterRoleBinding"
                and _account(namespaced) in o["subjects"]]


def test_the_watched_namespace_role_is_the_cluster_role_confined(
        namespaced: list[Manifest], render: Render) -> None:
    # One set of rules, two scopes: the Role cannot drift from the reviewed ClusterRole.
    cluster_role = find(render(DEPLOY / "rbac"), "ClusterRole", "rollwise-controller")
    for namespace in WATCHED_EXAMPLE:
        (role,) = [o for o in namespaced if o["kind"] == "Role"
                   and o["metadata"]["namespace"] == namespace]
        assert role["rules"] == cluster_role["rules"], namespace


def _without_namespaces_variable(deployment: Manifest) -> Any:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return [{**c, "env": [e for e in c["env"] if e["name"] != "ROLLWISE_KUBERNETES__NAMESPACES"]}
            for c in containers]


def test_everything_else_is_production(namespaced: list[Manifest], render: Render) -> None:
    def key(o: Manifest) -> tuple[str, str, str]:
        return o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]

    prod = {key(o): o for o in render(DEPLOY / "overlays" / "prod")}
    here = {key(o): o for o in namespaced}
    rbac = {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
    # The controller's own namespace keeps deploy/rbac's Roles (Lease, seal key).
    assert {k: o for k, o in here.items() if k[0] in rbac and k[1] == "rollwise-system"} == {
        k: o for k, o in prod.items() if k[0] in rbac and k[1] == "rollwise-system"}
    differing = sorted(k for k in prod.keys() | here.keys()
                       if k[0] not in rbac and prod.get(k) != here.get(k))
    assert differing == [("Deployment", "rollwise-system", "rollwise-controller"),
                         ("MutatingWebhookConfiguration", "", "rollwise")]
    deployment = ("Deployment", "rollwise-system", "rollwise-controller")
    assert _without_namespaces_variable(here[deployment]) == _without_namespaces_variable(
        prod[deployment])
    webhooks = ("MutatingWebhookConfiguration", "", "rollwise")
    for ours, theirs in zip(here[webhooks]["webhooks"], prod[webhooks]["webhooks"], strict=True):
        assert {**ours, "namespaceSelector": None} == {**theirs, "namespaceSelector": None}
