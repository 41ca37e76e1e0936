"""One HTML report of several profiles (figures and the neuron browser), and PNG export of its figures.

    txray.write_report([epoch1, epoch48, epoch49], "report.html", png_dir="figures/")

The HTML file works offline, also from ``file://``: the figures and the
neuron browser's data are embedded, and plotly.js is one shared file beside
the reports of a folder (``plotly-cartesian-VERSION.min.js``, the cartesian
bundle txray ships, when every figure is cartesian, else the full
``plotly-VERSION.min.js``), or inlined on request.
The page is rendered from the package's Jinja2 templates. PNG export needs
kaleido and a Chrome or Chromium (``BROWSER_PATH``, or ``chromium`` on the
PATH); txray never downloads a browser.
"""

from __future__ import annotations

import dataclasses
import functools
import html
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import analysis, browser
from ._templates import asset, packed_json
from ._version import __version__
from .compare import compare, match, nearest
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
    "length_shift": (
        "Length shift: {kind}",
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
        "Each neuron of the first profile paired one-to-one with a neuron of the last (any two layers or "
        "models): the distance to its partner against the distance to the same neuron (same layer) or to its "
        "nearest one (two models). On the diagonal a neuron kept its preferences' place; below it another "
        "neuron took them over. Right: how far nearest and matched neurons are.",
    ),
}
"""Every figure the report can hold, in report order ({kind}: the compared kind, e.g. "tokens")."""

PLOTLY_JS_MODES = ("folder", "inline")
"""Where a report's plotly.js lives: one shared file in the report's folder, or inlined in the page."""


@dataclasses.dataclass
class Report:
    """What :func:`write_report` wrote."""

    html: Path
    figures: list[str]
    png: list[Path]
    png_skipped: str | None = None  # why no PNGs were written, when they were asked for
    plotly_js: Path | None = None  # the shared plotly.js the page loads (None: inlined)


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
        builders["length_shift"] = lambda: plots.length_shift(profiles, kind)
        if pos is not None and pos != kind:
            builders["length_shift_pos"] = functools.partial(plots.length_shift, profiles, pos)
    if pos is not None:
        builders["feature_mass"] = functools.partial(plots.feature_mass, profiles, pos)
    builders["mass_curve"] = lambda: plots.mass_curve(profiles)
    if paired:
        changed = analysis.changed_neurons(compare(profiles[0], profiles[1], kind), k)
        detail = functools.partial(
            plots.changed_neuron_detail, profiles, k=k, kind=kind, pos_kind=pos, top=top, token_pos=token_pos
        )
        for which in ("most", "least"):
            if which in changed.column("group").to_pylist():
                builders[f"{which}_changed"] = functools.partial(detail, which=which)
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


PNG_TIMEOUT_S = 600
"""How long kaleido may take to render one figure before :func:`export_png` gives up."""


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
        # kaleido returns its errors (a figure over its time limit, a browser that failed) instead of
        # raising them; its default limit of 90 s per figure was too short on a loaded 2-core machine.
        errors = kaleido.write_fig_from_object_sync(
            specs, kopts={"path": find_browser(), "mathjax": False, "timeout": PNG_TIMEOUT_S}
        )
        missing = [name for name in figures if not (Path(tmp) / f"{name}.png").is_file()]
        if errors or missing:
            cause = f": {errors[0]!r}" if errors else ""
            raise RuntimeError(
                f"cannot export PNG: kaleido did not write {', '.join(missing) or 'every figure'}{cause}"
            )
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


def _table_html(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table class='summary'><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


CARTESIAN_TRACES = frozenset(
    ["bar", "box", "contour", "heatmap", "histogram", "histogram2d", "histogram2dcontour", "image", "pie"]
    + ["scatter", "scatterternary", "violin"]
)
"""Trace types of plotly.js's cartesian bundle (a third of the full bundle, and a third of its start-up time)."""

_VENDOR = "vendor"  # txray/templates/vendor/: plotly.js-cartesian-dist-min from npm, MIT (plotly-LICENSE.txt)


def _cartesian_version() -> str | None:
    """The plotly.js version of the cartesian bundle txray ships, or None when it is not there."""
    from importlib import resources

    folder = resources.files("txray").joinpath("templates").joinpath(_VENDOR)
    for entry in folder.iterdir() if folder.is_dir() else []:
        name = entry.name
        if name.startswith("plotly-cartesian-") and name.endswith(".min.js"):
            return name[len("plotly-cartesian-") : -len(".min.js")]
    return None


def plotly_bundle(figures: Mapping[str, go.Figure]) -> str:
    """Which plotly.js the page needs: ``"cartesian"`` when every trace is in :data:`CARTESIAN_TRACES`
    and txray's copy of that bundle is the version plotly for Python writes figures for, else ``"full"``."""
    from plotly.offline import get_plotlyjs_version

    types = {trace.type for fig in figures.values() for trace in fig.data}
    if types <= CARTESIAN_TRACES and _cartesian_version() == get_plotlyjs_version():
        return "cartesian"
    return "full"


def plotly_js_name(bundle: str = "full") -> str:
    """The shared plotly.js file's name, with the version plotly for Python ships:
    ``plotly-4.1.1.min.js``, or ``plotly-cartesian-4.1.1.min.js`` for the cartesian bundle."""
    from plotly.offline import get_plotlyjs_version

    return f"plotly-{'cartesian-' if bundle == 'cartesian' else ''}{get_plotlyjs_version()}.min.js"


def plotly_js_text(bundle: str = "full") -> str:
    """The text of plotly.js: the full bundle of plotly for Python, or txray's cartesian bundle."""
    from plotly.offline import get_plotlyjs

    if bundle == "cartesian":
        return asset(f"{_VENDOR}/{plotly_js_name('cartesian')}")
    return get_plotlyjs()


def write_plotly_js(directory: str | os.PathLike, bundle: str = "full") -> Path:
    """Write plotly.js into ``directory`` once, for every report there (kept when already there and the same)."""
    target = Path(directory) / plotly_js_name(bundle)
    text = plotly_js_text(bundle)
    if target.is_file() and target.stat().st_size == len(text.encode("utf-8")):
        return target
    _write_atomic(target, text)
    return target


def _write_atomic(target: Path, text: str) -> None:
    """Write to a temporary name beside ``target``, then rename: a reader never sees half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _figure_specs(figures: Mapping[str, go.Figure], kind: str) -> list[dict[str, Any]]:
    words = analysis.kind_words(kind)
    specs = []
    for name, fig in figures.items():
        heading, caption = FIGURES[name]
        specs.append(
            dict(
                name=name,
                heading=heading.format(kind=words),
                caption=caption,
                height=int(fig.layout.height or 450),
                data=packed_json(fig.to_json(validate=False)),  # plotly's encoder: NumPy arrays, NaN
            )
        )
    return specs


def render_html(
    profiles: Sequence[Profile],
    figures: Mapping[str, go.Figure],
    kind: str = "token",
    top: int = 10,
    title: str | None = None,
    plotly_src: str | None = None,
    contexts: int = browser.REPORT_CONTEXTS,
) -> str:
    """The report page as one HTML string (see :func:`write_report`).

    ``plotly_src``: the relative URL of a shared plotly.js; None inlines the
    bundle that :func:`plotly_bundle` chooses.
    """
    from ._templates import environment

    profiles = list(profiles)
    title = title or "txray report: " + ", ".join(analysis.stage_names(profiles))
    summary_head, summary_rows = _summary_rows(profiles, kind)
    document = browser.browser_document(profiles, kind, top=top, contexts=contexts)
    return (
        environment()
        .get_template("report.html.j2")
        .render(
            title=title,
            version=__version__,
            kind=kind,
            plotly_src=plotly_src,
            plotly_inline=None if plotly_src else plotly_js_text(plotly_bundle(figures)),
            report_css=asset("report.css"),
            report_js=asset("report.js"),
            browser_css=asset("browser.css"),
            profiles_table=_table_html(
                ["profile", "model", "layer", "neurons", "tokens", "mode", "feature kinds"], _profile_rows(profiles)
            ),
            summary_table=_table_html(summary_head, summary_rows) if summary_rows else "",
            figures=_figure_specs(figures, kind),
            browser=browser.render_browser(document),
        )
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
    plotly_js: str = "folder",
    contexts: int = browser.REPORT_CONTEXTS,
) -> Report:
    """Write the HTML report of these profiles (stages in order) to ``path``.

    It holds the profiles and their comparison summary, every figure of
    :func:`report_figures` that applies, and the neuron browser (every
    neuron, sortable and filterable, a page per neuron: ``report.html#neuron=17``).
    ``k``: neurons per most/least changed figure; ``top``: features shown per
    neuron; ``contexts``: top activating contexts per neuron and stage, when
    the profiles hold them. ``plotly_js="folder"`` writes plotly.js once
    beside the report (:func:`plotly_js_name` of :func:`plotly_bundle`, shared by every report in
    the folder), ``"inline"`` puts it in the page. With ``png_dir``, each
    figure is also written there as PNG when kaleido and a Chromium are
    available (otherwise a warning says why and ``Report.png_skipped`` holds
    the reason). The file is written to a temporary name and renamed.
    """
    if plotly_js not in PLOTLY_JS_MODES:
        raise ValueError(f"plotly_js must be one of {PLOTLY_JS_MODES}, not {plotly_js!r}")
    profiles = list(profiles)
    figures = report_figures(profiles, kind, pos_kind, k, top, token_pos)
    target = Path(path)
    bundle = plotly_bundle(figures)
    page = render_html(
        profiles, figures, kind, top, title, plotly_js_name(bundle) if plotly_js == "folder" else None, contexts
    )
    shared = write_plotly_js(target.parent, bundle) if plotly_js == "folder" else None
    _write_atomic(target, page)
    result = Report(html=target, figures=list(figures), png=[], plotly_js=shared)
    if png_dir is not None:
        result.png_skipped = png_unavailable()
        if result.png_skipped:
            warnings.warn(f"no PNG export: {result.png_skipped}", RuntimeWarning, stacklevel=2)
        else:
            result.png = export_png(figures, png_dir)
    return result
