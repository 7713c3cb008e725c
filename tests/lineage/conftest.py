"""Fixtures for the lineage tests: a real MLMD on a SQLite file in tmp_path, pre-populated
as Kubeflow Pipelines v2 writes it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.lineage.mlmd import MLMDLineageStore
from controller.settings import MLMDSettings
from tests.lineage.helpers import raw_store
from tests.lineage.kfp_writer import KfpRun, KfpWriter


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "mlmd.sqlite"


@pytest.fixture
def kfp(db: Path) -> KfpWriter:
    return KfpWriter(raw_store(db))


@pytest.fixture
def store(db: Path) -> Iterator[MLMDLineageStore]:
    lineage = MLMDLineageStore(MLMDSettings(backend="sqlite", sqlite_path=db))
    yield lineage
    lineage.close()


@pytest.fixture
def trained(kfp: KfpWriter) -> tuple[KfpRun, KfpRun]:
    """Two training runs: v1 (serving) and v2 (the candidate), both evaluated."""
    v1 = kfp.run(run_id="run-v1", metrics={"accuracy": 0.91, "auc": 0.93, "passed": True})
    v2 = kfp.run(run_id="run-v2", metrics={"accuracy": 0.95, "auc": 0.96, "passed": True})
    return v1, v2
