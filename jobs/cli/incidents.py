"""``logclaw incidents list|show ID|search TEXT``: the console's incident views in a terminal, over
the same read interface (``connectors.console_read``) and the same store options as ``logclaw ui``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from jobs.cli.ui import DEFAULT_STORE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("list", "show", "search"))
    parser.add_argument("arg", nargs="?", default="", help="incident id (show) or text (search)")
    parser.add_argument("--store", type=Path, default=None, help=f"embedded store file (default {DEFAULT_STORE})")
    parser.add_argument("--tenant", default="default", help="tenant (default: default)")
    parser.add_argument("--severity", default="", choices=("", "critical", "high", "medium", "low"))
    parser.add_argument("--state", default="", choices=("", "open", "resolved"))
    parser.add_argument("--service", default="")
    parser.add_argument("--limit", type=int, default=50)


def _line(row: dict[str, Any]) -> str:
    from jobs.console.views import duration, when

    took = duration(row["duration_ms"]) if row["duration_ms"] is not None else "open"
    return (f"{row['incident_id']}  {row['severity']:<8} {row['state']:<8} {when(row['opened_ms'])}  {took:>8}  "
            f"root {row['root_service']:<16} score {float(row['score']):.2f}  {row['title']}")


def _show(reader: Any, tenant: str, incident_id: str) -> int:
    from jobs.console.views import timeline

    events = reader.incident_events(tenant, incident_id)
    if not events:
        print(f"incidents: no incident {incident_id} for tenant {tenant}", file=sys.stderr)
        return 1
    latest = [e for e in events if e["event"] != "resolved"][-1] if len(events) > 1 else events[0]
    root = latest.get("root_cause") or {}
    print(latest["title"])
    print(f"  state {'resolved' if events[-1]['event'] == 'resolved' else 'open'}; path {latest['path']};"
          f" opened {latest['opened_at']}; score {latest['score']:.2f}")
    print(f"  chain {' -> '.join(root.get('chain') or [root.get('service', '?')])};"
          f" affected {', '.join(latest.get('affected_services') or []) or '-'}")
    print("  root-cause candidates:")
    for cand in root.get("candidates") or ():
        print(f"    {cand['service']} {cand['score']:.2f}: {'; '.join(cand.get('reasons') or [])}")
    print("  signals:")
    for sig in latest.get("signals") or ():
        print(f"    {sig['name']} {sig['weight']:.2f}: {sig.get('detail', '')}")
    print("  timeline:")
    for item in timeline(events):
        print(f"    {item['at']} {item['event']}: {'; '.join(item['changes'])}")
    print("  evidence:")
    for line in latest.get("evidence") or ():
        print(f"    {line.get('time')} {line.get('service')} {line.get('level')} {line.get('body')}")
    return 0


def run(args: argparse.Namespace) -> int:
    from connectors.console_read import IncidentQuery
    from jobs.cli.ui import open_from_args

    try:
        reader = open_from_args(args)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"incidents: {exc}", file=sys.stderr)
        return 2
    try:
        if args.action == "show":
            if not args.arg:
                print("incidents: show needs an incident id", file=sys.stderr)
                return 2
            return _show(reader, args.tenant, args.arg)
        if args.action == "search" and not args.arg.strip():
            print("incidents: search needs text", file=sys.stderr)
            return 2
        page = reader.incidents(IncidentQuery(tenant=args.tenant, severity=args.severity, state=args.state,
                                              service=args.service, text=args.arg if args.action == "search" else "",
                                              limit=args.limit))
        for row in page.rows:
            print(_line(row))
        from jobs.console.views import duration

        print(f"{page.total} incident(s) ({', '.join(f'{k} {v}' for k, v in sorted(page.by_state.items())) or 'none'});"
              f" mean time to resolve {duration(page.mttr_ms)}")
        return 0
    finally:
        reader.close()
