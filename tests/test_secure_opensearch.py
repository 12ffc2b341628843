"""OpenSearch basic auth, CA bundle and certificate verification (issue 15 item 2) for the job's sink, the
ticketing worker's evidence reader and the console's reader, against the local OpenSearch stand-in
serving HTTPS with a test-only certificate and requiring basic auth (no OpenSearch server runs here;
``tests/test_opensearch_real.py`` is the opt-in test against a real cluster)."""

from __future__ import annotations

import argparse
import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.console_read import IncidentQuery
from connectors.opensearch import OpenSearchReader, RetryPolicy, SinkError
from connectors.security import OpenSearchAccess, Secret
from jobs.config import ConfigError, JobConfig
from jobs.ticketing_config import TicketingConfig
from tests.standins.opensearch import OTHER_CA, TEST_CA, OpenSearchStandin
from tests.test_store import T0_NS, incident_event, make_record

USER, PASSWORD = "logclaw-writer", "os-Pa55:w0rd!-9c1e"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


@pytest.fixture
def secured() -> Iterator[OpenSearchStandin]:
    with OpenSearchStandin(basic_auth=(USER, PASSWORD), tls=True).running() as standin:
        yield standin


def env_for(standin: OpenSearchStandin, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The settings as a Kubernetes install gives them: the password in a mounted secret file."""
    password_file = tmp_path / "opensearch-password"
    password_file.write_text(PASSWORD + "\n")
    return {"LOGCLAW_OPENSEARCH_URL": standin.url, "LOGCLAW_OPENSEARCH_USER": USER,
            "LOGCLAW_OPENSEARCH_PASSWORD_FILE": str(password_file), "LOGCLAW_OPENSEARCH_CA_FILE": str(TEST_CA),
            **extra}


def fill_through_the_jobs_writer(standin: OpenSearchStandin, tmp_path: Path) -> None:
    from jobs.operators import open_writer

    writer = open_writer(JobConfig.from_env(env_for(standin, tmp_path)))  # installs the templates
    records = [make_record(body=f"redis pool exhausted {i}", time_unix_nano=T0_NS + i) for i in range(3)]
    writer.write_logs(records)
    writer.write_incident_events([incident_event("inc-1", "opened", "2024-05-01T03:47:05Z")])
    writer.close()


def assert_every_request_logged_in(standin: OpenSearchStandin) -> None:
    assert standin.requests and standin.unauthorized == 0 and standin.violations == []
    assert {r.headers.get("authorization") for r in standin.requests} == {BASIC}


def test_the_jobs_sink_logs_in_over_tls_with_the_ca_bundle_against_local_standin(
        secured: OpenSearchStandin, tmp_path: Path) -> None:
    fill_through_the_jobs_writer(secured, tmp_path)
    assert_every_request_logged_in(secured)
    assert secured.url.startswith("https://") and len(secured.templates) == 5
    assert secured.doc_count() == 3 + 2  # the log lines, the incident event and its state row


def test_the_workers_evidence_reader_sends_the_credentials_against_local_standin(
        secured: OpenSearchStandin, tmp_path: Path) -> None:
    from jobs.ticketing import build_worker

    fill_through_the_jobs_writer(secured, tmp_path)
    secured.requests.clear()
    cfg = TicketingConfig.from_env({**env_for(secured, tmp_path), "LOGCLAW_DATA_DIR": str(tmp_path / "worker")})
    worker, ledger = build_worker(cfg)
    try:
        assert isinstance(worker.reader, OpenSearchReader)
        logs = worker.reader.search_logs("acme", [], 0, 2**62, text="redis pool")
        assert sorted(d["body"] for d in logs) == [f"redis pool exhausted {i}" for i in range(3)]
    finally:
        ledger.close()
    assert_every_request_logged_in(secured)


def test_the_console_reader_sends_the_credentials_against_local_standin(
        secured: OpenSearchStandin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.cli.ui import open_from_args

    fill_through_the_jobs_writer(secured, tmp_path)
    secured.requests.clear()
    for name, value in env_for(secured, tmp_path).items():
        monkeypatch.setenv(name, value)
    reader = open_from_args(argparse.Namespace(store=None))
    page = reader.incidents(IncidentQuery("acme"))
    assert [row["incident_id"] for row in page.rows] == ["inc-1"]
    assert reader.store_info()["location"] == secured.url  # the host only: no credential reaches a page
    assert_every_request_logged_in(secured)


def test_without_credentials_the_standin_refuses_and_the_error_names_no_password(secured: OpenSearchStandin) -> None:
    reader = OpenSearchReader([secured.url], None, client_options={"ca_certs": str(TEST_CA)},
                              retry=RetryPolicy(max_attempts=1))
    with pytest.raises(SinkError, match="refused the request \\(401\\)") as info:
        reader.search_logs("acme", [], 0, 1)
    assert secured.unauthorized == 1
    wrong = OpenSearchAccess(secured.url, USER, Secret("not-" + PASSWORD), str(TEST_CA))
    reader = OpenSearchReader([wrong.url], wrong.auth(), client_options=wrong.client_options(),
                              retry=RetryPolicy(max_attempts=1))
    with pytest.raises(SinkError) as info:
        reader.search_logs("acme", [], 0, 1)
    assert secured.unauthorized == 2 and PASSWORD not in str(info.value)


def test_a_cluster_certificate_from_another_ca_is_refused_unless_verification_is_off(
        secured: OpenSearchStandin) -> None:
    for ca in (str(OTHER_CA), ""):  # an unrelated CA, and the system trust store
        access = OpenSearchAccess(secured.url, USER, Secret(PASSWORD), ca)
        reader = OpenSearchReader([access.url], access.auth(), client_options=access.client_options(),
                                  retry=RetryPolicy(max_attempts=1))
        with pytest.raises(SinkError, match="CERTIFICATE_VERIFY_FAILED"):
            reader.search_logs("acme", [], 0, 1)
    assert secured.requests == []  # refused at the handshake: nothing, no password, was sent
    unverified = OpenSearchAccess(secured.url, USER, Secret(PASSWORD), verify_certs=False)
    assert unverified.client_options() == {"verify_certs": False, "ssl_show_warn": False, "ssl_assert_hostname": False}
    reader = OpenSearchReader([unverified.url], unverified.auth(), client_options=unverified.client_options())
    assert reader.search_logs("acme", [], 0, 1) == []
    assert_every_request_logged_in(secured)


def test_basic_auth_over_plain_http_is_refused_at_start_up() -> None:
    env = {"LOGCLAW_OPENSEARCH_URL": "http://opensearch:9200", "LOGCLAW_OPENSEARCH_USER": USER,
           "LOGCLAW_OPENSEARCH_PASSWORD": PASSWORD}
    expected = ("LOGCLAW_OPENSEARCH_URL: basic auth over plain http:// would send the password in clear text; "
                "use https://")
    for load in (JobConfig.from_env, TicketingConfig.from_env):
        with pytest.raises(ConfigError) as info:
            load(env)
        assert str(info.value) == expected
    with pytest.raises(ConfigError, match="LOGCLAW_OPENSEARCH_USER: basic auth needs both a user and a password"):
        JobConfig.from_env({"LOGCLAW_OPENSEARCH_URL": "https://os:9200", "LOGCLAW_OPENSEARCH_USER": USER})


def test_opensearch_client_options_per_mode() -> None:
    assert OpenSearchAccess("http://os:9200").client_options() == {}
    assert OpenSearchAccess("https://os:9200", ca_file="/ca.pem").client_options() == {
        "verify_certs": True, "ssl_show_warn": True, "ca_certs": "/ca.pem"}
    access = OpenSearchAccess("https://os:9200", USER, Secret(PASSWORD))
    assert access.auth() == (USER, PASSWORD) and PASSWORD not in repr(access)
