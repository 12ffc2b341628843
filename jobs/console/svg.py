"""Server-drawn SVG for the console: the propagation graph, symptom charts and sparklines.

Every label goes through ``markupsafe.escape`` (service names come from logs, so from anyone who can
log); the output is ``Markup`` the templates insert as it is. No JavaScript, nothing fetched.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from udfs.timefmt import format_time_ms


@dataclass(frozen=True)
class Point:
    t_ms: int
    volume: int  # log records in the step
    error_rate: float  # failures / records, 0..1
    latency_ms: float | None  # mean span duration, None without spans


def graph(chain: Sequence[str], affected: Sequence[str], root: str, scores: dict[str, float]) -> Markup:
    """Services as nodes, propagation edges along the chain (root first, left to right); affected
    services outside the chain on a second row, linked from the root."""
    chain = list(dict.fromkeys(chain or [root]))
    others = [s for s in dict.fromkeys(affected) if s not in chain]
    w, h, gap = 170, 46, 60
    width = max(len(chain), len(others), 1) * (w + gap) + 20
    height = 2 * (h + 60) + 10 if others else h + 70
    pos: dict[str, tuple[int, int]] = {}
    for i, name in enumerate(chain):
        pos[name] = (20 + i * (w + gap), 30)
    for i, name in enumerate(others):
        pos[name] = (20 + i * (w + gap), 30 + h + 60)
    parts = [f'<svg class="graph" role="img" aria-label="propagation graph" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" '
             'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>']
    edges = [*itertools.pairwise(chain), *((chain[0], o) for o in others)]
    for src, dst in edges:
        (x1, y1), (x2, y2) = pos[src], pos[dst]
        same_row = y1 == y2
        line = (x1 + w, y1 + h // 2, x2, y2 + h // 2) if same_row else (x1 + w // 2, y1 + h, x2 + w // 2, y2)
        parts.append(f'<line class="edge" x1="{line[0]}" y1="{line[1]}" x2="{line[2]}" y2="{line[3]}" '
                     'stroke="#555" stroke-width="2" marker-end="url(#arrow)"/>')
    for name, (x, y) in pos.items():
        kind = "root" if name == root else ("affected" if name in affected or name in chain else "other")
        fill, stroke = {"root": ("#fde2e1", "#c0392b"), "affected": ("#fff1d6", "#d68910"),
                        "other": ("#eef", "#889")}[kind]
        score = scores.get(name)
        label = f"{'root cause' if kind == 'root' else 'affected'}" + (f" · {score:.2f}" if score is not None else "")
        parts.append(f'<g class="node {kind}" data-service="{escape(name)}"><title>{escape(name)}: {label}</title>'
                     f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="8" fill="{fill}" stroke="{stroke}" '
                     f'stroke-width="{3 if kind == "root" else 1.5}"/>'
                     f'<text x="{x + w // 2}" y="{y + 20}" text-anchor="middle" font-weight="bold">'
                     f'{escape(_short(name, 22))}</text>'
                     f'<text x="{x + w // 2}" y="{y + 37}" text-anchor="middle" font-size="11">{escape(label)}</text>'
                     '</g>')
    parts.append("</svg>")
    return Markup("".join(parts))


def chart(service: str, points: Sequence[Point], start_ms: int, end_ms: int, *, window: tuple[int, int] | None,
          onset_ms: int | None, step_ms: int) -> Markup:
    """Volume bars, error rate line (right axis, %), mean latency line where spans exist; the incident
    window shaded and the onset marked."""
    w, h, left, right, top, bottom = 640, 180, 46, 46, 14, 24
    pw, ph = w - left - right, h - top - bottom
    span = max(1, end_ms - start_ms)

    def x(t: int) -> float:
        return left + pw * (min(max(t, start_ms), end_ms) - start_ms) / span

    vmax = max([p.volume for p in points] + [1])
    lmax = max([p.latency_ms for p in points if p.latency_ms is not None] + [1.0])
    bar_w = max(1.0, pw * step_ms / span - 1)
    out = [f'<svg class="chart" role="img" aria-label="symptom chart {escape(service)}" viewBox="0 0 {w} {h}" '
           f'width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg" data-service="{escape(service)}">',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ddd"/>']
    if window is not None:
        x1, x2 = x(window[0]), x(window[1])
        out.append(f'<rect class="incident-window" x="{x1:.1f}" y="{top}" width="{max(2.0, x2 - x1):.1f}" '
                   f'height="{ph}" fill="#f5b7b1" opacity="0.35"><title>incident window</title></rect>')
    for p in points:
        bh = ph * p.volume / vmax
        out.append(f'<rect class="volume" x="{x(p.t_ms):.1f}" y="{top + ph - bh:.1f}" width="{bar_w:.1f}" '
                   f'height="{bh:.1f}" fill="#aab7c4"/>')
    err = " ".join(f"{x(p.t_ms) + bar_w / 2:.1f},{top + ph - ph * p.error_rate:.1f}" for p in points)
    if err:
        out.append(f'<polyline class="error-rate" points="{err}" fill="none" stroke="#c0392b" stroke-width="2"/>')
    lat = " ".join(f"{x(p.t_ms) + bar_w / 2:.1f},{top + ph - ph * p.latency_ms / lmax:.1f}"
                   for p in points if p.latency_ms is not None)
    if lat:
        out.append(f'<polyline class="latency" points="{lat}" fill="none" stroke="#2471a3" stroke-width="1.5" '
                   'stroke-dasharray="4 2"/>')
    if onset_ms is not None:
        xo = x(onset_ms)
        out.append(f'<line class="onset" x1="{xo:.1f}" y1="{top}" x2="{xo:.1f}" y2="{top + ph}" stroke="#000" '
                   f'stroke-width="2"/><text x="{xo + 3:.1f}" y="{top + 11}" font-size="11">onset '
                   f'{format_time_ms(onset_ms)[11:19]}</text>')
    out.append(f'<text x="4" y="{top + 10}" font-size="10" fill="#567">{vmax}/step</text>'
               f'<text x="{w - right + 4}" y="{top + 10}" font-size="10" fill="#c0392b">100%</text>'
               f'<text x="{w - right + 4}" y="{top + ph}" font-size="10" fill="#c0392b">0%</text>'
               f'<text x="{left}" y="{h - 6}" font-size="10">{format_time_ms(start_ms)[5:19].replace("T", " ")}</text>'
               f'<text x="{w - right}" y="{h - 6}" font-size="10" text-anchor="end">'
               f'{format_time_ms(end_ms)[5:19].replace("T", " ")} UTC</text>')
    if lat:
        out.append(f'<text x="{w - right + 4}" y="{top + 24}" font-size="10" fill="#2471a3">{lmax:.0f} ms</text>')
    out.append("</svg>")
    return Markup("".join(out))


def sparkline(values: Sequence[float], color: str = "#2471a3", width: int = 160, height: int = 28) -> Markup:
    """A tiny line of ``values`` (scaled to their max); an empty box when there is none."""
    vmax = max([*values, 1e-9])
    n = max(1, len(values) - 1)
    pts = " ".join(f"{width * i / n:.1f},{height - 2 - (height - 4) * v / vmax:.1f}" for i, v in enumerate(values))
    line = f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.5"/>' if values else ""
    return Markup(f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
                  f'xmlns="http://www.w3.org/2000/svg">{line}</svg>')


def waterfall(rows: Sequence[tuple[str, str, int, int, bool]], start_ms: int, end_ms: int) -> Markup:
    """Log records of a trace on a time axis: (service, label, t_ms, duration_ms, failed) per row."""
    w, left, row_h = 640, 150, 18
    span = max(1, end_ms - start_ms)
    out = [f'<svg class="waterfall" viewBox="0 0 {w} {row_h * len(rows) + 10}" width="{w}" '
           f'height="{row_h * len(rows) + 10}" xmlns="http://www.w3.org/2000/svg">']
    for i, (service, label, t_ms, dur_ms, failed) in enumerate(rows):
        x = left + (w - left - 10) * (t_ms - start_ms) / span
        bw = max(3.0, (w - left - 10) * dur_ms / span)
        y = 4 + i * row_h
        out.append(f'<text x="2" y="{y + 12}" font-size="11">{escape(_short(service, 22))}</text>'
                   f'<rect x="{x:.1f}" y="{y}" width="{bw:.1f}" height="{row_h - 5}" '
                   f'fill="{"#c0392b" if failed else "#5d8aa8"}"><title>{escape(label)}</title></rect>')
    out.append("</svg>")
    return Markup("".join(out))


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
