"""The deterministic evidence-based RCA and the strict parser of the LLM's JSON answer."""

from __future__ import annotations

import json

import pytest

from udfs.rca import RcaDraft, RcaParseError, deterministic_rca, parse_rca_json

CASCADE = {
    "incident_id": "inc-cascade-1",
    "event": "opened",
    "tenant": "acme",
    "fingerprint": "fp-1",
    "severity": "critical",
    "score": 0.91,
    "path": "windowed",
    "opened_at": "2024-05-01T03:47:00.000Z",
    "detected_at": "2024-05-01T03:47:30.000Z",
    "service": "payment-api",
    "root_cause": {
        "service": "checkout",
        "confidence": 0.82,
        "candidates": [
            {
                "service": "checkout",
                "score": 0.82,
                "reasons": [
                    "its anomaly started first",
                    "its errors precede payment-api's in 14 shared traces",
                ],
            },
            {"service": "payment-api", "score": 0.41, "reasons": ["most errors"]},
        ],
        "chain": ["checkout", "payment-api", "order-service"],
    },
    "affected_services": ["payment-api", "order-service", "checkout"],
    "signals": [
        {"name": "velocity", "weight": 0.9},
        {"name": "database", "weight": 0.75, "detail": "connection_pool"},
    ],
    "title": "t",
}


def test_deterministic_rca_of_a_cascade_names_root_chain_signals_impact_and_fix() -> None:
    assert deterministic_rca(CASCADE) == RcaDraft(
        root_cause=(
            "checkout is the likely root cause (confidence 0.82): its anomaly started first; its errors "
            "precede payment-api's in 14 shared traces. Chain: checkout \u2192 payment-api \u2192 "
            "order-service. Other candidates: payment-api (0.41). Signals: velocity (0.90), database "
            "connection_pool (0.75)."
        ),
        impact=(
            "3 services affected: checkout, payment-api, order-service. Severity critical, score 0.91, "
            "detected in payment-api on the windowed path, anomalous since 2024-05-01T03:47:00.000Z."
        ),
        affected_services=("checkout", "payment-api", "order-service"),
        suggested_fix=(
            "In checkout: check the connection pool size and leaked connections (close them in a finally "
            "block, set a max idle time), slow queries and locks/deadlocks."
        ),
        confidence=0.82,
    )


def test_deterministic_rca_without_signals_or_candidates_still_says_where_to_start() -> None:
    incident = {
        **CASCADE,
        "signals": [],
        "root_cause": {"service": "db", "confidence": 0.3, "candidates": []},
        "affected_services": [],
    }
    rca = deterministic_rca(incident)
    assert rca.root_cause == "db is the likely root cause (confidence 0.30)."
    assert rca.affected_services == ("db",)
    assert rca.suggested_fix.startswith("Compare with the last deploy or config change of db")


def test_two_signal_groups_give_two_fixes_strongest_first() -> None:
    incident = {**CASCADE, "signals": [{"name": "timeout", "weight": 0.7}, {"name": "oom", "weight": 0.95}]}
    fix = deterministic_rca(incident).suggested_fix
    assert fix.index("raise the memory limit") < fix.index("find the slow hop")


VALID = {
    "root_cause": "pool exhausted in checkout",
    "impact": "payments fail",
    "affected_services": ["checkout", "payment-api"],
    "suggested_fix": "close connections",
    "confidence": 0.8,
}


def test_valid_answer_and_fenced_answer_parse_to_the_same_draft() -> None:
    expected = RcaDraft(
        "pool exhausted in checkout", "payments fail", ("checkout", "payment-api"), "close connections", 0.8
    )
    assert parse_rca_json(json.dumps(VALID)) == expected
    assert parse_rca_json(f"Here it is:\n```json\n{json.dumps(VALID)}\n```\n") == expected


@pytest.mark.parametrize(
    ("answer", "reason_start"),
    [
        ({**VALID, "note": "x"}, "keys: missing [], unexpected ['note']"),
        ({k: v for k, v in VALID.items() if k != "impact"}, "keys: missing ['impact']"),
        ({**VALID, "confidence": 1.5}, "confidence"),
        ({**VALID, "confidence": True}, "confidence"),
        ({**VALID, "confidence": "0.8"}, "confidence"),
        ({**VALID, "affected_services": "checkout"}, "affected_services"),
        ({**VALID, "affected_services": ["ok", 3]}, "affected_services[1]"),
        ({**VALID, "root_cause": ""}, "root_cause"),
        ({**VALID, "suggested_fix": "x" * 5000}, "suggested_fix: longer"),
        ([VALID], "expected one JSON object"),
    ],
)
def test_answers_off_the_schema_are_rejected_with_a_reason(answer: object, reason_start: str) -> None:
    result = parse_rca_json(json.dumps(answer))
    assert isinstance(result, RcaParseError)
    assert result.reason.startswith(reason_start)


@pytest.mark.parametrize(
    "text", ["the root cause is DNS", "{not json}", "```json\n{}\n``` and ```json\n{}\n```"]
)
def test_non_json_answers_are_rejected(text: str) -> None:
    assert isinstance(parse_rca_json(text), RcaParseError)
