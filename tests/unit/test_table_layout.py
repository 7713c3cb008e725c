"""The terminal layout (controller/cli/table.py) directly: tables fit 80 and 200 columns
and degrade gracefully at 40, long reasons wrap as whole words inside their column,
non-ASCII names line up by terminal cells, empty tables keep their header, and the plain
form keeps every byte of every cell."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.cli.table import (
    ELLIPSIS,
    GAP,
    Column,
    Laid,
    TableError,
    cell_width,
    layout,
    markdown,
    plain,
    truncate,
    wrap,
)

REASON = ("rolled back at step 1 (10%): error-rate failed: canary 6.12% (41/670) vs "
          "stable 0.51% (31/6080), e-value 2.1e+04 >= 300; p99-latency passed")
COLUMNS = (
    Column("NAMESPACE", priority=5),
    Column("NAME", priority=9),
    Column("POLICY", priority=2),
    Column("PHASE", priority=8, min_width=11),
    Column("CANARY%", priority=6, align="right"),
    Column("LAST VERDICT", priority=7, min_width=20, fit="wrap", max_lines=3),
    Column("AGE", priority=4, align="right"),
)
ROWS = (
    ("models", "churn-predictor", "conservative", "Failed", "0", REASON, "3m"),
    ("équipe-ü", "模型-推荐", "fast", "Progressing", "25", "", "12s"),
)


def _starts(laid: Laid) -> list[int]:
    """The terminal cell where each shown column starts."""
    starts, at = [], 0
    for width in laid.widths:
        starts.append(at)
        at += width + GAP
    return starts


def _cell(line: str, start: int, width: int) -> str:
    """What ``line`` shows in the ``width`` terminal cells from ``start``."""
    out, at = [], 0
    for char in line:
        if start <= at < start + width:
            out.append(char)
        at += cell_width(char)
    return "".join(out).strip()


def _column(laid: Laid, header: str, row: int) -> list[str]:
    """Row ``row``'s text in column ``header``, line by line."""
    i = [c.header for c in laid.columns].index(header)
    return [_cell(line, _starts(laid)[i], laid.widths[i]) for line in laid.rows[row]]


def test_at_200_columns_every_column_shows_and_the_reason_is_whole() -> None:
    laid = layout(COLUMNS, ROWS, 200)
    assert [c.header for c in laid.columns] == [c.header for c in COLUMNS]
    assert laid.dropped == ()
    assert all(cell_width(line) <= 200 for line in laid.lines())
    assert " ".join(_column(laid, "LAST VERDICT", 0)) == REASON    # wrapped, not cut
    assert len(laid.rows[0]) == 2 and len(laid.rows[1]) == 1
    assert _column(laid, "NAME", 0) == ["churn-predictor", ""]
    assert _column(laid, "AGE", 0) == ["3m", ""]


def test_at_80_columns_low_priority_columns_go_and_the_reason_wraps_in_its_column() -> None:
    laid = layout(COLUMNS, ROWS, 80)
    assert all(cell_width(line) <= 80 for line in laid.lines())
    assert laid.dropped == ("POLICY",)
    verdict = _column(laid, "LAST VERDICT", 0)
    assert 1 < len(verdict) <= 3                  # wrapped, within max_lines
    words = " ".join(verdict).split()
    assert words[:-1] == REASON.split()[:len(words) - 1]   # whole words, in order
    assert verdict[-1].endswith(ELLIPSIS)         # more was left than three lines
    for header, expected in (("NAME", "churn-predictor"), ("PHASE", "Failed"),
                             ("CANARY%", "0"), ("AGE", "3m")):
        assert _column(laid, header, 0) == [expected, "", ""]   # other cells: one line


def test_at_80_columns_non_ascii_cells_line_up_by_terminal_cells() -> None:
    laid = layout(COLUMNS, ROWS, 80)
    assert _column(laid, "NAMESPACE", 1) == ["équipe-ü"]
    assert _column(laid, "NAME", 1) == ["模型-推荐"]
    assert _column(laid, "PHASE", 1) == ["Progressing"]
    assert _column(laid, "AGE", 1) == ["12s"]
    assert cell_width("模型-推荐") == 9 and len("模型-推荐") == 5


def test_at_40_columns_it_keeps_the_most_important_columns_and_fits() -> None:
    laid = layout(COLUMNS, ROWS, 40)
    assert all(cell_width(line) <= 40 for line in laid.lines())
    shown = [c.header for c in laid.columns]
    assert shown[:2] == ["NAME", "PHASE"]
    assert set(laid.dropped) >= {"POLICY", "AGE", "NAMESPACE"}
    assert laid.rows[0][0].startswith("churn-predictor")


def test_a_width_too_small_for_one_column_narrows_it_rather_than_failing() -> None:
    laid = layout(COLUMNS, ROWS, 6)
    assert [c.header for c in laid.columns] == ["NAME"]
    assert all(cell_width(line) <= 6 for line in laid.lines())
    assert laid.rows[0][0] == "churn" + ELLIPSIS


def test_an_empty_table_is_its_header() -> None:
    assert layout(COLUMNS, [], 80).lines() == [
        "NAMESPACE  NAME  POLICY  PHASE  CANARY%  LAST VERDICT  AGE"]
    assert plain(COLUMNS, []) == "\t".join(c.header for c in COLUMNS)


def test_wide_layout_cuts_nothing() -> None:
    laid = layout(COLUMNS, ROWS, None)
    assert laid.dropped == () and len(laid.lines()) == 3 and REASON in laid.text()


def test_plain_is_one_tab_separated_line_per_row_with_nothing_cut() -> None:
    text = plain(COLUMNS, [(*ROWS[0][:5], "line one\nline\ttwo", "3m"), ROWS[1]])
    lines = text.split("\n")
    assert len(lines) == 3
    assert all(len(line.split("\t")) == len(COLUMNS) for line in lines)
    assert lines[1].split("\t")[5] == "line one line two"
    assert lines[2].split("\t")[5] == "-"          # empty cells keep the field count
    assert lines[2].split("\t")[1] == "模型-推荐"
    assert "\x1b" not in text and ELLIPSIS not in text


def test_a_newline_in_a_cell_never_breaks_the_row() -> None:
    laid = layout(COLUMNS[:2], [("a\nb", "c")], 80)
    assert laid.lines() == ["NAMESPACE  NAME", "a b        c"]


@pytest.mark.parametrize(("text", "width", "expected"), [
    ("Progressing", 20, "Progressing"),
    ("Progressing", 7, "Progre" + ELLIPSIS),
    ("模型-推荐", 5, "模型" + ELLIPSIS),
    ("模型", 2, ELLIPSIS),
    ("abc", 0, ""),
])
def test_truncate_counts_terminal_cells(text: str, width: int, expected: str) -> None:
    assert truncate(text, width) == expected
    assert cell_width(truncate(text, width)) <= width


@pytest.mark.parametrize(("text", "width", "max_lines", "expected"), [
    ("a bb ccc", 4, None, ["a bb", "ccc"]),
    ("a bb ccc dddd", 4, 2, ["a bb", "ccc" + ELLIPSIS]),
    ("averyveryverylongword ok", 6, None, ["avery" + ELLIPSIS, "ok"]),
    ("", 5, None, [""]),
])
def test_wrap_breaks_between_words_only(text: str, width: int, max_lines: int | None,
                                        expected: list[str]) -> None:
    assert wrap(text, width, max_lines) == expected


def test_bad_tables_are_refused_naming_what_is_wrong() -> None:
    with pytest.raises(TableError, match="row 0 has 1 cells for 7 columns"):
        layout(COLUMNS, [("x",)], 80)
    with pytest.raises(TableError, match="at least one column"):
        layout((), [], 80)
    with pytest.raises(TableError, match="'WHY': max_lines must be at least 1, got 0"):
        Column("WHY", fit="wrap", max_lines=0)


cells = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(st.tuples(cells, cells, cells), max_size=4),
       width=st.integers(min_value=1, max_value=220))
def test_every_line_fits_whatever_the_cells_and_the_width(
        rows: list[tuple[str, str, str]], width: int) -> None:
    columns = (Column("A", priority=3), Column("B", priority=1, min_width=3),
               Column("WHY", priority=2, min_width=4, fit="wrap"))
    laid = layout(columns, rows, width)
    assert all(cell_width(line) <= max(width, 1) for line in laid.lines())
    assert len(laid.rows) == len(rows)
    assert len(plain(columns, rows).split("\n")) == len(rows) + 1


def test_markdown_marks_right_aligned_columns_and_escapes_pipes() -> None:
    columns = (Column("scenario"), Column("rps", align="right"))
    assert markdown(columns, [("a|b", "10")]) == (
        "| scenario | rps |\n|---|---:|\n| a\\|b | 10 |")
