"""LLM root-cause analysis through litellm: the prompt (redacted, log content quoted as data) and a
client that tries a list of models in order and validates the answer against the fixed RCA schema.

Models are litellm names: ``gpt-4o-mini`` (OpenAI), ``anthropic/claude-3-5-haiku-20241022``,
``ollama/llama3`` (air-gapped; ``api_base`` from config). litellm is imported lazily (it takes
seconds) and only after ``LITELLM_LOCAL_MODEL_COST_MAP=True`` is set, so nothing is fetched at import.
Timeouts are processing time in seconds (``_s``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from connectors.tickets.base import Rca
from udfs.rca import RcaParseError, parse_rca_json
from udfs.redact import redact, redact_value

log = logging.getLogger(__name__)

PROMPT_DIR = Path(__file__).parent / "prompts"
MAX_LINES = 40
MAX_LINE_CHARS = 500
MAX_TEMPLATES = 10
MAX_TRACE_IDS = 5
_FACT_KEYS = (
    "incident_id", "event", "tenant", "severity", "score", "path", "opened_at", "detected_at",
    "resolved_at", "service", "root_cause", "affected_services", "signals", "score_breakdown",
    "stats", "title", "summary",
)

Messages = list[dict[str, str]]
Completion = Callable[..., Any]


def data_json(value: Any) -> str:
    """JSON for untrusted data inside the prompt: ``<``, ``>`` and backticks are escaped so a log
    line can never close the surrounding tag or fence (they only ever occur inside JSON strings)."""
    text = json.dumps(value, ensure_ascii=False, indent=1, sort_keys=True, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("`", "\\u0060")




def evidence_line(doc: Mapping[str, Any]) -> str:
    """One evidence log doc as a single redacted line: time service LEVEL body [exception] trace."""
    parts = [str(doc.get("time", "")), str(doc.get("service", "")), str(doc.get("level", ""))]
    parts.append(str(doc.get("body", "")))
    if doc.get("exception_type") or doc.get("exception_message"):
        parts.append(f"[{doc.get('exception_type', '')}: {doc.get('exception_message', '')}]")
    if doc.get("http_status"):
        parts.append(f"http={doc['http_status']}")
    if doc.get("trace_id"):
        parts.append(f"trace={doc['trace_id']}")
    line = redact(" ".join(p for p in parts if p))
    return line if len(line) <= MAX_LINE_CHARS else line[: MAX_LINE_CHARS - 1] + "\u2026"


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(PROMPT_DIR)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
    )
    return env.get_template("rca.j2")


def build_messages(incident: Mapping[str, Any], evidence: Sequence[Mapping[str, Any]]) -> Messages:
    """The chat messages for one incident: system rules, then the redacted facts and log lines."""
    facts = {k: incident[k] for k in _FACT_KEYS if k in incident}
    facts["templates"] = list(incident.get("templates") or ())[:MAX_TEMPLATES]
    facts["trace_ids"] = list(incident.get("trace_ids") or ())[:MAX_TRACE_IDS]
    lines = [evidence_line(doc) for doc in evidence[:MAX_LINES]]
    variables = {
        "incident_id_json": data_json(redact(str(incident.get("incident_id", "")))),
        "severity_json": data_json(str(incident.get("severity", ""))),
        "facts_json": data_json(redact_value(facts)),
        "lines_json": data_json(lines),
        "line_count": len(lines),
    }
    template = _template()
    parts = {}
    for block in ("system", "user"):
        render = template.blocks[block]
        parts[block] = "".join(render(template.new_context(variables))).strip()
    return [{"role": "system", "content": parts["system"]}, {"role": "user", "content": parts["user"]}]


@dataclass(frozen=True)
class LlmModel:
    """One model of the fallback list; ``extra`` goes to ``litellm.completion`` as is (e.g.
    ``mock_response`` in tests)."""

    name: str
    api_base: str = ""
    api_key: str = field(default="", repr=False)
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LlmFailure:
    """Every model failed; one ``"<model>: <reason>"`` per attempt, in order."""

    attempts: tuple[str, ...]


@cache
def load_litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    return litellm


def _transient_errors(litellm: Any) -> tuple[type[BaseException], ...]:
    names = ("Timeout", "RateLimitError", "APIConnectionError", "InternalServerError",
             "ServiceUnavailableError")
    return tuple(getattr(litellm, n) for n in names if hasattr(litellm, n))


class LlmRca:
    """Try each model in order; transient errors are retried ``max_retries`` times per model,
    malformed answers and other errors move on to the next model at once."""

    def __init__(
        self,
        models: Sequence[LlmModel | str],
        *,
        timeout_s: float = 30.0,
        max_retries: int = 1,
        max_tokens: int = 800,
        completion: Completion | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not models:
            raise ValueError("LlmRca needs at least one model")
        self.models = tuple(m if isinstance(m, LlmModel) else LlmModel(m) for m in models)
        self.timeout_s = timeout_s
        self.max_retries = max(0, max_retries)
        self.max_tokens = max_tokens
        self._completion = completion
        self._sleep = sleep

    def _kwargs(self, model: LlmModel, messages: Messages) -> dict[str, Any]:
        litellm = load_litellm()
        kwargs: dict[str, Any] = {
            "model": model.name, "messages": messages, "timeout": self.timeout_s, "temperature": 0,
            "max_tokens": self.max_tokens, "num_retries": 0,
        }
        try:
            supported = litellm.get_supported_openai_params(model=model.name) or []
        except Exception:  # unknown provider: leave response_format out rather than fail
            supported = []
        if "response_format" in supported:
            kwargs["response_format"] = {"type": "json_object"}
        if model.api_base:
            kwargs["api_base"] = model.api_base
        if model.api_key:
            kwargs["api_key"] = model.api_key
        kwargs.update(model.extra)
        return kwargs

    def _ask(self, model: LlmModel, messages: Messages) -> Rca | str:
        litellm = load_litellm()
        completion = self._completion or litellm.completion
        transient = _transient_errors(litellm)
        for attempt in range(self.max_retries + 1):
            try:
                response = completion(**self._kwargs(model, messages))
            except transient as exc:
                reason = f"{type(exc).__name__}: {str(exc)[:200]}"
                if attempt < self.max_retries:
                    self._sleep(min(0.5 * 2**attempt, 5.0))
                    continue
                return reason
            except Exception as exc:  # auth, bad request, unknown model: the next model may work
                return f"{type(exc).__name__}: {str(exc)[:200]}"
            content = response.choices[0].message.content or ""
            parsed = parse_rca_json(content)
            if isinstance(parsed, RcaParseError):
                return f"invalid answer: {parsed.reason}"
            return Rca(parsed.root_cause, parsed.impact, parsed.affected_services, parsed.suggested_fix,
                       parsed.confidence, source=f"llm:{model.name}")
        return "no attempt made"

    def analyze(self, messages: Messages) -> Rca | LlmFailure:
        """The first valid RCA of the fallback list, or every model's failure reason."""
        failures = []
        for model in self.models:
            outcome = self._ask(model, messages)
            if isinstance(outcome, Rca):
                return outcome
            log.warning("LLM %s failed: %s", model.name, outcome)
            failures.append(f"{model.name}: {outcome}")
        return LlmFailure(tuple(failures))
