"""Redaction: each secret kind becomes its typed placeholder, ordinary evidence survives, and no
secret reaches the rendered LLM prompt."""

from __future__ import annotations

import pytest

from connectors.llm import build_messages
from udfs.redact import redact, redact_value

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
    "dotted_config_password": (
        "keystone_authtoken.admin_password = s3cret-Pw log_opt_values",
        "s3cret-Pw",
    ),
    "high_entropy_unknown_vendor": (
        "vendor credential A5bq3_0X1TAY91V5M_5JxqEv7KykF0bdpG9A83_7 rejected",
        "A5bq3_0X1TAY91V5M_5JxqEv7KykF0bdpG9A83_7",
    ),
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
        for text in [t for t, _secret in SECRETS.values()] + [t for t, _secret, _line in LEAKS.values()]
    ]
    prompt = "\n".join(m["content"] for m in build_messages(incident, evidence))
    secrets = {**{k: s for k, (_t, s) in SECRETS.items()}, **{k: s for k, (_t, s, _l) in LEAKS.items()}}
    leaked = [kind for kind, secret in secrets.items() if secret in prompt]
    assert leaked == []
    assert prompt.count("[REDACTED:") >= len(SECRETS)


# Issue 13 item 10: each of these leaked before. Per case: the line, the secret, the exact redacted line
# (the placeholder kind and the words around it must survive, they are the evidence).
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AZURE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
LEAKS = {
    "authorization_token_hex": (
        "GET /v1/orders Authorization: Token 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b -> 401",
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
        "GET /v1/orders Authorization: Token [REDACTED:token] -> 401",
    ),
    "bearer_lowercase": (
        "authorization: bearer qwertyuiopasdfghjklzx",
        "qwertyuiopasdfghjklzx",
        "authorization: bearer [REDACTED:bearer]",
    ),
    "slack_webhook": (
        "POST https://hooks.slack.com/services/T0ABCDEFG/B0HIJKLMN/AbCdEfGhIjKlMnOpQrStUvWx failed: 404",
        "AbCdEfGhIjKlMnOpQrStUvWx",
        "POST [REDACTED:slack_webhook] failed: 404",
    ),
    "stripe_live_key": (
        "stripe charge with sk_live_51HxAbCdEfGhIjKlMnOpQrSt failed",
        "sk_live_51HxAbCdEfGhIjKlMnOpQrSt",
        "stripe charge with [REDACTED:stripe_key] failed",
    ),
    "google_api_key": (
        "geocode ?key=AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY over quota",
        "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
        "geocode ?key=[REDACTED:google_api_key] over quota",
    ),
    "azure_account_key": (
        f"DefaultEndpointsProtocol=https;AccountName=logclaw;AccountKey={AZURE_KEY};EndpointSuffix=core.windows.net",
        AZURE_KEY,
        "DefaultEndpointsProtocol=https;AccountName=logclaw;AccountKey=[REDACTED:azure_storage_key]"
        ";EndpointSuffix=core.windows.net",
    ),
    "aws_secret_key_bare": (
        f"boto3 credentials {AWS_SECRET} loaded",
        AWS_SECRET,
        "boto3 credentials [REDACTED:aws_secret_key] loaded",
    ),
    "amqp_password_with_slash": (
        "connect amqp://orders:pa/ss@rabbit.internal:5672/vhost",
        "pa/ss",
        "connect amqp://orders:[REDACTED:password]@rabbit.internal:5672/vhost",
    ),
    "db_pass_env": (
        "env DB_PASS=hunter2 MYSQL_HOST=db loaded",
        "hunter2",
        "env DB_PASS=[REDACTED:secret] MYSQL_HOST=db loaded",
    ),
    "mysql_p_flag": (
        "exec: mysql -h db.internal -uroot -phunter2 orders",
        "hunter2",
        "exec: mysql -h db.internal -uroot -p[REDACTED:password] orders",
    ),
    "password_in_prose": (
        "ops note: the password is hunter2 for staging",
        "hunter2",
        "ops note: the password is [REDACTED:password] for staging",
    ),
    "password_url_encoded": (
        "POST /login body=user%3Dbob%26password%3Dhunter2%26remember%3D1",
        "hunter2",
        "POST /login body=user%3Dbob%26password%3D[REDACTED:secret]%26remember%3D1",
    ),
    "card_with_dots": (
        "charge 4111.1111.1111.1111 declined",
        "4111.1111.1111.1111",
        "charge [REDACTED:card] declined",
    ),
    "json_password_key": (
        '{"user": "bob", "password": "correct horse battery"}',
        "horse battery",
        '{"user": "bob", "password": "[REDACTED:secret]"}',
    ),
    "dict_repr_password_key": (
        "payload {'user': 'bob', 'password': 'correct horse battery'}",
        "horse battery",
        "payload {'user': 'bob', 'password': '[REDACTED:secret]'}",
    ),
    "escaped_json_password_key": (
        'body="{\\"user\\":\\"bob\\",\\"password\\":\\"correct horse battery\\"}"',
        "horse battery",
        'body="{\\"user\\":\\"bob\\",\\"password\\":\\"[REDACTED:secret]\\"}"',
    ),
}


@pytest.mark.parametrize("case", sorted(LEAKS))
def test_issue_13_leak_is_redacted_to_the_expected_line(case: str) -> None:
    text, secret, expected = LEAKS[case]
    out = redact(text)
    assert secret not in out
    assert out == expected


def test_redact_value_redacts_strings_under_secret_keys() -> None:
    value = {
        "user": "bob",
        "password": "correct horse battery",
        "db": {"DB_PASS": "hunter2", "host": "db.internal", "port": 5432},
        "credentials": ["hunter2", "s3cr3t"],
        "usage": {"prompt_tokens": 512, "max_tokens": 1024},
        "empty_password": "",
        "msg": "login token=abc123def456 rejected",
        "token=abc123def456": "keys are redacted too",
    }
    assert redact_value(value) == {
        "user": "bob",
        "password": "[REDACTED:secret]",
        "db": {"DB_PASS": "[REDACTED:secret]", "host": "db.internal", "port": 5432},
        "credentials": ["[REDACTED:secret]", "[REDACTED:secret]"],
        "usage": {"prompt_tokens": 512, "max_tokens": 1024},
        "empty_password": "",
        "msg": "login token=[REDACTED:secret] rejected",
        "token=[REDACTED:secret]": "keys are redacted too",
    }


@pytest.mark.parametrize(
    "text",
    [
        "trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7 request_id=req_7f3a9c2b1d",
        "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "X-Request-Id: 9b2c7e4a-1f3d-4c5b-8a6e-0d9f8e7c6b5a",
        "2024-05-01T03:47:00.123Z checkout ERROR took 1234ms (p99 2.5s) ts=1714535220123",
        "password reset email sent to user 42",
        "password is incorrect for user 42",
        "password was changed by admin",
        "GET /api/v2/orders/3f2b8c1e-9d4a-4b7e-8f1a-2c3d4e5f6a7b/items 200 12ms",
        "GET /api/v2/Customers/cus_9s6XKzkNRiz8i3/PaymentMethods 200",
        "at com.example.checkout.AbstractSingletonProxyFactoryBean2Impl.handle(Handler.java:42)",
        "llm usage prompt_tokens=512 max_tokens=1024 tokenizer=cl100k_base",
        "exec: mysql -uroot -p -h db.internal -P3306 orders",
        "deploy commit 9fceb02d0ae598e95dc970b74767f19372d61af8 rolled out",
        "latency_s=4.111111111111111 version 4.1.12.3",
        "bypass=true tests passed=12 failed=0",
        "pod checkout-7d9f8b6c5d-x2x4z OOMKilled",
        "otlp traceId S/kvNXezTaajzpKdDg5HNg== spanId APBnqgupArc=",
        "https://hooks.slack.com unreachable: connect timeout",
        # from the loghub / openstack corpora: ids, stack frames, config dumps and masked values
        "Failed to renew lease for [DFSClient_NONMAPREDUCE_1537864556_1] for 30 seconds",
        "server tempest-INSTANCE_SAMPLE-1538250064 active",
        "at com.android.server.wm.AppWindowToken.destroySurfaces:374",
        "keystone_authtoken.auth_port = 35357 log_opt_values",
        "admin_password = **** admin_pass=<SANITIZED>) password: None",
    ],
)
def test_ordinary_log_lines_stay_readable(text: str) -> None:
    assert redact(text) == text


def test_password_field_in_incident_facts_does_not_reach_the_prompt() -> None:
    incident = {"incident_id": "inc-1", "severity": "high", "stats": {"password": "correct horse battery"}}
    prompt = "\n".join(m["content"] for m in build_messages(incident, []))
    assert "horse battery" not in prompt
