"""`rollwise lineage NAMESPACE/NAME`: the tree and the JSON, read from a real MLMD file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from controller.cli.lineage import lineage
from controller.lineage.mlmd import MLMDLineageStore
from tests.lineage.helpers import record_promotion_then_rollback
from tests.lineage.kfp_writer import KfpRun, s3_form


@pytest.fixture
def recorded(store: MLMDLineageStore, trained: tuple[KfpRun, KfpRun]) -> tuple[KfpRun, KfpRun]:
    """v1 -> v2 promoted with an approval; then v3 (no pipeline) rolled back."""
    v1, v2 = trained
    record_promotion_then_rollback(store, s3_form(v1.model_uri), s3_form(v2.model_uri),
                                   "analysis failed at step 1: error rate")
    return trained


def test_text_tree(db: Path, recorded: tuple[KfpRun, KfpRun]) -> None:
    _, v2 = recorded
    result = CliRunner().invoke(lineage, ["team-a/iris", "--sqlite", str(db)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "team-a/iris  http://iris.team-a.example.com"
    text = result.output
    assert "├── revision iris-predictor-00001  (serving before Rollwise's first recorded " \
           "rollout)" in text
    assert "revision iris-predictor-00002  deployed by rollout 5f2c9a-1772355600" in text
    assert f"model {v2.model_uri}  (artifact {v2.model_id})" in text
    assert "trained by run run-v2 of pipeline iris-training (task train" in text
    assert "evaluation: accuracy 0.95, auc 0.96, passed 1" in text
    assert "── models never promoted" in text
    assert "registered by Rollwise; no training run recorded" in text
    assert ("rollout 5f2c9a-1772355600  Succeeded  iris-predictor-00001 -> "
            "iris-predictor-00002  policy canary") in text
    assert "approved step 1 by alice@example.com via slack" in text
    assert "step 2: pass: latency p99 120ms vs 118ms" in text
    assert "rollout 77aa-1772370000  Failed  iris-predictor-00002 -> iris-predictor-00003" in text
    assert "last decision: analysis failed at step 1: error rate" in text


def test_json(db: Path, recorded: tuple[KfpRun, KfpRun]) -> None:
    v1, v2 = recorded
    result = CliRunner().invoke(lineage, ["team-a/iris", "--sqlite", str(db), "-o", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["endpoint"] == "team-a/iris"
    assert [r["revision"] for r in data["revisions"]] == ["iris-predictor-00001",
                                                          "iris-predictor-00002"]
    assert [(r["id"], r["outcome"], r["approvers"]) for r in data["rollouts"]] == [
        ("5f2c9a-1772355600", "Succeeded", ["alice@example.com"]),
        ("77aa-1772370000", "Failed", [])]
    runs = {m["uri"]: (m["run"] or {}).get("name") for m in data["models"]}
    assert runs == {v1.model_uri: "run-v1", v2.model_uri: "run-v2",
                    "s3://models/iris/v3": None}


def test_reads_the_configured_store_from_the_environment(
        db: Path, recorded: tuple[KfpRun, KfpRun], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLWISE_MLMD__BACKEND", "sqlite")
    monkeypatch.setenv("ROLLWISE_MLMD__SQLITE_PATH", str(db))
    result = CliRunner().invoke(lineage, ["team-a/iris", "-o", "json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)["rollouts"]) == 2


def test_clear_errors(db: Path, tmp_path: Path, recorded: tuple[KfpRun, KfpRun],
                      monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    result = runner.invoke(lineage, ["iris", "--sqlite", str(db)])
    assert result.exit_code == 2
    assert "expected NAMESPACE/NAME, got 'iris'" in result.output
    result = runner.invoke(lineage, ["team-a/unknown", "--sqlite", str(db)])
    assert result.exit_code == 1
    assert f"nothing recorded for team-a/unknown in MLMD at sqlite:{db}" in result.output
    missing = tmp_path / "nope.sqlite"
    result = runner.invoke(lineage, ["team-a/iris", "--sqlite", str(missing)])
    assert result.exit_code == 1
    assert f"no MLMD database at {missing}" in result.output
    assert not missing.exists()
    monkeypatch.setenv("ROLLWISE_MLMD__BACKEND", "oracle")
    result = runner.invoke(lineage, ["team-a/iris"])
    assert result.exit_code == 1 and "invalid settings" in result.output
