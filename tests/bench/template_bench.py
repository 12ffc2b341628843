"""Template mining measured: our miner vs the drain3 library on the 16 loghub-2k systems.

Each system's ``<Sys>_2k.log_structured.csv.xz`` gives one row per line with the message part
(``Content``, what the standard Loghub benchmark feeds a parser) and the ground truth
(``EventId``, ``EventTemplate``). Both miners read ``Content`` in file order, one line at a time.

Metrics, per system and averaged over systems (unweighted, like the Loghub tables):

- **grouping accuracy (GA)**, Loghub's definition: a line is correct iff the set of lines in its
  predicted group equals the set of lines in its ground-truth group.
- **parsing accuracy (PA)**: a line is correct iff its predicted template (the group's template
  after the whole file, as the Loghub benchmark writes it) equals its ground-truth template after
  the same normalisation for both: every ``<...>`` placeholder whose name is ``*`` or an upper-case
  word (our ``<NUM>``, ``<IP>`` ... and the ``<*>`` wildcard) becomes ``<*>``; every
  whitespace-separated token holding a ``<*>`` becomes exactly ``<*>`` (``blk_<*>`` and
  ``<*>:<*>`` count as one variable token: parsers differ in how much of a token they mask); runs
  of ``<*>`` tokens collapse to one; whitespace runs become one space; ends are stripped.
- **throughput**: lines per second of the mining loop alone (file reading and scoring excluded),
  the best of ``--runs`` runs, in processing time on this machine.

Our miner is ``udfs.templates.TemplateMiner`` with the engine's defaults (one instance per system,
as the engine keeps one per (tenant, service)). drain3 is the PyPI ``drain3`` package with its
default ``TemplateMinerConfig`` (sim_th 0.4, depth 4, max_children 100, no cluster cap) plus the
per-system masking regexes of the Loghub Drain benchmark (logpai/logparser
``benchmark/Drain_benchmark.py``), each replacing its matches with ``<*>``; the benchmark's
per-system ``st``/``depth`` are not used. drain3 pins an old jsonpickle that cannot share the
project's venv with apache-beam, so it is looked up in ``.cache/drain3`` (install it there with the
command in ``DRAIN3_INSTALL``) when ``import drain3`` fails.

Run: ``python -m tests.bench.template_bench --out bench-out/template_bench.json``. The data stays in
``../shared/data/loghub-2k`` (loghub licence: research/evaluation use, cite Zhu et al., ISSRE 2023).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import lzma
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from udfs import templates

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "loghub-2k"
DRAIN3_DIR = ROOT / ".cache" / "drain3"
DRAIN3_VERSION = "0.9.11"
DRAIN3_INSTALL = (".venv/bin/python -m pip install -q --no-deps --target .cache/drain3 -c constraints.txt "
                  "drain3 cachetools==4.2.1")
SYSTEMS = ("Android", "Apache", "BGL", "HDFS", "HPC", "Hadoop", "HealthApp", "Linux", "Mac", "OpenSSH",
           "OpenStack", "Proxifier", "Spark", "Thunderbird", "Windows", "Zookeeper")

LOGHUB_REGEX: dict[str, tuple[str, ...]] = {
    "HDFS": (r"blk_-?\d+", r"(\d+\.){3}\d+(:\d+)?"),
    "Hadoop": (r"(\d+\.){3}\d+",),
    "Spark": (r"(\d+\.){3}\d+", r"\b[KGTM]?B\b", r"([\w-]+\.){2,}[\w-]+"),
    "Zookeeper": (r"(/|)(\d+\.){3}\d+(:\d+)?",),
    "BGL": (r"core\.\d+",),
    "HPC": (r"=\d+",),
    "Thunderbird": (r"(\d+\.){3}\d+",),
    "Windows": (r"0x.*?\s",),
    "Linux": (r"(\d+\.){3}\d+", r"\d{2}:\d{2}:\d{2}"),
    "Android": (r"(/[\w-]+)+", r"([\w-]+\.){2,}[\w-]+", r"\b(\-?\+?\d+)\b|\b0[Xx][a-fA-F\d]+\b|\b[a-fA-F\d]{4,}\b"),
    "HealthApp": (),
    "Apache": (r"(\d+\.){3}\d+",),
    "Proxifier": (r"<\d+\ssec", r"([\w-]+\.)+[\w-]+(:\d+)?", r"\d{2}:\d{2}(:\d{2})*", r"[KGTM]B"),
    "OpenSSH": (r"(\d+\.){3}\d+", r"([\w-]+\.){2,}[\w-]+"),
    "OpenStack": (r"((\d+\.){3}\d+,?)+", r"/.+?\s", r"\d+"),
    "Mac": (r"([\w-]+\.){2,}[\w-]+",),
}
"""Masking regexes of the Loghub Drain benchmark, per system (given to drain3 only)."""

DRAIN3_GA = {
    "Android": 0.715, "Apache": 1.0, "BGL": 0.969, "HDFS": 0.998, "HPC": 0.887, "Hadoop": 0.954,
    "HealthApp": 0.576, "Linux": 0.684, "Mac": 0.715, "OpenSSH": 0.718, "OpenStack": 0.299, "Proxifier": 0.025,
    "Spark": 0.920, "Thunderbird": 0.955, "Windows": 0.571, "Zookeeper": 0.967,
}
"""drain3 0.9.11's grouping accuracy as measured here (to 3 places), for machines without drain3."""

Parsed = tuple[list[object], list[str]]
"""(group key per line, final template per line)."""


@dataclass(frozen=True)
class Score:
    system: str
    parser: str
    lines: int
    groups: int
    grouping_accuracy: float
    parsing_accuracy: float
    lines_per_s: float


def load_system(data_dir: Path, system: str) -> tuple[list[str], list[str], list[str]]:
    """(contents, ground-truth event ids, ground-truth templates) in file order."""
    path = data_dir / system / f"{system}_2k.log_structured.csv.xz"
    with lzma.open(path, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(io.StringIO(f.read())))
    return [r["Content"] for r in rows], [r["EventId"] for r in rows], [r["EventTemplate"] for r in rows]


def grouping_accuracy(predicted: Sequence[object], truth: Sequence[object]) -> float:
    """Share of lines whose predicted group holds exactly the lines of their true group."""
    pred_groups: dict[object, set[int]] = {}
    true_groups: dict[object, set[int]] = {}
    for i, (p, t) in enumerate(zip(predicted, truth, strict=True)):
        pred_groups.setdefault(p, set()).add(i)
        true_groups.setdefault(t, set()).add(i)
    correct = sum(len(lines) for key, lines in true_groups.items()
                  if pred_groups[predicted[next(iter(lines))]] == lines)
    return correct / len(truth) if truth else 1.0


_PLACEHOLDER_RE = re.compile(r"<(?:\*|[A-Z][A-Z0-9_]*)>")
_PLACEHOLDER_RUN_RE = re.compile(r"<\*>(?: <\*>)+")


def normalise_template(template: str) -> str:
    """The PA normalisation (module docstring), applied the same way to both sides."""
    tokens = ["<*>" if "<*>" in t else t for t in _PLACEHOLDER_RE.sub("<*>", template).split()]
    return _PLACEHOLDER_RUN_RE.sub("<*>", " ".join(tokens))


def parsing_accuracy(predicted: Sequence[str], truth: Sequence[str]) -> float:
    cache: dict[str, str] = {}

    def norm(t: str) -> str:
        if t not in cache:
            cache[t] = normalise_template(t)
        return cache[t]

    correct = sum(norm(p) == norm(t) for p, t in zip(predicted, truth, strict=True))
    return correct / len(truth) if truth else 1.0


def parse_ours(system: str, contents: Sequence[str]) -> Parsed:
    templates._memo.clear()  # each timed run starts cold: no help from masks of an earlier run
    miner = templates.TemplateMiner("bench", system)
    keys: list[object] = []
    last: dict[str, str] = {}
    for i, text in enumerate(contents):
        m = miner.add(text, i)
        keys.append(m.template_id)
        last[m.template_id] = m.template
    final = {tid: (d.template if (d := miner.describe(tid)) is not None else tpl) for tid, tpl in last.items()}
    return keys, [final[str(k)] for k in keys]


def load_drain3() -> Any:
    """The drain3 module, from the venv or ``.cache/drain3``; None when neither has it."""
    try:
        import drain3
    except ImportError:
        if not DRAIN3_DIR.is_dir():
            return None
        sys.path.insert(0, str(DRAIN3_DIR))
        try:
            import drain3
        except ImportError:
            return None
    return drain3


def drain3_parser(drain3: Any) -> Callable[[str, Sequence[str]], Parsed]:
    from drain3.masking import MaskingInstruction
    from drain3.template_miner_config import TemplateMinerConfig

    def parse(system: str, contents: Sequence[str]) -> Parsed:
        config = TemplateMinerConfig()
        config.masking_instructions = [MaskingInstruction(rx, "*") for rx in LOGHUB_REGEX[system]]
        miner = drain3.TemplateMiner(config=config)
        keys: list[object] = [miner.add_log_message(text)["cluster_id"] for text in contents]
        final = {c.cluster_id: c.get_template() for c in miner.drain.clusters}
        return keys, [final[k] for k in keys]

    return parse


def measure(system: str, name: str, parse: Callable[[str, Sequence[str]], Parsed],
            data: tuple[list[str], list[str], list[str]], runs: int) -> Score:
    contents, event_ids, templates = data
    best = float("inf")
    result: Parsed = ([], [])
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        result = parse(system, contents)
        best = min(best, time.perf_counter() - start)
    keys, predicted = result
    return Score(system, name, len(contents), len(set(keys)), round(grouping_accuracy(keys, event_ids), 4),
                 round(parsing_accuracy(predicted, templates), 4), round(len(contents) / best, 1))


def accuracy(data_dir: Path, systems: Sequence[str], runs: int = 1,
             progress: Callable[[str], None] | None = None) -> list[Score]:
    """Scores of our miner and (when importable) drain3 on each system; the benchmark's core."""
    parsers: dict[str, Callable[[str, Sequence[str]], Parsed]] = {"ours": parse_ours}
    drain3 = load_drain3()
    if drain3 is not None:
        parsers["drain3"] = drain3_parser(drain3)
    scores: list[Score] = []
    for n, system in enumerate(systems, 1):
        data = load_system(data_dir, system)
        for name, parse in parsers.items():
            score = measure(system, name, parse, data, runs)
            scores.append(score)
            if progress is not None:
                progress(f"[{n}/{len(systems)}] {system:<11} {name:<6} GA {score.grouping_accuracy:.3f}  "
                         f"PA {score.parsing_accuracy:.3f}  {score.lines_per_s:>9,.0f} lines/s  "
                         f"{score.groups} groups")
    return scores


def summary(scores: Sequence[Score]) -> dict[str, dict[str, float]]:
    """Per parser: unweighted mean GA and PA over systems, and total lines over total mining time."""
    out: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(s.parser for s in scores):
        mine = [s for s in scores if s.parser == name]
        seconds = sum(s.lines / s.lines_per_s for s in mine)
        out[name] = {
            "systems": len(mine),
            "grouping_accuracy": round(sum(s.grouping_accuracy for s in mine) / len(mine), 4),
            "parsing_accuracy": round(sum(s.parsing_accuracy for s in mine) / len(mine), 4),
            "lines_per_s": round(sum(s.lines for s in mine) / seconds, 1),
        }
    return out


def table(scores: Sequence[Score]) -> str:
    by = {(s.system, s.parser): s for s in scores}
    names = list(dict.fromkeys(s.parser for s in scores))
    head = "| system | " + " | ".join(f"{n} GA | {n} PA | {n} lines/s" for n in names) + " |"
    rows = [head, "|" + "---|" * (1 + 3 * len(names))]
    for system in dict.fromkeys(s.system for s in scores):
        cells = [f"{by[system, n].grouping_accuracy:.3f} | {by[system, n].parsing_accuracy:.3f} | "
                 f"{by[system, n].lines_per_s:,.0f}" for n in names]
        rows.append(f"| {system} | " + " | ".join(cells) + " |")
    avg = summary(scores)
    rows.append("| **average** | " + " | ".join(
        f"{avg[n]['grouping_accuracy']:.3f} | {avg[n]['parsing_accuracy']:.3f} | {avg[n]['lines_per_s']:,.0f}"
        for n in names) + " |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="loghub-2k folder (default: %(default)s)")
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS, metavar="SYSTEM",
                    help="systems to run (default: all 16)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per system and parser; best counts")
    ap.add_argument("--out", type=Path, help="write the scores and averages here as JSON")
    args = ap.parse_args(argv)
    if not args.data_dir.is_dir():
        print(f"error: loghub-2k data not found at {args.data_dir} (expected ../shared/data/loghub-2k beside "
              "the repository; pass --data-dir)", file=sys.stderr)
        return 2
    if load_drain3() is None:
        print(f"note: drain3 not importable; measuring our miner only. Install it with: {DRAIN3_INSTALL}",
              file=sys.stderr)
    scores = accuracy(args.data_dir, args.systems, args.runs, progress=lambda line: print(line, flush=True))
    print(table(scores))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"drain3_version": DRAIN3_VERSION, "summary": summary(scores),
                                        "scores": [asdict(s) for s in scores]}, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
