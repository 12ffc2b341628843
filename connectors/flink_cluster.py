"""A real standalone Flink cluster from the installed PyFlink distribution, and its REST API.

``pip install apache-flink`` ships a whole Flink distribution inside the ``pyflink`` package
(``bin/start-cluster.sh``, ``bin/flink``, ``lib/``). :class:`StandaloneCluster` writes a private
configuration directory (``flink-conf/config.yaml`` plus per-run overrides: ports, the Python
interpreter, the Kafka jars, log/pid/checkpoint directories), starts one JobManager and one
TaskManager with it, submits Python jobs with ``bin/flink run -d -py`` and stops everything with
``bin/stop-cluster.sh``; pid files live in the private directory, so only this cluster's processes are
ever signalled. Waits are bounded by wall-clock deadlines.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROMETHEUS_KEYS = ("metrics.reporters", "metrics.reporter.prom.")
_JOB_ID = re.compile(r"JobID ([0-9a-f]{32})")


class ClusterError(RuntimeError):
    """The cluster could not be started, asked something or stopped; the message says why."""


def pyflink_home() -> Path:
    """The Flink distribution inside the installed ``pyflink`` package."""
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def prometheus_jar(home: Path) -> Path | None:
    """The Prometheus reporter plugin jar, if the distribution has one under ``plugins/``."""
    return next(iter(sorted(home.glob("plugins/*/flink-metrics-prometheus*.jar"))), None)


def load_conf(path: Path) -> dict[str, Any]:
    """A Flink ``config.yaml`` as a flat ``{key: value}`` mapping (nested maps joined with dots)."""
    loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            flat[prefix] = node

    walk("", loaded)
    return flat


def cluster_conf(base: Mapping[str, Any], overrides: Mapping[str, Any], *, has_prometheus: bool) -> dict[str, Any]:
    """``base`` with ``overrides`` applied; the Prometheus reporter keys are dropped when its jar is absent
    (Flink would only log a warning, but a config that names a missing plugin misleads)."""
    conf = {**base, **overrides}
    if not has_prometheus:
        conf = {k: v for k, v in conf.items() if not k.startswith(PROMETHEUS_KEYS)}
    return conf


def taskmanagers_needed(conf: Mapping[str, Any]) -> int:
    """TaskManagers for ``parallelism.default`` subtasks at ``taskmanager.numberOfTaskSlots`` each."""
    slots = max(1, int(conf.get("taskmanager.numberOfTaskSlots", 1)))
    return max(1, -(-int(conf.get("parallelism.default", 1)) // slots))


def write_conf_dir(dest: Path, conf: Mapping[str, Any], home: Path) -> Path:
    """A FLINK_CONF_DIR: ``config.yaml`` from ``conf``, the distribution's log4j files, and one local
    worker line per TaskManager the parallelism needs (``start-cluster.sh`` starts one per line)."""
    dest.mkdir(parents=True, exist_ok=True)
    for pattern in ("log4j*.properties", "logback*.xml"):
        for src in (home / "conf").glob(pattern):
            shutil.copy2(src, dest / src.name)
    (dest / "workers").write_text("localhost\n" * taskmanagers_needed(conf))
    (dest / "masters").write_text(f"localhost:{conf.get('rest.port', 8081)}\n")
    (dest / "config.yaml").write_text(yaml.safe_dump(dict(conf), sort_keys=True, width=1_000_000))
    return dest


@dataclass
class StandaloneCluster:
    """One JobManager and the ``workers`` file's TaskManagers on loopback, configured from ``conf_dir``."""

    conf_dir: Path
    home: Path = field(default_factory=pyflink_home)
    env: Mapping[str, str] = field(default_factory=dict)  # extra environment for the scripts and CLI

    @property
    def conf(self) -> dict[str, Any]:
        return load_conf(self.conf_dir / "config.yaml")

    @property
    def rest_url(self) -> str:
        conf = self.conf
        return f"http://{conf.get('rest.address', '127.0.0.1')}:{conf.get('rest.port', 8081)}"

    @property
    def pid_dir(self) -> Path:
        return Path(str(self.conf.get("env.pid.dir", "/tmp")))

    @property
    def log_dir(self) -> Path:
        return Path(str(self.conf.get("env.log.dir", self.home / "log")))

    def _env(self) -> dict[str, str]:
        # This interpreter's bin first: thread-mode Python inside the TaskManager resolves its
        # interpreter (and site-packages, e.g. pemja) from the environment it was started with.
        bin_dir = os.path.dirname(sys.executable)
        path = bin_dir + os.pathsep + os.environ.get("PATH", "")
        venv = {"VIRTUAL_ENV": sys.prefix} if sys.prefix != sys.base_prefix else {}
        # Not PYFLINK_*: a PyFlink job run earlier in this process (loopback workers) leaves
        # PYFLINK_GATEWAY_DISABLED set, which would stop `flink run -py` from starting its gateway.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("PYFLINK_")}
        return {**inherited, "PATH": path, **venv, **self.env,
                "FLINK_CONF_DIR": str(self.conf_dir), "FLINK_HOME": str(self.home)}

    def _script(self, args: Sequence[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(list(args), env=self._env(), capture_output=True, text=True,
                                  timeout=timeout_s, check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(f"{' '.join(args)} did not finish within {timeout_s} s") from exc

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self, timeout_s: float = 120.0) -> StandaloneCluster:
        """``start-cluster.sh``, then wait until a TaskManager with free slots has registered.

        The REST port must be free beforehand: otherwise the answers could come from someone else's
        cluster (start-cluster.sh exits 0 even when the JobManager fails to bind)."""
        conf = self.conf
        port = int(conf.get("rest.port", 8081))
        if not _port_free(str(conf.get("rest.address", "127.0.0.1")), port):
            raise ClusterError(f"rest.port {port} is already in use; pick another (--rest-port)")
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        done = self._script(["bash", str(self.home / "bin" / "start-cluster.sh")], timeout_s)
        if done.returncode != 0:
            raise ClusterError(f"start-cluster.sh exited {done.returncode}: {done.stderr.strip()[-2000:]}")
        workers = (self.conf_dir / "workers").read_text().split() if (self.conf_dir / "workers").exists() else []
        self.wait_for_taskmanagers(max(1, len(workers)), timeout_s)
        return self

    def start_taskmanager(self, timeout_s: float = 60.0) -> None:
        """Start one more TaskManager (``taskmanager.sh start``), e.g. after one was killed."""
        done = self._script(["bash", str(self.home / "bin" / "taskmanager.sh"), "start"], timeout_s)
        if done.returncode != 0:
            raise ClusterError(f"taskmanager.sh start exited {done.returncode}: {done.stderr.strip()[-2000:]}")

    def wait_for_taskmanagers(self, count: int, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        last: Any = "no answer"
        while time.monotonic() < deadline:
            if not self.pids("standalonesession"):
                raise ClusterError(f"the JobManager is not running; see {self.log_dir}")
            try:
                overview = self.rest("/overview", timeout_s=2.0)
                if overview.get("taskmanagers", 0) >= count and overview.get("slots-total", 0) > 0:
                    return dict(overview)
                last = overview
            except ClusterError as exc:
                last = str(exc)
            time.sleep(0.5)
        raise ClusterError(f"no {count} TaskManager(s) at {self.rest_url} within {timeout_s} s ({last}); "
                           f"logs in {self.log_dir}")

    def pids(self, daemon: str) -> list[int]:
        """Live pids of ``daemon`` (``standalonesession`` or ``taskexecutor``) from this cluster's pid files."""
        found: list[int] = []
        for pid_file in self.pid_dir.glob(f"flink-*-{daemon}.pid"):
            for line in pid_file.read_text().split():
                if line.isdigit() and _alive(int(line)):
                    found.append(int(line))
        return found

    def stop(self, timeout_s: float = 60.0) -> None:
        """``stop-cluster.sh``; whatever of this cluster still runs afterwards gets SIGKILL. Idempotent."""
        before = self.pids("taskexecutor") + self.pids("standalonesession")
        with contextlib.suppress(ClusterError):
            self._script(["bash", str(self.home / "bin" / "stop-cluster.sh")], timeout_s)
        deadline = time.monotonic() + 15.0
        while any(_alive(p) for p in before) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in before:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    # --- jobs ----------------------------------------------------------------------------------------------

    def submit_python(self, script: Path, *, pyfs: Sequence[Path] = (), classpaths: Sequence[str] = (),
                      env: Mapping[str, str] | None = None, cwd: Path | None = None, timeout_s: float = 180.0,
                      savepoint: Path | None = None, allow_non_restored_state: bool = False) -> str:
        """``flink run -d [-s savepoint [-n]] -C url... -py script -pyfs ...``: the job id once the cluster
        accepted it (detached).

        ``classpaths`` (``file://`` URLs, e.g. the Kafka connector jars) go on ``-C``: the client's table
        planner finds the connector factory only on the program's class path, not via ``pipeline.jars``.
        ``savepoint`` restores every operator's state by its uid (``jobs/steps.py``);
        ``allow_non_restored_state`` lets state of operators the new job no longer has be dropped.
        """
        cmd = ["bash", str(self.home / "bin" / "flink"), "run", "-d"]
        if savepoint is not None:
            cmd += ["-s", str(savepoint)] + (["-n"] if allow_non_restored_state else [])
        for url in classpaths:
            cmd += ["-C", url]
        cmd += ["-py", str(script)]
        if pyfs:
            cmd += ["-pyfs", ",".join(str(p) for p in pyfs)]
        try:
            done = subprocess.run(cmd, env={**self._env(), **(env or {})}, capture_output=True, text=True,
                                  timeout=timeout_s, check=False, cwd=cwd, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(f"flink run did not return within {timeout_s} s") from exc
        match = _JOB_ID.search(done.stdout + done.stderr)
        if done.returncode != 0 or match is None:
            tail = (done.stdout + done.stderr).strip()[-3000:]
            raise ClusterError(f"flink run exited {done.returncode} without a job id: {tail}")
        return match.group(1)

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.rest(f"/jobs/{job_id}"))

    def wait_for_job_state(self, job_id: str, state: str, timeout_s: float, *,
                           all_running: bool = False) -> dict[str, Any]:
        """Wait until the job is in ``state`` (and, with ``all_running``, every vertex is RUNNING)."""
        deadline = time.monotonic() + timeout_s
        last = "?"
        while time.monotonic() < deadline:
            info = self.job(job_id)
            last = f"{info.get('state')} {[v.get('status') for v in info.get('vertices', [])]}"
            if info.get("state") == state and (
                not all_running or all(v.get("status") == "RUNNING" for v in info.get("vertices", []))
            ):
                return info
            time.sleep(0.5)
        raise ClusterError(f"job {job_id} not {state} within {timeout_s} s (last: {last})")

    def cancel(self, job_id: str) -> None:
        self.rest(f"/jobs/{job_id}?mode=cancel", method="PATCH")

    def stop_with_savepoint(self, job_id: str, target_dir: Path, timeout_s: float = 300.0) -> Path:
        """``stop_with_savepoint`` (the module function) on this cluster."""
        return stop_with_savepoint(self.rest_url, job_id, target_dir, timeout_s)

    def vertex_metric_sum(self, job_id: str, vertex_id: str, metric: str) -> float:
        """Sum of ``<subtask>.<operator>.<metric>`` over all subtasks and operators of one vertex."""
        listed = self.rest(f"/jobs/{job_id}/vertices/{vertex_id}/metrics")
        ids = [m["id"] for m in listed if m["id"].endswith(f".{metric}")]
        if not ids:
            return 0.0
        values = self.rest(f"/jobs/{job_id}/vertices/{vertex_id}/metrics?get={','.join(ids)}")
        return float(sum(float(m["value"]) for m in values))

    def checkpoint_counts(self, job_id: str) -> dict[str, int]:
        counts = self.rest(f"/jobs/{job_id}/checkpoints").get("counts", {})
        return {k: int(v) for k, v in counts.items()}

    # --- REST ----------------------------------------------------------------------------------------------

    def rest(self, path: str, *, method: str = "GET", timeout_s: float = 10.0, body: Any = None) -> Any:
        return rest_call(self.rest_url, path, method=method, timeout_s=timeout_s, body=body)


def rest_call(base_url: str, path: str, *, method: str = "GET", timeout_s: float = 10.0, body: Any = None) -> Any:
    """One Flink REST request (JSON ``body`` when given); the decoded answer, ``ClusterError`` on failure."""
    data = None if body is None else json.dumps(body).encode()
    headers = {} if body is None else {"Content-Type": "application/json"}
    request = urllib.request.Request(base_url + path, method=method, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            answer = response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise ClusterError(f"{method} {base_url}{path}: {exc}") from exc
    return json.loads(answer) if answer else {}


def all_tasks_running(base_url: str, job_id: str) -> bool:
    """The job and every one of its vertices are RUNNING (a savepoint can only be taken then)."""
    info = rest_call(base_url, f"/jobs/{job_id}")
    return bool(info.get("state") == "RUNNING" and all(v.get("status") == "RUNNING" for v in info.get("vertices", [])))


JOB_ENDED = frozenset({"FINISHED", "CANCELED", "FAILED"})


def _gone(exc: ClusterError) -> bool:
    """The REST answer says the job or its cluster no longer exists: 404, or nothing listens any more
    (the MiniCluster of ``logclaw run`` closes its REST port as soon as its one job has ended)."""
    cause = exc.__cause__
    if isinstance(cause, urllib.error.HTTPError):
        return cause.code == 404
    reason = cause.reason if isinstance(cause, urllib.error.URLError) else cause
    return isinstance(reason, ConnectionRefusedError)


def _wait_for_job_end(base_url: str, job_id: str, deadline: float) -> None:
    """Flink reports the savepoint COMPLETED a moment before the job leaves RUNNING (seen here): wait
    for the end, so a caller that resubmits or stops the cluster next finds the job gone. A job or
    cluster that is gone has ended; other failures (a slow answer) are retried until ``deadline``."""
    while time.monotonic() < deadline:
        try:
            if rest_call(base_url, f"/jobs/{job_id}").get("state") in JOB_ENDED:
                return
        except ClusterError as exc:
            if _gone(exc):
                return
        time.sleep(0.5)


def stop_with_savepoint(base_url: str, job_id: str, target_dir: Path, timeout_s: float = 300.0) -> Path:
    """Stop the job with a savepoint in ``target_dir`` (REST ``POST /jobs/:id/stop``, no drain: event time
    is not advanced to the end, so open windows and incidents stay open in the savepoint); the savepoint's
    directory once Flink reports it COMPLETED. ``ClusterError`` if it failed or timed out (the job then
    keeps running). Works on any cluster with REST: standalone, or the MiniCluster of ``logclaw run``."""
    body = {"drain": False, "targetDirectory": target_dir.resolve().as_uri()}
    trigger = rest_call(base_url, f"/jobs/{job_id}/stop", method="POST", body=body)["request-id"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = rest_call(base_url, f"/jobs/{job_id}/savepoints/{trigger}")
        if answer.get("status", {}).get("id") == "COMPLETED":
            operation = answer.get("operation", {})
            if "location" in operation:
                _wait_for_job_end(base_url, job_id, deadline)
                return Path(urllib.parse.urlparse(str(operation["location"])).path)
            cause = operation.get("failure-cause", {})
            raise ClusterError(f"savepoint of job {job_id} failed: "
                               f"{cause.get('class', '?')}: {str(cause.get('stack-trace', ''))[:1500]}")
        time.sleep(0.5)
    raise ClusterError(f"savepoint of job {job_id} not completed within {timeout_s} s")


def savepoints(root: Path) -> list[Path]:
    """Completed savepoints (``savepoint-*`` folders holding ``_metadata``) under ``root``, oldest first
    by the metadata's modification time (Flink writes ``_metadata`` last, so its presence means complete)."""
    if (root / "_metadata").is_file():
        return [root]
    found = [m.parent for m in root.glob("savepoint-*/_metadata") if m.is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: ((p / "_metadata").stat().st_mtime_ns, p.name))


def latest_savepoint(root: Path) -> Path | None:
    """The newest completed savepoint under ``root`` (or ``root`` itself if it is one), else None."""
    found = savepoints(root)
    return found[-1].resolve() if found else None


def resume_point(savepoint_dir: Path, fresh: bool) -> Path | None:
    """The savepoint a job start restores (``logclaw run`` / ``up``): the newest under ``savepoint_dir``,
    or None with ``--fresh``."""
    return None if fresh else latest_savepoint(savepoint_dir)


def stop_once_running(base_url: str, job_id: str, target_dir: Path, tasks_wait_s: float) -> Path:
    """``stop_with_savepoint`` into ``target_dir`` (created) once every task runs, or after
    ``tasks_wait_s`` (wall clock) try anyway: Flink refuses a savepoint while some tasks are still
    deploying ("Not all required tasks are currently running"), e.g. on a stop right after the start
    or during a restart. ``ClusterError`` when the savepoint fails: the job then keeps running."""
    target_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + tasks_wait_s
    while time.monotonic() < deadline and not all_tasks_running(base_url, job_id):
        time.sleep(0.5)
    return stop_with_savepoint(base_url, job_id, target_dir)


def _port_free(host: str, port: int) -> bool:
    """Nothing listens on ``host:port``. SO_REUSEADDR as the JVM's server sockets set it on Linux: the
    connections of a cluster stopped a moment ago (TIME_WAIT) must not make its port look taken
    (``logclaw up`` right after ``logclaw down`` failed so)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
