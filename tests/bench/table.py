"""The fixed-width tables the benchmarks print: one header line, one line per result row.

A column names its header, its width and where its value comes from (a key of the row, or a function
of it); text is right-aligned unless the column is ``left``. A value wider than its column widens
that line (as an f-string width does), never cut.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Column:
    header: str
    width: int
    value: str | Callable[[Mapping[str, Any]], Any]  # a key of the row, or a function of it
    left: bool = False

    def cell(self, text: Any) -> str:
        return f"{text:<{self.width}}" if self.left else f"{text:>{self.width}}"


def format_table(columns: Sequence[Column], rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The header line, then one line per row."""
    lines = ["".join(c.cell(c.header) for c in columns)]
    for row in rows:
        lines.append("".join(c.cell(row[c.value] if isinstance(c.value, str) else c.value(row)) for c in columns))
    return lines


def print_table(columns: Sequence[Column], rows: Iterable[Mapping[str, Any]], title: str | None = None) -> None:
    """``title`` (its own line, e.g. ``"\\ncost split:"``) and the table, on stdout."""
    if title is not None:
        print(title)
    for line in format_table(columns, rows):
        print(line)
