"""Secret and PII redaction for text that leaves the product (LLM prompts, tickets).

``redact(text)`` replaces each secret with a typed placeholder such as ``[REDACTED:jwt]`` so a reader
still sees *what kind* of value was there. The rules run in a fixed order, most specific first, so a
JWT inside an ``Authorization: Bearer`` header is reported as the header, and a redacted value is never
matched again. IPv4 addresses are kept unless ``redact_ips=True`` (they are usually useful evidence).
"""

from __future__ import annotations

import re
from collections.abc import Callable

Replacer = Callable[["re.Match[str]"], str]


def placeholder(kind: str) -> str:
    """The typed placeholder that stands for one redacted value."""
    return f"[REDACTED:{kind}]"


_SECRET_WORDS = (
    r"password|passwd|pwd|passphrase|secret|api[_-]?key|apikey|access[_-]?key|private[_-]?key"
    r"|token|auth[_-]?token|credentials?|client[_-]?secret|session[_-]?id"
)

_PRIVATE_KEY = re.compile(
    r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----.*?(?:-----END \1PRIVATE KEY-----|\Z)", re.DOTALL
)
_AUTH_HEADER = re.compile(r"(?i)\b(bearer|basic)(\s+)(?!\[REDACTED)([A-Za-z0-9\-._~+/]{8,}=*)")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_URL_PASSWORD = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)([^@\s/]+)(@)")
_AWS_KEY = re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA|ABIA|ACCA)[A-Z0-9]{16}\b")
_OPENAI_KEY = re.compile(r"\bsk-(?:proj-|ant-|live-|test-)?[A-Za-z0-9_-]{16,}")
_GITHUB_TOKEN = re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})")
_SLACK_TOKEN = re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")
_KEY_VALUE = re.compile(
    rf"(?i)([\w.-]*(?:{_SECRET_WORDS})[\w.-]*)"  # the key, e.g. db_password, X-Api-Key, "token"
    r"(\"?'?\s*[:=]\s*\"?'?)"  # separator with optional quotes
    r"(?!\[REDACTED)([^\s\"',;&}\]]+)"  # the value up to a delimiter
)
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# Card numbers: known issuer prefixes, 13-19 digits, optional single space/dash separators.
_CARD = re.compile(r"(?<![\d-])(?:4|5[1-5]|2[2-7]|3[47]|3[068]|6011|6[45]|35)(?:[ -]?\d){11,17}(?![\d-])")
_IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.])")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", match.group(0))
    if 13 <= len(digits) <= 19 and _luhn_ok(digits):
        return placeholder("card")
    return match.group(0)


def _looks_random(value: str) -> bool:
    """A credential, not an English word: has a digit, a symbol, or an inner capital letter."""
    return any(c.isdigit() or c in "-._~+/=" for c in value) or any(c.isupper() for c in value[1:])


def _auth_header(match: re.Match[str]) -> str:
    scheme, space, value = match.group(1), match.group(2), match.group(3)
    if not _looks_random(value):
        return match.group(0)
    return f"{scheme}{space}{placeholder(scheme.lower())}"


def _whole(kind: str) -> Replacer:
    return lambda _m: placeholder(kind)


_RULES: tuple[tuple[re.Pattern[str], Replacer], ...] = (
    (_PRIVATE_KEY, _whole("private_key")),
    (_AUTH_HEADER, _auth_header),
    (_JWT, _whole("jwt")),
    (_URL_PASSWORD, lambda m: f"{m.group(1)}{placeholder('password')}{m.group(3)}"),
    (_AWS_KEY, _whole("aws_access_key")),
    (_OPENAI_KEY, _whole("api_key")),
    (_GITHUB_TOKEN, _whole("github_token")),
    (_SLACK_TOKEN, _whole("slack_token")),
    (_KEY_VALUE, lambda m: f"{m.group(1)}{m.group(2)}{placeholder('secret')}"),
    (_EMAIL, _whole("email")),
    (_CARD, _card),
)


def redact(text: str, *, redact_ips: bool = False) -> str:
    """Return ``text`` with secrets and PII replaced by ``[REDACTED:<kind>]`` placeholders."""
    for pattern, replace in _RULES:
        text = pattern.sub(replace, text)
    if redact_ips:
        text = _IPV4.sub(placeholder("ip"), text)
    return text
