"""Severity routing: defaults, tenant overrides, and validation errors that name the key path."""

from __future__ import annotations

import pytest

from udfs.routing import Destination, RoutingConfig, RoutingError

CONFIG = {
    "default": {
        "critical": ["pagerduty", "slack", "jira"],
        "high": ["jira", "slack"],
        "medium": ["jira"],
        "low": [],
    },
    "tenants": {"acme": {"critical": ["jira"], "low": ["slack"]}},
    "destinations": {
        "pagerduty": {"type": "pagerduty", "routing_key": "${PD_KEY}"},
        "slack": {"type": "slack", "webhook_url": "https://hooks.example/T1"},
        "jira": {"type": "jira", "project_key": "OPS", "api_token": "secret-jira-token"},
    },
}


def test_default_routes_and_tenant_overrides() -> None:
    routing = RoutingConfig.parse(CONFIG)
    table = {
        (t, s): routing.destinations_for(t, s)
        for t in ("acme", "globex")
        for s in ("critical", "high", "medium", "low", "bogus")
    }
    assert table == {
        ("acme", "critical"): ("jira",),
        ("acme", "high"): ("jira", "slack"),
        ("acme", "medium"): ("jira",),
        ("acme", "low"): ("slack",),
        ("acme", "bogus"): (),
        ("globex", "critical"): ("pagerduty", "slack", "jira"),
        ("globex", "high"): ("jira", "slack"),
        ("globex", "medium"): ("jira",),
        ("globex", "low"): (),
        ("globex", "bogus"): (),
    }
    assert routing.used_destinations() == ("jira", "pagerduty", "slack")
    assert routing.destinations["slack"] == Destination(
        "slack", "slack", {"webhook_url": "https://hooks.example/T1"}
    )


def test_destination_repr_masks_secret_settings() -> None:
    text = repr(RoutingConfig.parse(CONFIG).destinations["jira"])
    assert "secret-jira-token" not in text
    assert "'api_token': '***'" in text and "'project_key': 'OPS'" in text


def test_without_destinations_every_known_type_is_a_destination_of_its_name() -> None:
    routing = RoutingConfig.parse({"default": {"high": ["file", "zammad"]}})
    assert routing.destinations_for("x", "high") == ("file", "zammad")
    assert routing.destinations_for("x", "critical") == ()
    assert routing.destinations["file"] == Destination("file", "file", {})


def _with(**changes: object) -> dict[str, object]:
    return {**CONFIG, **changes}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            _with(tenants={"acme": {"critical": ["jira", "pagerdty"]}}),
            'routing.tenants.acme.critical[1]: unknown destination "pagerdty"',
        ),
        (
            _with(default={"critical": ["jira"], "urgent": ["jira"]}),
            "routing.default.urgent: unknown severity",
        ),
        (_with(default={"high": "jira"}), "routing.default.high: expected a list of destination names"),
        (_with(default={"high": [3]}), "routing.default.high[0]: unknown destination 3"),
        (
            _with(destinations={"jira": {"type": "jiraa"}}),
            "routing.destinations.jira.type: unknown destination type",
        ),
        (_with(destinations={"jira": ["x"]}), "routing.destinations.jira: expected a mapping, got list"),
        (_with(tenants=[]), "routing.tenants: expected a mapping, got list"),
        (
            _with(tenants={"acme": {"high": ["nowhere"]}}),
            'routing.tenants.acme.high[0]: unknown destination "nowhere"',
        ),
        (_with(routes={}), "routing.routes: unknown key"),
        ("jira", "routing: expected a mapping, got str"),
    ],
)
def test_validation_errors_name_the_offending_path(config: object, message: str) -> None:
    with pytest.raises(RoutingError) as info:
        RoutingConfig.parse(config)
    assert str(info.value).startswith(message)
