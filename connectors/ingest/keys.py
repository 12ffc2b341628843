"""API keys: ``{api_key: tenant}`` from a file, checked, kept only as SHA-256 digests (``ApiKeys``).

A key is a bearer secret and names its tenant; no error message, log line or repr quotes one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from connectors.ingest.limits import MAX_TENANT_CHARS, MIN_API_KEY_CHARS

_TENANT_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


def load_api_keys(path: Path) -> dict[str, str]:
    """``{api_key: tenant}`` from a JSON or YAML file, every entry checked (see ``check_api_keys``).

    Raises ValueError naming the file (and the entry or its tenant), never quoting a key.
    """
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except ValueError:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:  # its str() quotes the offending line, which holds a key
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ValueError(f"{path}: neither JSON nor YAML: {getattr(exc, 'problem', None) or 'syntax error'}"
                             f"{where}") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a non-empty mapping of api_key: tenant")
    return check_api_keys(data, source=str(path))


def tenant_problem(tenant: object) -> str:
    """Why ``tenant`` is not a valid tenant name, or "" when it is."""
    if not isinstance(tenant, str):
        return "not a string"
    if not 1 <= len(tenant) <= MAX_TENANT_CHARS:
        return f"{len(tenant)} characters, not 1-{MAX_TENANT_CHARS}"
    bad = next((i for i, c in enumerate(tenant) if c not in _TENANT_CHARS), -1)
    if bad >= 0:
        return f"character {tenant[bad]!r} at position {bad + 1} is not allowed"
    return "" if tenant[0].isalnum() else "it must start with a letter or a digit"


def check_api_keys(entries: Mapping[Any, Any], *, source: str = "api keys") -> dict[str, str]:
    """``entries`` with keys stripped, or ValueError naming ``source`` and the entry or tenant, never the key.

    Tenants: ``TENANT_PATTERN`` (no separator a composite key such as ``tenant|service`` could be confused
    by). Keys: at least ``MIN_API_KEY_CHARS`` printable ASCII characters, no spaces, no two the same.
    """
    keys: dict[str, str] = {}
    entry_of: dict[str, int] = {}
    for n, (key, tenant) in enumerate(entries.items(), 1):
        problem = tenant_problem(tenant)
        if problem:
            raise ValueError(f"{source}: entry {n}: the tenant name is not valid: {problem}; use 1-{MAX_TENANT_CHARS}"
                             " characters of A-Z a-z 0-9 . _ - starting with a letter or a digit")
        if not isinstance(key, str):
            raise ValueError(f"{source}: entry {n} (tenant {tenant!r}): the api key is not a string (quote it)")
        key = key.strip()
        if len(key) < MIN_API_KEY_CHARS:
            raise ValueError(f"{source}: the api key of tenant {tenant!r} has fewer than {MIN_API_KEY_CHARS} "
                             "characters; use a random one, e.g. python -c 'import secrets; "
                             "print(secrets.token_urlsafe(24))'")
        if not all("!" <= c <= "~" for c in key):
            raise ValueError(f"{source}: the api key of tenant {tenant!r} may only contain printable ASCII "
                             "characters without spaces")
        if key in keys:
            raise ValueError(f"{source}: entries {entry_of[key]} and {n} have the same api key "
                             f"(tenants {keys[key]!r} and {tenant!r})")
        keys[key], entry_of[key] = tenant, n
    return keys


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


class ApiKeys:
    """Tenant by API key, keeping only the keys' SHA-256 digests (a heap dump or a repr shows no key).

    Keys are long random tokens (``MIN_API_KEY_CHARS``), so a plain hash needs no salt or stretching; the
    lookup compares digests, which tells a timing observer nothing about a key.
    """

    def __init__(self, keys: Mapping[str, str], *, source: str = "api keys") -> None:
        self._tenants = {_digest(key): tenant for key, tenant in check_api_keys(keys, source=source).items()}
        if not self._tenants:
            raise ValueError(f"{source}: at least one api key is required")

    @classmethod
    def from_file(cls, path: Path) -> ApiKeys:
        """``load_api_keys(path)`` without keeping the keys (for the ``ingest`` command)."""
        return cls(load_api_keys(path), source=str(path))

    def tenant_of(self, presented: str | None) -> str | None:
        """The tenant whose key is ``presented`` (surrounding spaces ignored), or None."""
        return self._tenants.get(_digest(presented.strip())) if presented else None

    @property
    def tenants(self) -> frozenset[str]:
        """The tenants that have at least one key."""
        return frozenset(self._tenants.values())

    def __len__(self) -> int:
        return len(self._tenants)

    def __repr__(self) -> str:
        return f"ApiKeys({len(self)} keys; tenants {', '.join(sorted(self.tenants))})"
