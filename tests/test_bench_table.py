"""``tests/bench/table.py``: the fixed-width tables the benchmarks print (engine, codec, ticketing)."""

from __future__ import annotations

from typing import Any

from tests.bench.table import Column, format_table, print_table


def test_a_table_is_a_header_and_one_line_per_row_aligned_as_f_string_widths_would() -> None:
    columns = [Column("input", 8, "input", left=True), Column("rec/s", 7, "rate"),
               Column("share", 7, lambda r: f"{100 * r['share']:.1f}%")]
    rows: list[dict[str, Any]] = [{"input": "a", "rate": 1234, "share": 0.5},
                                  {"input": "too-long-name", "rate": 7, "share": 0.0123}]
    assert format_table(columns, rows) == [
        "input     rec/s  share",
        "a          1234  50.0%",
        "too-long-name      7   1.2%",  # a wider value widens its line, never cut
    ]


def test_print_table_puts_the_title_on_its_own_line(capsys: Any) -> None:
    print_table([Column("n", 3, "n")], [{"n": 1}], title="\ncounts:")
    assert capsys.readouterr().out == "\ncounts:\n  n\n  1\n"
