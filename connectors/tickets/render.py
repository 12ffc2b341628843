"""Per-format rendering of ``TicketFacts`` with jinja2 templates, escaped by construction.

Each format has its own environment: HTML uses jinja2's autoescape; Markdown, Slack mrkdwn and
plain text escape every ``{{ }}`` through the environment's ``finalize`` hook, so a template cannot
forget to escape. Only values a filter builds on purpose (``Raw``: code blocks, links) pass through.
A value's text is never re-parsed as a template, so ``{{ }}`` in a log line stays literal.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any, Literal

import jinja2

from connectors.tickets.facts import EvidenceLine, TicketFacts

Mode = Literal["full", "update", "resolve"]

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>&#|~!])")
_SAFE_URL = re.compile(r"^https?://[^\s<>\"'`|]+$")


class Raw(str):
    """A string a filter built on purpose; ``finalize`` leaves it alone."""


def plain_clean(text: str) -> str:
    """Plain text: drop control characters (keeps newlines and tabs)."""
    return _CONTROL.sub("", text)


def md_escape(text: str) -> str:
    """Markdown: backslash-escape the characters that start markup or raw HTML."""
    return _MD_SPECIAL.sub(r"\\\1", plain_clean(text))


def mrkdwn_escape(text: str) -> str:
    """Slack mrkdwn: the three characters Slack requires escaped as HTML entities, and runs of
    three backticks (which would open a code block swallowing the rest) turned into U+02CB."""
    escaped = plain_clean(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"`{3,}", lambda m: "\u02cb" * len(m.group()), escaped)


def _line(e: EvidenceLine) -> str:
    return " ".join(part for part in (e.time, e.service, e.level, e.text) if part)


def md_code(lines: Iterable[EvidenceLine]) -> Raw:
    """A fenced code block whose fence is longer than any backtick run inside (CommonMark rule)."""
    body = "\n".join(plain_clean(_line(e)) for e in lines)
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return Raw(f"{fence}text\n{body}\n{fence}")


def mrkdwn_code(lines: Iterable[EvidenceLine]) -> Raw:
    """A Slack code block; backticks inside become U+02CB so they cannot close it."""
    body = "\n".join(mrkdwn_escape(_line(e)).replace("`", "\u02cb") for e in lines)
    return Raw(f"```\n{body}\n```")


def safe_url(url: str) -> str:
    """``url`` if it is a plain http(s) URL, else "" (never a ``javascript:`` link)."""
    return url if _SAFE_URL.match(url) else ""


def md_link(url: str) -> str:
    return Raw(f"<{url}>") if safe_url(url) else md_escape(url)


def mrkdwn_link(url: str) -> str:
    return Raw(f"<{mrkdwn_escape(url)}|open the logs>") if safe_url(url) else mrkdwn_escape(url)


def _finalizer(escape: Callable[[str], str]) -> Callable[[Any], Any]:
    def finalize(value: Any) -> Any:
        if value is None:
            return ""
        if isinstance(value, Raw):
            return value
        return escape(str(value))

    return finalize


_FORMATS: dict[str, tuple[str, Callable[[str], str] | None]] = {
    "markdown": ("markdown.md.j2", md_escape),
    "slack": ("slack_mrkdwn.j2", mrkdwn_escape),
    "html": ("html.html.j2", None),
    "plain": ("plain.txt.j2", plain_clean),
}


@cache
def _environment(fmt: str) -> jinja2.Environment:
    _, escape = _FORMATS[fmt]
    loader = jinja2.PackageLoader("connectors.tickets", "templates")
    common: dict[str, Any] = {
        "loader": loader,
        "trim_blocks": True,
        "lstrip_blocks": True,
        "undefined": jinja2.StrictUndefined,
        "keep_trailing_newline": False,
    }
    if escape is None:
        env = jinja2.Environment(autoescape=True, **common)
    else:
        env = jinja2.Environment(autoescape=False, finalize=_finalizer(escape), **common)
    env.filters.update(
        raw=Raw,
        md_code=md_code,
        mrkdwn_code=mrkdwn_code,
        md_link=md_link,
        mrkdwn_link=mrkdwn_link,
        safe_url=safe_url,
    )
    return env


def render(fmt: str, facts: TicketFacts, mode: Mode = "full") -> str:
    """Render ``facts`` as ``fmt`` (markdown | slack | html | plain) for a new ticket, an update
    or the resolution; runs of blank lines are collapsed."""
    template_name, _ = _FORMATS[fmt]
    text = _environment(fmt).get_template(template_name).render(f=facts, mode=mode)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
