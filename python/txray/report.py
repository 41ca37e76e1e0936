"""One self-contained HTML report of several profiles, and PNG export of its figures.

    txray.write_report([epoch1, epoch48, epoch49], "report.html", png_dir="figures/")

The HTML file works offline: plotly.js is inlined, the neuron table's data is
embedded as JSON and searched by a few lines of JavaScript. PNG export needs
kaleido and a Chrome or Chromium (``BROWSER_PATH``, or ``chromium`` on the
PATH); txray never downloads a browser.
"""

from __future__ import annotations

import dataclasses
import functools
import html
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import analysis
from ._version import __version__
from .compare import match, nearest
from .profile import Profile, check_compatible

if TYPE_CHECKING:
    import plotly.graph_objects as go

FIGURES: dict[str, tuple[str, str]] = {
    # name: (heading, what the reader should look for)
    "hellinger_length": (
        "Knowledge change vs Hellinger length",
        "Each dot is a neuron preferred in both stages: how far its preferences moved (Hellinger distance) "
        "against how many features it prefers in either stage. Hover for its top features.",
    ),
    "length_shift_token": (
        "Length shift: tokens",
        "Each line is a shared neuron's number of preferred tokens in consecutive stages: "
        "blue got longer (more general), red shorter (more specialised), black dotted unchanged.",
    ),
    "length_shift_pos": ("Length shift: parts of speech", "As above, for part-of-speech tags."),
    "feature_mass": (
        "Corpus frequency vs activation mass",
        "How often each POS tag occurs in the corpus (black) beside the share of the layer's activation "
        "mass spent on it: a close match means the layer represents the tag distribution.",
    ),
    "mass_curve": (
        "Sorted activation mass",
        "Every neuron's share of the activation mass, largest first. A high head and a short tail "
        "mean few neurons carry the activation (supervision sparsifies).",
    ),
    "most_changed": (
        "Most changed neurons",
        "Preference distributions of the neurons whose preferences moved most between the first two "
        "stages, every stage side by side.",
    ),
    "least_changed": ("Least changed neurons", "The same for the neurons that moved least."),
    "timeline": (
        "Timeline",
        "Shared, avoided and gained neurons and the mean Hellinger distance between consecutive checkpoints.",
    ),
    "nearest": (
        "Nearest neurons, first vs last",
        "For every neuron of the first profile its nearest neuron of the last (any two layers or models), "
        "and a one-to-one matching.",
    ),
}
"""Every figure the report can hold, in report order."""


@dataclasses.dataclass
class Report:
    """What :func:`write_report` wrote."""

    html: Path
    figures: list[str]
    png: list[Path]
    png_skipped: str | None = None  # why no PNGs were written, when they were asked for


def _same_layer(profiles: Sequence[Profile], kind: str) -> bool:
    try:
        for other in profiles[1:]:
            check_compatible(profiles[0], other, [kind], same_neurons=True)
    except ValueError:
        return False
    return True


def report_figures(
    profiles: Sequence[Profile],
    kind: str = "token",
    pos_kind: str | None = "pos",
    k: int = 5,
    top: int = 10,
    token_pos: Mapping[str, str] | None = None,
) -> dict[str, go.Figure]:
    """The report's figures (names as in :data:`FIGURES`) that apply to these profiles.

    Neuron-by-neuron figures need two or more profiles of the same layer; the
    timeline needs three or more; POS figures need ``pos_kind`` in every
    profile; the nearest-neuron view needs two profiles of any widths.
    """
    from . import plots

    profiles = list(profiles)
    if not profiles:
        raise ValueError("a report needs at least one profile")
    for p in profiles:
        if kind not in p.kinds:
            raise ValueError(f"profile {p.name!r} has no feature kind {kind!r} (it has {list(p.kinds)})")
    pos = pos_kind if pos_kind and all(pos_kind in p.kinds for p in profiles) else None  # None: no POS figures
    paired = len(profiles) >= 2 and _same_layer(profiles, kind) and (pos is None or _same_layer(profiles, pos))
    builders: dict[str, Callable[[], go.Figure]] = {}
    if paired:
        builders["hellinger_length"] = lambda: plots.hellinger_length(profiles, kind)
        builders["length_shift_token"] = lambda: plots.length_shift(profiles, kind)
        if pos is not None:
            builders["length_shift_pos"] = functools.partial(plots.length_shift, profiles, pos)
    if pos is not None:
        builders["feature_mass"] = functools.partial(plots.feature_mass, profiles, pos)
    builders["mass_curve"] = lambda: plots.mass_curve(profiles)
    if paired and int((profiles[0].preferred(kind) & profiles[1].preferred(kind)).sum()):
        detail = functools.partial(
            plots.changed_neuron_detail, profiles, k=k, kind=kind, pos_kind=pos, top=top, token_pos=token_pos
        )
        builders["most_changed"] = functools.partial(detail, which="most")
        builders["least_changed"] = functools.partial(detail, which="least")
    if paired and len(profiles) >= 3:
        builders["timeline"] = lambda: plots.timeline(profiles, kind)
    if len(profiles) >= 2 and all(p.preferred(kind).any() for p in (profiles[0], profiles[-1])):
        builders["nearest"] = lambda: plots.nearest_view(profiles[0], profiles[-1], kind)
    return {name: builders[name]() for name in FIGURES if name in builders}


# -- PNG ----------------------------------------------------------------------------


def find_browser() -> str | None:
    """A Chrome/Chromium for PNG export: ``BROWSER_PATH`` if set, else one on the PATH."""
    explicit = os.environ.get("BROWSER_PATH")
    if explicit:
        return explicit if os.path.isfile(explicit) else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def png_unavailable() -> str | None:
    """Why PNG export cannot run here, or None when it can."""
    try:
        import kaleido
    except ImportError:
        return "kaleido is not installed (pip install 'txray[report]')"
    if not hasattr(kaleido, "write_fig_from_object_sync"):
        return "kaleido is older than 1.0 (pip install 'kaleido>=1')"
    if find_browser() is None:
        return "no Chrome/Chromium found (install Debian's chromium, or set BROWSER_PATH)"
    return None


def export_png(figures: Mapping[str, go.Figure], directory: str | os.PathLike, width: int = 1200) -> list[Path]:
    """Write each figure to ``directory/NAME.png`` with kaleido, in one browser session.

    Raises RuntimeError when :func:`png_unavailable` says why it cannot.
    Files appear complete or not at all (rendered to a temporary folder, then renamed).
    """
    reason = png_unavailable()
    if reason:
        raise RuntimeError(f"cannot export PNG: {reason}")
    import kaleido

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".txray-png-") as tmp:
        specs = [
            dict(
                fig=fig.to_dict(),
                path=str(Path(tmp) / f"{name}.png"),
                opts=dict(format="png", width=width, height=fig.layout.height or 600, scale=1),
            )
            for name, fig in figures.items()
        ]
        # mathjax=False: kaleido's default loads MathJax from a CDN, and these machines are offline.
        kaleido.write_fig_from_object_sync(specs, kopts={"path": find_browser(), "mathjax": False})
        written = []
        for name in figures:
            target = out / f"{name}.png"
            os.replace(Path(tmp) / f"{name}.png", target)
            written.append(target)
    return written


# -- HTML -----------------------------------------------------------------------------


def _profile_rows(profiles: Sequence[Profile]) -> list[list[str]]:
    rows = []
    for name, p in zip(analysis.stage_names(profiles), profiles):
        meta = p.metadata
        rows.append(
            [
                name,
                str(meta.get("model", "")),
                str(meta.get("layer", "")),
                f"{p.n_neurons:,}",
                f"{p.tokens:,}",
                p.mode + (f" (k={p.k})" if p.mode == "topk" else ""),
                ", ".join(f"{k} ({p.vocab_size(k):,})" for k in p.kinds),
            ]
        )
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    return str(value)


def _summary_rows(profiles: Sequence[Profile], kind: str) -> tuple[list[str], list[list[str]]]:
    """Per consecutive pair: state counts and Hellinger (same layer), else nearest-neuron distances."""
    if len(profiles) < 2:
        return [], []
    if _same_layer(profiles, kind):
        table = analysis.timeline(profiles, kind)
        head = ["stage A", "stage B", "shared", "avoided", "gained", "dead", "mean Hellinger", "median Hellinger"]
        cols = ["stage_a", "stage_b", "shared", "avoided", "gained", "dead", "mean_hellinger", "median_hellinger"]
        return head, [[_fmt(v) for v in row] for row in zip(*(table.column(c).to_pylist() for c in cols))]
    names = analysis.stage_names(profiles)
    head = ["stage A", "stage B", "neurons A", "neurons B", "mean nearest Hellinger", "mean matched Hellinger"]
    rows = []
    for i, (a, b) in enumerate(zip(profiles, profiles[1:])):
        near = nearest(a, b, kind, k=1).column("hellinger").to_numpy()
        pairs = match(a, b, kind).column("hellinger").to_numpy()
        means = [float(x.mean()) if len(x) else None for x in (near, pairs)]
        rows.append([names[i], names[i + 1], _fmt(a.n_neurons), _fmt(b.n_neurons)] + [_fmt(m) for m in means])
    return head, rows


def _neuron_data(profiles: Sequence[Profile], kind: str, top: int) -> list[dict[str, Any]]:
    """The searchable table's data: one dataset per consecutive pair (same layer), else per profile."""
    names = analysis.stage_names(profiles)
    if len(profiles) >= 2 and _same_layer(profiles, kind):
        sets = []
        for i, (a, b) in enumerate(zip(profiles, profiles[1:])):
            table = analysis.neuron_overview(a, b, kind, top)
            cols = ["neuron", "state", "hellinger", "length_a", "length_b", "mass_a", "mass_b", "top_a", "top_b"]
            rows = [list(r) for r in zip(*(table.column(c).to_pylist() for c in cols))]
            head = [
                "neuron",
                "state",
                "Hellinger",
                f"length {names[i]}",
                f"length {names[i + 1]}",
                f"mass {names[i]}",
                f"mass {names[i + 1]}",
                f"top {names[i]}",
                f"top {names[i + 1]}",
            ]
            sets.append({"label": f"{names[i]} → {names[i + 1]}", "columns": head, "rows": rows})
        return sets
    sets = []
    for name, p in zip(names, profiles):
        labels = analysis.top_feature_labels(p, kind, top)
        columns = zip(p.lengths(kind).tolist(), p.mass().tolist(), labels)
        rows = [[n, length, mass, label] for n, (length, mass, label) in enumerate(columns)]
        sets.append({"label": name, "columns": ["neuron", "length", "mass", "top features"], "rows": rows})
    return sets


def _table_html(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table class='summary'><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _json_script(element_id: str, value: Any) -> str:
    # "</" would end the script element early; JSON allows escaping the slash.
    text = json.dumps(value, allow_nan=False, default=_json_default).replace("</", "<\\/")
    return f"<script type='application/json' id='{element_id}'>{text}</script>"


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot put {type(value).__name__} in the report")


def _clean_nan(sets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """NaN is not JSON: the table shows missing values as empty cells."""
    for s in sets:
        s["rows"] = [[None if isinstance(v, float) and v != v else v for v in row] for row in s["rows"]]
    return sets


def render_html(
    profiles: Sequence[Profile],
    figures: Mapping[str, go.Figure],
    kind: str = "token",
    top: int = 5,
    title: str | None = None,
) -> str:
    """The report page as one HTML string (see :func:`write_report`)."""
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    profiles = list(profiles)
    title = title or "txray report: " + ", ".join(analysis.stage_names(profiles))
    summary_head, summary_rows = _summary_rows(profiles, kind)
    sections = []
    for name, fig in figures.items():
        heading, caption = FIGURES[name]
        div = pio.to_html(
            fig,
            full_html=False,
            include_plotlyjs=False,
            div_id=f"fig-{name}",
            config={"responsive": True, "displaylogo": False},
        )
        sections.append(
            f"<section class='figure' id='{name}'><h2>{html.escape(heading)}</h2>"
            f"<p class='caption'>{html.escape(caption)}</p>{div}</section>"
        )
    toc = "".join(f"<li><a href='#{n}'>{html.escape(FIGURES[n][0])}</a></li>" for n in figures)
    summary = (
        f"<h3>Comparisons ({html.escape(kind)})</h3>" + _table_html(summary_head, summary_rows) if summary_rows else ""
    )
    return _PAGE.format(
        title=html.escape(title),
        version=html.escape(__version__),
        plotlyjs=get_plotlyjs(),
        profiles=_table_html(
            ["profile", "model", "layer", "neurons", "tokens", "mode", "feature kinds"], _profile_rows(profiles)
        ),
        summary=summary,
        toc=toc,
        figures="\n".join(sections),
        neuron_data=_json_script("neuron-data", _clean_nan(_neuron_data(profiles, kind, top))),
        kind=html.escape(kind),
    )


def write_report(
    profiles: Sequence[Profile],
    path: str | os.PathLike,
    kind: str = "token",
    pos_kind: str | None = "pos",
    k: int = 5,
    top: int = 10,
    title: str | None = None,
    token_pos: Mapping[str, str] | None = None,
    png_dir: str | os.PathLike | None = None,
) -> Report:
    """Write the HTML report of these profiles (stages in order) to ``path``.

    It holds the profiles and their comparison summary, every figure of
    :func:`report_figures` that applies, and a searchable table of neurons.
    ``k``: neurons per most/least changed figure; ``top``: features shown per
    neuron. With ``png_dir``, each figure is also written there as PNG when
    kaleido and a Chromium are available (otherwise a warning says why and
    ``Report.png_skipped`` holds the reason). The file is written to a
    temporary name and renamed.
    """
    profiles = list(profiles)
    figures = report_figures(profiles, kind, pos_kind, k, top, token_pos)
    page = render_html(profiles, figures, kind, min(top, 5), title)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    result = Report(html=target, figures=list(figures), png=[])
    if png_dir is not None:
        result.png_skipped = png_unavailable()
        if result.png_skipped:
            warnings.warn(f"no PNG export: {result.png_skipped}", RuntimeWarning, stacklevel=2)
        else:
            result.png = export_png(figures, png_dir)
    return result


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<script>
// Collect script errors where a reader (and the page test) can see them.
window.txrayErrors = [];
function txrayShowErrors() {{
  var box = document.getElementById("txray-errors");
  if (!box) return;
  document.body.setAttribute("data-js-errors", String(window.txrayErrors.length));
  if (window.txrayErrors.length) {{ box.hidden = false; box.textContent = "Script errors:\\n" + window.txrayErrors.join("\\n"); }}
}}
window.addEventListener("error", function (e) {{ window.txrayErrors.push(String(e.message)); txrayShowErrors(); }});
window.addEventListener("unhandledrejection", function (e) {{ window.txrayErrors.push(String(e.reason)); txrayShowErrors(); }});
</script>
<script>{plotlyjs}</script>
<style>
body {{ font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1400px; padding: 1em 2em; color: #222; }}
h1 {{ font-size: 1.6em; }} h2 {{ margin-top: 2em; border-bottom: 1px solid #ddd; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ddd; padding: 3px 8px; text-align: left; }}
th {{ background: #f4f4f4; }} .caption {{ color: #555; max-width: 70em; }}
#txray-errors {{ background: #fdd; padding: 1em; }}
#neuron-table th {{ cursor: pointer; }} #neuron-table td {{ max-width: 28em; overflow-wrap: anywhere; }}
#neuron-table td:not(:nth-last-child(-n+2)) {{ white-space: nowrap; }}
.controls {{ margin: 0.5em 0; }} .controls input {{ width: 24em; }}
</style></head>
<body>
<pre id="txray-errors" hidden></pre>
<h1>{title}</h1>
<p>Written by txray {version}. Feature kind compared: <b>{kind}</b>.</p>
<h2>Summary</h2>
<h3>Profiles</h3>
{profiles}
{summary}
<h3>Figures</h3><ul>{toc}<li><a href="#neurons">Neuron table</a></li></ul>
{figures}
<section id="neurons"><h2>Neurons</h2>
<p class="caption">Every neuron with its state, Hellinger distance, lengths, activation mass and top features.
Type to filter (e.g. a neuron id, a state, a feature); click a column to sort.</p>
<div class="controls"><select id="neuron-set"></select>
<input id="neuron-search" type="search" placeholder="filter: neuron id, state or feature">
<span id="neuron-count"></span></div>
<table id="neuron-table"><thead></thead><tbody></tbody></table>
</section>
{neuron_data}
<script>
(function () {{
  var sets = JSON.parse(document.getElementById("neuron-data").textContent);
  var select = document.getElementById("neuron-set"), search = document.getElementById("neuron-search");
  var table = document.getElementById("neuron-table"), count = document.getElementById("neuron-count");
  var LIMIT = 500, sortCol = 0, sortDir = 1;
  sets.forEach(function (s, i) {{ var o = document.createElement("option"); o.value = i; o.textContent = s.label; select.appendChild(o); }});
  function cell(v) {{ return v === null ? "" : (typeof v === "number" && !Number.isInteger(v) ? v.toFixed(4) : String(v)); }}
  function render() {{
    var set = sets[select.value || 0], q = search.value.trim().toLowerCase();
    table.tHead.innerHTML = "<tr>" + set.columns.map(function (c, i) {{
      return "<th data-col='" + i + "'>" + c.replace(/</g, "&lt;") + (i === sortCol ? (sortDir > 0 ? " ▲" : " ▼") : "") + "</th>"; }}).join("") + "</tr>";
    var rows = set.rows.filter(function (r) {{ return !q || r.some(function (v) {{ return cell(v).toLowerCase().indexOf(q) >= 0; }}); }});
    rows.sort(function (a, b) {{ var x = a[sortCol], y = b[sortCol];
      if (x === y) return 0; if (x === null) return 1; if (y === null) return -1; return (x < y ? -1 : 1) * sortDir; }});
    var body = document.createElement("tbody");
    rows.slice(0, LIMIT).forEach(function (r) {{ var tr = body.insertRow();
      r.forEach(function (v) {{ tr.insertCell().textContent = cell(v); }}); }});
    table.replaceChild(body, table.tBodies[0]);
    count.textContent = rows.length + " of " + set.rows.length + " neurons" + (rows.length > LIMIT ? " (first " + LIMIT + " shown)" : "");
  }}
  table.tHead.addEventListener("click", function (e) {{ var c = e.target.getAttribute("data-col"); if (c === null) return;
    c = Number(c); sortDir = c === sortCol ? -sortDir : 1; sortCol = c; render(); }});
  select.addEventListener("change", render); search.addEventListener("input", render);
  render();
}})();
window.addEventListener("load", txrayShowErrors);
</script>
</body></html>
"""
