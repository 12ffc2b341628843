"""The local execution environment (MiniCluster) shared by ``logclaw run``, ``replay`` and ``demo``."""

from __future__ import annotations

import os
import sys
from typing import Any

from jobs.config import JobConfig


def use_this_python() -> None:
    """Make the JVM and its embedded Python (thread mode, pemja) see this virtualenv.

    Thread mode finds its interpreter through the environment, not ``python.executable``: run from
    ``.venv/bin/logclaw`` without an activated venv it got the base interpreter and failed with
    "No module named 'pemja'". Must run before the JVM starts (the first environment created).
    """
    bin_dir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    if not path.startswith(bin_dir + os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + path
    if sys.prefix != sys.base_prefix:
        os.environ["VIRTUAL_ENV"] = sys.prefix


def local_env(cfg: JobConfig, *, with_kafka: bool, web_ui: bool = False) -> Any:
    """A MiniCluster environment running this virtualenv's Python, with the Kafka jars if needed."""
    use_this_python()
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    conf = Configuration()
    conf.set_string("python.executable", sys.executable)
    conf.set_string("python.client.executable", sys.executable)
    conf.set_string("python.execution-mode", cfg.execution_mode)
    conf.set_string("python.fn-execution.bundle.size", str(cfg.bundle_size))
    conf.set_string("python.fn-execution.bundle.time", str(cfg.effective_bundle_time_ms))
    conf.set_string("pipeline.auto-watermark-interval", "200 ms")
    conf.set_string("python.operator-chaining.enabled", "false")  # see jobs.detect.configure
    if web_ui:
        conf.set_string("rest.port", str(cfg.web_port))
        conf.set_string("rest.bind-address", "127.0.0.1")
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    if with_kafka:
        from connectors.jars import PROJECT_ROOT, jar_urls, provision_jars

        provision_jars(PROJECT_ROOT)
        env.add_jars(*jar_urls(PROJECT_ROOT))
    return env
