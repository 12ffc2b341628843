"""Drain-style online template miner: one instance per (tenant, service), kept in keyed state.

A log body is masked (UUIDs, IPs, hex ids, quoted values, numbers with units, request ids, paths
with digits, e-mails become ``<UUID>``, ``<IP>`` ...), split on whitespace, and routed through a
fixed-depth prefix tree: first by token count, then by the first ``depth`` tokens (tokens holding
digits or masks go to a ``<*>`` branch). In the leaf, the most similar cluster (share of positions
where its constant token equals the record's; a ``<*>`` position counts as no evidence, as in
Drain) at or above ``sim_threshold`` absorbs the record and its differing positions become ``<*>``;
otherwise the record starts a new cluster. Measured against drain3 on loghub-2k by
``tests/bench/template_bench.py``.

Bounded and deterministic: past ``max_templates`` the least recently seen cluster (event time,
ties by creation order) is evicted. Template ids are a hash of (tenant, service, the first masked
token sequence), so they stay stable while the template generalizes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

WILDCARD = "<*>"
_MAX_CHILDREN = 100
"""Children per tree node before new tokens share the ``<*>`` branch (bounds the tree width)."""

# Quoted values are masked first (they may hold spaces); the other masks never span whitespace and
# all need a digit or an "@", so they run per token and only on tokens that have one.
_QUOTED_RE = re.compile(r"""'(?<!\w')[^'\n]{0,512}'(?!\w)|"[^"\n]{0,512}\"""")
_TOKEN_MASKS: tuple[tuple[str, str], ...] = (
    ("ID", r"(?<![\w-])(?:req|request|rid|trace|span|corr|correlation|txn|sess|session|msg)[-_:]"
           r"(?=[\w-]*\d)[\w-]{4,}"),
    ("EMAIL", r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),
    ("UUID", r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"),
    ("IP", r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}\b(?::\d{1,5}\b)?"
           r"|\[[0-9a-f:.]*:[0-9a-f:.]*\](?::\d{1,5}\b)?"
           r"|(?<![\w:])(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}(?![\w:])"
           r"|(?<![\w:])(?:[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,6})?::[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,6}(?![\w:])"
           r"|(?<![\w:])[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,6}::(?![\w:])"),
    ("PATH", r"(?<![\w/.<>-])(?=[\w/.@%+~-]*\d)(?:/[\w.@%+~-]*)+"),
    ("HEX", r"\b0x[0-9a-f]+\b|\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{8,}\b"),
    ("NUM", r"(?<![\w.])[-+]?\d+(?:[.,]\d+)*(?:ms|us|µs|ns|s|m|h|d|b|kb|mb|gb|tb|kib|mib|gib|%)?(?!\w)"),
)
_TOKEN_MASK_RE = re.compile("|".join(f"(?P<{name}>{rx})" for name, rx in _TOKEN_MASKS), re.IGNORECASE)
_MASK_TOKENS = {name: f"<{name}>" for name, _ in _TOKEN_MASKS}
_NEEDS_MASK_RE = re.compile(r"[\d@]")
_TOKEN_RE = re.compile(r"\S+")


def _mask_match(m: re.Match[str]) -> str:
    return _MASK_TOKENS[m.lastgroup or "NUM"]


_MEMO_CAP = 8192
"""Masked forms of recently seen tokens (most repeat: words, ports, ``uid=0``); cleared when full, so
the memo is bounded and only ever changes speed, never a result."""
_memo: dict[str, str] = {}


def _mask_new(token: str) -> str:
    if token.isalpha() or _NEEDS_MASK_RE.search(token) is None:
        masked = token
    elif token.isdecimal() and token.isascii():
        masked = "<NUM>"
    else:
        masked = _TOKEN_MASK_RE.sub(_mask_match, token)
    if len(_memo) >= _MEMO_CAP:
        _memo.clear()
    _memo[token] = masked
    return masked


def _mask_token(token: str) -> str:
    return _memo.get(token) or _mask_new(token)


def _mask_quotes(text: str) -> str:
    return _QUOTED_RE.sub("<STR>", text) if ("'" in text or '"' in text) else text


def mask(text: str) -> str:
    """Replace variable parts of a log message with mask tokens (``<NUM>``, ``<IP>``, ``<STR>`` ...).

    Masks: quoted values <STR>, request ids <ID>, e-mails <EMAIL>, UUIDs <UUID>, IPv4/IPv6 with
    port <IP>, paths holding digits <PATH>, hex ids <HEX>, numbers with units <NUM>.
    """
    return _TOKEN_RE.sub(lambda m: _mask_token(m.group()), _mask_quotes(text))


def masked_tokens(text: str) -> list[str]:
    """``mask(text).split()``, computed faster."""
    get = _memo.get
    return [get(t) or _mask_new(t) for t in _mask_quotes(text).split()]


def _is_variable(token: str) -> bool:
    """Tokens with digits or masks never name a tree branch of their own."""
    return not token.isalpha() and ("<" in token or _DIGIT_RE.search(token) is not None)


_DIGIT_RE = re.compile(r"\d")


class TemplateMatch(NamedTuple):
    template_id: str
    """Stable id: hex sha1 prefix of (tenant, service, first masked token sequence)."""
    template: str
    """Current template text, with ``<*>`` wildcards and mask tokens."""
    novel: bool
    """True when this record created the template."""
    count: int  # type: ignore[assignment]  # the field name is the API; shadows tuple.count
    """Records the template has absorbed, this one included."""


class _Cluster:
    __slots__ = ("count", "id", "last_seen_ms", "path", "seq", "text", "tokens")

    def __init__(self, cid: str, seq: int, tokens: list[str], count: int, last_seen_ms: int,
                 path: tuple[str, ...]) -> None:
        self.id = cid
        self.seq = seq
        self.tokens = tokens
        self.count = count
        self.last_seen_ms = last_seen_ms
        self.path = path
        self.text = " ".join(tokens)

    def absorb(self, tokens: list[str], now_ms: int) -> None:
        """Count one more record; positions where it differs from the template become ``<*>``."""
        if tokens != self.tokens:
            merged = [t if t == s else WILDCARD for t, s in zip(self.tokens, tokens, strict=True)]
            if merged != self.tokens:
                self.tokens = merged
                self.text = " ".join(merged)
        self.count += 1
        self.last_seen_ms = max(self.last_seen_ms, now_ms)

    def match(self, novel: bool) -> TemplateMatch:
        return TemplateMatch(self.id, self.text, novel, self.count)


class _Node:
    __slots__ = ("children", "clusters")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.clusters: list[_Cluster] = []


def _similarity(template: list[str], tokens: list[str]) -> tuple[float, int]:
    """(share of positions where the template's constant token equals the record's, wildcard count).

    Same lengths assumed. A ``<*>`` position is no evidence either way (as in Drain): counting it as a
    match would let a template that has generalized a few positions absorb ever less similar records.
    """
    if WILDCARD not in tokens:  # then no wildcard position of the template can compare equal
        if template == tokens:
            return 1.0, 0
        return sum(map(str.__eq__, template, tokens)) / len(tokens), template.count(WILDCARD)
    equal = wild = 0
    for t, s in zip(template, tokens, strict=True):
        if t == WILDCARD:
            wild += 1
        elif t == s:
            equal += 1
    return equal / len(tokens), wild


class TemplateMiner:
    """Online template miner for one (tenant, service); state is a versioned JSON-able dict."""

    SCHEMA_VERSION = 1

    def __init__(self, tenant: str, service: str, *, max_templates: int = 300,
                 sim_threshold: float = 0.5, depth: int = 4, max_tokens: int = 64) -> None:
        if max_templates < 1 or depth < 1 or max_tokens < 1:
            raise ValueError("max_templates, depth and max_tokens must be >= 1")
        if not 0.0 < sim_threshold <= 1.0:
            raise ValueError(f"sim_threshold must be in (0, 1], got {sim_threshold!r}")
        self.tenant = tenant
        self.service = service
        self.max_templates = max_templates
        self.sim_threshold = sim_threshold
        self.depth = depth
        self.max_tokens = max_tokens
        self._next_seq = 0
        self._clusters: dict[str, _Cluster] = {}
        self._roots: dict[int, _Node] = {}

    def __len__(self) -> int:
        return len(self._clusters)

    def describe(self, template_id: str) -> TemplateMatch | None:
        """The template's current text and count (``novel`` False), or None once evicted."""
        cluster = self._clusters.get(template_id)
        return cluster.match(False) if cluster is not None else None

    def add(self, text: str, now_ms: int) -> TemplateMatch:
        """Absorb one log body seen at event time ``now_ms`` (Unix ms) and return its template."""
        tokens = masked_tokens(text)[: self.max_tokens]
        best = self._best_cluster(tokens)
        if best is None:
            return self._create(tokens, now_ms).match(True)
        best.absorb(tokens, now_ms)
        return best.match(False)

    def _best_cluster(self, tokens: list[str]) -> _Cluster | None:
        node = self._roots.get(len(tokens))
        for token in tokens[: self.depth]:
            if node is None:
                return None
            child = None if _is_variable(token) else node.children.get(token)
            node = child if child is not None else node.children.get(WILDCARD)
        if node is None:
            return None
        best: _Cluster | None = None
        best_key = (-1.0, 0, 0)
        for cluster in node.clusters:
            sim, wild = _similarity(cluster.tokens, tokens)
            key = (sim, -wild, -cluster.seq)  # most similar, then most specific, then oldest
            if sim >= self.sim_threshold and key > best_key:
                best, best_key = cluster, key
        return best

    def _insert_path(self, tokens: list[str]) -> tuple[str, ...]:
        node = self._roots.get(len(tokens))
        path: list[str] = []
        for token in tokens[: self.depth]:
            if _is_variable(token):
                key = WILDCARD
            elif node is None or token in node.children or len(node.children) < _MAX_CHILDREN:
                key = token
            else:
                key = WILDCARD
            path.append(key)
            node = node.children.get(key) if node is not None else None
        return tuple(path)

    def _leaf(self, length: int, path: tuple[str, ...]) -> _Node:
        node = self._roots.setdefault(length, _Node())
        for key in path:
            node = node.children.setdefault(key, _Node())
        return node

    def _template_id(self, tokens: list[str]) -> str:
        base = f"{self.tenant}\x1f{self.service}\x1f{' '.join(tokens)}"
        cid = hashlib.sha1(base.encode("utf-8")).hexdigest()[:12]
        n = 1
        while cid in self._clusters:  # same first sequence re-created while the first still lives
            cid = hashlib.sha1(f"{base}\x1f{n}".encode()).hexdigest()[:12]
            n += 1
        return cid

    def _create(self, tokens: list[str], now_ms: int) -> _Cluster:
        if len(self._clusters) >= self.max_templates:
            self._evict()
        path = self._insert_path(tokens)
        cluster = _Cluster(self._template_id(tokens), self._next_seq, list(tokens), 1, now_ms, path)
        self._next_seq += 1
        self._attach(cluster)
        return cluster

    def _attach(self, cluster: _Cluster) -> None:
        self._clusters[cluster.id] = cluster
        self._leaf(len(cluster.tokens), cluster.path).clusters.append(cluster)

    def _evict(self) -> None:
        victim = min(self._clusters.values(), key=lambda c: (c.last_seen_ms, c.seq))
        del self._clusters[victim.id]
        length = len(victim.tokens)
        trail = [self._roots[length]]
        for key in victim.path:
            trail.append(trail[-1].children[key])
        trail[-1].clusters.remove(victim)
        for depth in range(len(victim.path), 0, -1):  # prune empty nodes so the tree stays bounded
            node = trail[depth]
            if node.clusters or node.children:
                break
            del trail[depth - 1].children[victim.path[depth - 1]]
        if not trail[0].clusters and not trail[0].children:
            del self._roots[length]

    def to_state(self) -> dict[str, Any]:
        """JSON-able snapshot (clusters in creation order) with ``schema_version``."""
        clusters = sorted(self._clusters.values(), key=lambda c: c.seq)
        return {
            "schema_version": self.SCHEMA_VERSION,
            "tenant": self.tenant,
            "service": self.service,
            "max_templates": self.max_templates,
            "sim_threshold": self.sim_threshold,
            "depth": self.depth,
            "max_tokens": self.max_tokens,
            "next_seq": self._next_seq,
            "clusters": [
                {
                    "id": c.id,
                    "seq": c.seq,
                    "tokens": list(c.tokens),
                    "count": c.count,
                    "last_seen_ms": c.last_seen_ms,
                    "path": list(c.path),
                }
                for c in clusters
            ],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> TemplateMiner:
        """Rebuild a miner from ``to_state`` output; unknown schema versions raise ValueError."""
        version = state.get("schema_version")
        if version != cls.SCHEMA_VERSION:
            raise ValueError(
                f"TemplateMiner state schema_version {version!r} is not supported "
                f"(this code reads version {cls.SCHEMA_VERSION})"
            )
        try:
            miner = cls(
                str(state["tenant"]), str(state["service"]),
                max_templates=int(state["max_templates"]), sim_threshold=float(state["sim_threshold"]),
                depth=int(state["depth"]), max_tokens=int(state["max_tokens"]),
            )
            miner._next_seq = int(state["next_seq"])
            for raw in sorted(state["clusters"], key=lambda c: int(c["seq"])):
                tokens = [str(t) for t in raw["tokens"]]
                path = tuple(str(k) for k in raw["path"])
                if len(path) != min(miner.depth, len(tokens)) or raw["id"] in miner._clusters:
                    raise ValueError(f"inconsistent template cluster {raw['id']!r}")
                miner._attach(_Cluster(str(raw["id"]), int(raw["seq"]), tokens, int(raw["count"]),
                                       int(raw["last_seen_ms"]), path))
            if len(miner._clusters) > miner.max_templates:
                raise ValueError("TemplateMiner state holds more clusters than max_templates")
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed TemplateMiner state: {exc!r}") from exc
        return miner
