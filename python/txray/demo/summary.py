"""The printed summary, the demo's index page and the docs' tables, each number beside the paper's.

Every table is made from the run's numbers (a :class:`StudyResult`, or the
``summary.json`` it wrote, for the docs): nothing here is typed by hand but
the paper's own numbers.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Mapping, Sequence
from typing import Any

from .result import COMPARISONS, Replicate, StudyResult
from .stats import describe

PAPER_NEURONS = 1500
PAPER_SHARED = (544, 1335, 1323, 675)
"""Shared neurons in the paper: epochs 1 vs 48, 48 vs 49, zero-shot, supervision (of 1,500)."""
PAPER_PRUNING = {  # set (as txray.pruning_sets names it, k=20) -> (% mass, train %, test %)
    "avoided": (None, 3.65, 2.80),
    "20 least massive": (0.004, -3.79, 0.00),
    "20 most massive": (83.12, -4.99, -1.43),
    "gained": (3.006, -3.71, -3.87),
}
COUNTS = ("shared", "avoided", "gained", "dead", "mean_hellinger", "mean_token_length_a", "mean_token_length_b")
LABELS = {
    "rq1_early": "RQ1 epoch 1 -> late",
    "rq1_late": "RQ1 last two epochs",
    "rq2": "RQ2 zero-shot",
    "rq3": "RQ3 supervised",
}


def aggregate_counts(replicates: Sequence[Replicate]) -> dict[str, dict[str, Any]]:
    """Per comparison and count (shared, avoided, gained, dead, mean H, lengths): :func:`describe` over replicates."""
    return {key: {name: describe([r.counts[key][name] for r in replicates]) for name in COUNTS} for key in COMPARISONS}


def aggregate_pruning(replicates: Sequence[Replicate]) -> list[dict[str, Any]]:
    """Per pruned set: size, mass, changes, random sets' changes and the excess, over replicates."""
    out = []
    for i, row in enumerate(replicates[0].pruning):
        rows = [r.pruning[i] for r in replicates]
        fields = ["neurons", "mass_removed", "test_low", "test_high"]
        for split in ("train", "test"):
            fields += [f"change_{split}", f"control_mean_{split}", f"excess_{split}"]
        out.append({"set": row["set"], **{f: describe([x[f] for x in rows]) for f in fields}})
    return out


def _pct(value: float | None, digits: int = 2, sign: bool = True) -> str:
    return "-" if value is None else f"{100 * value:{'+' if sign else ''}.{digits}f}"


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _mean_sd(d: Mapping[str, Any], digits: int = 1, scale: float = 1.0) -> str:
    if d["mean"] is None:
        return "-"
    text = f"{scale * d['mean']:.{digits}f}"
    return text if d["sd"] is None else f"{text} +- {scale * d['sd']:.{digits}f}"


def comparison_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    """Per comparison: shared / avoided / gained / dead and mean H (mean +- sd over replicates), the paper's shared."""
    rows = []
    n = summary["config"]["hidden"]
    for key, paper in zip(COMPARISONS, PAPER_SHARED):
        c = summary["counts"][key]
        share = c["shared"]["mean"] / n if c["shared"]["mean"] is not None else None
        rows.append(
            [
                LABELS[key],
                f"{_mean_sd(c['shared'])} ({_pct(share, 0, sign=False)}%)",
                _mean_sd(c["avoided"]),
                _mean_sd(c["gained"]),
                _mean_sd(c["dead"]),
                _mean_sd(c["mean_hellinger"], 3),
                f"{_mean_sd(c['mean_token_length_a'])} -> {_mean_sd(c['mean_token_length_b'])}",
                f"{paper:,} ({100 * paper / PAPER_NEURONS:.0f}%)",
            ]
        )
    return rows


COMPARISON_HEADER = ["", "shared", "avoided", "gained", "dead", "mean H", "token length (shared)", "paper shared"]


def ratio_line(summary: Mapping[str, Any]) -> str:
    """The two ratios the paper's RQ2 and RQ3 rest on, ours beside the paper's."""
    c = summary["counts"]
    rq2 = _safe_ratio(c["rq2"]["shared"]["mean"], c["rq1_late"]["shared"]["mean"])
    rq3 = _safe_ratio(c["rq3"]["shared"]["mean"], c["rq2"]["shared"]["mean"])
    return (
        f"Ratios of shared neurons: RQ2 / RQ1-late {_num(rq2, 2)} (paper {1323 / 1335:.2f}), "
        f"RQ3 / RQ2 {_num(rq3, 2)} (paper {675 / 1323:.2f})."
    )


def findings(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Each research question's finding in one sentence, from the run's means (question, sentence)."""
    c, n = summary["counts"], summary["config"]["hidden"]

    def mean(key: str, name: str) -> float | None:
        return c[key][name]["mean"]

    def shared(key: str) -> str:
        value = mean(key, "shared")
        return "-" if value is None else f"{value:,.1f} of {n:,} neurons ({100 * value / n:.0f} %)"

    def hellinger(key: str) -> str:
        return _num(mean(key, "mean_hellinger"))

    early, late = mean("rq1_early", "mean_hellinger"), mean("rq1_late", "mean_hellinger")
    trend = "-" if early is None or late is None else ("less" if late < early else "no less")
    rq2 = _safe_ratio(mean("rq2", "shared"), mean("rq1_late", "shared"))
    rq3 = _safe_ratio(mean("rq3", "shared"), mean("rq2", "shared"))
    gained, avoided = mean("rq3", "gained"), mean("rq3", "avoided")
    return [
        (
            "RQ1",
            f"Pretraining: {shared('rq1_early')} keep their preferences from epoch 1 to the late epochs and "
            f"{shared('rq1_late')} between the last two epochs, with mean Hellinger distances "
            f"{hellinger('rq1_early')} and {hellinger('rq1_late')}: the late epochs change the neurons {trend} "
            f"(the paper: {PAPER_SHARED[0]:,} and {PAPER_SHARED[1]:,} of {PAPER_NEURONS:,} shared).",
        ),
        (
            "RQ2",
            f"Zero-shot transfer: on tweets {shared('rq2')} stay shared with Wikipedia, {_num(rq2, 2)} times as "
            f"many as between the last two epochs (the paper: {PAPER_SHARED[2] / PAPER_SHARED[1]:.2f}); mean "
            f"Hellinger {hellinger('rq2')}.",
        ),
        (
            "RQ3",
            f"Supervision: fine-tuning keeps {shared('rq3')} shared, {_num(rq3, 2)} times as many as zero-shot "
            f"(the paper: {PAPER_SHARED[3] / PAPER_SHARED[2]:.2f}), gains {_num(gained, 1)} and leaves "
            f"{_num(avoided, 1)} avoided; mean Hellinger {hellinger('rq3')}.",
        ),
    ]


def _safe_ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def pruning_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    """Table 2 over replicates: size, mass share, F1 changes, random sets' changes, the paper's row."""
    k = summary["config"]["prune_k"]
    rows = []
    for row in summary["pruning_summary"]:
        name = row["set"].replace(f"{k} ", "20 ") if k != 20 else row["set"]
        paper = PAPER_PRUNING.get(name)
        low, high = row["test_low"]["mean"], row["test_high"]["mean"]
        rows.append(
            [
                row["set"],
                _mean_sd(row["neurons"]),
                _mean_sd(row["mass_removed"], 2, 100),
                _mean_sd(row["change_train"], 2, 100),
                _mean_sd(row["change_test"], 2, 100),
                f"[{_pct(low)}, {_pct(high)}]",
                f"{_pct(row['control_mean_test']['mean'])}",
                _mean_sd(row["excess_test"], 2, 100),
                "" if paper is None else f"{'-' if paper[0] is None else paper[0]} / {paper[1]:+.2f} / {paper[2]:+.2f}",
            ]
        )
    return rows


PRUNING_HEADER = [
    "pruned",
    "neurons",
    "% mass",
    "train F1 %",
    "test F1 %",
    "test 95 % (bootstrap)",
    "random sets test %",
    "test minus random %",
    "paper: % mass / train / test",
]


def _signed(value: float | None, scale: float, digits: int) -> str:
    return "-" if value is None else f"{scale * value:+.{digits}f}"


def claim_rows(claims: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """The claims table: claim, statistic, mean, sd, 95 % interval, paper, verdict."""
    rows = []
    for c in claims:
        unit = " %" if c["percent"] else ""
        scale, digits = (100, 1) if c["percent"] else (1, 3)
        fmt = functools.partial(_signed, scale=scale, digits=digits)
        interval = "-" if c["low"] is None else f"[{fmt(c['low'])}, {fmt(c['high'])}]"
        rows.append(
            [
                c["id"],
                c["claim"],
                c["statistic"] + unit,
                fmt(c["mean"]),
                "-" if c["sd"] is None else f"{scale * c['sd']:.{digits}f}",
                interval,
                "-" if c["paper"] is None else fmt(c["paper"]),
                c["verdict"],
            ]
        )
    return rows


CLAIM_HEADER = ["claim", "the paper", "statistic", "mean", "sd", "95 % interval", "paper", "verdict"]


def _text_claims(claims: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The claims table for a terminal: the paper's statement last, where a long line does least harm."""
    order = [0, 3, 4, 5, 6, 7, 2, 1]
    return [CLAIM_HEADER[i] for i in order], [[row[i] for i in order] for row in claim_rows(claims)]


def verdict_counts(claims: Sequence[Mapping[str, Any]]) -> str:
    """One sentence: how many claims got which verdict."""
    counts: dict[str, int] = {}
    for c in claims:
        counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
    parts = [f"{n} {v}" for v, n in counts.items()]
    return f"Of {len(claims)} claims: " + ", ".join(parts) + "."


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


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown (pipe) table."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def lm_lines(summary: Mapping[str, Any]) -> list[str]:
    """One line per language model: epochs, why it stopped, perplexities, seconds per epoch."""
    lines = []
    for lm in summary["lm"]:
        seconds = ", ".join(f"{s:.0f}" for s in lm["seconds"])
        lines.append(
            f"LM seed {lm['seed']}: {len(lm['train_perplexity'])} epochs (stopped: {lm['stopped']}), validation "
            f"perplexity {lm['val_perplexity'][0]:.1f} (epoch 1) -> {lm['val_perplexity'][-1]:.1f}; "
            f"seconds per epoch {seconds}"
        )
    return lines


def settings_line(summary: Mapping[str, Any]) -> str:
    """The settings and conditions of the run in one sentence."""
    c, run = summary["config"], summary["run"]
    words = f"{c['train_tokens']:,}" if c["train_tokens"] else "all"
    return (
        f"Preset {summary['preset']}: one-layer LSTM, {c['hidden']} hidden units, trained on {words} Wikipedia words "
        f"to the plateau of validation perplexity (at most {c['epochs']} epochs); {c['seeds']} replicates "
        f"(seeds {c['seed']}-{c['seed'] + c['seeds'] - 1}) over {c['lm_seeds']} LM(s), each recording its own "
        f"{c['tokens']:,}-word sample of Wikipedia and of tweets; {c['controls']} random sets per pruning row; "
        f"{run['seconds']:.0f} s on {run['device']} ({run['cpu_seconds']:.0f} s of CPU time; {run['torch_threads']} "
        f"threads, {run['cpu_count']} cores; {run['date_utc']} UTC)."
    )


def claims_markdown(summary: Mapping[str, Any]) -> str:
    """The docs' view of a run's ``summary.json``: settings, claims, counts and Table 2 as Markdown.

    The claims are computed again from the run's replicates, so that the page applies the
    current rules (:mod:`.claims`, :func:`.stats.verdict`) to the run's numbers."""
    from .claims import claims_table

    replicates = [Replicate(**r) for r in summary["replicates"]]
    summary = {**summary, "claims": claims_table(replicates, summary["config"]["prune_k"])}
    n = len(replicates)
    return "\n".join(
        [
            settings_line(summary),
            "",
            *[f"- {line}" for line in lm_lines(summary)],
            "",
            f"**Claims** (mean, sd and 95 % t-interval over {n} replicates): {verdict_counts(summary['claims'])}",
            "",
            markdown_table(CLAIM_HEADER, claim_rows(summary["claims"])),
            "",
            "**Shared, avoided, gained and dead neurons** (token features, mean +- sd over replicates). "
            + ratio_line(summary),
            "",
            markdown_table(COMPARISON_HEADER, comparison_rows(summary)),
            "",
            "**Table 2** (relative F1 change, mean +- sd over replicates; random sets: "
            f"{summary['config']['controls']} per row and replicate, of the same size). Test F1 "
            f"{_mean_sd(summary['f1_summary']['test'], 3)}.",
            "",
            markdown_table(PRUNING_HEADER, pruning_rows(summary)),
        ]
    )


def summary_text(result: StudyResult) -> str:
    """The text summary printed at the end of the demo."""
    summary = result_summary(result)
    f1 = summary["f1_summary"]
    lines = [
        f"txray demo: the TX-Ray study on real offline text ({result.seconds:.0f} s)",
        settings_line(summary),
        *lm_lines(summary),
        "",
        f"Claims (mean, sd, 95 % interval over {len(result.replicates)} replicates). {verdict_counts(result.claims)}",
        _table(*_text_claims(result.claims)),
        "",
        "Shared / avoided / gained / dead neurons (token features), mean +- sd over replicates:",
        _table(COMPARISON_HEADER, comparison_rows(summary)),
        ratio_line(summary),
        "",
        f"Classifier (positive vs negative tweets, embeddings frozen): F1 train {_mean_sd(f1['train'], 3)}, "
        f"validation {_mean_sd(f1['val'], 3)}, test {_mean_sd(f1['test'], 3)}",
        "",
        "Table 2, pruning the supervised encoder (relative F1 change %, mean +- sd over replicates):",
        _table(PRUNING_HEADER, pruning_rows(summary)),
        "",
        f"Table 1, {result.gained.num_rows} neurons gained by supervision in the first replicate "
        "(most and least massive):",
        _table(GAINED_HEADER, gained_rows(result)) if result.gained.num_rows else "(none)",
        "",
        f"Report: {result.files['index']}",
    ]
    return "\n".join(lines) + "\n"


def result_summary(result: StudyResult) -> dict[str, Any]:
    """The parts of ``summary.json`` the tables read, from a result in memory."""
    import dataclasses
    from pathlib import Path

    return {
        "preset": result.config.preset,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(result.config).items()},
        "run": result.run,
        "lm": result.lm,
        "claims": result.claims,
        "counts": aggregate_counts(result.replicates),
        "pruning_summary": aggregate_pruning(result.replicates),
        "f1_summary": {split: describe([r.f1[split] for r in result.replicates]) for split in result.f1},
    }


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def index_html(result: StudyResult, links: Mapping[str, str]) -> str:
    """The demo's front page: the claims, the summary tables and links to the reports and files."""
    summary = result_summary(result)

    def link(key: str, text: Any) -> str:
        return f'<a href="{html.escape(links[key])}">{html.escape(str(text))}</a>'

    reports = "".join(
        f"<li>{link(k, k.split(':', 1)[1] + ' report')}"
        f' (<a href="{html.escape(links[k])}#neurons">neuron browser</a>)</li>'
        for k in links
        if k.startswith("report:")
    )
    data = "".join(f"<li>{link(k, links[k])}</li>" for k in links if not k.startswith("report:"))
    lms = "".join(f"<li>{html.escape(line)}</li>" for line in lm_lines(summary))
    f1 = summary["f1_summary"]
    found = "".join(
        f'<li data-question="{q}"><b>{q}</b> {html.escape(text)}'
        + (f" ({link(f'report:{q}', 'report')})" if f"report:{q}" in links else "")
        + "</li>"
        for q, text in findings(summary)
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>txray demo</title>
<style>body{{font-family:sans-serif;max-width:80em;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:left}}pre{{background:#f6f6f6;padding:1em}}</style></head>
<body><h1>txray demo: the TX-Ray study on real offline text</h1>
<p>{html.escape(settings_line(summary))}</p><ul>{lms}</ul>
<h2>Findings</h2><p>Means over {len(result.replicates)} replicates, token features.</p><ul>{found}</ul>
<h2>The paper's claims</h2>
<p>Mean, sd and 95 % t-interval over {len(result.replicates)} replicates. {html.escape(verdict_counts(result.claims))}</p>
{_html_table(CLAIM_HEADER, claim_rows(result.claims))}
<h2>Reports (first replicate)</h2><ul>{reports}</ul>
<h2>Shared, avoided, gained and dead neurons</h2>
<p>{html.escape(ratio_line(summary))}</p>
{_html_table(COMPARISON_HEADER, comparison_rows(summary))}
<h2>Table 2: pruning the supervised encoder</h2>
<p>F1 of the positive class: train {_mean_sd(f1["train"], 3)}, test {_mean_sd(f1["test"], 3)}.</p>
{_html_table(PRUNING_HEADER, pruning_rows(summary))}
<h2>Table 1: neurons gained by supervision (first replicate)</h2>{_html_table(GAINED_HEADER, gained_rows(result))}
<h2>Files</h2><ul>{data}</ul></body></html>
"""
