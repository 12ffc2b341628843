"""The incident contract ships inside the package: the worker never reads ``../shared`` at run time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_SCHEMA = ROOT.parent / "shared" / "contracts" / "incident.schema.json"


def test_packaged_incident_schema_equals_the_shared_contract() -> None:
    if not SHARED_SCHEMA.exists():
        pytest.skip(f"no shared contract at {SHARED_SCHEMA} (checkout outside the project workspace)")
    packaged = resources.files("connectors.contracts").joinpath("incident.schema.json")
    assert json.loads(packaged.read_text(encoding="utf-8")) == json.loads(SHARED_SCHEMA.read_text(encoding="utf-8"))


def test_worker_validates_incidents_when_installed_outside_this_checkout(tmp_path: Path) -> None:
    """Copies the three packages (as a wheel would install them) to a folder with no ``shared``
    beside it, and validates an incident there."""
    site = tmp_path / "site"
    for package in ("jobs", "connectors", "udfs"):
        shutil.copytree(ROOT / package, site / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    probe = (
        "import jobs.ticketing_worker\n"
        "v = jobs.ticketing_worker.load_validator()\n"
        "print(jobs.ticketing_worker.__file__, v.is_valid({}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(site / "jobs" / "ticketing_worker.py"), "False"]
