"""ROLLWISE_SINK_* settings and the CLI command."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from controller.cli.app import main
from controller.sink.settings import load_sink_settings


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLWISE_SINK_BUCKETS", "0.1, 0.5,0.9")
    monkeypatch.setenv("ROLLWISE_SINK_KUBERNETES__KUBECONFIG", "/tmp/k")
    monkeypatch.setenv("ROLLWISE_SINK_MAX_REVISIONS", "20")
    settings = load_sink_settings()
    assert settings.buckets == [0.1, 0.5, 0.9]
    assert str(settings.kubernetes.kubeconfig) == "/tmp/k"
    assert settings.max_revisions == 20


@pytest.mark.parametrize("variable", ["ROLLWISE_SINK_BUCKET",
                                      "ROLLWISE_SINK_KUBERNETES__KUBECONFG"])
def test_a_typo_is_an_error_not_a_default(monkeypatch: pytest.MonkeyPatch,
                                          variable: str) -> None:
    monkeypatch.setenv(variable, "x")
    with pytest.raises(ValueError, match=variable):
        load_sink_settings()


def test_the_command_is_registered_and_refuses_bad_settings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    assert "prediction-sink" in runner.invoke(main, ["--help"]).output
    monkeypatch.setenv("ROLLWISE_SINK_BUCKETS", "0.5,0.1")
    result = runner.invoke(main, ["prediction-sink"])
    assert result.exit_code == 1 and "strictly increasing" in result.output, result.output


def test_the_layout_can_come_from_a_policy_file(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    """A policy whose reference is unusable is refused at start-up, naming the metric."""
    policy = tmp_path / "p.yaml"
    policy.write_text("""\
apiVersion: rollwise.io/v1alpha1
kind: RolloutPolicy
metadata: {name: p}
spec:
  steps: [{weight: 10}, {weight: 100}]
  analysis:
    checks:
      - {name: d, kind: distribution, metric: rollwise_prediction}
""")
    monkeypatch.setenv("ROLLWISE_SINK_REFERENCE_POLICY", str(policy))
    result = CliRunner().invoke(main, ["prediction-sink"])
    assert result.exit_code == 1 and "training reference" in result.output, result.output
