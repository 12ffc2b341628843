"""``logclaw run``: the detection job on Kafka, on the local MiniCluster, with REST (and the web UI),
checkpointing to a local folder, until Ctrl-C or SIGTERM; then the job is stopped with a savepoint in
``--savepoint-dir`` and the next ``logclaw run`` resumes from the newest savepoint there (state and
offsets: templates, baselines, open incidents), unless ``--fresh``. If the savepoint fails the job is
cancelled and its last completed checkpoint is kept, for ``--from-checkpoint``.

Checkpoint settings are Flink 2.x configuration keys (``CheckpointingOptions``,
``StateRecoveryOptions``): ``execution.checkpointing.dir``, ``...externalized-checkpoint-retention``
and, to restore, ``execution.state-recovery.path``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from py4j.protocol import Py4JError

from connectors.flink_cluster import ClusterError, resume_point, stop_once_running
from jobs.cli import add_savepoint_arguments, port_number
from jobs.config import ConfigError, JobConfig
from jobs.observability import add_logging_arguments, configure_logging

TERMINAL = {"FAILED", "CANCELED", "FINISHED"}
RETAINED_CHECKPOINTS = 3
DEFAULT_SAVEPOINT_DIR = Path(".logclaw/savepoints")  # beside --checkpoint-dir's default: the run's state dir
TASKS_RUNNING_WAIT_S = 120.0  # a job start on a loaded 2-core machine took up to a minute here


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", metavar="SERVERS",
                        help="Kafka bootstrap servers (LOGCLAW_KAFKA_BOOTSTRAP_SERVERS)")
    parser.add_argument("--logs-topic", help="OTLP logs topic (LOGCLAW_LOGS_TOPIC, default otlp_logs)")
    parser.add_argument("--spans-topic", help="optional OTLP spans topic (LOGCLAW_SPANS_TOPIC)")
    parser.add_argument("--group-id", help="consumer group of the job (LOGCLAW_GROUP_ID)")
    parser.add_argument("--web-port", type=port_number, help="REST / web UI port on 127.0.0.1 (LOGCLAW_WEB_PORT, 8081)")
    parser.add_argument("--parallelism", type=int, help="operator parallelism (LOGCLAW_PARALLELISM, 2)")
    parser.add_argument("--checkpoint-dir", type=Path, default=Path(".logclaw/checkpoints"),
                        help="where completed checkpoints are kept (default: %(default)s)")
    parser.add_argument("--checkpoint-interval-ms", type=int,
                        help="checkpoint interval (LOGCLAW_CHECKPOINT_INTERVAL_MS, 10000; 0 = off)")
    parser.add_argument("--from-checkpoint", type=Path, metavar="PATH",
                        help="restore state and offsets: a chk-N folder, its _metadata, or a checkpoint "
                        "folder (its newest completed checkpoint is used)")
    add_savepoint_arguments(parser, default=DEFAULT_SAVEPOINT_DIR,
                            dir_help="where the job's savepoint is written on stop and resumed from on start "
                            "(default: %(default)s)")
    add_logging_arguments(parser)


def completed_checkpoints(root: Path) -> list[Path]:
    """Completed checkpoints (``chk-N`` folders holding ``_metadata``) under ``root``, oldest first
    by modification time of the metadata."""
    if (root / "_metadata").is_file():
        return [root]
    found = [m.parent for m in root.glob("**/chk-*/_metadata") if m.is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: ((p / "_metadata").stat().st_mtime_ns, int(p.name.split("-")[-1])))


def resolve_restore_path(path: Path) -> Path:
    """The checkpoint to restore from ``--from-checkpoint PATH``; ``ConfigError`` when there is none."""
    target = path.parent if path.name == "_metadata" else path
    found = completed_checkpoints(target)
    if not found:
        raise ConfigError(f"--from-checkpoint {path}: no completed checkpoint (chk-N/_metadata) there")
    return found[-1].resolve()


def checkpoint_settings(checkpoint_dir: Path, restore_from: Path | None,
                        allow_non_restored_state: bool = False) -> dict[str, str]:
    """Flink 2.x configuration for retained file-system checkpoints and an optional restore (a
    checkpoint or a savepoint)."""
    settings = {
        "execution.checkpointing.storage": "filesystem",
        "execution.checkpointing.dir": checkpoint_dir.resolve().as_uri(),
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.num-retained": str(RETAINED_CHECKPOINTS),
    }
    if restore_from is not None:
        settings["execution.state-recovery.path"] = restore_from.as_uri()
        if allow_non_restored_state:
            settings["execution.state-recovery.ignore-unclaimed-state"] = "true"
    return settings


def web_ui_status(port: int, timeout_s: float = 2.0) -> tuple[bool, bool]:
    """(REST answers, the web dashboard is served) on 127.0.0.1:port."""
    base = f"http://127.0.0.1:{port}"
    try:
        with urllib.request.urlopen(f"{base}/overview", timeout=timeout_s) as resp:
            rest = "flink-version" in json.loads(resp.read())
    except (OSError, ValueError):
        return False, False
    try:
        with urllib.request.urlopen(f"{base}/", timeout=timeout_s) as resp:
            ui = b"Apache Flink Web Dashboard" in resp.read(65_536)
    except OSError:
        ui = False
    return rest, ui


def wait_for_rest(port: int, deadline_s: float = 30.0) -> tuple[bool, bool]:
    """``web_ui_status`` once REST answers, or (False, False) after ``deadline_s`` (wall clock)."""
    deadline = time.monotonic() + deadline_s
    while True:
        rest, ui = web_ui_status(port)
        if rest or time.monotonic() >= deadline:
            return rest, ui
        time.sleep(0.5)


def _config(args: argparse.Namespace) -> JobConfig:
    return JobConfig.from_env(
        mode="kafka", bootstrap_servers=args.bootstrap, logs_topic=args.logs_topic, spans_topic=args.spans_topic,
        group_id=args.group_id, web_port=args.web_port, parallelism=args.parallelism,
        checkpoint_interval_ms=args.checkpoint_interval_ms,
    )


def restore_point(args: argparse.Namespace) -> Path | None:
    """``--from-checkpoint`` if given, else the newest savepoint in ``--savepoint-dir`` unless ``--fresh``."""
    if args.from_checkpoint:
        return resolve_restore_path(args.from_checkpoint)
    return resume_point(args.savepoint_dir, args.fresh)


def submit(cfg: JobConfig, checkpoint_dir: Path, restore_from: Path | None,
           allow_non_restored_state: bool = False) -> Any:
    """Build the job on a MiniCluster with REST on ``cfg.web_port`` and start it; return its JobClient."""
    from pyflink.common import Configuration

    from jobs.detect import build_pipeline, configure, sources
    from jobs.runtime import local_env

    env = local_env(cfg, with_kafka=True, web_ui=True)
    extra = Configuration()
    for key, value in checkpoint_settings(checkpoint_dir, restore_from, allow_non_restored_state).items():
        extra.set_string(key, value)
    env.configure(extra)
    configure(env, cfg)
    logs, spans = sources(env, cfg)
    build_pipeline(env, cfg, logs, spans)
    return env.execute_async("logclaw-detect")


def _status(client: Any) -> str:
    return str(client.get_job_status().result()).rsplit(".", 1)[-1]


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_format, args.log_level)
    try:
        cfg = _config(args)
        restore = restore_point(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _run(cfg, args, restore, stopping)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(cfg: JobConfig, args: argparse.Namespace, restore: Path | None, stopping: threading.Event) -> int:
    checkpoint_dir: Path = args.checkpoint_dir

    def say(text: str) -> None:
        print(f"run: {text}", flush=True)

    say(f"Kafka {cfg.bootstrap_servers}: {cfg.logs_topic}{' + ' + cfg.spans_topic if cfg.spans_topic else ''}"
        f" -> {cfg.incidents_topic} (dead letters {cfg.dead_letter_topic}); group {cfg.group_id};"
        f" parallelism {cfg.parallelism}")
    if restore is not None:
        say(f"restoring from {restore}")
    client = submit(cfg, checkpoint_dir, restore, args.allow_non_restored_state)
    job_id = str(client.get_job_id())
    rest, ui = wait_for_rest(cfg.web_port)
    url = f"http://127.0.0.1:{cfg.web_port}/"
    if ui:
        say(f"web UI {url} (REST {url}jobs/{job_id})")
    elif rest:
        say(f"REST {url}jobs/{job_id} (no web dashboard is served on this port)")
    else:
        say(f"REST did not answer on {url} within 30 s")
    interval = f"every {cfg.checkpoint_interval_ms} ms" if cfg.checkpoint_interval_ms > 0 else "off"
    say(f"job {job_id} running; checkpoints {interval} to {(checkpoint_dir / job_id).resolve()}; Ctrl-C to stop")
    started = time.monotonic()
    try:
        last = "RUNNING"
        while not stopping.wait(1.0):
            status = _status(client)
            if status != last:  # e.g. RESTARTING after a task failure (see REST /jobs/<id>/exceptions)
                say(f"job {job_id} is {status}")
                last = status
            if status in TERMINAL:
                say(f"job {job_id} ended on its own: {status} after {time.monotonic() - started:.0f} s")
                return 1
        return _stop_with_savepoint(client, f"http://127.0.0.1:{cfg.web_port}", job_id, args, say)
    except Py4JError as exc:  # the JVM is gone, e.g. SIGTERM sent to the whole process group
        say(f"lost the Flink JVM ({type(exc).__name__}); checkpoints stay in {checkpoint_dir.resolve()}")
        return 1


def _stop_with_savepoint(client: Any, rest_url: str, job_id: str, args: argparse.Namespace,
                         say: Callable[[str], None]) -> int:
    """Ctrl-C: a savepoint in ``--savepoint-dir`` (0), or, if it fails, cancel and name the checkpoint (1)."""
    say(f"stopping: job {job_id} with a savepoint in {args.savepoint_dir.resolve()}")
    try:
        kept_at = stop_once_running(rest_url, job_id, args.savepoint_dir, TASKS_RUNNING_WAIT_S)
    except ClusterError as exc:
        say(f"the savepoint failed ({exc}); cancelling job {job_id}")
        client.cancel().result()
        _say_checkpoint(say, args.checkpoint_dir / job_id)
        return 1
    say(f"stopped; savepoint {kept_at}: the next 'logclaw run' resumes from it (--fresh to start anew)")
    return 0


def _say_checkpoint(say: Callable[[str], None], job_checkpoints: Path) -> None:
    kept = completed_checkpoints(job_checkpoints)
    if kept:
        say(f"cancelled; resume with --from-checkpoint {kept[-1].resolve()}")
    else:
        say("cancelled; no completed checkpoint was kept")
