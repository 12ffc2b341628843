"""Entry points and Flink wiring."""
