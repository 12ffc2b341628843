"""OTLP/JSON-lines files (the Collector file exporter's format, plain or gzip): the replay input."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path


class InputError(Exception):
    """An input file cannot be read; the message names the file and why."""


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def iter_lines(path: str | Path) -> Iterator[bytes]:
    """Yield each non-empty line (one ExportLogsServiceRequest) as bytes, gunzipping when needed."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    try:
        opener = gzip.open if _is_gzip(p) else open
        with opener(p, "rb") as fh:
            for line in fh:
                line = line.strip()
                if line:
                    yield line
    except (OSError, EOFError) as exc:
        raise InputError(f"{p}: cannot read ({exc})") from exc
