"""Pure domain logic for LogClaw: no pyflink, no network, no environment, no wall clock."""
