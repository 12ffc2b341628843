"""``logclaw ingest``: keys kept as digests, counts printed (never a key), every tunable limit a flag,
bad values stopped at start-up with one line naming the flag or setting (exit 2, no traceback)."""

from __future__ import annotations

import http.client
from pathlib import Path
from typing import Any

import pytest

from connectors.ingest import ApiKeys, IngestLimits
from connectors.otlp import MAX_MESSAGE_BYTES
from jobs import cli
from tests.ingest_fixtures import ingest_process

KEYS_TEXT = "key-acme-1-0123456789: acme\nkey-acme-2-0123456789: acme\nkey-globex-0123456789: globex\n"
SECRETS = ("key-acme-1-0123456789", "key-acme-2-0123456789", "key-globex-0123456789")


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    path = tmp_path / "keys.yaml"
    path.write_text(KEYS_TEXT)
    return path


@pytest.fixture(autouse=True)
def no_skew_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOGCLAW_MAX_FUTURE_SKEW_MS", raising=False)
    monkeypatch.delenv("LOGCLAW_MAX_MESSAGE_BYTES", raising=False)


class Stopped(OSError):
    """Raised by the stand-in server: the command stops where it would start listening."""


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What ``run`` hands to the server and the producer (stand-ins; the server refuses to listen)."""
    from jobs.cli import ingest

    seen: dict[str, Any] = {}

    class Producer:
        def __init__(self, bootstrap: str, topic: str, **kwargs: Any) -> None:
            seen["producer"] = {"bootstrap": bootstrap, "topic": topic, **kwargs}

        def close(self) -> None:
            seen["producer_closed"] = True

        def for_topic(self, topic: str) -> str:
            seen["spans_topic"] = topic
            return f"spans producer for {topic}"

    def server(address: tuple[str, int], **kwargs: Any) -> None:
        seen["server"] = {"address": address, **kwargs}
        raise Stopped("stand-in: not listening")

    monkeypatch.setattr(ingest, "KafkaLogsProducer", Producer)
    monkeypatch.setattr(ingest, "IngestServer", server)
    return seen


def test_keys_are_loaded_as_digests_and_every_limit_reaches_the_server(
    keys: Path, built: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["ingest", "--keys", str(keys), "--port", "0", "--max-records", "1000", "--max-connections", "64",
                     "--max-inflight", "8", "--max-body-bytes", "2000000", "--idle-timeout-s", "5",
                     "--header-timeout-s", "3", "--body-timeout-s", "4", "--min-upload-bytes-per-s", "10000",
                     "--max-future-skew-ms", "60000"])
    out, err = capsys.readouterr()
    assert code == 1  # the stand-in server did not listen
    assert err == "ingest: cannot listen on 127.0.0.1:0: stand-in: not listening\n"
    api_keys = built["server"]["keys"]
    assert isinstance(api_keys, ApiKeys) and len(api_keys) == 3 and api_keys.tenant_of(SECRETS[2]) == "globex"
    assert built["server"]["limits"] == IngestLimits(
        max_body_bytes=2_000_000, max_message_bytes=2_000_000 + 65_536, max_records=1000, max_connections=64,
        max_inflight=8, idle_timeout_s=5.0, head_timeout_s=3.0, body_grace_s=4.0,
        min_upload_bytes_per_s=10_000, max_future_skew_ms=60_000)
    assert built["producer"]["max_message_bytes"] == MAX_MESSAGE_BYTES  # the one size limit, not body + 64 KiB
    assert built["producer_closed"]
    assert out == f"ingest: 3 api keys of 2 tenants loaded from {keys}\n"
    assert not [s for s in SECRETS if s in out + err]


def test_defaults_are_the_servers_and_the_jobs(keys: Path, built: dict[str, Any]) -> None:
    assert cli.main(["ingest", "--keys", str(keys)]) == 1
    assert built["server"]["limits"] == IngestLimits()
    assert built["server"]["address"] == ("127.0.0.1", 4318)


def test_the_skew_and_message_limit_settings_are_read_like_the_jobs(
    keys: Path, built: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOGCLAW_MAX_FUTURE_SKEW_MS", "120000")
    monkeypatch.setenv("LOGCLAW_MAX_MESSAGE_BYTES", "1048576")
    assert cli.main(["ingest", "--keys", str(keys), "--max-body-bytes", "500000"]) == 1
    assert built["server"]["limits"].max_future_skew_ms == 120_000
    assert built["server"]["limits"].max_message_bytes < 1_048_576 == built["producer"]["max_message_bytes"]
    assert cli.main(["ingest", "--keys", str(keys), "--max-future-skew-ms", "2000"]) == 1  # the flag wins
    assert built["server"]["limits"].max_future_skew_ms == 2_000


@pytest.mark.parametrize(("env", "message"), [
    ("10", "ingest: LOGCLAW_MAX_FUTURE_SKEW_MS=10: must be >= 1000"),
    ("soon", "ingest: LOGCLAW_MAX_FUTURE_SKEW_MS='soon': expected an integer"),
])
def test_a_bad_skew_setting_stops_at_start_up_naming_it(
    keys: Path, env: str, message: str, built: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LOGCLAW_MAX_FUTURE_SKEW_MS", env)
    assert cli.main(["ingest", "--keys", str(keys), "--port", "0"]) == 2
    assert capsys.readouterr().err == message + "\n"


@pytest.mark.parametrize(("args", "message"), [
    (["--max-records", "0"], "--max-records 0: must be >= 1"),
    (["--max-records", "ten"], "--max-records 'ten': expected an integer"),
    (["--max-connections", "-3"], "--max-connections -3: must be >= 1"),
    (["--max-inflight", "300"], "--max-inflight 300: must be <= --max-connections (256)"),
    (["--max-body-bytes", "100"], "--max-body-bytes 100: must be >= 1024"),
    (["--max-body-bytes", "9000000"], f"--max-body-bytes 9000000: must be <= {MAX_MESSAGE_BYTES - 1024} "
                                      "(the message size limit LOGCLAW_MAX_MESSAGE_BYTES less 1024 bytes)"),
    (["--idle-timeout-s", "0"], "--idle-timeout-s 0: must be > 0"),
    (["--header-timeout-s", "nan"], "--header-timeout-s 'nan': expected a finite number of seconds"),
    (["--body-timeout-s", "inf"], "--body-timeout-s 'inf': expected a finite number of seconds"),
    (["--min-upload-bytes-per-s", "0"], "--min-upload-bytes-per-s 0: must be >= 1"),
    (["--max-future-skew-ms", "999"], "--max-future-skew-ms 999: must be 1000..86400000"),
    (["--ack-timeout-s", "-1"], "--ack-timeout-s -1: must be > 0"),
    (["--port", "70000"], "--port 70000: must be <= 65535"),
])
def test_a_bad_flag_stops_at_start_up_with_one_line_naming_it(
    keys: Path, args: list[str], message: str, built: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["ingest", "--keys", str(keys), *args]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"ingest: {message}\n")
    assert "server" not in built and "producer" not in built


def test_help_names_every_limit_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["ingest", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    entries = {}  # "--flag METAVAR" -> its help, joined
    for entry in text.split("\n  -")[1:]:
        head, _, rest = entry.partition("  ")
        entries["-" + head.strip()] = " ".join(rest.split())
    for flag, default in (("--max-records N", "32768"), ("--max-connections N", "256"), ("--max-inflight N", "32"),
                          ("--max-body-bytes N", "4194304"), ("--idle-timeout-s S", "30"),
                          ("--header-timeout-s S", "10"), ("--body-timeout-s S", "10"),
                          ("--min-upload-bytes-per-s N", "65536"),
                          ("--max-future-skew-ms MS", "LOGCLAW_MAX_FUTURE_SKEW_MS, else 300000")):
        assert f"(default: {default}" in entries[flag], (flag, entries.get(flag))
    assert max(map(len, text.splitlines())) <= 120


def test_the_command_prints_counts_never_a_key_and_stops_on_sigterm(keys: Path, tmp_path: Path) -> None:
    from connectors.broker import free_port

    port = free_port()
    out = tmp_path / "ingest.out"
    with ingest_process(["--port", str(port), "--grpc-port", "0", "--keys", str(keys), "--bootstrap",
                         f"127.0.0.1:{free_port()}"], out, "listening") as proc:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
        conn.close()
    code = proc.returncode
    text = out.read_text()
    assert code == 0, text
    assert text.splitlines()[0] == f"ingest: 3 api keys of 2 tenants loaded from {keys}"
    assert f"ingest: listening on http://127.0.0.1:{port}/v1/logs" in text
    assert not [s for s in SECRETS if s in text]


def test_log_format_json_gives_one_json_object_per_refusal_with_reason_and_never_the_key(
    keys: Path, tmp_path: Path
) -> None:
    import json

    from connectors.broker import free_port

    port = free_port()
    out, err = tmp_path / "ingest.out", tmp_path / "ingest.err"
    with ingest_process(["--port", str(port), "--grpc-port", "0", "--keys", str(keys), "--bootstrap",
                         f"127.0.0.1:{free_port()}", "--log-format", "json"], out, "OTLP/gRPC listening",
                        err=err) as proc:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("POST", "/v1/traces", body=b"{}", headers={"Content-Type": "application/json",
                                                                "Authorization": "Bearer wrong-key-0123456789abc"})
        assert conn.getresponse().status == 401
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/metrics")
        metrics = conn.getresponse().read().decode()
        conn.close()
    code = proc.returncode
    assert code == 0
    assert 'logclaw_ingest_refusals_total{reason="unauthenticated",transport="http"} 1.0' in metrics
    assert "process_cpu_seconds_total" in metrics  # the default registry's process collector too
    lines = [json.loads(line) for line in err.read_text().splitlines() if line.startswith("{")]
    [refusal] = [line for line in lines if "refused" in line["message"]]
    assert (refusal["level"], refusal["logger"]) == ("WARNING", "connectors.ingest")
    assert refusal["message"].startswith("ingest: refused POST '/v1/traces' from 127.0.0.1:")
    assert "-> 401 (unauthenticated)" in refusal["message"]
    assert "wrong-key" not in err.read_text() + out.read_text()
