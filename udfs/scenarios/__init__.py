"""Synthetic scenarios: generated OTLP traffic with known faults and what the engine should make of them.

Pure, but never run in an operator: tests, the demo, ``logclaw simulate``, evaluation and benchmarks
use them. ``library`` holds the named scenarios and message batching, ``base`` what every scenario
is made of, ``traffic`` the background traffic generator, ``cascade`` the checkout outage,
``latency`` the span scenarios (a slow or failing callee). The engine never imports this package.
"""
