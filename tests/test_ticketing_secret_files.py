"""Ticket-platform secrets named as ``${VAR}`` in the routing file also come from ``VAR_FILE`` (a
Kubernetes secret mount), as the other secrets do (``jobs.settings``): read at start-up, one trailing
newline dropped, both given is an error, and no error line shows the secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.config import ConfigError
from jobs.ticketing import build_clients
from udfs.routing import RoutingConfig

ROUTING = RoutingConfig.parse({
    "default": {"critical": ["jira", "pagerduty"], "high": [], "medium": [], "low": []},
    "destinations": {
        "jira": {"type": "jira", "base_url": "https://example.atlassian.net", "email": "bot@example.com",
                 "api_token": "${JIRA_API_TOKEN}", "project_key": "OPS"},
        "pagerduty": {"type": "pagerduty", "routing_key": "${PAGERDUTY_ROUTING_KEY}"},
    },
})


def test_a_token_comes_from_the_variable_or_from_the_file_its_FILE_variable_names(tmp_path: Path) -> None:
    (tmp_path / "jira").write_text("jira-s3cret\n")  # as `echo` writes it
    clients = build_clients(ROUTING, {"JIRA_API_TOKEN_FILE": str(tmp_path / "jira"),
                                      "PAGERDUTY_ROUTING_KEY": "pd-s3cret"})
    assert clients["jira"].settings.api_token == "jira-s3cret"  # type: ignore[attr-defined]
    assert clients["pagerduty"].settings.routing_key == "pd-s3cret"  # type: ignore[attr-defined]
    assert "s3cret" not in repr(clients)


@pytest.mark.parametrize(("env", "message"), [
    ({"PAGERDUTY_ROUTING_KEY": "k"},
     "routing.destinations.jira.api_token: environment variable JIRA_API_TOKEN unset (nor JIRA_API_TOKEN_FILE)"),
    ({"JIRA_API_TOKEN": "jira-s3cret", "JIRA_API_TOKEN_FILE": "{dir}/jira", "PAGERDUTY_ROUTING_KEY": "k"},
     "routing.destinations.jira.api_token: JIRA_API_TOKEN and JIRA_API_TOKEN_FILE are both set: give one"),
    ({"JIRA_API_TOKEN": "t", "PAGERDUTY_ROUTING_KEY_FILE": "{dir}/missing"},
     "routing.destinations.pagerduty.routing_key: PAGERDUTY_ROUTING_KEY_FILE='{dir}/missing': cannot read it "
     "(FileNotFoundError)"),
])
def test_a_missing_doubled_or_unreadable_secret_stops_start_up_naming_it(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    (tmp_path / "jira").write_text("jira-s3cret")
    with pytest.raises(ConfigError) as raised:
        build_clients(ROUTING, {k: v.format(dir=tmp_path) for k, v in env.items()})
    assert str(raised.value) == message.format(dir=tmp_path)
    assert "s3cret" not in str(raised.value)
