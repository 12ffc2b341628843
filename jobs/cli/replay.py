"""``logclaw replay``: the detection job over OTLP/JSON-lines files on the local MiniCluster, in event
time, writing ``DIR/incidents.jsonl`` (the contract), ``DIR/dead-letter.jsonl`` and the embedded
store ``DIR/store.sqlite``. Same job graph as production; only the source differs."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from connectors.files import InputError, iter_lines
from jobs.config import ConfigError, JobConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--logs",
        action="append",
        required=True,
        metavar="FILE",
        help="OTLP/JSON lines (plain or gzip); repeat for several files",
    )
    parser.add_argument(
        "--traces", action="append", default=[], metavar="FILE", help="OTLP/JSON trace lines (optional)"
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--parallelism", type=int, default=None, help="operator parallelism (default 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def _stage(paths: Sequence[str], out: Path, what: str) -> tuple[tuple[str, ...], int]:
    """Check every file is readable and count its lines (for progress). Flink's FileSource picks the
    decompressor by extension, so a gzip file without .gz is linked under a .gz name."""
    staged: list[str] = []
    lines = 0
    inputs = out / ".inputs"
    for i, raw in enumerate(paths):
        p = Path(raw).resolve()
        lines += sum(1 for _ in iter_lines(p))  # raises InputError with the file name
        with p.open("rb") as fh:
            gz = fh.read(2) == b"\x1f\x8b"
        if gz != p.name.endswith(".gz"):
            inputs.mkdir(parents=True, exist_ok=True)
            link = inputs / f"{what}-{i}-{p.name}{'.gz' if gz else '.plain'}"
            if link.exists() or link.is_symlink():
                link.unlink()
            os.symlink(p, link)
            p = link
        staged.append(str(p))
    return tuple(staged), lines


def replay(
    cfg: JobConfig,
    total_messages: int,
    *,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    progress: Callable[[str], None] | None = print,
) -> list[dict[str, Any]]:
    """Run the job to the end of its files; return the incident events in a deterministic order."""
    from jobs.detect import build_pipeline, configure, sources
    from jobs.runtime import local_env

    env = local_env(cfg, with_kafka=False)
    configure(env, cfg)
    logs, spans = sources(env, cfg)
    every = max(1, total_messages // 20)
    streams = build_pipeline(env, cfg, logs, spans, progress_every=every if progress else 0)
    collected = streams.incidents.union(streams.progress) if progress else streams.incidents
    events: list[dict[str, Any]] = []
    started = time.monotonic()
    per_subtask: dict[str, int] = {}
    with collected.execute_and_collect("logclaw-replay") as results:
        for item in results:
            obj = json.loads(item)
            if "schema" not in obj:  # a progress line from one decode subtask
                if progress:
                    per_subtask[obj["subtask"]] = obj["messages"]
                    done = sum(per_subtask.values())
                    progress(
                        f"replay: {done}/{total_messages} messages ({100 * done // max(1, total_messages)}%),"
                        f" {time.monotonic() - started:.0f}s"
                    )
                continue
            events.append(obj)
            if on_event:
                on_event(obj)
    # One tenant's events come from one subtask in order; a stable sort makes files comparable.
    events.sort(key=lambda e: (e["detected_at"], e["tenant"]))
    return events


def write_incidents(events: Sequence[dict[str, Any]], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for e in events:
            fh.write(json.dumps(e, sort_keys=True) + "\n")
    tmp.replace(path)


def describe(event: dict[str, Any]) -> str:
    rc = event["root_cause"]
    chain = " → ".join(rc.get("chain") or [rc["service"]])
    return (
        f"[{event['severity']}] {event['event']:<8} {event['tenant']}/{rc['service']} score {event['score']:.2f}"
        f" chain {chain}; affected {', '.join(event['affected_services']) or '-'};"
        f" evidence {len(event.get('evidence') or [])} lines"
    )


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    try:
        logs, n_logs = _stage(args.logs, out, "logs")
        traces, _ = _stage(args.traces, out, "traces")
        cfg = JobConfig.from_env(
            mode="files", log_files=logs, trace_files=traces, out_dir=str(out), parallelism=args.parallelism
        )
    except (InputError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for stale in ("dead-letter.jsonl", "incidents.jsonl"):
        (out / stale).unlink(missing_ok=True)
    say = None if args.quiet else (lambda s: print(s, flush=True))
    if say:
        say(f"replay: {n_logs} messages from {len(logs)} file(s) on the local MiniCluster"
            f" (parallelism {cfg.parallelism})")
    events = replay(cfg, n_logs, progress=say, on_event=(lambda e: say(describe(e))) if say else None)
    write_incidents(events, out / "incidents.jsonl")
    opened = sum(1 for e in events if e["event"] == "opened")
    dead = out / "dead-letter.jsonl"
    n_dead = sum(1 for _ in dead.open()) if dead.exists() else 0
    print(
        f"replay: {opened} incident(s), {len(events)} event(s) -> {out / 'incidents.jsonl'};"
        f" {n_dead} dead letter(s); store {cfg.resolved_store_path}"
    )
    return 0
