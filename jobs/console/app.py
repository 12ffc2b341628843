"""The incident console (``logclaw ui``): a read-only Starlette app, server-rendered with Jinja2
(autoescaped) and inline SVG; no JavaScript, and a Content-Security-Policy that forbids any.

Tenancy: without ``keys`` (a loopback operator) the tenant is a query parameter chosen from the
store's tenants; with ``keys`` (the ingest key file) ``POST /login`` trades an API key for a random
session cookie that maps to the key's tenant, or a request presents ``x-logclaw-api-key``; the tenant
then cannot be changed. Every reader call passes that tenant.

``GET /metrics`` (Prometheus text, no key: counts and latencies only, no tenant data) and
``GET /healthz`` serve probes and scrapers.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from prometheus_client import Counter, Histogram
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from connectors.console_read import ConsoleReader
from connectors.ingest import ApiKeys
from jobs.console import pages
from jobs.observability import metrics_route

SESSION_COOKIE = "logclaw_console"
HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
# Labelled by page (the handler's name), never by tenant or query: a bounded set of series.
REQUESTS = Counter("logclaw_console_requests", "console page requests by page and HTTP status", ["page", "status"])
LATENCY = Histogram("logclaw_console_request_seconds", "console page time to answer (wall clock)", ["page"])


@dataclass
class Console:
    reader: ConsoleReader
    keys: ApiKeys | None = None
    ledger_path: Path | None = None
    dead_letters_path: Path | None = None
    flink_url: str = ""
    sessions: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    env: Environment = field(default_factory=lambda: Environment(
        loader=PackageLoader("jobs.console", "templates"), autoescape=select_autoescape(default=True),
        trim_blocks=True, lstrip_blocks=True))

    def tenant_of(self, request: Request) -> str | None:
        """The request's tenant, or None when it must log in first."""
        if self.keys is not None:
            by_key = self.keys.tenant_of(request.headers.get("x-logclaw-api-key"))
            if by_key:
                return by_key
            with self.lock:
                return self.sessions.get(request.cookies.get(SESSION_COOKIE, ""))
        tenants = self.reader.tenants()
        wanted = request.query_params.get("tenant", "")
        if wanted in tenants:
            return wanted
        return "default" if "default" in tenants or not tenants else tenants[0]

    def render(self, name: str, request: Request, tenant: str, status: int = 200, **context: Any) -> HTMLResponse:
        def link(path: str, **params: Any) -> str:
            if self.keys is None:
                params.setdefault("tenant", tenant)
            query = urllib.parse.urlencode({k: v for k, v in params.items() if v not in (None, "")})
            return f"{path}?{query}" if query else path

        body = self.env.get_template(name).render(
            tenant=tenant, tenants=[] if self.keys is not None else self.reader.tenants(),
            keyed=self.keys is not None, link=link, path=request.url.path, store=self.reader.store_info(), **context)
        return HTMLResponse(body, status_code=status, headers=HEADERS)


def build_app(reader: ConsoleReader, *, keys: ApiKeys | None = None, ledger_path: Path | None = None,
              dead_letters_path: Path | None = None, flink_url: str = "") -> Starlette:
    console = Console(reader, keys, ledger_path, dead_letters_path, flink_url)

    def page(handler: Any) -> Any:
        name = handler.__name__

        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            tenant = console.tenant_of(request)
            if tenant is None:
                response: Response = RedirectResponse("/login", status_code=303, headers=HEADERS)
            else:
                response = await _run(handler, console, request, tenant)
            REQUESTS.labels(name, str(response.status_code)).inc()
            LATENCY.labels(name).observe(time.perf_counter() - started)
            return response
        return endpoint

    async def login(request: Request) -> Response:
        if keys is None:
            return RedirectResponse("/incidents", status_code=303)
        error = ""
        if request.method == "POST":
            form = urllib.parse.parse_qs((await request.body())[:4096].decode("utf-8", "replace"))
            tenant = keys.tenant_of((form.get("api_key") or [""])[0])
            if tenant is not None:
                token = secrets.token_urlsafe(32)
                with console.lock:
                    console.sessions[token] = tenant
                response = RedirectResponse("/incidents", status_code=303, headers=HEADERS)
                response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict")
                return response
            error = "unknown API key"
        body = console.env.get_template("login.html.j2").render(error=error, keyed=True, tenants=[], tenant="",
                                                               link=lambda p, **_: p, path="/login", store={})
        return HTMLResponse(body, status_code=401 if error else 200, headers=HEADERS)

    async def logout(request: Request) -> Response:
        with console.lock:
            console.sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)
        response = RedirectResponse("/login" if keys else "/incidents", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    async def healthz(request: Request) -> Response:
        """For probes: the process serves; no key, no tenant, no store read."""
        return Response("ok\n", media_type="text/plain", headers=HEADERS)

    async def root(request: Request) -> Response:
        return RedirectResponse("/incidents" + (f"?{request.url.query}" if request.url.query else ""), status_code=303)

    routes = [
        Route("/", root),
        Route("/healthz", healthz),
        metrics_route("/metrics"),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout),
        Route("/incidents", page(pages.incidents)),
        Route("/incidents.csv", page(pages.incidents_csv)),
        Route("/incidents/{incident_id}", page(pages.incident)),
        Route("/services", page(pages.services)),
        Route("/logs", page(pages.logs)),
        Route("/logs/context", page(pages.context)),
        Route("/traces/{trace_id}", page(pages.trace)),
        Route("/health", page(pages.health)),
    ]
    return Starlette(routes=routes)


async def _run(handler: Any, console: Console, request: Request, tenant: str) -> Response:
    """Readers block (SQLite, HTTP): run the page in a worker thread."""
    from starlette.concurrency import run_in_threadpool

    try:
        result: Response = await run_in_threadpool(handler, console, request, tenant)
    except pages.NotFound as exc:
        return console.render("error.html.j2", request, tenant, status=404, message=str(exc))
    except pages.BadInput as exc:
        return console.render("error.html.j2", request, tenant, status=400, message=str(exc))
    return result


def flink_jobs(url: str, timeout_s: float = 2.0) -> list[dict[str, Any]] | str:
    """The Flink REST ``/jobs/overview`` list, or why it could not be read."""
    if not url:
        return "no Flink REST URL given (--flink-url); a replay or demo store has no running job"
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/jobs/overview", timeout=timeout_s) as response:
            jobs = json.load(response).get("jobs", [])
    except (OSError, ValueError) as exc:
        return f"Flink REST at {url} did not answer: {exc}"
    return [dict(j) for j in jobs if isinstance(j, Mapping)]

