"""Secret and PII redaction for text that leaves the product (LLM prompts, tickets).

``redact(text)`` replaces each secret with a typed placeholder such as ``[REDACTED:jwt]`` so a reader
still sees *what kind* of value was there. The rules run in a fixed order, most specific first, so a
JWT inside an ``Authorization: Bearer`` header is reported as the header, and a redacted value is never
matched again. IPv4 addresses are kept unless ``redact_ips=True`` (they are usually useful evidence).
``redact_value`` does the same for a JSON-like value and also hides every string under a secret key.

The patterns live in ``udfs.redact_rules``. They are hand rules on purpose: detect-secrets 1.5.0
imports ``requests`` (so ``socket``) from its plugin base class, which ``udfs`` must not, finds only
4 of the 14 shapes of issue 13 in log text, and its plugins alone cost more per line than all of these
rules; the regexes of its plugins that do fit (Slack webhook, Stripe, Azure AccountKey) are ported
there, each with a note.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from udfs.redact_rules import IPV4, RULES, SECRET_KEY, placeholder

__all__ = ["placeholder", "redact", "redact_value"]


def redact(text: str, *, redact_ips: bool = False) -> str:
    """Return ``text`` with secrets and PII replaced by ``[REDACTED:<kind>]`` placeholders."""
    for pattern, replace in RULES:
        text = pattern.sub(replace, text)
    if redact_ips:
        text = IPV4.sub(placeholder("ip"), text)
    return text


def redact_value(value: Any) -> Any:
    """Redact every string inside a JSON-like value (keys included); a string anywhere under a secret
    key (``password``, ``DB_PASS``, ``api_key``, ...) becomes ``[REDACTED:secret]`` whatever it looks like.
    Numbers, booleans, ``None`` and empty strings are kept (token counts, "no password set")."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {redact(str(k)): _redact_field(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value


def _redact_field(key: str, value: Any) -> Any:
    return _mask_strings(value) if SECRET_KEY.fullmatch(key) else redact_value(value)


def _mask_strings(value: Any) -> Any:
    if isinstance(value, str):
        return placeholder("secret") if value else value
    if isinstance(value, Mapping):
        return {redact(str(k)): _mask_strings(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_strings(v) for v in value]
    return value
