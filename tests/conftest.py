"""Shared, session-wide fixtures: the local Kafka-protocol broker and the Flink Kafka connector jars.

Keep this file small and generic; feature-specific fixtures belong in their own test files.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.broker import LocalBroker
from connectors.jars import jar_urls, provision_jars

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    """Whichever test starts the JVM first, its embedded Python (thread mode) must be this
    virtualenv's: run as ``.venv/bin/python -m pytest`` without ``make``'s PATH, a test that
    started the JVM before any test called jobs.runtime.local_env left later MiniCluster jobs
    failing with "No module named 'pemja'"."""
    from jobs.runtime import use_this_python

    use_this_python()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """One in-memory tansu broker on a free loopback port for the whole session.

    Use unique topic names per test (the broker is shared) and read from earliest/committed offsets:
    its ListOffsets "latest" answer is wrong (see connectors/broker.py).
    """
    log_path = tmp_path_factory.mktemp("broker") / "tansu.log"
    with LocalBroker(log_path=log_path) as running:
        yield running


@pytest.fixture(scope="session")
def kafka_jars() -> list[str]:
    """``file://`` URLs of the pinned Kafka connector jars, for ``env.add_jars(*kafka_jars)``.

    ``make test`` runs ``logclaw jars`` first, so this normally only checks the checksums.
    """
    provision_jars(PROJECT_ROOT)
    return jar_urls(PROJECT_ROOT)
