"""The layout's own rules that import-linter cannot see (pyproject.toml's contracts)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_engine_contract_lists_every_engine_module() -> None:
    """The "engine never imports scenarios/evaluation" contract names its modules one by one: a new
    udfs module must be added there, or it would escape the contract."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    engine = next(c for c in contracts if c["name"].startswith("The engine never imports"))
    modules = {f"udfs.{p.stem}" for p in (ROOT / "udfs").glob("*.py") if p.stem != "__init__"}
    assert set(engine["source_modules"]) == modules
    assert set(engine["forbidden_modules"]) == {"udfs.scenarios", "udfs.evaluation"}
