"""Every ``logclaw`` sub-command exits 0 (done), 1 (runtime failure) or 2 (usage or configuration
error), and a user's mistake is told without a traceback: one line on stderr for the commands' own
checks (argparse's own errors print the usage line first, as argparse does). Each case runs the real
command in a subprocess (``python -m jobs.cli``), none starts a service that outlives it.

Also: every sub-command's ``--help`` exits 0 and carries no raw markup (reStructuredText ``code``,
Markdown `code` or **bold**, Sphinx roles, unexpanded %(default)s).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.cli import COMMANDS

ROOT = Path(__file__).resolve().parent.parent
STORE = "store.sqlite"  # an empty embedded store, made by the fixture
EVENTS_OK = "no-events.jsonl"  # an empty incidents file
EVENTS_BAD = "bad-events.jsonl"  # one line that is not JSON

# (argv, exit code, one stderr line: True for the commands' own checks, False where argparse reports)
CASES: list[tuple[list[str], int, bool]] = [
    # usage or configuration errors: 2
    ([], 2, False),
    (["nosuchcommand"], 2, False),
    (["ticketing", "--once", "missing.jsonl"], 2, True),
    (["ticketing", "--once", EVENTS_OK, "--max-attempts", "x"], 2, True),
    (["ticketing", "--once", EVENTS_OK, "--routing", "missing.yaml"], 2, True),
    (["ticketing", "--once", EVENTS_OK, "--metrics-port", "70000"], 2, True),
    (["ticketing", "--log-format", "xml"], 2, False),
    (["replay"], 2, False),
    (["replay", "--logs", "missing.jsonl", "--out", "out"], 2, True),
    (["simulate"], 2, True),
    (["simulate", "--scenario", "nope", "--out", "x.jsonl"], 2, True),
    (["simulate", "--scenario", "cascade", "--scale", "-1", "--out", "x.jsonl"], 2, True),
    (["demo", "--scale", "-1"], 2, False),
    (["demo", "--scenario", "nope"], 2, False),
    (["eval", "--data", "missing-dir"], 2, True),
    (["run", "--from-checkpoint", "missing-dir"], 2, True),
    (["run", "--bootstrap", ""], 2, True),
    (["run", "--web-port", "70000"], 2, False),
    (["run", "--log-level", "loud"], 2, False),
    (["up", "--rest-port", "70000"], 2, False),
    (["down", "--bogus"], 2, False),
    (["broker", "--port", "-1"], 2, False),
    (["incidents", "bogus"], 2, False),
    (["incidents", "list", "--store", "missing.sqlite"], 2, True),
    (["incidents", "show", "--store", STORE], 2, True),
    (["ui", "--store", "missing.sqlite"], 2, True),
    (["ui", "--port", "70000"], 2, False),
    (["ui", "--store", STORE, "--keys", "missing.json"], 2, True),
    (["ui", "--store", STORE, "--log-format", "xml"], 2, False),
    (["ingest", "--keys", "missing.json"], 2, True),
    (["report", "--bogus"], 2, False),
    (["jars", "--bogus"], 2, False),
    # runtime failures: 1
    (["ticketing", "--once", EVENTS_BAD], 1, False),  # dead-lettered: the counters table on stdout
    (["incidents", "show", "inc-nope", "--store", STORE], 1, True),
    # done: 0
    (["--version"], 0, False),
    (["ticketing", "--once", EVENTS_OK], 0, False),
    (["simulate", "--list"], 0, False),
    (["incidents", "list", "--store", STORE], 0, False),
    (["down", "--stack-dir", "no-stack"], 0, False),
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from connectors.store import EmbeddedStore

    work = tmp_path_factory.mktemp("exit-codes")
    EmbeddedStore(work / STORE).close()
    (work / EVENTS_OK).write_text("")
    (work / EVENTS_BAD).write_text("not json\n")
    yield work


def logclaw(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYFLINK_", "LOGCLAW_"))}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "jobs.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, check=False, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(("argv", "code", "one_line"), CASES, ids=[" ".join(c[0]) or "(none)" for c in CASES])
def test_exit_code_and_no_traceback(argv: list[str], code: int, one_line: bool, workdir: Path) -> None:
    done = logclaw(argv, workdir)
    assert done.returncode == code, (done.stdout[-2000:], done.stderr[-2000:])
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    if one_line:
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_console_that_cannot_listen_is_a_runtime_failure_in_one_line(workdir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = logclaw(["ui", "--store", STORE, "--port", str(taken.getsockname()[1])], workdir)
    assert done.returncode == 1 and done.stderr.startswith("ui: cannot listen on 127.0.0.1:"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_the_missing_once_file_is_named_in_one_line(workdir: Path) -> None:
    done = logclaw(["ticketing", "--once", "missing.jsonl"], workdir)
    assert (done.returncode, done.stderr) == (2, "logclaw ticketing: --once missing.jsonl: no such file\n")


def test_every_sub_command_is_in_the_table() -> None:
    tested = {argv[0] for argv, _code, _line in CASES if argv and argv[0] in COMMANDS}
    assert tested == set(COMMANDS)


MARKUP = re.compile(r"``|`[^`\s][^`]*`|\*\*|:(class|func|meth|mod|ref):|%\(")


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_exits_0_without_raw_markup(command: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    from jobs.cli import main

    with pytest.raises(SystemExit) as exited:  # in-process: argparse's --help prints and exits 0
        main([command, "--help"] if command else ["--help"])
    out = capsys.readouterr().out
    assert exited.value.code == 0
    assert out.startswith("usage: logclaw")
    assert not MARKUP.search(out), MARKUP.search(out)


def test_ctrl_c_is_how_the_console_stops_exit_0(workdir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYFLINK_", "LOGCLAW_"))}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "ui", "--store", STORE, "--port", "0"], cwd=workdir,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("ui: console on http://127.0.0.1:")
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err, err
