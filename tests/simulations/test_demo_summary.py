"""The demo's tables (simulations/demo/run.py) through rich, without the world: laid out
for an 80-column terminal by controller/cli/table.py, the outcome in words, and every
column whole when the console is not a terminal."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from controller.cli.table import cell_width
from simulations.demo.run import LIVE_COLUMNS, Fitted, Outcome, outcome_in_words, summary_table

OUTCOMES = [
    Outcome("s3://models/churn/v2", "Succeeded",
            "promoted: every step passed; error-rate within tolerance (certified at 50%): "
            "canary 0.48% vs stable 0.51%", 61.2, 4),
    Outcome("s3://models/churn/v3", "Failed",
            "rolled back at step 1 (10%): error-rate failed: canary 6.12% (41/670) vs "
            "stable 0.51% (31/6080), e-value 2.1e+04 >= 300", 20.3, 1),
]


def _render(renderable: Fitted, width: int, terminal: bool) -> list[str]:
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=terminal, color_system=None)
    console.print(renderable, crop=False)
    return out.getvalue().rstrip("\n").split("\n")


@pytest.mark.parametrize(("phase", "words"), [
    ("Succeeded", "promoted"), ("Failed", "rolled back"),
    ("Aborted", "rolled back (aborted)"), ("Progressing", "not finished (Progressing)")])
def test_the_outcome_is_said_in_words(phase: str, words: str) -> None:
    assert outcome_in_words(phase) == words


def test_the_summary_fits_80_columns_and_says_promoted_and_rolled_back() -> None:
    lines = _render(summary_table(OUTCOMES, 150), 80, terminal=True)
    assert lines[0] == "summary (150s in all)"
    assert all(cell_width(line) <= 80 for line in lines), lines
    assert lines[1].split() == ["model", "outcome", "steps", "time", "why"]
    why_at = lines[1].index("why")
    [good] = [i for i, line in enumerate(lines) if line.startswith("s3://models/churn/v2")]
    [bad] = [i for i, line in enumerate(lines) if line.startswith("s3://models/churn/v3")]
    assert lines[good][:why_at].split() == ["s3://models/churn/v2", "promoted", "4", "61s"]
    assert lines[bad][:why_at].split() == ["s3://models/churn/v3", "rolled", "back", "1",
                                           "20s"]
    why = " ".join(line[why_at:].strip() for line in lines[bad:])
    assert why == OUTCOMES[1].reason                # wrapped in its column, nothing lost
    assert all(line[:why_at].strip() == "" for line in lines[good + 1:bad])


def test_off_a_terminal_each_row_is_one_line_with_nothing_cut() -> None:
    lines = _render(summary_table(OUTCOMES, 150), 80, terminal=False)
    assert len(lines) == 4
    assert lines[2].endswith(OUTCOMES[0].reason) and lines[3].endswith(OUTCOMES[1].reason)


def test_the_live_table_fits_a_narrow_terminal() -> None:
    row = ("Progressing", "2", "25", "00002=25%, 00001=75%",
           "error-rate passed: canary 0.48% vs stable 0.51%; p99-latency passed")
    lines = _render(Fitted("rollout of s3://models/churn/v2  (12s)", LIVE_COLUMNS, (row,)),
                    50, terminal=True)
    assert all(cell_width(line) <= 50 for line in lines), lines
    assert lines[1].split()[:2] == ["phase", "canary%"]
    assert lines[2].startswith("Progressing")
