"""Boundaries: codecs, Kafka, OpenSearch, the embedded store, LLM and ticket platform clients."""
