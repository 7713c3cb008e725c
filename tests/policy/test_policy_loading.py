"""Example policies validate, the schema stays in sync, and the loader never crashes."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.cli import main
from controller.policy import PolicyError, json_schema, load_file, load_files
from controller.policy.durations import MAX_DURATION, format_duration, parse_duration
from controller.policy.loader import load_text, policy_files
from controller.policy.model import DistributionCheck, LatencyCheck, RatioCheck

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"


@pytest.mark.parametrize("path", policy_files(POLICIES), ids=lambda p: p.name)
def test_every_example_policy_validates(path: Path) -> None:
    assert load_file(path)


def test_there_are_the_three_documented_examples() -> None:
    names = {loaded.name for loaded in load_files(policy_files(POLICIES))[0]}
    assert {"conservative", "fast", "drift-guard"} <= names


def test_conservative_example_asks_for_approval_before_fifty_percent() -> None:
    (loaded,) = load_file(POLICIES / "conservative.yaml")
    spec = loaded.policy.spec
    before_50 = [s for s in spec.steps if s.weight < 50][-1]
    assert before_50.pause is not None and before_50.pause.approval is not None


def test_drift_example_loads_its_training_reference_from_file() -> None:
    (loaded,) = load_file(POLICIES / "drift.yaml")
    checks = [c for c in loaded.policy.spec.analysis.checks if isinstance(c, DistributionCheck)]
    training = [c for c in checks if c.reference.source == "training"]
    assert training and training[0].reference.histogram is not None
    assert len(training[0].reference.histogram.counts) == 11


def test_defaults_are_the_documented_safe_ones() -> None:
    text = """
apiVersion: rollwise.io/v1alpha1
kind: RolloutPolicy
metadata: {name: minimal}
spec:
  steps: [{weight: 20}, {weight: 100}]
  analysis:
    checks: [{name: e, kind: ratio}, {name: l, kind: latency, quantile: 0.99}]
"""
    (loaded,) = load_text(text, "minimal.yaml")
    spec = loaded.policy.spec
    assert spec.analysis.alpha == 0.05
    assert spec.analysis.interval == timedelta(minutes=1)
    assert spec.analysis.provider == "knative-queue-proxy"
    assert spec.on_failure.action == "rollback"
    assert spec.on_inconclusive.action == "pause"
    assert spec.on_missing_data.action == "pause"
    assert spec.min_duration(0) == timedelta(minutes=5)
    assert spec.min_requests(0) == 200
    assert spec.ready_timeout == timedelta(minutes=10)
    ratio, latency = spec.analysis.checks
    assert isinstance(ratio, RatioCheck) and ratio.tolerance == 0.2
    assert isinstance(latency, LatencyCheck) and latency.quantile == 0.99


def test_committed_schema_is_in_sync_with_the_models() -> None:
    committed = json.loads((POLICIES / "rolloutpolicy.schema.json").read_text())
    assert committed == json_schema(), "regenerate it with: make schema"


def test_schema_rejects_unknown_fields_for_editors() -> None:
    schema = json_schema()
    assert schema["additionalProperties"] is False
    assert schema["$defs"]["Step"]["additionalProperties"] is False
    assert "minDuration" in schema["$defs"]["Step"]["properties"]


def test_two_files_defining_the_same_policy_name(tmp_path: Path) -> None:
    source = (POLICIES / "fast.yaml").read_text()
    (tmp_path / "a.yaml").write_text(source)
    (tmp_path / "b.yaml").write_text(source)
    policies, problems = load_files(policy_files(tmp_path))
    assert [p.name for p in policies] == ["fast"]
    assert len(problems) == 1 and "already defined at" in problems[0].message


def test_a_file_that_defines_a_name_twice_contributes_nothing(tmp_path: Path) -> None:
    """Found by the policy fuzzer: the first of the two was loaded, so a file with a
    problem was half-applied (the controller's store took it)."""
    source = (POLICIES / "fast.yaml").read_text()
    (tmp_path / "twice.yaml").write_text(source + "\n---\n" + source)
    policies, problems = load_files([tmp_path / "twice.yaml"])
    assert policies == []
    assert [p.path for p in problems] == ["metadata.name"] and "already defined" in str(
        problems[0])


def test_a_file_whose_name_clashes_contributes_none_of_its_policies(tmp_path: Path) -> None:
    source = (POLICIES / "fast.yaml").read_text()
    (tmp_path / "a.yaml").write_text(source)
    (tmp_path / "b.yaml").write_text(source + "\n---\n" + source.replace("name: fast",
                                                                          "name: fast2"))
    policies, problems = load_files(policy_files(tmp_path))
    assert [(p.name, Path(p.file).name) for p in policies] == [("fast", "a.yaml")]
    assert len(problems) == 1 and problems[0].file == str(tmp_path / "b.yaml")


def test_a_known_field_in_the_wrong_place_is_not_a_typo() -> None:
    text = (POLICIES / "fast.yaml").read_text().replace("  steps:\n", "  weight: 5\n  steps:\n")
    with pytest.raises(PolicyError) as caught:
        load_text(text, "p.yaml")
    assert [p.message for p in caught.value.problems] == ["field 'weight' does not belong here"]


def test_one_bad_document_keeps_the_whole_file_out(tmp_path: Path) -> None:
    good = (POLICIES / "fast.yaml").read_text()
    bad = good.replace("name: fast", "name: fast2").replace("alpha: 0.05", "alpha: 9")
    (tmp_path / "multi.yaml").write_text(good + "\n---\n" + bad)
    policies, problems = load_files([tmp_path / "multi.yaml"])
    assert policies == [] and problems


# --- durations ------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("500ms", timedelta(milliseconds=500)), ("30s", timedelta(seconds=30)),
    ("5m", timedelta(minutes=5)), ("2h", timedelta(hours=2)), ("1h30m", timedelta(minutes=90)),
    ("1d", timedelta(days=1)), ("0s", timedelta()),
])
def test_durations_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "m5", "-5m", "5 m", "1.5h", "5min", "PT5M"])
def test_malformed_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=MAX_DURATION // timedelta(milliseconds=1)))
def test_durations_round_trip(ms: int) -> None:
    value = timedelta(milliseconds=ms)
    assert parse_duration(format_duration(value)) == value


# --- the loader never fails with anything but PolicyError ------------------------------

_yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20),
    st.sampled_from(["5m", "-1s", "100", "ratio", "latency", "distribution", "training",
                     "rollwise.io/v1alpha1", "RolloutPolicy", "0.05", "#x"]),
)
_keys = st.one_of(st.sampled_from([
    "apiVersion", "kind", "metadata", "name", "spec", "steps", "weight", "pause", "approval",
    "analysis", "checks", "interval", "alpha", "tolerance", "quantile", "threshold", "reference",
    "source", "histogram", "bounds", "counts", "file", "query", "errors", "total", "gates",
    "preRollout", "metrics", "min", "max", "notifications", "slack", "channel", "events"]),
    st.text(max_size=8))
_documents = st.recursive(
    _yaml_scalars,
    lambda children: st.one_of(st.lists(children, max_size=5),
                               st.dictionaries(_keys, children, max_size=6)),
    max_leaves=40,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(_documents)
def test_any_yaml_document_gives_a_policy_or_a_policy_error(document: object) -> None:
    try:
        load_text(yaml.safe_dump(document), "fuzz.yaml")
    except PolicyError as err:
        assert err.problems
        assert all(p.line >= 1 and p.column >= 1 for p in err.problems)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_gives_a_policy_or_a_policy_error(text: str) -> None:
    try:
        load_text(text, "fuzz.yaml")
    except PolicyError as err:
        assert err.problems


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2000), st.text(max_size=12))
def test_mutating_a_valid_policy_never_crashes(position: int, insert: str) -> None:
    source = (POLICIES / "conservative.yaml").read_text()
    position = min(position, len(source))
    try:
        load_text(source[:position] + insert + source[position:], "mutant.yaml")
    except PolicyError as err:
        assert err.problems


# --- the CLI ---------------------------------------------------------------------------


def test_cli_validate_examples_exit_zero() -> None:
    result = CliRunner().invoke(main, ["policy", "validate", str(POLICIES)])
    assert result.exit_code == 0, result.output
    assert "policy 'conservative' is valid" in result.output


def test_cli_validate_reports_compiler_style_and_exits_one(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((POLICIES / "fast.yaml").read_text().replace("alpha: 0.05", "alpha: 0.9"))
    result = CliRunner().invoke(main, ["policy", "validate", str(POLICIES / "fast.yaml"), str(bad)])
    assert result.exit_code == 1
    line = next(x for x in result.output.splitlines() if x.startswith(str(bad)))
    assert line.endswith("spec.analysis.alpha: Input should be less than or equal to 0.5, got 0.9")
    assert "Traceback" not in result.output


def test_cli_schema_prints_the_committed_schema() -> None:
    result = CliRunner().invoke(main, ["policy", "schema"])
    assert json.loads(result.output) == json.loads(
        (POLICIES / "rolloutpolicy.schema.json").read_text())
