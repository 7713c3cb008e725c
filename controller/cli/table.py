"""Tables that fit the terminal, and their plain form for pipes. Pure: no I/O.

One piece serves every table Rollwise prints (``rollwise status``, the demo's live table
and summary): the caller says what the columns are (``Column``) and gives the cells as
text; ``layout`` lays them out for a width, ``plain`` writes them for a program to read,
``markdown`` for a results file (the benchmark's and the load test's tables).

Laying out for ``width`` terminal cells:

1. A column needs at least ``min_width`` cells. By default a ``"truncate"`` column needs
   its widest cell (it is never cut while columns can be dropped instead) and a ``"wrap"``
   column its header. While the visible columns' minimums and the gaps between them exceed
   the width, the column of lowest ``priority`` goes (the rightmost of equals); the last
   column standing is never dropped, it is narrowed instead.
2. The space left above the minimums is shared max-min fairly: a column whose text fits in
   its share gets its full width, the others split what remains equally.
3. A cell wider than its column is cut to the column with an ellipsis (``fit="truncate"``)
   or wrapped at word boundaries onto more lines of the same column (``fit="wrap"``, at
   most ``max_lines``, the last one ellipsised when more was left). A cell is never split
   into fragments across the row, and a word longer than its column is truncated, never
   broken.

Widths are counted in terminal cells (East Asian wide characters take two, combining
marks none), so non-ASCII names line up. Control characters (newlines, tabs) in a cell are
shown as spaces: a cell is always one line of text before wrapping.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

ELLIPSIS = "…"
GAP = 2
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")

Fit = Literal["truncate", "wrap"]
Align = Literal["left", "right"]


class TableError(ValueError):
    """A table that cannot be laid out as given (the caller's bug, named precisely)."""


@dataclass(frozen=True)
class Column:
    """One column: its header, how much it matters and how its long cells fit.

    ``priority``: columns of lower priority are dropped first when the width is short.
    ``min_width``: the least width worth showing (default: the widest cell for
    ``"truncate"``, the header's width for ``"wrap"``).
    ``fit``: ``"truncate"`` (one line, ellipsis) or ``"wrap"`` (whole words, more lines).
    ``max_lines``: for ``"wrap"``, the most lines a cell takes (``None``: as many as needed).
    """

    header: str
    priority: int = 0
    min_width: int | None = None
    fit: Fit = "truncate"
    max_lines: int | None = None
    align: Align = "left"

    def __post_init__(self) -> None:
        if self.min_width is not None and self.min_width < 1:
            raise TableError(f"column {self.header!r}: min_width must be at least 1, "
                             f"got {self.min_width}")
        if self.max_lines is not None and self.max_lines < 1:
            raise TableError(f"column {self.header!r}: max_lines must be at least 1, "
                             f"got {self.max_lines}")


@dataclass(frozen=True)
class Laid:
    """A table laid out: which columns are shown, their widths, and the text lines of the
    header and of each row (a row may take several lines when a column wraps)."""

    columns: tuple[Column, ...]
    widths: tuple[int, ...]
    header: str
    rows: tuple[tuple[str, ...], ...]
    dropped: tuple[str, ...]

    def lines(self) -> list[str]:
        return [self.header, *(line for row in self.rows for line in row)]

    def text(self) -> str:
        return "\n".join(self.lines())


def clean(text: str) -> str:
    """A cell as one line: control characters (newlines, tabs, ...) become one space."""
    return _CONTROL.sub(" ", text)


def _char_width(char: str) -> int:
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def cell_width(text: str) -> int:
    """How many terminal cells ``text`` takes."""
    return sum(_char_width(c) for c in text)


def truncate(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` cells, ending in an ellipsis when it was cut."""
    if cell_width(text) <= width:
        return text
    if width <= 0:
        return ""
    kept, used = [], 0
    for char in text:
        size = _char_width(char)
        if used + size > width - 1:
            break
        kept.append(char)
        used += size
    return "".join(kept).rstrip() + ELLIPSIS


def wrap(text: str, width: int, max_lines: int | None = None) -> list[str]:
    """``text`` on lines of at most ``width`` cells, broken between words only; a word
    wider than the line is truncated; beyond ``max_lines`` the last line is ellipsised."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if cell_width(candidate) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        current = word if cell_width(word) <= width else truncate(word, width)
    if current or not lines:
        lines.append(current)
    if max_lines is not None and len(lines) > max_lines:
        # the joined rest is wider than a line (its second part did not fit after the first)
        lines = [*lines[:max_lines - 1], truncate(" ".join(lines[max_lines - 1:]), width)]
    return lines


def _pad(text: str, width: int, align: Align) -> str:
    space = " " * max(0, width - cell_width(text))
    return space + text if align == "right" else text + space


def _check(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> None:
    if not columns:
        raise TableError("a table needs at least one column")
    for i, row in enumerate(rows):
        if len(row) != len(columns):
            raise TableError(f"row {i} has {len(row)} cells for {len(columns)} columns "
                             f"({', '.join(c.header for c in columns)})")


def _share(needs: list[int], space: int) -> list[int]:
    """Max-min fair shares of ``space`` for ``needs``: small needs are met in full."""
    given = [0] * len(needs)
    open_ = sorted(range(len(needs)), key=lambda i: needs[i])
    while open_ and space > 0:
        fair = space // len(open_)
        i = open_[0]
        if needs[i] <= fair:
            given[i] = needs[i]
            space -= needs[i]
            open_.pop(0)
            continue
        for j in open_:
            given[j] = fair
        for j in open_[:space - fair * len(open_)]:   # the remainder, one cell each
            given[j] += 1
        break
    return given


def layout(columns: Sequence[Column], rows: Sequence[Sequence[str]],
           width: int | None) -> Laid:
    """The table laid out for ``width`` cells (``None``: as wide as its text, nothing
    dropped, nothing cut: the ``-o wide`` form)."""
    _check(columns, rows)
    cells = [[clean(cell) for cell in row] for row in rows]
    natural = [max([cell_width(c.header), *(cell_width(r[i]) for r in cells)])
               for i, c in enumerate(columns)]
    minimum = [min(natural[i], c.min_width if c.min_width is not None
                   else cell_width(c.header) if c.fit == "wrap" else natural[i])
               for i, c in enumerate(columns)]
    shown = list(range(len(columns)))
    if width is not None:
        def needed() -> int:
            return sum(minimum[i] for i in shown) + GAP * (len(shown) - 1)

        while len(shown) > 1 and needed() > width:
            lowest = min(columns[i].priority for i in shown)
            shown.remove(max(i for i in shown if columns[i].priority == lowest))
        space = max(0, width - needed())
        extra = _share([natural[i] - minimum[i] for i in shown], space)
        widths = [minimum[i] + e for i, e in zip(shown, extra, strict=True)]
        if len(shown) == 1:
            widths = [max(1, min(natural[shown[0]], width))]
    else:
        widths = [natural[i] for i in shown]
    chosen = tuple(columns[i] for i in shown)

    def render(texts: list[list[str]]) -> tuple[str, ...]:
        height = max(len(t) for t in texts)
        return tuple(
            (" " * GAP).join(_pad(t[n] if n < len(t) else "", w, c.align)
                             for t, w, c in zip(texts, widths, chosen, strict=True)).rstrip()
            for n in range(height))

    def fitted(text: str, column: Column, w: int) -> list[str]:
        if column.fit == "wrap":
            return wrap(text, w, column.max_lines)
        return [truncate(text, w)]

    header = render([[truncate(c.header, w)] for c, w in zip(chosen, widths, strict=True)])[0]
    laid_rows = tuple(render([fitted(row[i], columns[i], w)
                              for i, w in zip(shown, widths, strict=True)])
                      for row in cells)
    return Laid(chosen, tuple(widths), header, laid_rows,
                tuple(c.header for i, c in enumerate(columns) if i not in shown))


def plain(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> str:
    """The table for programs: a header line, then one line per row, cells separated by
    one tab, nothing dropped or cut; an empty cell is ``-`` so every line has as many
    fields; tabs and newlines inside a cell become spaces."""
    _check(columns, rows)
    lines = [[c.header for c in columns], *rows]
    return "\n".join("\t".join(clean(cell) or "-" for cell in line) for line in lines)


def markdown(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> str:
    """The table in GitHub markdown, right-aligned columns marked ``---:``; a ``|`` in a
    cell is escaped."""
    _check(columns, rows)

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(clean(c).replace("|", "\\|") for c in cells) + " |"

    rule = "|" + "|".join("---:" if c.align == "right" else "---" for c in columns) + "|"
    return "\n".join([line([c.header for c in columns]), rule, *(line(r) for r in rows)])
