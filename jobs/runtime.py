"""The local execution environment (MiniCluster) shared by ``logclaw run``, ``replay`` and ``demo``."""

from __future__ import annotations

import sys
from typing import Any

from jobs.config import JobConfig


def local_env(cfg: JobConfig, *, with_kafka: bool, web_ui: bool = False) -> Any:
    """A MiniCluster environment running this virtualenv's Python, with the Kafka jars if needed."""
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    conf = Configuration()
    conf.set_string("python.executable", sys.executable)
    conf.set_string("python.client.executable", sys.executable)
    conf.set_string("python.execution-mode", cfg.execution_mode)
    conf.set_string("python.fn-execution.bundle.size", str(cfg.bundle_size))
    conf.set_string("python.fn-execution.bundle.time", str(cfg.bundle_time_ms))
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
