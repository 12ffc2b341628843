"""jobs/observability.py: the log formats, the argument defaults from the environment and /metrics."""

from __future__ import annotations

import argparse
import json
import logging
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import Counter

from jobs import observability
from jobs.observability import add_logging_arguments, configure_logging, metrics_payload, start_metrics_server


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_time_level_logger_message_extras_and_exception(restore_root: None,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "DEBUG")
    log = logging.getLogger("logclaw.test")
    log.info("filed %s", "JIRA-1", extra={"platform": "jira", "tenant": "acme"})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    lines = capsys.readouterr().err.splitlines()
    first, second = (json.loads(line) for line in lines)
    assert {k: v for k, v in first.items() if k != "time"} == {
        "level": "INFO", "logger": "logclaw.test", "message": "filed JIRA-1", "platform": "jira", "tenant": "acme"}
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert second["level"] == "ERROR" and second["message"] == "failed"
    assert "RuntimeError: boom" in second["exception"] and "Traceback" in second["exception"]


def test_text_format_and_a_second_call_replaces_only_its_own_handler(restore_root: None,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    foreign = logging.NullHandler()
    root.addHandler(foreign)
    configure_logging("json")
    configure_logging("text", "warning")
    assert foreign in root.handlers
    assert sum(isinstance(h, observability._LogclawHandler) for h in root.handlers) == 1
    logging.getLogger("x").info("not shown")
    logging.getLogger("x").warning("shown")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].endswith(" WARNING x: shown"), err


@pytest.mark.parametrize(("fmt", "level", "named"), [("xml", "INFO", "'xml'"), ("json", "LOUD", "'LOUD'")])
def test_unknown_format_or_level_is_named(fmt: str, level: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        configure_logging(fmt, level)


def test_arguments_default_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGCLAW_LOG_FORMAT", "json")
    monkeypatch.setenv("LOGCLAW_LOG_LEVEL", "debug")
    parser = argparse.ArgumentParser()
    add_logging_arguments(parser)
    args = parser.parse_args([])
    assert (args.log_format, args.log_level) == ("json", "DEBUG")
    assert parser.parse_args(["--log-format", "text", "--log-level", "error"]).log_level == "ERROR"


def test_metrics_payload_and_server_expose_a_counter() -> None:
    counter = Counter("logclaw_test_observability_total", "a counter of this test")
    counter.inc(3)
    body, content_type = metrics_payload()
    assert content_type.startswith("text/plain")
    assert b"logclaw_test_observability_total 3.0" in body
    server = start_metrics_server(0, host="127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as answer:
            assert b"logclaw_test_observability_total 3.0" in answer.read()
    finally:
        server.stop()


SERVICES_OK = 'logclaw_console_requests_total{page="services",status="200"}'


def test_console_serves_metrics_without_a_key_counting_pages_by_name_not_by_tenant(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from connectors.console_read import open_reader
    from connectors.ingest import ApiKeys
    from connectors.store import EmbeddedStore
    from jobs.console.app import build_app

    EmbeddedStore(tmp_path / "store.sqlite").close()
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps({"secret-key-of-acme": "acme"}))
    reader = open_reader(store=tmp_path / "store.sqlite")
    try:
        with TestClient(build_app(reader, keys=ApiKeys.from_file(keys_file)), follow_redirects=False) as client:
            before = _sample(client.get("/metrics").text, SERVICES_OK)
            assert client.get("/services", headers={"x-logclaw-api-key": "secret-key-of-acme"}).status_code == 200
            assert client.get("/services").status_code == 303  # no key: to the login page, counted as such
            answer = client.get("/metrics")
    finally:
        reader.close()
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    assert _sample(answer.text, SERVICES_OK) == before + 1
    assert _sample(answer.text, 'logclaw_console_requests_total{page="services",status="303"}') >= 1
    assert 'logclaw_console_request_seconds_count{page="services"}' in answer.text
    assert "acme" not in answer.text and "secret-key" not in answer.text


def _sample(text: str, series: str) -> float:
    """The value of one exposition line, 0 when the series is not there yet."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_ticketing_counts_tickets_per_destination_and_platform_in_prometheus(tmp_path: Path) -> None:
    from jobs import cli
    from tests.test_ticketing_worker import incident

    events = [incident(), incident("updated", at="03:48:00"), incident(fingerprint="fp-disk", severity="high"),
              incident("resolved", at="03:58:00"), incident("resolved", at="03:58:00")]
    (tmp_path / "incidents.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events) + "not json\n")
    series = {o: f'logclaw_ticketing_tickets_total{{destination="file",outcome="{o}",platform="file"}}'
              for o in ("created", "updated", "resolved", "skipped")}
    invalid = 'logclaw_ticketing_tickets_total{destination="(invalid)",outcome="failed",platform=""}'
    before = metrics_payload()[0].decode()
    code = cli.main(["ticketing", "--once", str(tmp_path / "incidents.jsonl"), "--data-dir", str(tmp_path / "s")])
    after = metrics_payload()[0].decode()
    assert code == 1  # the line that is not JSON was dead-lettered
    assert {o: _sample(after, s) - _sample(before, s) for o, s in series.items()} == {
        "created": 2, "updated": 1, "resolved": 1, "skipped": 1}
    assert _sample(after, invalid) - _sample(before, invalid) == 1
    assert "logclaw_ticketing_retries_total" in after and "logclaw_ticketing_event_age_seconds" in after


def test_ticketing_retries_count_under_the_destination_that_failed_once_per_retry(tmp_path: Path) -> None:
    import threading

    from connectors.ledger import TicketLedger
    from jobs.ticketing import DeadLetter, Metrics, TicketingWorker, handle_with_retry
    from tests.test_ticketing_worker import FakePlatform, Flaky, incident, line
    from udfs.routing import RoutingConfig

    routing = RoutingConfig.parse({
        "default": {"critical": ["pagerduty", "ops-jira"], "high": [], "medium": [], "low": []},
        "destinations": {"pagerduty": {"type": "pagerduty"}, "ops-jira": {"type": "jira"}}})
    ledger = TicketLedger(tmp_path / "ledger.sqlite", owner="w1")
    worker = TicketingWorker(routing, {"pagerduty": FakePlatform("pagerduty"), "ops-jira": Flaky("jira", failures=2)},
                             ledger, DeadLetter(tmp_path / "dlq.jsonl"),
                             metrics=Metrics(platforms={"pagerduty": "pagerduty", "ops-jira": "jira"}))
    jira = 'logclaw_ticketing_retries_total{destination="ops-jira",platform="jira"}'
    unattributed = 'logclaw_ticketing_retries_total{destination="",platform=""}'
    before = metrics_payload()[0].decode()
    try:
        worker.handle(line(incident()))
        assert handle_with_retry(worker, line(incident("updated", at="03:50:00")), threading.Event(),
                                 backoff_cap_s=0.01)
    finally:
        ledger.close()
    after = metrics_payload()[0].decode()
    assert _sample(after, jira) - _sample(before, jira) == 2
    assert _sample(after, unattributed) == _sample(before, unattributed)
