"""The ``logclaw`` command: one sub-command per way of running the product.

One module per sub-command in this package, listed in ``COMMANDS`` (name -> (module, help)); each
module has ``add_arguments(parser)`` and ``run(args)``, which returns a process exit code. Only the
chosen sub-command's module is imported and heavy modules (pyflink) inside ``run``, so
``logclaw --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

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


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with arguments only for ``command`` (the one module imported)."""
    parser = argparse.ArgumentParser(prog="logclaw", description=(__doc__ or "").splitlines()[0])
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
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(args_list)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    return int(args._run(args))
