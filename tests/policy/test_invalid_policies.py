"""Every kind of mistake an SRE makes in a policy gets one clear, located error."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.policy import PolicyError, load_file
from controller.policy.loader import load_text

BASE = """\
apiVersion: rollwise.io/v1alpha1
kind: RolloutPolicy
metadata:
  name: p
spec:
  steps:
    - weight: 10
    - weight: 50
    - weight: 100
  analysis:
    interval: 1m
    alpha: 0.05
    checks:
      - name: errors
        kind: ratio
        tolerance: 0.2
"""


def edit(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


# (id, policy text, line, column, field path, message fragment)
CASES = [
    ("yaml-syntax", edit("  name: p\n", "  name: [p\n"), 5, None, "", "YAML syntax error"),
    ("tab-indent", edit("    alpha: 0.05", "\talpha: 0.05"), 12, 1, "", "YAML syntax error"),
    ("duplicate-key", edit("    alpha: 0.05\n", "    alpha: 0.05\n    alpha: 0.1\n"), 13, 5,
     "spec.analysis.alpha", "duplicate key 'alpha' (first at line 12)"),
    ("wrong-api-version", edit("rollwise.io/v1alpha1", "rollwise.io/v1"), 1, 13, "apiVersion",
     "'rollwise.io/v1alpha1'"),
    ("wrong-kind", edit("kind: RolloutPolicy", "kind: Rollout"), 2, 7, "kind", "'RolloutPolicy'"),
    ("missing-metadata", edit("metadata:\n  name: p\n", ""), 1, 1, "metadata",
     "required field is missing"),
    ("bad-name", edit("name: p", "name: My_Policy"), 4, 9, "metadata.name", "pattern"),
    ("unknown-top-field", edit("spec:\n", "specs: {}\nspec:\n"), 5, 1, "specs",
     "unknown field 'specs'"),
    ("unknown-field-suggests",
     edit("    - weight: 10\n", "    - weight: 10\n      minDuraton: 1m\n"),
     8, 7, "spec.steps[0].minDuraton", "did you mean 'minDuration'"),
    ("weight-string", edit("- weight: 50", '- weight: "50"'), 8, 15, "spec.steps[1].weight",
     "valid integer"),
    ("weight-float", edit("- weight: 50", "- weight: 50.5"), 8, 15, "spec.steps[1].weight",
     "valid integer"),
    ("weight-zero", edit("- weight: 10", "- weight: 0"), 7, 15, "spec.steps[0].weight",
     "greater than or equal to 1"),
    ("weight-above-100", edit("- weight: 100", "- weight: 120"), 9, 15, "spec.steps[2].weight",
     "less than or equal to 100"),
    ("weights-out-of-order", edit("- weight: 50", "- weight: 5"), 8, 15, "spec.steps[1].weight",
     "strictly increasing: 5 after 10"),
    ("weights-repeated", edit("- weight: 50", "- weight: 10"), 8, 15, "spec.steps[1].weight",
     "strictly increasing"),
    ("last-not-100", edit("    - weight: 100\n", ""), 8, 15, "spec.steps[1].weight",
     "last step must be weight 100"),
    ("empty-steps", edit("    - weight: 10\n    - weight: 50\n    - weight: 100\n", "")
     .replace("  steps:\n", "  steps: []\n"), 6, 10, "spec.steps", "at least 1 item"),
    ("steps-not-list", edit("    - weight: 10\n    - weight: 50\n    - weight: 100\n", "")
     .replace("  steps:\n", "  steps: 10\n"), 6, 10, "spec.steps", "valid list"),
    ("pause-on-final", edit("- weight: 100", "- weight: 100\n      pause: {duration: 5m}"), 10, 14,
     "spec.steps[2].pause", "final 100% step"),
    ("negative-duration", edit("interval: 1m", "interval: -5m"), 11, 15, "spec.analysis.interval",
     "must not be negative"),
    ("malformed-duration", edit("interval: 1m", "interval: 5 minutes"), 11, 15,
     "spec.analysis.interval", "invalid duration '5 minutes'"),
    ("number-duration", edit("interval: 1m", "interval: 60"), 11, 15, "spec.analysis.interval",
     "text with a unit"),
    ("zero-interval", edit("interval: 1m", "interval: 0s"), 11, 15, "spec.analysis.interval",
     "greater than zero"),
    ("alpha-zero", edit("alpha: 0.05", "alpha: 0"), 12, 12, "spec.analysis.alpha",
     "greater than or equal to 0.000001"),
    ("alpha-too-big", edit("alpha: 0.05", "alpha: 0.6"), 12, 12, "spec.analysis.alpha",
     "less than or equal to 0.5"),
    ("alpha-string", edit("alpha: 0.05", "alpha: five percent"), 12, 12, "spec.analysis.alpha",
     "valid number"),
    ("no-checks", edit("    checks:\n      - name: errors\n        kind: ratio\n"
                       "        tolerance: 0.2\n", "    checks: []\n"), 13, 13,
     "spec.analysis.checks", "at least 1 item"),
    ("missing-analysis", edit("  analysis:\n    interval: 1m\n    alpha: 0.05\n    checks:\n"
                              "      - name: errors\n        kind: ratio\n        tolerance: 0.2\n",
                              ""), 5, 1, "spec.analysis", "required field is missing"),
    ("unknown-check-kind", edit("kind: ratio", "kind: ratios"), 15, 15,
     "spec.analysis.checks[0].kind", "unknown kind 'ratios'"),
    ("missing-check-kind", edit("        kind: ratio\n", ""), 14, 9,
     "spec.analysis.checks[0].kind", "kind is required"),
    ("negative-tolerance", edit("tolerance: 0.2", "tolerance: -0.1"), 16, 20,
     "spec.analysis.checks[0].tolerance", "greater than or equal to 0"),
    ("max-rate-above-1", edit("tolerance: 0.2", "maxRate: 1.5"), 16, 18,
     "spec.analysis.checks[0].maxRate", "less than 1"),
    ("latency-without-mode", edit("kind: ratio", "kind: latency"), 14, 9,
     "spec.analysis.checks[0]", "exactly one of quantile"),
    ("latency-both-modes", edit("kind: ratio", "kind: latency\n        quantile: 0.99\n"
                                "        threshold: 300ms"), 14, 9, "spec.analysis.checks[0]",
     "exactly one of quantile"),
    ("latency-guard-wrong-mode", edit("kind: ratio", "kind: latency\n        quantile: 0.99\n"
                                      "        maxShareAbove: 0.1"), 17, 24,
     "spec.analysis.checks[0].maxShareAbove", "applies to threshold mode"),
    ("quantile-out-of-range", edit("kind: ratio", "kind: latency\n        quantile: 99"), 16, 19,
     "spec.analysis.checks[0].quantile", "less than 1"),
    ("duplicate-check-name", edit("        tolerance: 0.2\n", "        tolerance: 0.2\n"
                                  "      - name: errors\n        kind: ratio\n"), 17, 15,
     "spec.analysis.checks[1].name", "duplicate check name 'errors'"),
    ("unknown-provider", edit("alpha: 0.05", "alpha: 0.05\n    provider: datadog"), 13, 15,
     "spec.analysis.provider", "'knative-queue-proxy'"),
    ("preset-lacks-kind", edit("alpha: 0.05", "alpha: 0.05\n    provider: kserve-model-server"),
     16, 15, "spec.analysis.checks[0].kind", "has no ratio metrics"),
    ("template-unknown-placeholder", edit(
        "tolerance: 0.2", "query:\n          errors: 'x{ns=\"${ns}\", r=~\"${revision}\"}'\n"
        "          total: 'y{r=~\"${revision}\"}'"), 17, 19,
     "spec.analysis.checks[0].query.errors", "unknown placeholder ${ns}"),
    ("template-without-revision-regex", edit(
        "tolerance: 0.2", "query:\n          errors: 'x{r=\"${revision}\"}'\n"
        "          total: 'y{r=~\"${revision}\"}'"), 17, 19,
     "spec.analysis.checks[0].query.errors", "regex matcher"),
    ("drift-bad-reference", edit(
        "kind: ratio", "kind: distribution\n        reference: {source: training}"), 16, 20,
     "spec.analysis.checks[0].reference", "exactly one of histogram or file"),
    ("histogram-shape", edit(
        "kind: ratio", "kind: distribution\n        reference:\n          source: training\n"
        "          histogram: {bounds: [0.5], counts: [1, 2, 3]}"), 18, 46,
     "spec.analysis.checks[0].reference.histogram.counts", "needs 2 entries"),
    ("histogram-bounds-order", edit(
        "kind: ratio", "kind: distribution\n        reference:\n          source: training\n"
        "          histogram: {bounds: [0.5, 0.2], counts: [1, 2, 3]}"), 18, 37,
     "spec.analysis.checks[0].reference.histogram.bounds[1]", "strictly increasing"),
    ("approval-timeout-negative", edit(
        "- weight: 50", "- weight: 50\n      pause:\n        approval: {timeout: -1h}"), 10, 29,
     "spec.steps[1].pause.approval.timeout", "must not be negative"),
    ("pause-empty", edit("- weight: 50", "- weight: 50\n      pause: {}"), 9, 14,
     "spec.steps[1].pause", "exactly one of duration or approval"),
    ("on-timeout-unknown", edit(
        "- weight: 50", "- weight: 50\n      pause:\n        approval: {onTimeout: ignore}"), 10,
     31, "spec.steps[1].pause.approval.onTimeout", "'rollback' or 'remind'"),
    ("gate-threshold-without-bounds", edit(
        "  analysis:",
        "  gates:\n    preRollout:\n      metrics:\n        - name: auc\n  analysis:"),
     13, 11, "spec.gates.preRollout.metrics[0]", "give min, max or both"),
    ("slack-channel-bad", edit(
        "  analysis:", "  notifications:\n    slack: {channel: ml rollouts}\n  analysis:"), 11, 22,
     "spec.notifications.slack.channel", "pattern"),
    ("slack-event-unknown", edit(
        "  analysis:", "  notifications:\n    slack:\n      channel: '#x'\n      events: [done]\n"
        "  analysis:"), 13, 16, "spec.notifications.slack.events[0]", "'started'"),
    ("approver-bad-id", edit(
        "  analysis:", "  approvers:\n    slackUsers: [alice]\n  analysis:"), 11, 18,
     "spec.approvers.slackUsers[0]", "pattern"),
    ("non-string-key", edit("  name: p\n", "  name: p\n  1: x\n"), 5, 3, "metadata",
     "keys must be text"),
    ("not-a-mapping", "- just\n- a list\n", 1, 1, "", "must be a mapping"),
    ("empty-file", "# nothing here\n", 1, 1, "", "no policy in file"),
]


@pytest.mark.parametrize(
    ("text", "line", "column", "path", "fragment"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_invalid_policy_is_reported_at_its_location(
    text: str, line: int, column: int | None, path: str, fragment: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        load_text(text, "policy.yaml")
    first = caught.value.problems[0]
    assert (first.file, first.line, first.path) == ("policy.yaml", line, path), str(caught.value)
    if column is not None:
        assert first.column == column, str(caught.value)
    assert fragment in first.message, str(caught.value)
    # compiler-style, one line per problem
    assert str(first).startswith(f"policy.yaml:{line}:{first.column}: ")
    assert "\n" not in str(first)


def test_there_are_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30


def test_every_problem_of_a_file_is_reported_not_just_the_first() -> None:
    text = edit("alpha: 0.05", "alpha: 2").replace("interval: 1m", "interval: soon")
    with pytest.raises(PolicyError) as caught:
        load_text(text, "p.yaml")
    assert [p.path for p in caught.value.problems] == [
        "spec.analysis.interval", "spec.analysis.alpha"]


def test_reference_file_errors_name_the_reference_file(tmp_path: Path) -> None:
    (tmp_path / "ref.yaml").write_text("bounds: [0.5]\ncounts: [1, -2]\n")
    policy = tmp_path / "p.yaml"
    policy.write_text(edit("kind: ratio", "kind: distribution\n        reference:\n"
                           "          source: training\n          file: ref.yaml"))
    with pytest.raises(PolicyError) as caught:
        load_file(policy)
    rendered = str(caught.value)
    assert f"{tmp_path / 'ref.yaml'}:2:13: counts[1]: counts must be finite and non-negative" \
        in rendered
    assert f"{policy}:18:17: spec.analysis.checks[0].reference.file: invalid reference" in rendered


def test_missing_reference_file_is_reported_at_the_file_field(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(edit("kind: ratio", "kind: distribution\n        reference:\n"
                           "          source: training\n          file: nope.yaml"))
    with pytest.raises(PolicyError) as caught:
        load_file(policy)
    assert "cannot read file" in str(caught.value)
    assert "reference.file" in str(caught.value)


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read file"):
        load_file(tmp_path / "missing.yaml")
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(PolicyError, match="not UTF-8"):
        load_file(binary)


def test_alias_bombs_and_recursion_are_refused() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefg", "bcdefgh", strict=True))
    with pytest.raises(PolicyError, match="more than"):
        load_text(bomb, "bomb.yaml")
    with pytest.raises(PolicyError, match="refers to a value that contains it"):
        load_text("a: &a [*a]\n", "loop.yaml")
