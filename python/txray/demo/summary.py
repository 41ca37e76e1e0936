"""The printed summary and the demo's index page, each number beside the paper's."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from .result import StudyResult

PAPER_NEURONS = 1500
PAPER_SHARED = (544, 1335, 1323, 675)
"""Shared neurons in the paper: epochs 1 vs 48, 48 vs 49, zero-shot, supervision (of 1,500)."""
PAPER_PRUNING = {  # set (as txray.pruning_sets names it, k=20) -> (% mass, train %, test %)
    "avoided": (None, 3.65, 2.80),
    "20 least massive": (0.004, -3.79, 0.00),
    "20 most massive": (83.12, -4.99, -1.43),
    "gained": (3.006, -3.71, -3.87),
}


def _pct(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{100 * value:+.{digits}f}"


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def comparison_rows(result: StudyResult) -> list[list[str]]:
    """Per comparison: question, stages, shared / avoided / gained, mean Hellinger, mean lengths, the paper."""
    rows = []
    n = result.config.hidden
    for c, paper in zip(result.comparisons, PAPER_SHARED):
        s = c.counts
        rows.append(
            [
                c.question,
                f"{c.a} -> {c.b}",
                f"{s['shared']} ({100 * s['shared'] / n:.0f}%)",
                str(s["avoided"]),
                str(s["gained"]),
                _num(s["mean_hellinger"]),
                f"{_num(s['mean_token_length_a'], 1)} -> {_num(s['mean_token_length_b'], 1)}",
                f"{paper:,} ({100 * paper / PAPER_NEURONS:.0f}%)",
            ]
        )
    return rows


COMPARISON_HEADER = ["", "stages", "shared", "avoided", "gained", "mean H", "token length (shared)", "paper shared"]


def pruning_rows(result: StudyResult) -> list[list[str]]:
    """Table 2: per pruned set, its size, mass share and F1 changes, beside the paper's."""
    rows = []
    for row in result.pruning.to_pylist():
        name = row["set"].replace(f"{result.config.prune_k} ", "20 ") if result.config.prune_k != 20 else row["set"]
        paper = PAPER_PRUNING.get(name)
        mass = row["mass_removed"]
        rows.append(
            [
                row["set"],
                str(row["neurons"]),
                "-" if mass is None else f"{100 * mass:.3f}",
                _pct(row["change_train"]),
                _pct(row["change_test"]),
                "" if paper is None else f"{'-' if paper[0] is None else paper[0]} / {paper[1]:+.2f} / {paper[2]:+.2f}",
            ]
        )
    return rows


PRUNING_HEADER = ["pruned", "neurons", "% mass", "train F1 %", "test F1 %", "paper: % mass / train / test"]


def gained_rows(result: StudyResult, k: int = 3) -> list[list[str]]:
    """Table 1: the k most and k least massive gained neurons with their top tokens."""
    rows = result.gained.to_pylist()
    picked = rows if len(rows) <= 2 * k else rows[:k] + rows[-k:]
    return [[str(r["neuron"]), f"{r['activation_mass']:.2f}", str(r["length"]), r["top_tokens"]] for r in picked]


GAINED_HEADER = ["neuron", "activation sum", "length", "top tokens"]


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


def summary_text(result: StudyResult) -> str:
    """The short text summary printed at the end of the demo."""
    c = result.config
    ppl = result.perplexity
    stage = next(iter(result.stages.values()))
    lines = [
        f"txray demo: the TX-Ray study on real offline text ({result.seconds:.0f} s, device {c.resolved_device()})",
        f"LSTM language model: {c.hidden} hidden units, {c.epochs} epochs on {_words(result)} "
        f"Wikipedia words, vocabulary {c.vocab:,}; training perplexity {ppl[0]:.1f} (epoch 1) -> {ppl[-1]:.1f} "
        f"(epoch {c.epochs})",
        f"Profiles: the first {c.tokens:,} words of each corpus; features token ({stage.vocab_size('token'):,}) "
        f"and pos ({stage.vocab_size('pos')})",
        "",
        "Shared / avoided / gained neurons (token features) and mean Hellinger distance of shared neurons:",
        _table(COMPARISON_HEADER, comparison_rows(result)),
        "",
        f"Classifier (positive vs negative tweets, embeddings frozen): F1 train {result.f1['train']:.3f}, "
        f"test {result.f1['test']:.3f}",
        "",
        "Table 2, pruning the supervised encoder (relative F1 change, %):",
        _table(PRUNING_HEADER, pruning_rows(result)),
        "",
        f"Table 1, {result.gained.num_rows} neurons gained by supervision (most and least massive):",
        _table(GAINED_HEADER, gained_rows(result)) if result.gained.num_rows else "(none)",
        "",
        f"Report: {result.files['index']}",
    ]
    return "\n".join(lines) + "\n"


def _words(result: StudyResult) -> str:
    return f"{result.config.train_tokens:,}" if result.config.train_tokens else "all"


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def index_html(result: StudyResult, links: Mapping[str, str]) -> str:
    """The demo's front page: the summary tables and links to the reports and files."""

    def link(key: str, text: Any) -> str:
        return f'<a href="{html.escape(links[key])}">{html.escape(str(text))}</a>'

    reports = "".join(
        f"<li>{link(k, k.split(':', 1)[1] + ' report')}"
        f' (<a href="{html.escape(links[k])}#neurons">neuron browser</a>)</li>'
        for k in links
        if k.startswith("report:")
    )
    data = "".join(f"<li>{link(k, links[k])}</li>" for k in links if not k.startswith("report:"))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>txray demo</title>
<style>body{{font-family:sans-serif;max-width:70em;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:left}}pre{{background:#f6f6f6;padding:1em}}</style></head>
<body><h1>txray demo: the TX-Ray study on real offline text</h1>
<p>{html.escape(summary_line(result))}</p>
<h2>Reports</h2><ul>{reports}</ul>
<h2>Shared, avoided and gained neurons</h2>{_html_table(COMPARISON_HEADER, comparison_rows(result))}
<h2>Table 2: pruning the supervised encoder</h2>
<p>F1 of the positive class: train {result.f1["train"]:.3f}, test {result.f1["test"]:.3f}.</p>
{_html_table(PRUNING_HEADER, pruning_rows(result))}
<h2>Table 1: neurons gained by supervision</h2>{_html_table(GAINED_HEADER, gained_rows(result))}
<h2>Files</h2><ul>{data}</ul></body></html>
"""


def summary_line(result: StudyResult) -> str:
    """The settings in one sentence."""
    c = result.config
    return (
        f"One-layer LSTM, {c.hidden} hidden units, {c.epochs} epochs on {_words(result)} Wikipedia words; "
        f"profiles on the first {c.tokens:,} words of Wikipedia and of positive/negative tweets; seed {c.seed}."
    )
