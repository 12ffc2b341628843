"""The incident console over stores filled by the real job: HTTP-level tests of every page and filter
for the embedded store and the OpenSearch stand-in, tenancy and escaping, and the terminal views.

One replay per store (module-scoped): the cascade scenario with its spans, a log line carrying a
``<script>`` body, and a second tenant whose lines must never show up for the first.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from connectors.otlp import encode_logs_json, encode_spans_json
from connectors.simulate_io import write_jsonl
from jobs.cli.replay import replay
from jobs.config import JobConfig
from tests.standins.opensearch import OpenSearchStandin
from udfs.records import Level
from udfs.scenarios import library as scenarios

pytestmark = [pytest.mark.flink, pytest.mark.timeout(900)]

XSS = "<script>alert('owned')</script> checkout says hi"
OTHER_SECRET = "zebracorn ledger of the other tenant"


def write_inputs(out: Path) -> tuple[Path, Path, int]:
    """The cascade (tenant ``default``) plus an XSS line and a second tenant, as OTLP/JSON lines."""
    sc = scenarios.build("cascade", scale=0.25)
    records = list(sc.records)
    sample = next(r for r in records if r.service == "checkout")
    records.append(sample._replace(body=XSS, level=Level.ERROR, severity_number=17, severity_text="ERROR",
                                   time_unix_nano=sample.time_unix_nano + 1_000_000))
    for i in range(5):
        records.append(sample._replace(tenant="other", service="vault", body=f"{OTHER_SECRET} {i}",
                                       time_unix_nano=sample.time_unix_nano + i * 1_000_000_000))
    records.sort(key=lambda r: r.time_unix_nano)
    messages = scenarios.requests_of(records, 200)
    logs, spans = out / "logs.otlp.jsonl.gz", out / "spans.otlp.jsonl.gz"
    write_jsonl(logs, (encode_logs_json(m) for m in messages))
    write_jsonl(spans, (encode_spans_json(m) for m in scenarios.span_requests_of(sc.spans, 200)))
    return logs, spans, len(messages)


def run_job(out: Path, **overrides: Any) -> list[dict[str, Any]]:
    logs, spans, n = write_inputs(out)
    cfg = JobConfig.from_env({}, mode="files", log_files=(str(logs),), trace_files=(str(spans),), out_dir=str(out),
                             **overrides)
    return replay(cfg, n, progress=None)


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    out = tmp_path_factory.mktemp("console-sqlite")
    events = run_job(out)
    return out / "store.sqlite", events


@pytest.fixture(scope="module")
def opensearch_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OpenSearchStandin, list[Any]]]:
    out = tmp_path_factory.mktemp("console-opensearch")
    with OpenSearchStandin().running() as standin:
        events = run_job(out, opensearch_url=standin.url)
        yield standin, events


def _cascade_id(events: list[dict[str, Any]]) -> str:
    opened = [e for e in events if e["event"] == "opened" and e["tenant"] == "default"]
    assert len(opened) == 1, [e["title"] for e in opened]
    return str(opened[0]["incident_id"])


@pytest.fixture(scope="module", params=["sqlite", "opensearch"])
def console(request: pytest.FixtureRequest) -> Iterator[tuple[TestClient, str, Any]]:
    from connectors.console_read import open_reader
    from jobs.console.app import build_app

    if request.param == "sqlite":
        path, events = request.getfixturevalue("sqlite_store")
        reader = open_reader(store=path)
        app = build_app(reader, dead_letters_path=path.parent / "dead-letter.jsonl")
        standin = None
    else:
        standin, events = request.getfixturevalue("opensearch_store")
        reader = open_reader(opensearch_url=standin.url)
        app = build_app(reader)
    with TestClient(app, follow_redirects=False) as client:
        yield client, _cascade_id(events), standin
    reader.close()
    if standin is not None:
        assert standin.violations == []


def get(client: TestClient, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code, response.text[:500])
    return response.text


def test_incident_list_counts_filters_search_pages_and_csv(console: Any) -> None:
    client, incident_id, _ = console
    page = get(client, "/incidents")
    assert incident_id in page and 'id="total">1<' in page
    assert "mean time to resolve <b id=\"mttr\">12m" in page  # the cascade resolves after ~12 min
    assert "checkout" in page and "high" in page
    for query in ("severity=high", "state=resolved", "service=payment-api", "q=checkout+database", "range=7d",
                  "severity=high&state=resolved&service=checkout&q=database"):
        assert incident_id in get(client, f"/incidents?{query}"), query
    for query in ("severity=low", "state=open", "service=nosuchservice", "q=zebracorn"):
        page = get(client, f"/incidents?{query}")
        assert incident_id not in page and "no incident matches" in page, query
    assert incident_id not in get(client, "/incidents?page=2")
    assert get(client, "/incidents?page=x", 400)
    csv = get(client, "/incidents.csv?state=resolved")
    lines = csv.strip().splitlines()
    assert lines[0].startswith("incident_id,tenant,severity,state") and len(lines) == 2 and incident_id in lines[1]


def test_incident_detail_explains_why(console: Any) -> None:
    client, incident_id, _ = console
    page = get(client, f"/incidents/{incident_id}")
    graph = page[page.index('<svg class="graph"'):]
    graph = graph[:graph.index("</svg>")]
    assert 'class="node root" data-service="checkout"' in graph
    assert 'data-service="payment-api"' in graph and 'data-service="order-service"' in graph
    assert graph.count('class="edge"') >= 2
    charts = page.count('<svg class="chart"')
    assert charts >= 3 and page.count('class="incident-window"') == charts
    assert 'class="onset"' in page and 'class="volume"' in page and 'class="error-rate"' in page
    assert 'class="latency"' in page  # the cascade has spans: latency from the span metrics
    ranked = page[page.index('id="rootcause"'):page.index('id="score"')]
    assert ranked.index("checkout") < ranked.index("payment-api")
    assert "its anomaly started first" in ranked
    assert "error_rate_spike" in page and "binomial tail test" in page  # signal with its explanation
    assert "statistical" in page and "composite" in page
    timeline = page[page.index('id="timeline"'):page.index('id="rca"')]
    assert "opened" in timeline and "updated" in timeline and "resolved" in timeline and "now affects" in timeline
    assert "redis connection pool exhausted" in page and "/logs/context?" in page and "/traces/" in page
    assert "Suggested fix" in page and "evidence-based" in page
    assert get(client, "/incidents/inc-doesnotexist", 404)


def test_services_logs_context_trace_and_health_pages(console: Any) -> None:
    client, _, _ = console
    services = get(client, "/services?range=all")
    assert services.count('class="service"') >= 4 and '<svg class="spark"' in services and "checkout" in services
    logs = get(client, "/logs?q=redis+pool+exhausted")
    assert logs.count('class="logline"') >= 5
    assert "redis connection pool exhausted" in get(client, "/logs?service=checkout&level=ERROR")
    only_errors = get(client, "/logs?level=ERROR&service=checkout")
    assert 'lvl-INFO' not in only_errors
    assert "no log line matches" in get(client, "/logs?q=nothingmatchesthis")
    first = logs[logs.index("/logs/context?"):]
    context_url = first[:first.index('"')].replace("&amp;", "&")
    context = get(client, context_url)
    assert 'class="logline target"' in context
    trace_at = logs.index("/traces/")
    trace_url = logs[trace_at:logs.index('"', trace_at)]
    assert '<svg class="waterfall"' in get(client, trace_url)
    assert get(client, "/traces/0000", 404)
    assert get(client, "/logs/context?service=checkout", 400)
    health = get(client, "/health")
    assert "log records in the last hour" in health and "Lag of the last incident" in health


def test_log_lines_are_escaped_and_pages_forbid_scripts(console: Any) -> None:
    client, _, _ = console
    response = client.get("/logs?q=owned")
    assert response.status_code == 200
    assert "&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;" in response.text
    assert "<script>" not in response.text
    assert "script-src" not in response.headers["content-security-policy"]
    assert response.headers["content-security-policy"].startswith("default-src 'none'")


def test_every_query_is_scoped_by_tenant(console: Any) -> None:
    client, incident_id, _ = console
    assert OTHER_SECRET not in get(client, "/logs?q=zebracorn")
    assert OTHER_SECRET in get(client, "/logs?q=zebracorn&tenant=other")
    assert "no incident matches" in get(client, "/incidents?tenant=other")
    assert get(client, f"/incidents/{incident_id}?tenant=other", 404)


def test_console_is_read_only(console: Any) -> None:
    client, incident_id, _ = console
    for method in ("post", "put", "delete"):
        assert getattr(client, method)(f"/incidents/{incident_id}").status_code == 405


def test_api_key_selects_the_tenant_and_nothing_else(sqlite_store: Any, tmp_path: Path) -> None:
    from connectors.console_read import open_reader
    from connectors.ingest import ApiKeys
    from jobs.console.app import build_app

    path, events = sqlite_store
    incident_id = _cascade_id(events)
    keys = ApiKeys({"k-default-0123456789abcdef": "default", "k-other-0123456789abcdef0": "other"})
    reader = open_reader(store=path)
    with TestClient(build_app(reader, keys=keys), follow_redirects=False) as client:
        healthz = client.get("/healthz")  # probes need no key and see no data
        assert healthz.status_code == 200 and healthz.text == "ok\n"
        assert client.get("/incidents").headers["location"] == "/login"
        assert client.post("/login", content="api_key=wrong-key-0123456789",
                           headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 401
        as_other = {"x-logclaw-api-key": "k-other-0123456789abcdef0"}
        assert client.get(f"/incidents/{incident_id}?tenant=default", headers=as_other).status_code == 404
        assert OTHER_SECRET in client.get("/logs?q=zebracorn", headers=as_other).text
        login = client.post("/login", content="api_key=k-default-0123456789abcdef",
                            headers={"content-type": "application/x-www-form-urlencoded"})
        assert login.status_code == 303 and "httponly" in login.headers["set-cookie"].lower()
        page = client.get("/incidents?tenant=other").text
        assert incident_id in page and "k-default" not in page
        assert OTHER_SECRET not in client.get("/logs?q=zebracorn&tenant=other").text
        assert "not tenant-scoped" in client.get("/health").text
    reader.close()


def test_metrics_rows_come_from_the_job(sqlite_store: Any) -> None:
    import sqlite3

    path, _ = sqlite_store
    with sqlite3.connect(path) as conn:
        total, spans = conn.execute("SELECT SUM(total), SUM(spans) FROM metrics WHERE tenant = 'default'").fetchone()
        logs = conn.execute("SELECT COUNT(*) FROM logs WHERE tenant = 'default'").fetchone()[0]
    assert total == logs and spans > 0  # every record counted once, spans from the span decoder


def test_incidents_command_lists_shows_and_searches(sqlite_store: Any, capsys: Any) -> None:
    from jobs.cli import main

    path, events = sqlite_store
    incident_id = _cascade_id(events)
    assert main(["incidents", "list", "--store", str(path)]) == 0
    assert incident_id in capsys.readouterr().out
    assert main(["incidents", "search", "redis database", "--store", str(path), "--state", "resolved"]) == 0
    assert incident_id in capsys.readouterr().out
    assert main(["incidents", "show", incident_id, "--store", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "chain checkout -> payment-api" in shown and "timeline:" in shown and "evidence:" in shown
    assert main(["incidents", "show", "inc-nope", "--store", str(path)]) == 1
    assert main(["incidents", "list", "--store", str(path), "--tenant", "other"]) == 0
    assert incident_id not in capsys.readouterr().out


def test_metric_upserts_add_up_in_the_standin(opensearch_store: Any) -> None:
    standin, _ = opensearch_store
    docs = [d for name, index in standin.indices.items() if name.startswith("logclaw-metrics-default-")
            for d in index.values()]
    logs = sum(len(index) for name, index in standin.indices.items() if name.startswith("logclaw-logs-default-"))
    assert sum(d["total"] for d in docs) == logs and any(d["spans"] for d in docs)
    assert json.dumps(standin.violations) == "[]"


# -- a real browser ---------------------------------------------------------------------------------

SHOTS = Path(__file__).resolve().parent.parent / "out" / "console-screenshots"


@pytest.fixture(scope="module")
def served(sqlite_store: Any) -> Iterator[str]:
    """The console on a free loopback port (uvicorn in a thread), as ``logclaw ui`` serves it."""
    import socket
    import threading
    import time

    import uvicorn

    from connectors.console_read import open_reader
    from jobs.console.app import build_app

    path, _ = sqlite_store
    reader = open_reader(store=path)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(build_app(reader, dead_letters_path=path.parent / "dead-letter.jsonl"),
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)
    reader.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import shutil

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("needs Debian's chromium and chromium-driver (`make test` installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    session = webdriver.Chrome(service=Service(driver), options=options)
    yield session
    session.quit()


def _shoot(browser: Any, name: str) -> Path:
    """A full-page screenshot (the window stretched to the page's height)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, min(max(600, int(height) + 40), 6000))
    path = SHOTS / f"{name}.png"
    browser.save_screenshot(str(path))
    return path


def test_browser_opens_the_list_and_the_cascade_incident(served: str, browser: Any, sqlite_store: Any) -> None:
    from selenium.webdriver.common.by import By

    _, events = sqlite_store
    incident_id = _cascade_id(events)
    browser.get(served + "/incidents")
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.incident")
    assert [r.get_attribute("data-id") for r in rows] == [incident_id]
    _shoot(browser, "incidents")
    rows[0].find_element(By.CSS_SELECTOR, "a.incident-link").click()
    assert browser.current_url.startswith(f"{served}/incidents/{incident_id}")
    graph = browser.find_element(By.CSS_SELECTOR, "#graph svg.graph")
    assert graph.size["width"] > 300 and graph.find_element(By.CSS_SELECTOR, "g.node.root").text.startswith("checkout")
    charts = browser.find_elements(By.CSS_SELECTOR, "#charts svg.chart")
    assert len(charts) >= 3 and all(c.size["height"] > 100 for c in charts)
    assert browser.find_elements(By.CSS_SELECTOR, "#charts line.onset")
    first = browser.find_element(By.CSS_SELECTOR, "#rootcause li.candidate")
    assert first.text.startswith("checkout") and "root cause" in first.text
    evidence = browser.find_elements(By.CSS_SELECTOR, "#evidence tr.evidence")
    assert evidence and "redis connection pool exhausted" in evidence[0].text
    _shoot(browser, "incident")
    evidence[0].find_element(By.LINK_TEXT, "context").click()
    assert browser.find_elements(By.CSS_SELECTOR, "tr.logline.target")
    _shoot(browser, "context")
    browser.get(served + "/logs?q=owned")
    assert "<script>alert('owned')</script>" in browser.find_element(By.CSS_SELECTOR, "tr.logline pre").text
    assert browser.execute_script("return document.scripts.length") == 0  # shown as text, never run
    _shoot(browser, "logs")
    for name, url in (("services", "/services?range=all"), ("health", "/health")):
        browser.get(served + url)
        _shoot(browser, name)
