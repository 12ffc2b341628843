"""The OTLP/HTTP receiver's limits: each bounds one resource a client can make the receiver spend.

The constants below are the defaults, each with the principle behind it; ``IngestLimits`` is one
receiver's set, checked at start-up (``logclaw ingest`` has a flag for each a user would tune).
"""

from __future__ import annotations

from dataclasses import dataclass

from connectors.otlp import MAX_MESSAGE_BYTES

# The refusal warnings' logger: the package, whichever module refuses.
LOGGER_NAME = "connectors.ingest"
# Request size: exporters batch far below this (SDK: 512 records; Collector batch processor: 8192 records,
# typically well under 4 MiB); it bounds memory per request, compressed and decompressed.
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
# Decoding costs about 8 us per record, whatever its size (1 MiB of empty protobuf records made 524 280
# of them: 4-10 CPU-s, 120-350 MiB). 32 768 records (~0.3 CPU-s) is 4x the Collector's default batch and
# 64x the SDK's; the count is taken from the envelope before anything is decoded.
DEFAULT_MAX_RECORDS = 32_768
# The re-encoded message may exceed the request a little (tenant.id on each resource, receive times), by
# at most this; more is amplification and refused here (413), before it costs the broker a round trip.
MESSAGE_HEADROOM_BYTES = 64 * 1024
# And never past the one message size limit (``connectors.otlp.MAX_MESSAGE_BYTES``: the topics, the
# producer's message.max.bytes, the job's fetch and decode) less what Kafka adds around a key and value
# (record batch header 61 B, record header, the key of at most 64 B), rounded up.
KAFKA_RECORD_OVERHEAD_BYTES = 1024
# Event time may run ahead of receive time by at most this; a record further ahead is rejected (partial
# success, ``future_timestamp``), as the job's decoder rejects it: watermarks are per subtask, not per
# tenant, so one tenant's clock in the future would close every other tenant's windows. The job's
# setting LOGCLAW_MAX_FUTURE_SKEW_MS (``jobs.config``), with its default and range.
DEFAULT_MAX_FUTURE_SKEW_MS = 300_000
MIN_FUTURE_SKEW_MS, MAX_FUTURE_SKEW_MS = 1_000, 86_400_000
# One thread and one socket per connection: the cap bounds both. At the cap a newcomer evicts a
# connection that is lingering after a refusal or waiting for a request (ConnectionTable); only when all
# are working does it get 503 + Retry-After at once. Far above the in-flight cap, so that is rare.
DEFAULT_MAX_CONNECTIONS = 256
# Requests whose body is being read, decoded or produced: bounds memory to about this many bodies
# (compressed + decompressed + decoded). Taken only after the key and the size were accepted.
DEFAULT_MAX_INFLIGHT = 32
# A kept-alive connection may wait this long for its next request (exporters send every 1-5 s).
IDLE_TIMEOUT_S = 30.0
# Request line and headers, in total, from their first byte: a well-behaved client sends them in one
# packet; one that trickles them is holding a connection (slow-loris).
HEAD_TIMEOUT_S = 10.0
# Body deadline = grace + length / minimum rate: a 4 MiB body gets 74 s, while a client announcing a big
# body and sending a byte now and then is cut off (a per-read timeout alone never fired).
BODY_GRACE_S = 10.0
MIN_UPLOAD_BYTES_PER_S = 64 * 1024
# After a refusal with the body unread: stop sending, read and drop what is already in flight for a
# moment, then close. Closing with unread data sends a reset, which can destroy the answer before the
# client reads it; a refused client gets at most this much of our time.
LINGER_S = 2.0
LINGER_BYTES = 1024 * 1024
# Connections the kernel queues until they are accepted. socketserver's 5 dropped the SYN of every
# sixth connection of a burst (the client retries after 1 s); the kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG = 512
# Writing an answer: the client must take our few bytes within this.
SEND_TIMEOUT_S = 10.0
# Refusals logged per second, the rest counted into the next line: a flood of refused requests must
# not become a flood of log lines.
REFUSAL_WARNINGS_PER_S = 10
# The first slice of a gzip member fed to zlib (it doubles while the member lasts); see _inflate_member.
GZIP_FIRST_SLICE_BYTES = 256
# API keys are bearer secrets: 16 printable characters are the least that cannot be guessed online
# (secrets.token_urlsafe(18), the demo key, has 24).
MIN_API_KEY_CHARS = 16
# Tenant names go into Kafka keys, composite state keys, index names and tickets: letters, digits and
# . _ - only (no separator such as | : / that could make two tenants' keys collide), at most 64.
MAX_TENANT_CHARS = 64


@dataclass(frozen=True)
class IngestLimits:
    """The receiver's limits (see the constants above for the principle of each); checked at start-up."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_records: int = DEFAULT_MAX_RECORDS
    max_message_bytes: int = DEFAULT_MAX_BODY_BYTES + MESSAGE_HEADROOM_BYTES  # see default_max_message_bytes
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    idle_timeout_s: float = IDLE_TIMEOUT_S
    head_timeout_s: float = HEAD_TIMEOUT_S
    body_grace_s: float = BODY_GRACE_S
    min_upload_bytes_per_s: float = MIN_UPLOAD_BYTES_PER_S
    max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not value > 0:
                raise ValueError(f"ingest limit {name} must be > 0, not {value!r}")
        if not MIN_FUTURE_SKEW_MS <= self.max_future_skew_ms <= MAX_FUTURE_SKEW_MS:
            raise ValueError(f"ingest limit max_future_skew_ms must be {MIN_FUTURE_SKEW_MS}..{MAX_FUTURE_SKEW_MS},"
                             f" not {self.max_future_skew_ms!r}")

    def body_deadline_s(self, length: int) -> float:
        """Seconds a body of ``length`` bytes may take to arrive."""
        return self.body_grace_s + length / self.min_upload_bytes_per_s


def default_max_message_bytes(max_body_bytes: int, message_limit: int = MAX_MESSAGE_BYTES) -> int:
    """The largest re-encoded message (bytes) for requests of up to ``max_body_bytes``: the body plus
    ``MESSAGE_HEADROOM_BYTES``, within ``message_limit`` (the one message size limit) less Kafka's overhead."""
    return min(max_body_bytes + MESSAGE_HEADROOM_BYTES, message_limit - KAFKA_RECORD_OVERHEAD_BYTES)
