"""Redaction: each secret kind becomes its typed placeholder, ordinary evidence survives, and no
secret reaches the rendered LLM prompt."""

from __future__ import annotations

import pytest

from connectors.llm import build_messages
from udfs.redact import redact

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
SECRETS = {
    "bearer": ("Authorization: Bearer abcDEF123456ghiJKL789", "abcDEF123456ghiJKL789"),
    "basic": ("Authorization: Basic dXNlcjpodW50ZXIy", "dXNlcjpodW50ZXIy"),
    "jwt": (f"session {JWT} rejected", JWT),
    "aws": ("using key AKIAIOSFODNN7EXAMPLE for s3", "AKIAIOSFODNN7EXAMPLE"),
    "api_key_kv": ("call failed api_key=9f8e7d6c5b4a3210 retry", "9f8e7d6c5b4a3210"),
    "token_colon": ('{"token": "s3cr3t-t0ken-value"}', "s3cr3t-t0ken-value"),
    "sk": ("openai key sk-proj-AbCdEfGhIjKlMnOpQrStUv123456", "sk-proj-AbCdEfGhIjKlMnOpQrStUv123456"),
    "github": (
        "push with ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
        "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
    ),
    "slack": ("notify xoxb-1234567890-abcdefghijkl", "xoxb-1234567890-abcdefghijkl"),
    "url_password": ("connect postgres://app:hunter2@db.internal:5432/orders", "hunter2"),
    "password_kv": ("login failed password=Tr0ub4dor&3 user=bob", "Tr0ub4dor"),
    "private_key": (
        "key: -----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1L\n-----END RSA PRIVATE KEY----- end",
        "MIIEowIBAAKCAQEAu1SU1L",
    ),
    "email": ("mail to jane.doe+ops@example.co.uk bounced", "jane.doe+ops@example.co.uk"),
    "card": ("charge 4111 1111 1111 1111 declined", "4111 1111 1111 1111"),
}


@pytest.mark.parametrize("kind", sorted(SECRETS))
def test_each_secret_kind_is_replaced_by_a_typed_placeholder(kind: str) -> None:
    text, secret = SECRETS[kind]
    out = redact(text)
    assert secret not in out
    assert "[REDACTED:" in out


def test_whole_lines_keep_their_non_secret_words() -> None:
    assert redact("Authorization: Bearer abcDEF123456ghiJKL789 from 10.0.0.7") == (
        "Authorization: Bearer [REDACTED:bearer] from 10.0.0.7"
    )
    assert redact("connect postgres://app:hunter2@db.internal:5432/orders") == (
        "connect postgres://app:[REDACTED:password]@db.internal:5432/orders"
    )
    assert redact("mail to jane@example.com bounced") == "mail to [REDACTED:email] bounced"
    assert redact("charge 4111-1111-1111-1111 declined") == "charge [REDACTED:card] declined"


@pytest.mark.parametrize(
    "text",
    [
        "room 12 booked",
        "basic authentication failed for user",
        "bearer token expired",
        "request took 1700000000123 ns",  # not a card: no issuer prefix
        "order 4111111111111112 shipped",  # Visa prefix but fails Luhn
        "upstream 10.1.2.3:8080 refused",
        "trace 4bf92f3577b34da6a3ce929d0e0e4736",
    ],
)
def test_ordinary_evidence_is_kept(text: str) -> None:
    assert redact(text) == text


def test_ips_are_redacted_only_on_request() -> None:
    assert redact("from 192.168.1.20 port 22", redact_ips=True) == "from [REDACTED:ip] port 22"


def test_no_secret_reaches_the_rendered_prompt() -> None:
    incident = {
        "incident_id": "inc-00000001",
        "tenant": "acme",
        "severity": "high",
        "service": "checkout",
        "title": f"[high] checkout leaked {SECRETS['aws'][1]}",
        "summary": SECRETS["email"][0],
        "templates": [{"template": SECRETS["password_kv"][0]}],
        "root_cause": {"service": "checkout", "confidence": 0.7, "candidates": []},
    }
    evidence = [
        {
            "time": "2024-05-01T03:47:00.000Z",
            "service": "checkout",
            "level": "ERROR",
            "body": text,
            "exception_message": SECRETS["jwt"][0],
        }
        for text, _secret in SECRETS.values()
    ]
    prompt = "\n".join(m["content"] for m in build_messages(incident, evidence))
    leaked = [kind for kind, (_text, secret) in SECRETS.items() if secret in prompt]
    assert leaked == []
    assert prompt.count("[REDACTED:") >= len(SECRETS)
