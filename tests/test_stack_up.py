"""``logclaw up`` names both OTLP endpoints of its ingest (HTTP :4318 and gRPC :4317) and how an
OpenTelemetry SDK reaches each. The ingest is the real ``logclaw ingest`` subprocess on free ports; the
broker, the Flink cluster, the job and the console are stand-ins (their own tests start them for real)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import pytest

from connectors.broker import free_port
from jobs.cli import stack


def test_otlp_hints_name_the_http_and_the_grpc_endpoint_with_the_key() -> None:
    assert stack.otlp_hints("http://127.0.0.1:4318/v1/logs", "127.0.0.1:4317", "k3y", "demo") == [
        "or OTLP: OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=http://127.0.0.1:4318/v1/logs "
        "OTEL_EXPORTER_OTLP_LOGS_HEADERS=x-logclaw-api-key=k3y  (tenant demo)",
        "or gRPC: OTEL_EXPORTER_OTLP_LOGS_PROTOCOL=grpc OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=http://127.0.0.1:4317 "
        "OTEL_EXPORTER_OTLP_LOGS_HEADERS=x-logclaw-api-key=k3y",
    ]


def test_up_starts_ingest_on_both_ports_and_prints_both_endpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [n for n in os.environ if n.startswith("PYFLINK_")]:
        monkeypatch.delenv(name)  # the ingest child must not inherit a Flink worker's settings
    monkeypatch.setenv("LOGCLAW_LOG_FORMAT", "text")  # run_up sets both for its children: restored after
    monkeypatch.setenv("LOGCLAW_LOG_LEVEL", "INFO")

    class Proc:
        pid = 4242

    class Cluster:
        rest_url, log_dir = "http://127.0.0.1:1", tmp_path / "log"

        def start(self) -> None:
            pass

        def wait_for_job_state(self, job_id: str, state: str, timeout_s: float) -> None:
            pass

    real_spawn, real_wait = stack._spawn, stack._wait_for_line

    def spawn(name: str, args: list[str], stack_dir: Path, env: Any = None) -> Any:
        return real_spawn(name, args, stack_dir, env) if name == "ingest" else Proc()

    def wait_for_line(path: Path, prefix: str, proc: Any, timeout_s: float) -> str:
        if prefix.startswith("ingest"):
            return real_wait(path, prefix, proc, timeout_s)
        return "broker: bootstrap 127.0.0.1:9"  # unreachable: ingest starts without a broker

    monkeypatch.setattr(stack, "_spawn", spawn)
    monkeypatch.setattr(stack, "_wait_for_line", wait_for_line)
    monkeypatch.setattr(stack, "prepare_cluster", lambda *a, **k: Cluster())
    monkeypatch.setattr(stack, "submit_detect", lambda *a, **k: "a" * 32)
    monkeypatch.setattr(stack, "start_console", lambda *a: "http://127.0.0.1:2/")
    import logging

    from jobs import cli

    http_port, grpc_port = free_port(), free_port()
    args = cli.build_parser("up").parse_args([
        "up", "--stack-dir", str(tmp_path / "stack"), "--no-ticketing", "--ingest-port", str(http_port),
        "--ingest-grpc-port", str(grpc_port)])
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        assert stack.run_up(args) == 0
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        stopped = stack._stop_pid_file(tmp_path / "stack" / "ingest.pid")
    assert stopped
    out = capsys.readouterr().out
    http_url, grpc_address = f"http://127.0.0.1:{http_port}/v1/logs", f"127.0.0.1:{grpc_port}"
    assert f"up: OTLP endpoints: HTTP {http_url}, gRPC {grpc_address} (pid " in out
    key, tenant = stack.demo_keys(tmp_path / "stack")[1:]
    for hint in stack.otlp_hints(http_url, grpc_address, key, tenant):
        assert hint + "\n" in out
    assert f"OTLP/gRPC listening on {grpc_address}" in (tmp_path / "stack" / "ingest.log").read_text()


def test_the_grpc_port_flag_is_checked_like_the_others() -> None:
    from jobs import cli

    with pytest.raises(SystemExit) as exited:
        cli.build_parser("up").parse_args(["up", "--ingest-grpc-port", "70000"])
    assert exited.value.code == 2
    assert isinstance(cli.build_parser("up").parse_args(["up"]), argparse.Namespace)
    assert cli.build_parser("up").parse_args(["up"]).ingest_grpc_port == 4317
