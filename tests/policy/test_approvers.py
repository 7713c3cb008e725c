"""Approvers: Kubernetes users and groups beside Slack's, validated, and who they let in."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.policy import PolicyError, load_file
from controller.policy.loader import load_text
from controller.policy.model import Approvers

POLICIES = Path(__file__).resolve().parents[2] / "policies"
BASE = """\
apiVersion: rollwise.io/v1alpha1
kind: RolloutPolicy
metadata: {name: p}
spec:
  steps: [{weight: 10}, {weight: 100}]
  analysis: {checks: [{name: errors, kind: ratio}]}
  approvers:
"""


def approvers(lists: str) -> Approvers:
    (loaded,) = load_text(BASE + lists, "p.yaml")
    return loaded.policy.spec.approvers


def test_kubernetes_users_and_groups_are_read_as_the_api_server_names_them() -> None:
    found = approvers("    kubernetesUsers:\n"
                      "      [alice@example.com, 'system:serviceaccount:ci:deployer']\n"
                      "    kubernetesGroups: [sre, 'system:authenticated']\n")
    assert found.kubernetes_users == ["alice@example.com", "system:serviceaccount:ci:deployer"]
    assert found.kubernetes_groups == ["sre", "system:authenticated"]


@pytest.mark.parametrize(("lists", "path", "fragment"), [
    ("    kubernetesUsers: ['']\n", "spec.approvers.kubernetesUsers[0]", "pattern"),
    ("    kubernetesUsers: ['alice smith']\n", "spec.approvers.kubernetesUsers[0]", "pattern"),
    ('    kubernetesGroups: ["sre\\t"]\n', "spec.approvers.kubernetesGroups[0]", "pattern"),
    ('    kubernetesGroups: ["sre\\u0000"]\n', "spec.approvers.kubernetesGroups[0]", "pattern"),
    ("    kubernetesUsers: [" + "a" * 513 + "]\n", "spec.approvers.kubernetesUsers[0]",
     "at most 512 characters"),
    ("    kubernetesUsers: [" + ", ".join(f"u{i}" for i in range(101)) + "]\n",
     "spec.approvers.kubernetesUsers", "at most 100 items"),
    ("    kubernetesUsers: [bob, alice, bob]\n", "spec.approvers.kubernetesUsers[2]",
     "duplicate approver 'bob' (also [0])"),
    ("    kubernetesGroups: [sre, sre]\n", "spec.approvers.kubernetesGroups[1]", "duplicate"),
    ("    slackUsers: [U012AB3CD, U012AB3CD]\n", "spec.approvers.slackUsers[1]", "duplicate"),
    ("    slackUserGroups: [S0614TZR7, S0614TZR7]\n", "spec.approvers.slackUserGroups[1]",
     "duplicate"),
    ("    kubernetesUsers: alice\n", "spec.approvers.kubernetesUsers", "valid list"),
    ("    kubernetesUsers: [42]\n", "spec.approvers.kubernetesUsers[0]", "valid string"),
])
def test_bad_approver_lists_are_located(lists: str, path: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as caught:
        load_text(BASE + lists, "p.yaml")
    (problem,) = caught.value.problems
    assert problem.path == path and fragment in problem.message, str(problem)
    assert problem.line == 8


def test_without_any_list_anyone_rbac_lets_write_the_command_may_approve() -> None:
    everyone = Approvers()
    assert not everyone.restricted
    assert everyone.allows_kubernetes("mallory", [])
    assert everyone.allows_kubernetes("system:serviceaccount:ci:deployer", ["system:authenticated"])


def test_listed_users_and_members_of_listed_groups_may_approve_nobody_else() -> None:
    listed = Approvers(kubernetes_users=["alice@example.com"], kubernetes_groups=["sre"])
    assert listed.restricted
    assert listed.allows_kubernetes("alice@example.com", [])
    assert listed.allows_kubernetes("bob", ["system:authenticated", "sre"])
    assert not listed.allows_kubernetes("bob", ["system:authenticated", "dev"])
    assert not listed.allows_kubernetes("Alice@example.com", [])   # names are exact
    assert not listed.allows_kubernetes("sre", [])                 # a user is not a group


def test_slack_lists_alone_close_the_cli_to_everyone() -> None:
    slack_only = Approvers(slack_users=["U012AB3CD"])
    assert slack_only.restricted
    assert not slack_only.allows_kubernetes("alice@example.com", ["sre"])


def test_the_conservative_example_shows_every_list() -> None:
    (loaded,) = load_file(POLICIES / "conservative.yaml")
    found = loaded.policy.spec.approvers
    assert found.slack_users and found.slack_user_groups
    assert found.kubernetes_users and found.kubernetes_groups
    assert found.allows_kubernetes("someone", found.kubernetes_groups[:1])
    text = (POLICIES / "conservative.yaml").read_text()
    assert "rollwise approve" in text[text.index("approvers:") - 600:text.index("approvers:")]
