"""Flink's key groups computed in Python, to choose keys that spread evenly over parallel instances.

Flink sends a key to key group ``murmurHash(key.hashCode()) % maxParallelism`` and gives each
instance a contiguous range of key groups. The job keys Python elements by a ``Row`` of one string
(jobs.event_time), whose Java ``hashCode`` is the string's plus 62. With few keys per tenant (the
trace shards) hashing alone is lopsided (16 shards of the tenant "default" fell 12/4 on two
instances), so the shards' keys are picked to land in evenly spaced key groups.
tests/test_spans_adapters.py checks these functions against Flink's own.
"""

from __future__ import annotations

MAX_PARALLELISM = 128
"""Flink's default number of key groups for jobs of up to 85 parallel instances (this job runs with
a few); under another setting the shards are spread by hashing alone, which is still correct."""

_ROW_OF_ONE_STRING = 62
"""Row.hashCode() - String.hashCode() for a Row of one string (RowKind.INSERT)."""


def _i32(x: int) -> int:
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x >= 1 << 31 else x


def _rotl(x: int, r: int) -> int:
    x &= 0xFFFFFFFF
    return ((x << r) | (x >> (32 - r))) & 0xFFFFFFFF


def java_string_hash(s: str) -> int:
    """``String.hashCode()``: over UTF-16 code units, 32-bit overflow."""
    h = 0
    raw = s.encode("utf-16-be", "surrogatepass")
    for i in range(0, len(raw), 2):
        h = (31 * h + ((raw[i] << 8) | raw[i + 1])) & 0xFFFFFFFF
    return _i32(h)


def murmur_hash(code: int) -> int:
    """Flink's ``MathUtils.murmurHash(int)``: non-negative."""
    code = _rotl(code * 0xCC9E2D51, 15)
    code = _rotl(code * 0x1B873593, 13)
    code = ((code * 5 + 0xE6546B64) & 0xFFFFFFFF) ^ 4
    code ^= code >> 16
    code = (code * 0x85EBCA6B) & 0xFFFFFFFF
    code ^= code >> 13
    code = (code * 0xC2B2AE35) & 0xFFFFFFFF
    code = _i32(code ^ (code >> 16))
    return code if code >= 0 else (-code if code != -(1 << 31) else 0)


def key_group(key: str, max_parallelism: int = MAX_PARALLELISM) -> int:
    """The key group of the job key ``key`` (a Row of one string)."""
    return murmur_hash(_i32(java_string_hash(key) + _ROW_OF_ONE_STRING)) % max_parallelism


def spread_keys(prefix: str, n: int) -> tuple[str, ...]:
    """``n`` keys ``prefix<i>.<salt>``, key ``i`` in key groups ``[i*w, (i+1)*w)`` with ``w =
    MAX_PARALLELISM // n``: any parallelism dividing ``n`` gets ``n / parallelism`` keys per instance.
    About ``n`` hashes per key (salts tried in order)."""
    width = MAX_PARALLELISM // n
    keys = []
    for i in range(n):
        salt = 0
        while key_group(f"{prefix}{i}.{salt}") // width != i:
            salt += 1
        keys.append(f"{prefix}{i}.{salt}")
    return tuple(keys)
