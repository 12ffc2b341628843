"""A strict in-process OpenSearch stand-in: the few endpoints LogClaw uses, checked closely.

No OpenSearch server can run on these machines, so the writer/reader are tested against this:
``http.server`` on 127.0.0.1:0 in a thread. It implements ``GET /``, ``PUT /_index_template/<n>``,
``POST /_bulk`` (NDJSON: ``index`` actions, and ``update`` actions carrying exactly the metrics
script of ``connectors.opensearch`` with an upsert), ``POST /<index-pattern>/_search`` (the query DSL
subset the readers use, ``from``/``size`` paging and the ``terms``/``avg`` aggregations)
and ``HEAD``/``GET /<index>``. Anything else, or any request of the wrong shape, gets a 400/404
with an OpenSearch-style error body, and is recorded in ``violations`` so tests can assert none
happened. It is programmable: fail the next N requests (``fail_next``) or single bulk items
(``fail_item``). Shapes follow the OpenSearch REST docs (bulk response ``items[].index.status`` /
``error.type`` / ``error.reason``; composable templates ``index_patterns`` + ``template`` +
``priority``).

Security, when asked for: ``basic_auth=(user, password)`` answers every request without those
credentials 401 (``security_exception``, as the security plugin does; counted in ``unauthorized``), and
``tls=True`` serves HTTPS with the test-only certificate in ``tests/standins/tls/`` (CA ``TEST_CA``).
"""

from __future__ import annotations

import base64
import fnmatch
import functools
import json
import re
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

_INDEX_NAME = re.compile(r"^[a-z0-9][a-z0-9_.+-]*$")
_TEMPLATE_KEYS = {"index_patterns", "template", "priority", "version", "composed_of", "_meta", "data_stream"}
_TEMPLATE_INNER_KEYS = {"settings", "mappings", "aliases"}
_SEARCH_KEYS = {"query", "sort", "size", "from", "track_total_hits", "_source", "aggs"}
# The only script the stand-in runs (connectors.opensearch.METRICS_SCRIPT, repeated here on purpose:
# a changed script must be changed here too, as it would have to be checked against a real cluster).
METRICS_SCRIPT = ("for (e in params.add.entrySet()) { ctx._source[e.getKey()] = "
                  "(ctx._source[e.getKey()] == null ? 0 : ctx._source[e.getKey()]) + e.getValue(); }")
_SEARCH_PARAMS = {"ignore_unavailable", "allow_no_indices", "expand_wildcards"}
_RANGE_OPS = {"gte", "gt", "lte", "lt"}
_MULTI_MATCH_KEYS = {"query", "fields", "type", "operator"}
_WORD = re.compile(r"\w+")
TLS_DIR = Path(__file__).with_name("tls")
TEST_CA = TLS_DIR / "test-ca.pem"  # signed the stand-in's server certificate (127.0.0.1, localhost)
OTHER_CA = TLS_DIR / "other-ca.pem"  # an unrelated CA: a client trusting only it must refuse the stand-in


class BadRequest(Exception):
    def __init__(self, status: int, error_type: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.error_type, self.reason = status, error_type, reason


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int = 0


@dataclass
class ItemFailure:
    status: int
    error_type: str
    times: int | None  # None: every time


@dataclass
class OpenSearchStandin:
    """State of the stand-in; start it with ``running()``."""

    indices: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    searches: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _fail_next: list[int] = field(default_factory=list)
    _item_failures: dict[str, ItemFailure] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""
    basic_auth: tuple[str, str] | None = None  # required credentials; None: none required
    tls: bool = False
    unauthorized: int = 0  # requests answered 401

    # -- programming -----------------------------------------------------------------------------

    def fail_next(self, count: int, status: int = 429) -> None:
        """The next ``count`` requests (any endpoint) fail as a whole with ``status``."""
        with self._lock:
            self._fail_next.extend([status] * count)

    def fail_item(self, doc_id: str, status: int, error_type: str, times: int | None = 1) -> None:
        """Bulk items with ``_id == doc_id`` fail with ``status``/``error_type`` (``times`` times)."""
        with self._lock:
            self._item_failures[doc_id] = ItemFailure(status, error_type, times)

    def doc_count(self) -> int:
        with self._lock:
            return sum(len(docs) for docs in self.indices.values())

    # -- serving ---------------------------------------------------------------------------------

    @contextmanager
    def running(self) -> Iterator[OpenSearchStandin]:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = True
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(TLS_DIR / "server.pem", TLS_DIR / "server.key")
            server.socket = context.wrap_socket(server.socket, server_side=True)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{server.server_address[1]}"
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

    def handle(self, request: Request) -> tuple[int, dict[str, Any] | None]:
        with self._lock:
            self.requests.append(request)
            if self.basic_auth is not None and not self._authorized(request):
                self.unauthorized += 1
                return 401, _error(401, "security_exception", "missing authentication credentials for REST request")
            if self._fail_next:
                status = self._fail_next.pop(0)
                kind = "es_rejected_execution_exception" if status == 429 else "unavailable_exception"
                return status, _error(status, kind, "programmed failure")
            try:
                return self._route(request)
            except BadRequest as exc:
                self.violations.append(f"{request.method} {request.path}: {exc.error_type}: {exc.reason}")
                return exc.status, _error(exc.status, exc.error_type, exc.reason)

    def _authorized(self, request: Request) -> bool:
        assert self.basic_auth is not None
        user, password = self.basic_auth
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        return request.headers.get("authorization", "") == expected

    def _route(self, request: Request) -> tuple[int, dict[str, Any] | None]:
        parts = [unquote(part) for part in request.path.strip("/").split("/") if part]
        method = request.method
        if method == "GET" and not parts:
            return 200, {
                "name": "standin",
                "cluster_name": "logclaw-standin",
                "tagline": "The OpenSearch Project",
                "version": {"distribution": "opensearch", "number": "2.19.0"},
            }
        if method == "PUT" and len(parts) == 2 and parts[0] == "_index_template":
            return self._put_template(parts[1], request)
        if method == "POST" and parts == ["_bulk"]:
            return self._bulk(request)
        if method == "POST" and len(parts) == 2 and parts[1] == "_search":
            return self._search(parts[0], request)
        if method == "POST" and len(parts) == 2 and parts[1] == "_refresh":
            self._resolve(parts[0], ignore_unavailable=False)
            return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
        if method == "DELETE" and len(parts) == 2 and parts[0] == "_index_template":
            if self.templates.pop(parts[1], None) is None:
                return 404, _error(404, "index_template_missing_exception", f"no template [{parts[1]}]")
            return 200, {"acknowledged": True}
        if method in ("HEAD", "GET", "DELETE") and len(parts) == 1 and not parts[0].startswith("_"):
            if "*" not in parts[0] and parts[0] not in self.indices:  # a normal answer, not a violation
                return 404, _error(404, "index_not_found_exception", f"no such index [{parts[0]}]")
            names = self._resolve(parts[0], ignore_unavailable=True)
            if method == "DELETE":
                for name in names:
                    del self.indices[name]
                return 200, {"acknowledged": True}
            return 200, {name: {"aliases": {}, "mappings": {}, "settings": {}} for name in names}
        raise BadRequest(
            400, "illegal_argument_exception", f"stand-in does not implement {method} /{'/'.join(parts)}"
        )

    # -- endpoints -------------------------------------------------------------------------------

    def _put_template(self, name: str, request: Request) -> tuple[int, dict[str, Any]]:
        body = _json_body(request)
        if not isinstance(body, dict) or set(body) - _TEMPLATE_KEYS:
            raise BadRequest(400, "x_content_parse_exception", f"unknown template keys {body!r:.100}")
        patterns = body.get("index_patterns")
        if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) for p in patterns):
            raise BadRequest(400, "action_request_validation_exception", "index_patterns is missing")
        inner = body.get("template", {})
        if not isinstance(inner, dict) or set(inner) - _TEMPLATE_INNER_KEYS:
            raise BadRequest(400, "x_content_parse_exception", f"bad template section {inner!r:.100}")
        if not isinstance(body.get("priority", 0), int):
            raise BadRequest(400, "x_content_parse_exception", "priority must be an integer")
        self.templates[name] = body
        return 200, {"acknowledged": True}

    def _bulk(self, request: Request) -> tuple[int, dict[str, Any]]:
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip() != "application/x-ndjson":
            raise BadRequest(400, "illegal_argument_exception", f"bulk Content-Type is {content_type!r}")
        text = request.body.decode("utf-8")
        if not text.endswith("\n"):
            raise BadRequest(
                400, "illegal_argument_exception", "The bulk request must be terminated by a newline [\\n]"
            )
        lines = text[:-1].split("\n")
        if len(lines) % 2:
            raise BadRequest(400, "illegal_argument_exception", "action line without a source line")
        items = []
        for action_line, source_line in zip(lines[0::2], lines[1::2], strict=True):
            action = _json_line(action_line)
            if not isinstance(action, dict) or len(action) != 1 or next(iter(action)) not in ("index", "update"):
                raise BadRequest(
                    400, "illegal_argument_exception", f"unsupported bulk action {action_line:.100}"
                )
            kind = next(iter(action))
            meta = action[kind]
            allowed = {"_index", "_id"} | ({"retry_on_conflict"} if kind == "update" else set())
            if not isinstance(meta, dict) or not {"_index", "_id"} <= set(meta) <= allowed:
                raise BadRequest(
                    400, "illegal_argument_exception", f"action needs exactly _index and _id: {meta}"
                )
            index, doc_id = meta["_index"], meta["_id"]
            if not isinstance(index, str) or not _INDEX_NAME.match(index) or len(index.encode()) > 255:
                raise BadRequest(400, "invalid_index_name_exception", f"Invalid index name [{index}]")
            if not isinstance(doc_id, str) or not doc_id or len(doc_id.encode()) > 512:
                raise BadRequest(400, "illegal_argument_exception", f"bad _id {doc_id!r}")
            source = _json_line(source_line)
            if not isinstance(source, dict):
                raise BadRequest(400, "mapper_parsing_exception", "source is not an object")
            if kind == "update":
                source = self._scripted(index, doc_id, source)
            result = self._index_one(index, doc_id, source)
            items.append({kind: result})
        errors = any(next(iter(item.values()))["status"] >= 300 for item in items)
        return 200, {"took": 1, "errors": errors, "items": items}

    def _scripted(self, index: str, doc_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """An ``update`` with the metrics script and an upsert: the new document's source."""
        script, upsert = body.get("script"), body.get("upsert")
        if set(body) != {"script", "upsert"} or not isinstance(script, dict) or not isinstance(upsert, dict):
            raise BadRequest(400, "x_content_parse_exception", f"update needs script and upsert: {body!r:.100}")
        if set(script) != {"source", "lang", "params"} or script["lang"] != "painless":
            raise BadRequest(400, "x_content_parse_exception", f"bad script {script!r:.100}")
        if script["source"] != METRICS_SCRIPT:
            raise BadRequest(400, "illegal_argument_exception", "stand-in runs only the metrics script")
        add = script["params"].get("add") if isinstance(script["params"], dict) else None
        if not isinstance(add, dict) or not all(isinstance(v, int) for v in add.values()):
            raise BadRequest(400, "script_exception", f"params.add must map names to integers: {add!r:.100}")
        current = self.indices.get(index, {}).get(doc_id)
        if current is None:
            return upsert
        updated = dict(current)
        for key, value in add.items():
            updated[key] = (updated.get(key) or 0) + value
        return updated

    def _index_one(self, index: str, doc_id: str, source: dict[str, Any]) -> dict[str, Any]:
        failure = self._item_failures.get(doc_id)
        if failure is not None:
            if failure.times is not None:
                failure.times -= 1
                if failure.times <= 0:
                    del self._item_failures[doc_id]
            return {
                "_index": index,
                "_id": doc_id,
                "status": failure.status,
                "error": {"type": failure.error_type, "reason": f"programmed {failure.error_type}"},
            }
        docs = self.indices.setdefault(index, {})
        created = doc_id not in docs
        docs[doc_id] = source
        return {
            "_index": index,
            "_id": doc_id,
            "_version": 1,
            "result": "created" if created else "updated",
            "_shards": {"total": 1, "successful": 1, "failed": 0},
            "status": 201 if created else 200,
        }

    def _search(self, target: str, request: Request) -> tuple[int, dict[str, Any]]:
        unknown = set(request.params) - _SEARCH_PARAMS
        if unknown:
            raise BadRequest(400, "illegal_argument_exception", f"unrecognized parameters {sorted(unknown)}")
        body = _json_body(request)
        if not isinstance(body, dict) or set(body) - _SEARCH_KEYS:
            raise BadRequest(400, "parsing_exception", f"unknown search keys {set(body) - _SEARCH_KEYS}")
        self.searches.append((target, body))
        names = self._resolve(target, request.params.get("ignore_unavailable") == "true")
        matcher = _query(body.get("query", {"match_all": {}}))
        size = body.get("size", 10)
        if not isinstance(size, int) or not 0 <= size <= 10_000:
            raise BadRequest(400, "illegal_argument_exception", f"bad size {size!r}")
        hits = [
            {"_index": name, "_id": doc_id, "_score": None, "_source": doc}
            for name in names
            for doc_id, doc in self.indices[name].items()
            if matcher(doc)
        ]
        for key, descending in reversed(_sort_keys(body.get("sort", []))):  # stable: last key first
            hits.sort(key=functools.partial(_sort_value, key), reverse=descending)
        start = body.get("from", 0)
        if not isinstance(start, int) or start < 0 or start + size > 10_000:
            raise BadRequest(400, "illegal_argument_exception", f"Result window is too large, from + size "
                             f"must be less than or equal to: [10000] but was [{start}+{size}]")
        answer: dict[str, Any] = {
            "took": 1,
            "timed_out": False,
            "_shards": {"total": 1, "successful": 1, "failed": 0},
            "hits": {"total": {"value": len(hits), "relation": "eq"}, "max_score": None,
                     "hits": hits[start:start + size]},
        }
        if "aggs" in body:
            answer["aggregations"] = _aggregations(body["aggs"], [hit["_source"] for hit in hits])
        return 200, answer

    def _resolve(self, target: str, ignore_unavailable: bool) -> list[str]:
        names: list[str] = []
        for part in target.split(","):
            if "*" in part:
                names.extend(sorted(n for n in self.indices if fnmatch.fnmatchcase(n, part)))
            elif part in self.indices:
                names.append(part)
            elif not ignore_unavailable:
                raise BadRequest(404, "index_not_found_exception", f"no such index [{part}]")
        return names


def _aggregations(aggs: Any, docs: list[dict[str, Any]]) -> dict[str, Any]:
    """``terms`` (field, size) and ``avg`` (field) aggregations; anything else is a 400."""
    if not isinstance(aggs, dict) or not aggs:
        raise BadRequest(400, "parsing_exception", "aggs must be a non-empty object")
    out: dict[str, Any] = {}
    for name, spec in aggs.items():
        if not isinstance(spec, dict) or len(spec) != 1:
            raise BadRequest(400, "parsing_exception", f"aggregation [{name}] must have one type")
        ((kind, arg),) = spec.items()
        if kind == "terms" and isinstance(arg, dict) and set(arg) <= {"field", "size"} and "field" in arg:
            counts: dict[Any, int] = {}
            for doc in docs:
                for value in _values(doc, arg["field"]):
                    counts[value] = counts.get(value, 0) + 1
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))[: arg.get("size", 10)]
            out[name] = {"doc_count_error_upper_bound": 0, "sum_other_doc_count": 0,
                         "buckets": [{"key": key, "doc_count": n} for key, n in ranked]}
        elif kind == "avg" and isinstance(arg, dict) and set(arg) == {"field"}:
            values = [v for doc in docs for v in _values(doc, arg["field"]) if isinstance(v, int | float)]
            out[name] = {"value": sum(values) / len(values) if values else None}
        else:
            raise BadRequest(400, "parsing_exception", f"unsupported aggregation [{kind}] in [{name}]")
    return out


def _error(status: int, error_type: str, reason: str) -> dict[str, Any]:
    cause = {"type": error_type, "reason": reason}
    return {"error": {"root_cause": [cause], **cause}, "status": status}


def _json_body(request: Request) -> Any:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise BadRequest(400, "illegal_argument_exception", "Content-Type must be application/json")
    return _json_line(request.body.decode("utf-8"))


def _json_line(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(400, "json_parse_exception", str(exc)) from exc


def _sort_value(key: str, hit: dict[str, Any]) -> tuple[int, Any]:
    value = hit["_source"].get(key)
    return (1, 0) if value is None else (0, value)  # missing values last, as OpenSearch does for asc


def _sort_keys(sort: Any) -> list[tuple[str, bool]]:
    if not isinstance(sort, list):
        raise BadRequest(400, "parsing_exception", "sort must be a list")
    keys = []
    for entry in sort:
        if not isinstance(entry, dict) or len(entry) != 1:
            raise BadRequest(400, "parsing_exception", f"bad sort entry {entry!r}")
        ((key, spec),) = entry.items()
        if isinstance(spec, dict) and "order" in spec and set(spec) <= {"order", "unmapped_type"}:
            order = spec["order"]
        else:
            order = spec
        if order not in ("asc", "desc"):
            raise BadRequest(400, "parsing_exception", f"bad sort order {spec!r}")
        keys.append((key, order == "desc"))
    return keys


def _words(value: Any) -> set[str]:
    return {word.lower() for word in _WORD.findall(value)} if isinstance(value, str) else set()


def _query(query: Any) -> Callable[[dict[str, Any]], bool]:
    """Compile the supported query DSL subset; anything else is a 400 (parsing_exception)."""
    if not isinstance(query, dict) or len(query) != 1:
        raise BadRequest(400, "parsing_exception", f"a query must have exactly one key: {query!r:.100}")
    ((kind, spec),) = query.items()
    if kind == "match_all" and spec == {}:
        return lambda doc: True
    if kind == "bool" and isinstance(spec, dict) and not set(spec) - {"filter", "must"}:
        clauses = [_query(q) for key in ("filter", "must") for q in _as_list(spec.get(key, []))]
        return lambda doc: all(clause(doc) for clause in clauses)
    if kind in ("term", "terms", "range") and isinstance(spec, dict) and len(spec) == 1:
        ((name, arg),) = spec.items()
        if kind == "term" and isinstance(arg, str | int | bool):
            return lambda doc: _values(doc, name) & {arg} != set()
        if kind == "terms" and isinstance(arg, list) and arg:
            return lambda doc: bool(_values(doc, name) & set(arg))
        if kind == "range" and isinstance(arg, dict) and arg and not set(arg) - _RANGE_OPS:
            return lambda doc: any(_in_range(value, arg) for value in _values(doc, name))
    if (
        kind == "multi_match"
        and isinstance(spec, dict)
        and set(spec) <= _MULTI_MATCH_KEYS
        and spec.get("type", "best_fields") == "cross_fields"
        and spec.get("operator") == "and"
    ):
        wanted, fields = _words(spec["query"]), list(spec["fields"])
        return lambda doc: wanted <= set().union(*(_words(doc.get(f)) for f in fields))
    raise BadRequest(400, "parsing_exception", f"unsupported query [{kind}]: {spec!r:.100}")


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _values(doc: dict[str, Any], name: str) -> set[Any]:
    value = doc
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None  # type: ignore[assignment]
    if isinstance(value, list):
        return {item for item in value if not isinstance(item, dict | list)}
    return set() if value is None or isinstance(value, dict) else {value}


def _in_range(value: Any, bounds: dict[str, Any]) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    checks = {
        "gte": value >= bounds.get("gte", value),
        "gt": "gt" not in bounds or value > bounds["gt"],
        "lte": value <= bounds.get("lte", value),
        "lt": "lt" not in bounds or value < bounds["lt"],
    }
    return all(checks.values())


def _handler_for(standin: OpenSearchStandin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body are two writes: with Nagle on, the body waits for the client's delayed ACK
        # (40 ms a request, which made a replay against the stand-in 6x slower).
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            params = {key: values[-1] for key, values in parse_qs(url.query, keep_blank_values=True).items()}
            request = Request(
                self.command, url.path, params, {k.lower(): v for k, v in self.headers.items()}, body
            )
            status, payload = standin.handle(request)
            request.status = status
            data = json.dumps(payload).encode() if payload is not None else b""
            self.send_response(status)
            if status == 401:
                self.send_header("www-authenticate", 'Basic realm="OpenSearch Security"')
            self.send_header("content-type", "application/json; charset=UTF-8")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _serve  # http.server's handler names

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

    return Handler
