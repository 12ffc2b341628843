"""The worker killed (SIGKILL) between a platform's create and the ledger write, then restarted.

Each run is a real ``ticketing --once`` process with the real client of one platform pointed at its
stand-in, which lives in this test process and so outlives the kill. The first run is killed right
after the create returns; the restart replays the same incidents. Tickets are counted on the stand-in.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.standins.platforms import PLATFORM_IDS, PLATFORM_SPECS, PlatformSpec
from tests.test_ticketing_platforms import life_cycle

ROOT = Path(__file__).resolve().parent.parent

RUNNER = """
import argparse, os, signal, sys

from connectors.tickets import factory
from jobs import ticketing

if sys.argv[1] == "kill-after-create":
    real_build_client = factory.build_client

    def build_client(name, settings, transport):
        client = real_build_client(name, settings, transport)
        real_create = client.create

        def create_then_die(view):
            real_create(view)
            os.kill(os.getpid(), signal.SIGKILL)  # the platform has the ticket, the ledger does not

        client.create = create_then_die
        return client

    factory.build_client = build_client
parser = argparse.ArgumentParser()
ticketing.add_arguments(parser)
sys.exit(ticketing.run(parser.parse_args(sys.argv[2:])))
"""


def run_worker(mode: str, tmp: Path, incidents: Path, routing: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    argv = [sys.executable, "-c", RUNNER, mode, "--once", str(incidents), "--data-dir", str(tmp / "state"),
            "--routing", str(routing), "--worker-id", "worker-0"]
    return subprocess.run(argv, cwd=tmp, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("spec", PLATFORM_SPECS, ids=PLATFORM_IDS)
def test_worker_killed_between_create_and_ledger_write_leaves_one_ticket_against_local_standin(
    tmp_path: Path, spec: PlatformSpec
) -> None:
    incidents = tmp_path / "incidents.jsonl"
    incidents.write_text("\n".join(life_cycle("fp-pool", "inc-000001")) + "\n")
    with spec.standin() as server:
        routing = tmp_path / "routing.json"
        routing.write_text(json.dumps({
            "default": {"critical": [spec.name], "high": [], "medium": [], "low": []},
            "destinations": {spec.name: {"type": spec.name, **spec.settings(server)}},
        }))
        killed = run_worker("kill-after-create", tmp_path, incidents, routing)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        assert len(spec.tickets(server)) == 1  # created on the platform, not in the ledger
        restarted = run_worker("normal", tmp_path, incidents, routing)
        assert restarted.returncode == 0, restarted.stderr[-2000:]
        tickets = spec.tickets(server)
        # 0 duplicates, nothing lost (PagerDuty: the restart's trigger lands on the same alert)
        assert [(t.resolved, t.updates >= 1) for t in tickets] == [(True, True)]
        again = run_worker("normal", tmp_path, incidents, routing)  # and a third run changes nothing
        assert again.returncode == 0 and spec.tickets(server) == tickets
