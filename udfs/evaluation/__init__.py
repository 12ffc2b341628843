"""Detection evaluation: scoring incident events against labelled cases (``metrics``) and the naive
detectors they are compared with (``baselines``). Pure, never run in an operator; the engine never
imports this package.
"""
