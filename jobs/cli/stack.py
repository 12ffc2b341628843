"""``logclaw up`` / ``logclaw down``: the whole product on one machine, for real.

``up`` starts, each in the background with its pid under ``.cache/stack/``:

1. the local Kafka-protocol broker (``logclaw broker``, tansu, in-memory) with the four topics;
2. a standalone Flink cluster from the installed PyFlink distribution, configured from ``flink-conf/``
   plus this machine's specifics (the venv's Python, the Kafka jars on ``pipeline.jars``, ports and
   directories under ``.cache/stack/``);
3. the detection job, submitted with ``flink run -d -py jobs/detect.py`` and ``LOGCLAW_*`` pointing at the
   broker;
4. the ticketing worker (``logclaw ticketing``) reading the incidents topic;
5. the OTLP endpoints (``logclaw ingest``: HTTP on ``--ingest-port`` 4318, gRPC on ``--ingest-grpc-port``
   4317) producing to ``otlp_logs``, with a demo API key generated into ``.cache/stack/ingest-keys.json``
   (tenant ``demo``);
6. the incident console (``logclaw ui``) on the job's store, on 127.0.0.1.

It prints the console's and the Flink web UI's URLs, the ``logclaw simulate --kafka`` command that feeds the
stack and the OpenTelemetry SDK settings for either OTLP endpoint. ``down`` stops the job with a savepoint
(``--savepoint-dir``, default ``.cache/stack/savepoints``), runs ``stop-cluster.sh`` and stops the background
processes (SIGTERM, then SIGKILL); the next ``up``
resumes the job from the newest savepoint there (its templates, service baselines and open incidents:
the detection history), unless ``--fresh``. If the savepoint fails, ``down`` stops nothing and exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from connectors.broker import free_port
from connectors.flink_cluster import (
    ClusterError,
    StandaloneCluster,
    cluster_conf,
    load_conf,
    prometheus_jar,
    pyflink_home,
    resume_point,
    stop_once_running,
    write_conf_dir,
)
from connectors.ingest import load_api_keys
from connectors.jars import PROJECT_ROOT, jar_urls, provision_jars
from jobs.cli import add_savepoint_arguments, port_number
from jobs.observability import LOG_FORMAT_ENV, LOG_LEVEL_ENV, add_logging_arguments, configure_logging

CONF_TEMPLATE = PROJECT_ROOT / "flink-conf" / "config.yaml"
DEFAULT_STACK_DIR = PROJECT_ROOT / ".cache" / "stack"
TASKS_RUNNING_WAIT_S = 60.0  # a restarting job may come back within its restart back-off (up to 60 s)
PYFS = ("jobs", "connectors", "udfs")  # shipped with the job (-pyfs); the workers import them from there


def cluster_overrides(stack_dir: Path, *, rest_port: int, rpc_port: int, checkpoint_dir: Path | None = None,
                      savepoint_dir: Path | None = None, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a local run adds to ``flink-conf/config.yaml``: interpreter, jars, ports, directories."""
    checkpoints = checkpoint_dir or stack_dir / "checkpoints"
    savepoints = savepoint_dir or stack_dir / "savepoints"
    return {
        "python.executable": sys.executable,
        "python.client.executable": sys.executable,
        "pipeline.jars": ";".join(jar_urls(PROJECT_ROOT)),
        "rest.port": rest_port,
        "jobmanager.rpc.port": rpc_port,
        "env.log.dir": str(stack_dir / "log"),
        "env.pid.dir": str(stack_dir / "pid"),
        "io.tmp.dirs": str(stack_dir / "tmp"),
        "execution.checkpointing.dir": checkpoints.resolve().as_uri(),
        "execution.checkpointing.savepoint-dir": savepoints.resolve().as_uri(),
        **(extra or {}),
    }


def prepare_cluster(stack_dir: Path, *, rest_port: int, rpc_port: int | None = None,
                    checkpoint_dir: Path | None = None, savepoint_dir: Path | None = None,
                    extra: Mapping[str, Any] | None = None) -> StandaloneCluster:
    """Provision the jars and write ``stack_dir/conf`` (a FLINK_CONF_DIR); the cluster is not started."""
    provision_jars(PROJECT_ROOT, progress=lambda _m: None)
    home = pyflink_home()
    overrides = cluster_overrides(stack_dir, rest_port=rest_port, rpc_port=rpc_port or free_port(),
                                  checkpoint_dir=checkpoint_dir, savepoint_dir=savepoint_dir, extra=extra)
    conf = cluster_conf(load_conf(CONF_TEMPLATE), overrides, has_prometheus=prometheus_jar(home) is not None)
    (stack_dir / "tmp").mkdir(parents=True, exist_ok=True)
    write_conf_dir(stack_dir / "conf", conf, home)
    return StandaloneCluster(conf_dir=stack_dir / "conf", home=home)


def job_env(bootstrap: str, store_path: Path, **extra: str) -> dict[str, str]:
    """``LOGCLAW_*`` for the detection job (read by ``JobConfig.from_env`` in the client process)."""
    return {"LOGCLAW_MODE": "kafka", "LOGCLAW_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "LOGCLAW_STORE_PATH": str(store_path), **extra}


def submit_detect(cluster: StandaloneCluster, env: Mapping[str, str], *, savepoint: Path | None = None,
                  allow_non_restored_state: bool = False) -> str:
    """Submit ``jobs/detect.py`` (detached), restoring ``savepoint`` when given; the job id."""
    return cluster.submit_python(PROJECT_ROOT / "jobs" / "detect.py", pyfs=[PROJECT_ROOT / d for d in PYFS],
                                 classpaths=jar_urls(PROJECT_ROOT), env=env, cwd=PROJECT_ROOT,
                                 savepoint=savepoint, allow_non_restored_state=allow_non_restored_state)


def stop_job(cluster: StandaloneCluster, job_id: str, savepoint_dir: Path | None) -> Path | None:
    """Stop the job with a savepoint under ``savepoint_dir`` (its path), or cancel it when that is None.
    ``ClusterError`` when the savepoint fails: the job then keeps running."""
    if savepoint_dir is None:
        cluster.cancel(job_id)
        return None
    return stop_once_running(cluster.rest_url, job_id, savepoint_dir, TASKS_RUNNING_WAIT_S)


# --- background processes ----------------------------------------------------------------------------------


def _spawn(name: str, args: list[str], stack_dir: Path,
           env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    log = (stack_dir / f"{name}.log").open("ab")
    proc = subprocess.Popen(  # fixed argv, no shell; own session so Ctrl-C in the terminal leaves it running
        [sys.executable, "-m", "jobs.cli", *args], cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=log,
        stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True,
    )
    log.close()
    (stack_dir / f"{name}.pid").write_text(f"{proc.pid}\n")
    return proc


def _wait_for_line(path: Path, prefix: str, proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith(prefix):
                return line
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise RuntimeError(f"no '{prefix}' line in {path} within {timeout_s} s (exit code {proc.poll()})")


def _stop_pid_file(path: Path, timeout_s: float = 15.0) -> bool:
    """SIGTERM the process group of the pid in ``path``, SIGKILL after ``timeout_s``; remove the file."""
    if not path.exists():
        return False
    pid = int(path.read_text().split()[0])
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            os.killpg(pid, 0)  # raises ProcessLookupError once the whole group is gone
            time.sleep(0.2)
        os.killpg(pid, signal.SIGKILL)
    path.unlink(missing_ok=True)
    return True


def demo_keys(stack_dir: Path) -> tuple[Path, str, str]:
    """The stack's API keys file (created once with one random key for tenant ``demo``; edits are kept),
    and the key and tenant to print: the ``demo`` one, else the first."""
    path = stack_dir / "ingest-keys.json"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(json.dumps({secrets.token_urlsafe(18): "demo"}) + "\n")
    keys = load_api_keys(path)
    return path, *next(((k, t) for k, t in keys.items() if t == "demo"), next(iter(keys.items())))


def start_console(stack_dir: Path, port: int, flink_url: str) -> str:
    """``logclaw ui`` on the job's store (created here if the job has not yet), the ticket ledger and the
    cluster's REST API; returns its URL."""
    from connectors.store import EmbeddedStore
    from connectors.store_retention import NO_RETENTION

    store = stack_dir / "logclaw.db"
    EmbeddedStore(store, retention=NO_RETENTION).close()  # only creates it: the job alone deletes
    ui = _spawn("ui", ["ui", "--store", str(store), "--port", str(port), "--flink-url", flink_url,
                       "--ledger", str(stack_dir / "ticketing" / "tickets-ledger.sqlite")], stack_dir)
    url = _wait_for_line(stack_dir / "ui.log", "ui: console on", ui, 60).split()[3]
    print(f"up: incident console {url} (pid {ui.pid})", flush=True)
    return url


# --- commands ----------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack-dir", type=Path, default=DEFAULT_STACK_DIR,
                        help="pid files, logs, config, checkpoints, store (default: %(default)s)")
    parser.add_argument("--rest-port", type=port_number, default=8081, help="Flink web UI / REST port (up only)")
    parser.add_argument("--broker-port", type=port_number, default=9092, help="Kafka broker port (up only)")
    parser.add_argument("--no-ticketing", action="store_true", help="do not start the ticketing worker (up only)")
    parser.add_argument("--ingest-port", type=port_number, default=4318, help="OTLP/HTTP logs endpoint port (up only)")
    parser.add_argument("--ingest-grpc-port", type=port_number, default=4317,
                        help="OTLP/gRPC logs and traces endpoint port (up only)")
    parser.add_argument("--ui-port", type=port_number, default=8080, help="incident console port (up only)")
    add_savepoint_arguments(parser, default=None, on_start="up: ",
                            dir_help="where down writes the job's savepoint and up resumes from the newest one "
                            "(default: STACK_DIR/savepoints)")
    parser.add_argument("--no-savepoint", action="store_true", help="down: cancel the job without a savepoint")
    add_logging_arguments(parser)  # also handed to the worker, endpoint and console (their environment)


def savepoint_dir_of(args: argparse.Namespace) -> Path:
    return Path(args.savepoint_dir or Path(args.stack_dir) / "savepoints").resolve()


def run_up(args: argparse.Namespace) -> int:
    configure_logging(args.log_format, args.log_level)
    os.environ[LOG_FORMAT_ENV], os.environ[LOG_LEVEL_ENV] = args.log_format, args.log_level  # for _spawn
    stack_dir: Path = args.stack_dir.resolve()
    if (stack_dir / "state.json").exists():
        print(f"up: a stack is already recorded in {stack_dir}; run `logclaw down` first", file=sys.stderr)
        return 1
    stack_dir.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"stack_dir": str(stack_dir)}
    try:
        broker = _spawn("broker", ["broker", "--port", str(args.broker_port), "--log", str(stack_dir / "tansu.log")],
                        stack_dir)
        bootstrap = _wait_for_line(stack_dir / "broker.log", "broker: bootstrap", broker, 60).split()[-1]
        state["bootstrap"] = bootstrap
        print(f"up: broker {bootstrap} (pid {broker.pid})", flush=True)
        savepoints = savepoint_dir_of(args)
        cluster = prepare_cluster(stack_dir, rest_port=args.rest_port, savepoint_dir=savepoints)
        (stack_dir / "state.json").write_text(json.dumps(state))
        cluster.start()
        print(f"up: Flink cluster {cluster.rest_url} (logs {cluster.log_dir})", flush=True)
        resume = resume_point(savepoints, args.fresh)
        state["resumed_from"] = str(resume) if resume else ""
        print(f"up: resuming the detection state from {resume}" if resume else
              f"up: starting the detection job fresh ({'--fresh' if args.fresh else f'no savepoint in {savepoints}'})",
              flush=True)
        job_id = submit_detect(cluster, job_env(bootstrap, stack_dir / "logclaw.db"), savepoint=resume,
                               allow_non_restored_state=args.allow_non_restored_state)
        state["job_id"] = job_id
        (stack_dir / "state.json").write_text(json.dumps(state))
        cluster.wait_for_job_state(job_id, "RUNNING", 120)
        print(f"up: detection job {job_id} RUNNING", flush=True)
        if not args.no_ticketing:
            worker = _spawn("ticketing", ["ticketing", "--bootstrap", bootstrap, "--data-dir",
                                          str(stack_dir / "ticketing"), "--store", str(stack_dir / "logclaw.db")],
                            stack_dir, env={"LITELLM_LOCAL_MODEL_COST_MAP": "True"})
            print(f"up: ticketing worker (pid {worker.pid}, log {stack_dir / 'ticketing.log'})", flush=True)
        keys_file, api_key, tenant = demo_keys(stack_dir)
        ingest = _spawn("ingest", ["ingest", "--port", str(args.ingest_port), "--grpc-port", str(args.ingest_grpc_port),
                                   "--keys", str(keys_file), "--bootstrap", bootstrap], stack_dir)
        ingest_url = _wait_for_line(stack_dir / "ingest.log", "ingest: listening on", ingest, 60).split()[3]
        grpc_line = _wait_for_line(stack_dir / "ingest.log", "ingest: OTLP/gRPC listening on", ingest, 60)
        grpc_address = grpc_line.split()[4].rstrip(";")
        print(f"up: OTLP endpoints: HTTP {ingest_url}, gRPC {grpc_address} (pid {ingest.pid}, keys {keys_file})",
              flush=True)
        console_url = start_console(stack_dir, args.ui_port, cluster.rest_url)
    except (ClusterError, RuntimeError, OSError, ValueError) as exc:
        print(f"up: failed: {exc}; stopping what was started", file=sys.stderr)
        if "job_id" not in state and state.get("resumed_from"):
            print(f"up: the job did not start from {state['resumed_from']}: if it no longer fits the job, "
                  "'logclaw up --allow-non-restored-state' drops the state of removed operators, "
                  "'logclaw up --fresh' starts without it", file=sys.stderr)
        (stack_dir / "state.json").write_text(json.dumps(state))
        run_down(args, savepoint=False)
        return 1
    print(f"\nconsole: {console_url}incidents?tenant={tenant}")
    print(f"web UI:  {cluster.rest_url}/#/job/running/{job_id}/overview")
    print(f"feed it: logclaw simulate --scenario cascade --scale 0.25 --kafka {bootstrap} --topic otlp_logs")
    for line in otlp_hints(ingest_url, grpc_address, api_key, tenant):
        print(line)
    print("stop:    logclaw down")
    return 0


def otlp_hints(http_url: str, grpc_address: str, api_key: str, tenant: str) -> list[str]:
    """How an OpenTelemetry SDK sends to the stack's ingest, over OTLP/HTTP and over OTLP/gRPC (the
    SDK's standard environment variables; ``http://`` makes the gRPC exporter connect without TLS)."""
    key = f"OTEL_EXPORTER_OTLP_LOGS_HEADERS=x-logclaw-api-key={api_key}"
    return [f"or OTLP: OTEL_EXPORTER_OTLP_LOGS_ENDPOINT={http_url} {key}  (tenant {tenant})",
            f"or gRPC: OTEL_EXPORTER_OTLP_LOGS_PROTOCOL=grpc OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=http://{grpc_address} "
            f"{key}"]


def run_down(args: argparse.Namespace, *, savepoint: bool = True) -> int:
    stack_dir: Path = args.stack_dir.resolve()
    state_file = stack_dir / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    stopped = []
    conf_file = stack_dir / "conf" / "config.yaml"
    running = conf_file.exists() and bool(StandaloneCluster(conf_dir=stack_dir / "conf").pids("standalonesession"))
    if state.get("job_id") and running:  # no JobManager (e.g. after a reboot): no job to save
        target = savepoint_dir_of(args) if savepoint and not getattr(args, "no_savepoint", False) else None
        try:
            kept = stop_job(StandaloneCluster(conf_dir=stack_dir / "conf"), state["job_id"], target)
        except ClusterError as exc:
            if target is not None:
                print(f"down: the savepoint failed, nothing was stopped: {exc}\n"
                      "down: retry, or `logclaw down --no-savepoint` to cancel the job without one", file=sys.stderr)
                return 1
        else:
            stopped.append(f"detection job (savepoint {kept})" if kept else "detection job (cancelled)")
    if _stop_pid_file(stack_dir / "ui.pid"):
        stopped.append("console")
    if _stop_pid_file(stack_dir / "ingest.pid"):
        stopped.append("ingest endpoint")
    if _stop_pid_file(stack_dir / "ticketing.pid"):
        stopped.append("ticketing worker")
    if conf_file.exists():
        cluster = StandaloneCluster(conf_dir=stack_dir / "conf")
        if cluster.pids("standalonesession") or cluster.pids("taskexecutor"):
            cluster.stop()
            stopped.append("Flink cluster")
    if _stop_pid_file(stack_dir / "broker.pid"):
        stopped.append("broker")
    state_file.unlink(missing_ok=True)
    print(f"down: stopped {', '.join(stopped) or 'nothing (no stack running)'}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Both sub-commands live here; ``args.command`` (set by ``jobs.cli``) says which one ran."""
    return run_down(args) if getattr(args, "command", "up") == "down" else run_up(args)
