"""jobs/observability.py: the log formats, the argument defaults from the environment and /metrics."""

from __future__ import annotations

import argparse
import json
import logging
import urllib.request
from collections.abc import Iterator

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
