"""``rollwise status`` through click on in-memory objects: laid out for an 80-column
terminal, the plain tab-separated form when stdout is not one, ``-o wide`` and
``-o json|yaml`` with the full text."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from controller.cli import main, rollouts, terminal
from controller.cli.table import ELLIPSIS, cell_width
from controller.kube.fakes import FakeObjects
from controller.rollout.state import Phase
from tests.unit.test_reconciler import isvc, progressing_state

REASON = ("error-rate failed: canary 6.12% (41/670) vs stable 0.51% (31/6080), "
          "e-value 2.1e+04 >= 300; p99-latency passed: canary 41ms vs stable 40ms")


def _objects() -> list[dict[str, Any]]:
    failed = dataclasses.replace(progressing_state(), phase=Phase.FAILED, last_verdict=REASON)
    bad = isvc("s3://m/v2", 0, created="churn-predictor-00002", state=failed,
               policy="conservative")
    bad["metadata"].update(name="churn-predictor-with-a-long-name", uid="u1")
    good = isvc("s3://m/v2", 10, created="churn-predictor-00002", state=progressing_state())
    good["metadata"].update(name="推荐模型", uid="u2")
    return [bad, good]


class _FakeTarget:
    """What ``status`` asks of the cluster, on FakeObjects."""

    def __init__(self, kubeconfig: Path | None, context: str | None,
                 namespace: str | None) -> None:
        self.namespace = namespace or "models"

    def objects(self, namespaces: list[str]) -> FakeObjects:
        return FakeObjects(*_objects())


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setattr(rollouts, "_Target", _FakeTarget)
    return CliRunner()


def _status(runner: CliRunner, *args: str, env: Mapping[str, str] | None = None) -> str:
    result = runner.invoke(main, ["status", *args], env=dict(env or {}))
    assert result.exit_code == 0, result.output
    return result.output


def test_on_an_80_column_terminal_the_table_fits_and_the_verdict_wraps_in_its_column(
        cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(terminal, "stdout_is_terminal", lambda: True)
    lines = _status(cli, env={"COLUMNS": "80"}).splitlines()
    assert all(cell_width(line) <= 80 for line in lines), lines
    header, *rest = lines
    # a 32-character name: the least important columns make room for it and the verdict
    assert " ".join(header.split()) == "NAME PHASE CANARY% LAST VERDICT"
    verdict_at = header.index("LAST VERDICT")
    first, *more = rest[:3]
    assert first.startswith("churn-predictor-with-a-long-name  Failed")
    assert first[verdict_at:].startswith("error-rate failed:")
    assert all(line[:verdict_at].strip() == "" for line in more)   # continuation lines
    assert more[-1].endswith(ELLIPSIS)      # cut after three lines; whole in -o wide
    assert " ".join(line[verdict_at:] for line in rest[:3]).startswith(
        "error-rate failed: canary 6.12% (41/670) vs stable")   # whole words, in order
    assert rest[3].startswith("推荐模型") and "Progressing" in rest[3]
    assert len(rest) == 4


def test_when_stdout_is_not_a_terminal_it_prints_one_tab_separated_line_per_rollout(
        cli: CliRunner) -> None:
    lines = _status(cli, env={"COLUMNS": "80"}).splitlines()   # CliRunner: not a TTY
    assert [line.split("\t") for line in lines] == [
        ["NAMESPACE", "NAME", "POLICY", "PHASE", "STEP", "CANARY%", "LAST VERDICT", "AGE"],
        ["models", "churn-predictor-with-a-long-name", "conservative", "Failed", "1", "0",
         REASON, lines[1].split("\t")[-1]],
        ["models", "推荐模型", "fast", "Progressing", "1", "10", "-",
         lines[2].split("\t")[-1]],
    ]
    assert all(line.split("\t")[-1] not in ("", "-") for line in lines[1:])   # the age
    assert "\x1b" not in "\n".join(lines)


def test_an_explicit_table_off_a_terminal_is_laid_out_for_columns(cli: CliRunner) -> None:
    lines = _status(cli, "-o", "table", env={"COLUMNS": "60"}).splitlines()
    assert all(cell_width(line) <= 60 for line in lines)
    assert lines[0].split()[:2] == ["NAME", "PHASE"]


def test_wide_shows_every_column_and_the_whole_verdict_on_one_line(cli: CliRunner) -> None:
    lines = _status(cli, "-o", "wide", env={"COLUMNS": "80"}).splitlines()
    assert len(lines) == 3
    assert " ".join(lines[0].split()).endswith(
        "LAST VERDICT AGE CANARY REVISION STABLE REVISION ROLLOUT")
    assert REASON in lines[1]
    assert lines[1].split()[-3:] == ["churn-predictor-00002", "churn-predictor-00001", "r1"]


def test_json_and_yaml_carry_every_field(cli: CliRunner) -> None:
    rows = json.loads(_status(cli, "-o", "json"))
    assert rows == yaml.safe_load(_status(cli, "-o", "yaml"))
    assert [r["name"] for r in rows] == ["churn-predictor-with-a-long-name", "推荐模型"]
    assert rows[0]["lastVerdict"] == REASON and rows[0]["phase"] == "Failed"
    assert set(rows[0]) == {"namespace", "name", "policy", "phase", "step", "canaryPercent",
                            "canaryRevision", "stableRevision", "lastVerdict",
                            "lastDecision", "pause", "approvals", "rollout", "age"}


def test_help_documents_the_plain_form(cli: CliRunner) -> None:
    text = _status(cli, "--help")
    assert "not a terminal" in text and "tab" in text and "wide" in text


def test_no_rollouts_in_a_table_says_so(cli: CliRunner, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    monkeypatch.setattr(_FakeTarget, "objects", lambda self, ns: FakeObjects())
    result = cli.invoke(main, ["status", "-o", "table"])
    assert result.exit_code == 0
    assert "no InferenceService managed by Rollwise in namespace models" in result.output
    assert _status(cli).splitlines() == ["\t".join(
        ["NAMESPACE", "NAME", "POLICY", "PHASE", "STEP", "CANARY%", "LAST VERDICT", "AGE"])]
