"""Small helpers every ticket client shares: masked repr, URL joining, bounded text."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from typing import Any


def masked_repr(kind: str, values: Mapping[str, Any], secrets: Collection[str]) -> str:
    """``Kind(a='x', token='***')``: secrets never reach logs or tracebacks."""
    parts = ", ".join(f"{k}={'***' if k in secrets and v else repr(v)}" for k, v in values.items())
    return f"{kind}({parts})"


def join_url(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path.lstrip("/")


def bounded_key(key: str, limit: int) -> str:
    """``key`` if it fits ``limit`` chars, else a stable ``logclaw:<sha256>`` of it."""
    if len(key) <= limit:
        return key
    return "logclaw:" + hashlib.sha256(key.encode()).hexdigest()[: max(8, limit - 8)]
