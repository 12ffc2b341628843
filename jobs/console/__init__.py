"""The incident console: `logclaw ui` (see jobs/console/app.py)."""
