"""mkdocs hook: render results files into pages.

A line ``<!-- txray-results: NAME -->`` in a page is replaced by the run's
conditions (date, commit, machine, versions, arguments), its measured memory
bandwidth and every table the benchmark printed, from
``benchmarks/results/NAME.json``. A line ``<!-- txray-demo: NAME -->`` is
replaced by the claims table, counts and Table 2 of a ``txray demo`` run,
from ``docs/demo-results/NAME.json`` (that run's ``summary.json``). A
missing file renders as a note saying how to produce it.
"""

from __future__ import annotations

import json
import os
import re

MARKER = re.compile(r"^<!-- txray-results: ([A-Za-z0-9_]+) -->$", re.MULTILINE)
DEMO_MARKER = re.compile(r"^<!-- txray-demo: ([A-Za-z0-9_]+) -->$", re.MULTILINE)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
DEMO_RESULTS = os.path.join(ROOT, "docs", "demo-results")


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        value = f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(headers, rows) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cells = [_cell(c) for c in row] + [""] * (len(headers) - len(row))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(name: str, results_dir: str = RESULTS) -> str:
    path = os.path.join(results_dir, f"{name}.json")
    if not os.path.exists(path):
        return (
            f'!!! note "No results yet"\n    `benchmarks/results/{name}.json` does not exist: '
            f"run `python benchmarks/{name}.py` to write it."
        )
    with open(path) as f:
        run = json.load(f)
    machine = run.get("machine", {})
    memory = machine.get("memory_bytes")
    versions = ", ".join(f"{k} {v}" for k, v in run.get("versions", {}).items())
    arguments = " ".join(f"{k}={v!r}" for k, v in run.get("arguments", {}).items() if k != "note")
    commit = (run.get("commit") or "unknown")[:10] + (" (uncommitted changes)" if run.get("dirty") else "")
    out = [
        f"*From `benchmarks/results/{name}.json`*: run {run.get('date_utc')} at commit `{commit}`; "
        f"{machine.get('cpu')}, {machine.get('logical_cores')} logical cores"
        + (f", {memory / 2**30:.0f} GiB memory" if memory else "")
        + f"; {versions}; arguments `{arguments}`.",
    ]
    note = run.get("arguments", {}).get("note")
    if note:
        out.append(f"\n**Conditions:** {note}")
    bandwidth = run.get("bandwidth_measured") or []
    if bandwidth:
        out.append("\nMemory bandwidth measured in this run:\n")
        out.append(_table(["GB/s", "counts", "probe"], [[b["gb_per_s"], b["counts"], b["label"]] for b in bandwidth]))
    for table in run.get("tables", []):
        out.append(f"\n**{_cell(table.get('title', ''))}**\n")
        out.append(_table(table["headers"], table["rows"]))
        for note_line in table.get("notes", []):
            out.append(f"\n- {_cell(note_line)}")
    notes = [n for n in run.get("notes", []) if n]
    if notes:
        out.append("")
        out.extend(f"- {_cell(n)}" for n in notes)
    return "\n".join(out)


def render_demo(name: str, results_dir: str = DEMO_RESULTS) -> str:
    """A ``txray demo`` run's claims, counts and Table 2, from its ``summary.json`` copied to NAME.json."""
    path = os.path.join(results_dir, f"{name}.json")
    if not os.path.exists(path):
        return (
            f'!!! note "No results yet"\n    `docs/demo-results/{name}.json` does not exist: run '
            f"`txray demo --preset {name} --out OUT` and copy `OUT/summary.json` there."
        )
    from txray.demo.summary import claims_markdown  # the same tables the demo prints

    with open(path) as f:
        return claims_markdown(json.load(f))


def on_page_markdown(markdown, page, config, files):  # noqa: ARG001 (mkdocs hook signature)
    markdown = MARKER.sub(lambda m: render(m.group(1)), markdown)
    return DEMO_MARKER.sub(lambda m: render_demo(m.group(1)), markdown)
