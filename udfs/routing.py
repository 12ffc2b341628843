"""Severity routing: which ticket destinations an incident of a tenant goes to.

Parsed once at start-up from a JSON/YAML-like mapping::

    {"default": {"critical": ["pagerduty", "slack", "jira"], "high": ["jira", "slack"],
                 "medium": ["jira"], "low": []},
     "tenants": {"acme": {"high": ["pagerduty"]}},          # per-severity overrides
     "destinations": {"jira": {"type": "jira", "project": "OPS"}, ...}}

A tenant override replaces the list of the severities it names; the others come from ``default``.
When ``destinations`` is omitted, every known destination type is a destination of the same name.
Every validation error names the offending key path, e.g.
``routing.tenants.acme.critical[1]: unknown destination "pagerdty"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

SEVERITIES = ("critical", "high", "medium", "low")
DESTINATION_TYPES = frozenset({"jira", "servicenow", "pagerduty", "opsgenie", "slack", "zammad", "file"})
_SECRET_HINTS = ("token", "secret", "password", "api_key", "apikey", "routing_key", "credential", "webhook")

Routes = Mapping[str, tuple[str, ...]]


class RoutingError(ValueError):
    """A routing config problem; the message starts with the offending key path."""


@dataclass(frozen=True)
class Destination:
    """One configured ticket destination: its name, platform type and platform settings."""

    name: str
    type: str
    settings: Mapping[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        masked = {k: "***" if _is_secret(k) else v for k, v in self.settings.items()}
        return f"Destination(name={self.name!r}, type={self.type!r}, settings={masked!r})"


def _is_secret(key: str) -> bool:
    return any(hint in key.lower() for hint in _SECRET_HINTS)


def _fail(path: str, message: str) -> RoutingError:
    return RoutingError(f"{path}: {message}")


def _mapping(obj: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise _fail(path, f"expected a mapping, got {type(obj).__name__}")
    for key in obj:
        if not isinstance(key, str) or not key:
            raise _fail(path, f"keys must be non-empty strings, got {key!r}")
    return obj


def _parse_destinations(obj: Any, path: str) -> dict[str, Destination]:
    if obj is None:
        return {t: Destination(t, t) for t in sorted(DESTINATION_TYPES)}
    out: dict[str, Destination] = {}
    for name, spec in _mapping(obj, path).items():
        spec = _mapping(spec, f"{path}.{name}")
        kind = spec.get("type")
        if kind not in DESTINATION_TYPES:
            allowed = ", ".join(sorted(DESTINATION_TYPES))
            raise _fail(f"{path}.{name}.type", f"unknown destination type {kind!r} (one of {allowed})")
        settings = {k: v for k, v in spec.items() if k != "type"}
        out[name] = Destination(name, str(kind), MappingProxyType(settings))
    return out


def _parse_routes(obj: Any, path: str, known: Mapping[str, Destination], *, full: bool) -> Routes:
    routes: dict[str, tuple[str, ...]] = {}
    for severity, names in _mapping(obj, path).items():
        if severity not in SEVERITIES:
            raise _fail(f"{path}.{severity}", f"unknown severity (one of {', '.join(SEVERITIES)})")
        if not isinstance(names, list | tuple):
            raise _fail(f"{path}.{severity}", "expected a list of destination names")
        for i, name in enumerate(names):
            if not isinstance(name, str) or name not in known:
                raise _fail(f"{path}.{severity}[{i}]", f"unknown destination {_quote(name)}")
        routes[severity] = tuple(dict.fromkeys(names))
    if full:
        for severity in SEVERITIES:
            routes.setdefault(severity, ())
    return MappingProxyType(routes)


def _quote(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


@dataclass(frozen=True)
class RoutingConfig:
    """Severity -> destination names, per tenant, plus the destinations' settings."""

    default: Routes
    tenants: Mapping[str, Routes]
    destinations: Mapping[str, Destination]

    @classmethod
    def parse(cls, obj: Any, path: str = "routing") -> RoutingConfig:
        """Validate a routing mapping; raises ``RoutingError`` naming the offending key path."""
        root = _mapping(obj, path)
        unknown = sorted(set(root) - {"default", "tenants", "destinations"})
        if unknown:
            raise _fail(f"{path}.{unknown[0]}", "unknown key (expected default, tenants, destinations)")
        destinations = _parse_destinations(root.get("destinations"), f"{path}.destinations")
        default = _parse_routes(root.get("default", {}), f"{path}.default", destinations, full=True)
        tenants = {
            tenant: _parse_routes(routes, f"{path}.tenants.{tenant}", destinations, full=False)
            for tenant, routes in _mapping(root.get("tenants", {}), f"{path}.tenants").items()
        }
        return cls(default, MappingProxyType(tenants), MappingProxyType(destinations))

    def destinations_for(self, tenant: str, severity: str) -> tuple[str, ...]:
        """Destination names for an incident of ``tenant`` at ``severity`` (unknown severity: none)."""
        override = self.tenants.get(tenant)
        if override is not None and severity in override:
            return override[severity]
        return self.default.get(severity, ())

    def used_destinations(self) -> tuple[str, ...]:
        """Every destination some route names (the clients the worker must build), sorted."""
        names = {n for routes in (self.default, *self.tenants.values()) for ns in routes.values() for n in ns}
        return tuple(sorted(names))
