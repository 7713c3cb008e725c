"""The scale measurement: its arithmetic, and on the real world that Prometheus queries per
analysis pass do not grow with the number of rollouts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from controller.cli import terminal
from simulations import scale
from simulations.kube.build import Binaries
from simulations.scale import Sample


def _sample(at: float, passes: float, queries: float, verdicts: float, cpu: float,
            api: int, lists: int = 0) -> Sample:
    return Sample(at=at, analysis_passes=passes, analysis_seconds=passes * 0.02,
                  reconcile_passes=passes * 2, reconcile_seconds=passes * 0.05,
                  verdicts=verdicts, prometheus_queries=queries, cpu_seconds=cpu,
                  api_requests=api, api_lists=lists)


def test_rows_are_deltas_per_pass_and_per_second() -> None:
    row = scale.row(10, _sample(100.0, 3, 40, 7, 1.0, 50, 1),
                    _sample(130.0, 13, 80, 67, 1.5, 140, 4))
    assert row.analysis_passes == 10
    assert row.queries_per_pass == 4.0
    assert row.queries_per_second == pytest.approx(40 / 30)
    assert row.judged_per_second == pytest.approx(2.0)
    assert row.analysis_ms_per_pass == pytest.approx(20.0)
    assert row.reconcile_ms_per_pass == pytest.approx(25.0)
    assert row.cpu_ms_per_pass == pytest.approx(50.0)
    assert row.api_requests_per_second == pytest.approx(3.0)
    assert row.api_lists_per_second == pytest.approx(0.1)
    assert "| 10 | 2.00 | 10 | 4.0 | 1.33 | 20 | 25 | 50 | 3.0 | 0.10 |" in scale.table([row])


def test_a_window_without_passes_says_so_instead_of_dividing_by_zero() -> None:
    row = scale.row(1, _sample(0.0, 5, 20, 5, 1.0, 0), _sample(10.0, 5, 20, 5, 1.0, 0))
    assert row.analysis_passes == 0 and math.isnan(row.queries_per_pass)


@pytest.mark.e2e
def test_prometheus_queries_per_pass_do_not_grow_with_rollouts(
        tmp_path: Path, kube_binaries: Binaries) -> None:
    rows = list(scale.measure([1, 4], window=15.0, rps=2.0, workdir=tmp_path,
                              binaries=kube_binaries))
    one, four = rows
    assert one.analysis_passes >= 2 and four.analysis_passes >= 2
    # One batched query per PromQL template, however many rollouts the pass judges: four
    # rollouts cost no more queries per pass than one (a pass in which no rollout needs a
    # template asks fewer; a query that completes as the window opens or closes can shift
    # one count by one).
    assert one.queries_per_pass > 0 and four.queries_per_pass > 0
    assert four.queries_per_pass <= round(one.queries_per_pass) + (
        1 / four.analysis_passes + 1e-9)
    # Every analysing rollout is judged about once per 5 s interval.
    assert four.judged_per_second > 2.5 * one.judged_per_second
    # Passes read the informer's cache: no LIST of InferenceServices in either window
    # (before the informer, one per pass: a pass a second at least).
    assert one.api_lists_per_second == 0 and four.api_lists_per_second == 0


def test_on_a_terminal_the_load_table_is_laid_out_for_its_width(
        monkeypatch: pytest.MonkeyPatch) -> None:
    row = scale.row(10, _sample(100.0, 3, 40, 7, 1.0, 50), _sample(130.0, 13, 80, 67, 1.5, 140))
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(terminal, "stdout_is_terminal", lambda: True)
    lines = terminal.for_terminal(scale.TABLE_COLUMNS, scale.table_rows([row]),
                                  otherwise=scale.table([row])).split("\n")
    assert len(lines) == 2 and all(len(line) <= 80 for line in lines)
    assert lines[0].startswith("analysing rollouts  Prometheus queries / pass")
    assert lines[1].split()[:2] == ["10", "4.0"]
    monkeypatch.setattr(terminal, "stdout_is_terminal", lambda: False)
    assert terminal.for_terminal(scale.TABLE_COLUMNS, scale.table_rows([row]),
                                 otherwise="md") == "md"
