"""The redaction rules: one compiled pattern and one replacer per secret shape, in the order they run.

Each rule says why it exists. Where detect-secrets (Yelp) has a plugin for the shape, its regex is the
starting point and the plugin is named; everything else is a shape seen in logs that no plugin covers.
Values that only look secret by their randomness pass a Shannon-entropy check (detect-secrets' idea,
with a length-aware limit) so ids, hashes, class names and paths stay readable.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Callable

Replacer = Callable[["re.Match[str]"], str]


def placeholder(kind: str) -> str:
    """The typed placeholder that stands for one redacted value."""
    return f"[REDACTED:{kind}]"


def _whole(kind: str) -> Replacer:
    return lambda _m: placeholder(kind)


def _keep_prefix(kind: str) -> Replacer:
    """Keep group 1 (the key or flag that names the value) and redact the rest of the match."""
    return lambda m: f"{m.group(1)}{placeholder(kind)}"


def _looks_random(value: str) -> bool:
    """A credential, not an English word: has a digit, a symbol, or an inner capital letter."""
    return any(c.isdigit() or c in "-._~+/=" for c in value) or any(c.isupper() for c in value[1:])


def shannon_entropy(value: str) -> float:
    """Bits per character of ``value`` (0 for the empty string)."""
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values()) if n else 0.0


def _random_token(value: str) -> bool:
    """Mixed case and digits, close to the entropy of random base64 of that length, and switching
    character class as often as random text does.

    Random base64 of 32/40/64 chars has entropy ~4.56/4.78/5.19 (1st percentile 4.23/4.47/4.93);
    0.84 * log2(len), capped at 48 chars (4.69), sits just below that and above CamelCase identifiers
    (~4.0-4.35 at 35-38 chars).
    Lower-case hex (trace ids, commit SHAs) and UUIDs fail the mixed-case test by design.
    """
    mixed = any(c.isupper() for c in value) and any(c.islower() for c in value) and any(c.isdigit() for c in value)
    return (
        mixed
        and shannon_entropy(value) >= 0.84 * math.log2(min(len(value), 48))
        and _class_changes(value) >= 0.3 * len(value)
    )


def _class_changes(value: str) -> int:
    """How often neighbouring alphanumerics switch between upper, lower and digit, separators skipped.

    Random base64 switches at ~65% of positions; identifiers built from words and numbers
    (DFSClient_NONMAPREDUCE_1537864556_1, tempest-INSTANCE_SAMPLE-1538250064, CamelCase names) at <25%.
    """
    classes = [0 if c.isdigit() else 1 if c.isupper() else 2 for c in value if c.isalnum()]
    return sum(a != b for a, b in itertools.pairwise(classes))


# --- Keys whose value is a secret -------------------------------------------------------------------
# "token" but not token counts (max_tokens=1024, prompt_tokens, tokenizer); "pass" only as a whole word
# or after a separator (DB_PASS, pass=) so bypass=, passed= and passenger= stay.
_SECRET_WORDS = (
    r"password|passwd|pwd|passphrase|secret|api[_-]?key|apikey|access[_-]?key|private[_-]?key"
    r"|token(?!s\b|s_|izer)|credentials?|client[_-]?secret|session[_-]?id|account[_-]?key"
)
# The key starts at a word start and is matched atomically (linear time on long words); its last dotted
# part names the secret, so config dumps such as keystone_authtoken.auth_port = 35357 stay readable
# while keystone_authtoken.admin_password = ... does not.
_KEY = rf"(?<![\w.-])(?>(?:[\w-]*\.)*)(?>[\w-]*?(?:{_SECRET_WORDS})[\w-]*+|(?:[\w-]*[_-])?pass(?!\w))"
SECRET_KEY = re.compile(rf"(?i){_KEY}")
_QUOTE = r"(?:\\?[\"']|%22|%27)"  # a quote, JSON-escaped quote, or URL-encoded quote
_KEY_VALUE = re.compile(
    rf"(?i)({_KEY}{_QUOTE}?\s*(?:[:=]|%3D|%3A)\s*)"  # key and separator: = : or URL-encoded %3D %3A
    rf"(?!{_QUOTE}?\[REDACTED)"
    r"(?:\\\"(?:(?!\\\").)+\\\""  # escaped JSON string inside a JSON string: \"...\"
    r"|\"(?:[^\"\\]|\\.)+\""  # JSON string, may hold spaces
    r"|'(?:[^'\\]|\\.)+'"  # Python repr string
    r"|%22(?:(?!%22).)+%22"  # URL-encoded JSON string
    rf"|{_QUOTE}?(?:(?!%2[26C7]|%3B)[^\s\"',;&}}\]])+)"  # bare value up to a delimiter (also %26 = &)
)


# Values that say "no secret here" stay: they are evidence (a missing or already masked password).
_NOT_A_SECRET = re.compile(r"(?i)(?:none|null|nil|true|false|undefined|\*+|<sanitized>|<redacted>|\[redacted\])")


def _key_value(match: re.Match[str]) -> str:
    value = match.group(0)[len(match.group(1)) :]
    if _NOT_A_SECRET.fullmatch(value.strip("\\\"'()")):
        return match.group(0)
    for quote in ('\\"', '"', "'", "%22", "%27"):
        if value.startswith(quote):
            closing = quote if value.endswith(quote) and len(value) > len(quote) else ""
            return f"{match.group(1)}{quote}{placeholder('secret')}{closing}"
    return f"{match.group(1)}{placeholder('secret')}"


# --- Authorization headers ---------------------------------------------------------------------------
# Any scheme after an Authorization header (Token, lower-case bearer, ...): the credential is redacted
# if it looks random or is long; short words stay ("authorization: token expired").
_SCHEMES = r"bearer|basic|token|digest|api[-_]?key|key|negotiate|ntlm|oauth|sharedkey|ssws|aws4-hmac-sha256|aws"
_AUTHORIZATION = re.compile(
    r"(?i)\b((?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?"
    rf"(?:({_SCHEMES})\s+)?)"
    r"(?!\[REDACTED)([^\s\"',;]+)"
)
_NAMED_SCHEMES = {"bearer", "basic", "token"}


def _authorization(match: re.Match[str]) -> str:
    scheme, value = (match.group(2) or "").lower(), match.group(3)
    if not (_looks_random(value) or len(value) >= 16):
        return match.group(0)
    return f"{match.group(1)}{placeholder(scheme if scheme in _NAMED_SCHEMES else 'authorization')}"


# A bare "Bearer <x>" / "Basic <x>" outside a header; only random-looking values ("bearer token expired").
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic)(\s+)(?!\[REDACTED)([A-Za-z0-9\-._~+/]{8,}=*)")


def _auth_scheme(match: re.Match[str]) -> str:
    scheme, space, value = match.group(1), match.group(2), match.group(3)
    if not _looks_random(value):
        return match.group(0)
    return f"{scheme}{space}{placeholder(scheme.lower())}"


# --- Fixed-shape credentials -------------------------------------------------------------------------
_PRIVATE_KEY = re.compile(
    r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----.*?(?:-----END \1PRIVATE KEY-----|\Z)", re.DOTALL
)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
# detect-secrets SlackDetector's webhook regex, widened to workflow/trigger hooks.
_SLACK_WEBHOOK = re.compile(r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/]+")
# user:password@ in any URL; the password may hold '/' (amqp://u:pa/ss@). host:port/path is not one.
_URL_PASSWORD = re.compile(
    r"(?<![a-zA-Z0-9+.-])([a-zA-Z][a-zA-Z0-9+.-]*+://[^/\s:@]*:)(?!\d+/)(?!\[REDACTED)([^@\s]+?)(@)"
)
# mysql/mariadb clients take the password glued to -p (-phunter2); -p alone prompts, -P is the port.
_MYSQL_PASSWORD = re.compile(r"(\b(?i:mysql\w*|mariadb\w*)\b[^\n]*?\s-p)(?!\[REDACTED)('[^']*'|\"[^\"]*\"|[^\s'\"]+)")
_AWS_KEY = re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA|ABIA|ACCA)[A-Z0-9]{16}\b")
_OPENAI_KEY = re.compile(r"\bsk-(?:proj-|ant-|live-|test-)?[A-Za-z0-9_-]{16,}")
# detect-secrets StripeDetector ((r|s)k_live_ + 24), widened to test keys and other lengths.
_STRIPE_KEY = re.compile(r"\b[rs]k_(?:live|test)_[0-9a-zA-Z]{10,}")
# Google API keys: AIza + 35 (no detect-secrets plugin).
_GOOGLE_API_KEY = re.compile(r"\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])")
_GITHUB_TOKEN = re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})")
_SLACK_TOKEN = re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")
# detect-secrets AzureStorageKeyDetector (AccountKey= + 88), widened to SharedAccessKey= and any length.
_AZURE_KEY = re.compile(r"(?i)\b((?:Account|SharedAccess)Key=)([A-Za-z0-9+/]{20,}={0,2})")

# --- Words around a password ---------------------------------------------------------------------------
# "the password is hunter2": only random-looking values, so "password is incorrect" stays.
_PASSWORD_PROSE = re.compile(
    r"(?i)\b(pass(?:word|wd|phrase)\s+(?:is|was|set to|changed to|reset to)\s+[\"']?)(?!\[REDACTED)([^\s\"',;]+)"
)


def _password_prose(match: re.Match[str]) -> str:
    if not _looks_random(match.group(2)):
        return match.group(0)
    return f"{match.group(1)}{placeholder('password')}"


# --- PII -----------------------------------------------------------------------------------------------
# Both anchor at the start of a run (lookbehind), not at every \b: linear time on long dotted/dashed words.
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_ISSUER = r"(?:4|5[1-5]|2[2-7]|3[47]|3[068]|6011|6[45]|35)"
# Card numbers: known issuer prefixes, 13-19 digits, optional single space/dash separators.
_CARD = re.compile(rf"(?<![\d-]){_ISSUER}(?:[ -]?\d){{11,17}}(?![\d-])")
# Dotted card numbers only in card groupings (4.4.4.x or Amex 4.6.5) so floats and versions stay.
_CARD_DOTTED = re.compile(
    rf"(?<![\d.])(?={_ISSUER})(?:\d{{4}}\.\d{{6}}\.\d{{4,5}}|\d{{4}}(?:\.\d{{4}}){{2}}\.\d{{1,7}})(?!\.?\d)"
)
IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.])")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    if 13 <= len(digits) <= 19 and _luhn_ok(digits):
        return placeholder("card")
    return match.group(0)


# --- Unkeyed random strings (last: everything with a name above has been taken) --------------------------
# Bare AWS secret access keys: 40 chars of base64 without '='; paths ('/x', '//', 'x/') are not keys.
_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+=])(?!/)(?![A-Za-z0-9/+]*//)[A-Za-z0-9/+]{39}[A-Za-z0-9+](?![A-Za-z0-9/+=])")
# Any other long random token (base64/base64url piece of 32+ chars), e.g. an API key of unknown vendor.
_HIGH_ENTROPY = re.compile(r"(?<![A-Za-z0-9+=_-])[A-Za-z0-9+_-]{32,}={0,2}(?![A-Za-z0-9+=_-])")


def _if_random(kind: str) -> Replacer:
    return lambda m: placeholder(kind) if _random_token(m.group(0)) else m.group(0)


RULES: tuple[tuple[re.Pattern[str], Replacer], ...] = (
    (_PRIVATE_KEY, _whole("private_key")),
    (_AUTHORIZATION, _authorization),
    (_AUTH_SCHEME, _auth_scheme),
    (_JWT, _whole("jwt")),
    (_SLACK_WEBHOOK, _whole("slack_webhook")),
    (_URL_PASSWORD, lambda m: f"{m.group(1)}{placeholder('password')}{m.group(3)}"),
    (_MYSQL_PASSWORD, _keep_prefix("password")),
    (_AWS_KEY, _whole("aws_access_key")),
    (_OPENAI_KEY, _whole("api_key")),
    (_STRIPE_KEY, _whole("stripe_key")),
    (_GOOGLE_API_KEY, _whole("google_api_key")),
    (_GITHUB_TOKEN, _whole("github_token")),
    (_SLACK_TOKEN, _whole("slack_token")),
    (_AZURE_KEY, _keep_prefix("azure_storage_key")),
    (_KEY_VALUE, _key_value),
    (_PASSWORD_PROSE, _password_prose),
    (_EMAIL, _whole("email")),
    (_CARD, _card),
    (_CARD_DOTTED, _card),
    (_AWS_SECRET, _if_random("aws_secret_key")),
    (_HIGH_ENTROPY, _if_random("high_entropy")),
)
