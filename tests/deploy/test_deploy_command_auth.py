"""Command authentication as installed: the commands webhook registered beside the canary
guard, and the seal key's RBAC (a Role that reads one Secret by name and may create it,
plus the admission policy that limits that create to the one name).

Pure checks of the rendered overlays; tests/deploy/test_deploy_server_side.py checks the
same objects against the real API server (the CEL, the Role, the policy).
"""

from __future__ import annotations

from deploy_helpers import Manifest, controller_container, env_of, find

CANARY_GUARD = "canary-guard.rollwise.io"
COMMANDS = "commands.rollwise.io"
COMMANDS_ANNOTATION = "rollwise.io/commands"
SEAL_SECRET = "rollwise-seal"
ISVC_RULE = {"apiGroups": ["serving.kserve.io"], "apiVersions": ["v1beta1"],
             "resources": ["inferenceservices"], "scope": "Namespaced"}


def _webhooks(objects: list[Manifest]) -> dict[str, Manifest]:
    config = find(objects, "MutatingWebhookConfiguration", "rollwise")
    return {hook["name"]: hook for hook in config["webhooks"]}


def test_the_canary_guard_never_blocks_a_deploy(objects: list[Manifest]) -> None:
    hook = _webhooks(objects)[CANARY_GUARD]
    assert hook["failurePolicy"] == "Ignore" and hook["sideEffects"] == "None"
    # Only updates: a first deploy has no stable revision to protect.
    assert hook["rules"] == [{**ISVC_RULE, "operations": ["UPDATE"]}, {
        "apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["deployments"],
        "scope": "Namespaced", "operations": ["UPDATE"]}]
    # Called only for objects that opted in (the CEL itself is compiled by the real API
    # server in every end-to-end run, which registers this configuration).
    (condition,) = hook["matchConditions"]
    assert "'rollwise.io/policy' in object.metadata.annotations" in condition["expression"]
    assert hook["namespaceSelector"] and hook["objectSelector"]


def test_the_commands_webhook_refuses_what_it_cannot_stamp(objects: list[Manifest]) -> None:
    hook = _webhooks(objects)[COMMANDS]
    assert hook["rules"] == [{**ISVC_RULE, "operations": ["CREATE", "UPDATE"]}]
    assert hook["failurePolicy"] == "Fail"
    assert (hook["sideEffects"], hook["timeoutSeconds"], hook["reinvocationPolicy"]) == (
        "None", 5, "Never")
    assert hook["admissionReviewVersions"] == ["v1"]
    # Called only for writes that bring a command (the API server evaluates this CEL;
    # test_deploy_server_side.py shows which writes reach the webhook).
    (condition,) = hook["matchConditions"]
    assert COMMANDS_ANNOTATION in condition["expression"]
    assert "oldObject == null" in condition["expression"]


def test_both_webhooks_select_the_same_objects(objects: list[Manifest]) -> None:
    hooks = _webhooks(objects)
    assert list(hooks) == [CANARY_GUARD, COMMANDS]
    guard, commands = hooks[CANARY_GUARD], hooks[COMMANDS]
    for field in ("namespaceSelector", "objectSelector", "matchPolicy",
                  "admissionReviewVersions", "reinvocationPolicy"):
        assert guard[field] == commands[field], field
    assert ({k: v for k, v in guard["clientConfig"]["service"].items() if k != "path"}
            == {k: v for k, v in commands["clientConfig"]["service"].items() if k != "path"})


def test_the_seal_role_reads_one_secret_by_name_and_may_create_it(
        objects: list[Manifest]) -> None:
    deployment = find(objects, "Deployment", "rollwise-controller")
    namespace = deployment["metadata"]["namespace"]
    role = find(objects, "Role", "rollwise-seal")
    assert role["metadata"]["namespace"] == namespace
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [SEAL_SECRET],
         "verbs": ["get"]},
        # resourceNames cannot apply to create; the admission policy below limits it.
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
    ]
    binding = find(objects, "RoleBinding", "rollwise-seal")
    assert binding["metadata"]["namespace"] == namespace
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "rollwise-seal"}
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account,
                                    "namespace": namespace}]
    # No other rule anywhere touches Secrets.
    others = [(o["kind"], o["metadata"]["name"]) for o in objects
              if o["kind"] in {"Role", "ClusterRole"} and o is not role
              and any("secrets" in rule["resources"] for rule in o.get("rules", []))]
    assert not others


def test_only_the_seal_secret_may_be_created_by_the_controller(
        objects: list[Manifest]) -> None:
    deployment = find(objects, "Deployment", "rollwise-controller")
    namespace = deployment["metadata"]["namespace"]
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    policy = find(objects, "ValidatingAdmissionPolicy", "rollwise-seal-secret-only")
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert spec["matchConstraints"]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": namespace}}
    (condition,) = spec["matchConditions"]
    assert f"'system:serviceaccount:{namespace}:{account}'" in condition["expression"]
    (validation,) = spec["validations"]
    assert validation["expression"] == f"object.metadata.name == '{SEAL_SECRET}'"
    binding = find(objects, "ValidatingAdmissionPolicyBinding", "rollwise-seal-secret-only")
    assert binding["spec"] == {"policyName": policy["metadata"]["name"],
                               "validationActions": ["Deny"]}


def test_the_shipped_overlays_generate_the_seal_key(objects: list[Manifest]) -> None:
    # ROLLWISE_SEAL__KEY_FILE (an operator's own key) is an option, not the default.
    env = env_of(controller_container(objects))
    assert not [name for name in env if name.startswith("ROLLWISE_SEAL__")]
