"""The TX-Ray figures, each a function returning a ``plotly.graph_objects.Figure``.

Overview figures (find interesting neurons, model-level effects):
:func:`hellinger_length`, :func:`length_shift`, :func:`feature_mass`,
:func:`mass_curve`, :func:`timeline`, :func:`nearest_view`. Detail figures
(what chosen neurons prefer): :func:`neuron_detail`,
:func:`changed_neuron_detail`. The numbers come from :mod:`txray.analysis`.

Scatter figures switch to WebGL (``Scattergl``) above
:data:`WEBGL_THRESHOLD` points so that 10,000 neurons stay responsive.
Needs plotly (``pip install 'txray[report]'``); ``import txray`` does not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

try:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots
except ImportError as err:  # pragma: no cover - depends on the installation
    raise ImportError("txray.plots needs plotly: pip install 'txray[report]'") from err

from . import analysis
from .compare import compare, match, nearest
from .profile import Profile

WEBGL_THRESHOLD = 5000
"""Scatter traces with more points than this are drawn with WebGL (SVG draws the paper's 1,500
neurons sooner, WebGL stays responsive with 10,000)."""

CHANGE_STYLE = {
    # The paper's colours: longer blue, shorter red, unchanged black and dotted.
    "longer": dict(color="#1f5fbf", dash="solid"),
    "shorter": dict(color="#c0392b", dash="solid"),
    "unchanged": dict(color="#222222", dash="dot"),
}
STATE_COLORS = {"shared": "#2a9d8f", "avoided": "#c0392b", "gained": "#1f5fbf", "dead": "#888888"}
TEMPLATE = "plotly_white"


def _scatter(n_points: int, **kwargs: Any) -> go.Scatter | go.Scattergl:
    """A scatter trace, WebGL when there are many points."""
    return (go.Scattergl if n_points > WEBGL_THRESHOLD else go.Scatter)(**kwargs)


def _col(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy(zero_copy_only=False)


def log_axis(largest: float, smallest: float = 1) -> dict[str, Any]:
    """Settings of a log axis for values from ``smallest`` to ``largest``: a few round, written-out ticks.

    Plotly's default log ticks label every 2 and 5 of each decade ("2 5 10 2 5
    100"); here ticks are 1, 2, 5, 10, 20, ... up to 1,000 and powers of ten
    beyond, written out ("1,000"); values within one decade (5 to 22) get
    every 1 to 9 of it (5, 6, 7, 8, 9, 10, 20); values within a factor of 4
    (17 to 30) get a linear axis, where a log scale shows one tick or none.
    """
    top, bottom = max(float(largest), 1.0), max(float(smallest), 1.0)
    if top / bottom < 4:
        return dict(type="linear")
    decades = int(np.ceil(np.log10(top))) if top > 1 else 1
    if top / bottom < 10:
        steps: tuple[int, ...] = tuple(range(1, 10))
    else:
        steps = (1, 2, 5) if decades <= 3 else (1,)
    values = [m * 10**e for e in range(decades + 1) for m in steps if bottom / 1.5 <= m * 10**e <= top * 1.5]
    return dict(type="log", tickvals=values, ticktext=[f"{v:,}" for v in values], minor=dict(showgrid=False))


# -- overview -----------------------------------------------------------------


def hellinger_length(profiles: Sequence[Profile], kind: str = "token", top: int = 3) -> go.Figure:
    """Hellinger distance versus Hellinger length of shared neurons (paper figs 4, 6, 8).

    One trace per consecutive pair of profiles. Hover shows the neuron id,
    its lengths in both stages and its ``top`` features in each.
    """
    profiles = list(profiles)
    names = analysis.stage_names(profiles)
    fig = go.Figure()
    lengths: list[int] = []
    for i, (a, b) in enumerate(zip(profiles, profiles[1:])):
        table = analysis.neuron_overview(a, b, kind, top)
        h = _col(table, "hellinger").astype(np.float64)
        rows = np.flatnonzero(~np.isnan(h))
        lengths.extend(_col(table, "union_length")[rows].tolist())
        custom = np.stack(
            [_col(table, c)[rows].astype(object) for c in ("neuron", "length_a", "length_b", "top_a", "top_b")],
            axis=-1,
        )
        fig.add_trace(
            _scatter(
                len(rows),
                x=_col(table, "union_length")[rows],
                y=h[rows],
                mode="markers",
                name=f"{names[i]} → {names[i + 1]}",
                marker=dict(size=5, opacity=0.6),
                customdata=custom,
                meta=dict(neuron_from="customdata0"),  # the report opens the clicked neuron
                hovertemplate=(
                    "neuron %{customdata[0]}<br>Hellinger %{y:.3f}, Hellinger length %{x}<br>"
                    f"length {names[i]}: %{{customdata[1]}}, {names[i + 1]}: %{{customdata[2]}}<br>"
                    f"{names[i]}: %{{customdata[3]}}<br>{names[i + 1]}: %{{customdata[4]}}<extra></extra>"
                ),
            )
        )
    fig.update_layout(
        template=TEMPLATE,
        title=f"Knowledge change of shared neurons ({analysis.kind_words(kind)})",
        legend_title_text="stages compared",
    )
    fig.update_xaxes(
        title_text="Hellinger length (features preferred in either stage)",
        **log_axis(max(lengths, default=1), min(lengths, default=1)),
    )
    fig.update_yaxes(title_text="Hellinger distance (0 = same preferences, 1 = disjoint)", range=[0, 1.02])
    return fig


def _segments(
    step: int, la: np.ndarray, lb: np.ndarray, neurons: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, y, neuron arrays for line segments stage step -> step+1, separated by gaps."""
    n = len(la)
    x = np.empty(3 * n, dtype=object)
    y = np.empty(3 * n, dtype=object)
    ids = np.empty(3 * n, dtype=object)
    x[0::3], x[1::3], x[2::3] = step, step + 1, None
    y[0::3], y[1::3], y[2::3] = la, lb, None
    ids[0::3], ids[1::3], ids[2::3] = neurons, neurons, None
    return x, y, ids


def length_shift(profiles: Sequence[Profile], kind: str = "token") -> go.Figure:
    """Each shared neuron's distribution length in consecutive stages (paper figs 2, 10).

    A line per neuron from its length in stage i to stage i+1, coloured by
    whether it got longer (blue), shorter (red) or stayed unchanged (black,
    dotted). Neurons shortening specialise; lengthening ones generalise.
    """
    profiles = list(profiles)
    shifts = analysis.length_shift(profiles, kind)
    names = analysis.stage_names(profiles)
    step, change = _col(shifts, "step"), _col(shifts, "change")
    fig = go.Figure()
    # Markers while they are few; beyond, the lines alone: one SVG path however many neurons, and
    # the report keeps to plotly.js's smaller cartesian bundle (no WebGL).
    markers = 2 * len(step) <= WEBGL_THRESHOLD
    for label, style in CHANGE_STYLE.items():
        parts = [
            _segments(s, _col(shifts, "length_a")[m], _col(shifts, "length_b")[m], _col(shifts, "neuron")[m])
            for s in range(len(profiles) - 1)
            for m in [(step == s) & (change == label)]
        ]
        x, y, ids = (np.concatenate([p[j] for p in parts]) for j in range(3))
        count = int((change == label).sum())
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                customdata=ids,
                meta=dict(neuron_from="customdata"),
                mode="lines+markers" if markers else "lines",
                name=f"{label} ({count})",
                line=dict(color=style["color"], dash=style["dash"], width=1),
                marker=dict(size=4, color=style["color"]),
                opacity=0.5,
                connectgaps=False,
                hovertemplate="neuron %{customdata}<br>length %{y}<extra>" + label + "</extra>",
            )
        )
    fig.update_layout(
        template=TEMPLATE,
        title=f"Length shift of shared neurons ({analysis.kind_words(kind)})",
        legend_title_text="length in the later stage",
    )
    fig.update_xaxes(
        title_text="stage",
        tickmode="array",
        tickvals=list(range(len(names))),
        ticktext=names,
        range=[-0.2, len(names) - 0.8],
    )
    lengths = np.concatenate([_col(shifts, "length_a"), _col(shifts, "length_b"), [1]])
    axis = log_axis(lengths.max(), lengths[:-1].min() if len(lengths) > 1 else 1)
    fig.update_yaxes(title_text=f"neuron length (number of preferred {analysis.kind_words(kind)})", **axis)
    return fig


def feature_mass(profiles: Sequence[Profile], kind: str = "pos", max_features: int = 60) -> go.Figure:
    """Corpus frequency versus share of activation mass per feature (paper fig 3).

    Bars per feature (POS tag by default), most frequent first, at most
    ``max_features`` of them: the corpus frequency (black; one bar series per
    distinct corpus) beside each profile's share of activation mass.
    """
    profiles = list(profiles)
    table = analysis.feature_mass(profiles, kind)
    names = analysis.stage_names(profiles)
    label = _col(table, "profile")
    first = label == names[0]
    order = np.lexsort((_col(table, "feature")[first], -_col(table, "frequency")[first]))[:max_features]
    shown = _col(table, "feature")[first][order]
    x = np.asarray([analysis.display_label(f) for f in analysis.feature_labels(table)], dtype=object)[first][order]
    fig = go.Figure()
    seen_corpora: list[np.ndarray] = []
    for i, name in enumerate(names):
        rows = np.flatnonzero(label == name)[shown]
        freq = _col(table, "frequency")[rows]
        if not any(np.array_equal(freq, f) for f in seen_corpora):
            seen_corpora.append(freq)
            shade = ["#111111", "#555555", "#999999"][min(len(seen_corpora) - 1, 2)]
            fig.add_trace(
                go.Bar(
                    x=x,
                    y=100 * _col(table, "frequency_share")[rows].astype(np.float64),
                    name=f"corpus frequency ({name})" if i else "corpus frequency",
                    marker_color=shade,
                    hovertemplate="%{x}: %{y:.2f}% of tokens<extra></extra>",
                )
            )
        fig.add_trace(
            go.Bar(
                x=x,
                y=100 * _col(table, "mass_share")[rows].astype(np.float64),
                name=f"activation mass: {name}",
                hovertemplate="%{x}: %{y:.2f}% of activation mass<extra>" + name + "</extra>",
            )
        )
    title = f"Corpus frequency vs activation mass ({analysis.kind_words(kind)})"
    fig.update_layout(template=TEMPLATE, barmode="group", title=title)
    fig.update_xaxes(title_text=f"{analysis.kind_words(kind)} (most frequent first)")
    fig.update_yaxes(title_text="share of tokens or of activation mass (%)")
    return fig


def mass_curve(profiles: Sequence[Profile], log_y: bool = False) -> go.Figure:
    """Sorted activation mass per neuron for several profiles (paper fig 11).

    A high head and a short tail mean few neurons carry the activation:
    supervision sparsifies.
    """
    profiles = list(profiles)
    table = analysis.mass_curve(profiles)
    label = _col(table, "profile")
    fig = go.Figure()
    for name in analysis.stage_names(profiles):
        rows = label == name
        fig.add_trace(
            _scatter(
                int(rows.sum()),
                x=_col(table, "rank")[rows],
                y=100 * _col(table, "mass_share")[rows].astype(np.float64),
                customdata=_col(table, "neuron")[rows],
                meta=dict(neuron_from="customdata"),
                mode="lines",
                name=name,
                hovertemplate="rank %{x}: neuron %{customdata}<br>%{y:.3f}% of the mass<extra>" + name + "</extra>",
            )
        )
    fig.update_layout(template=TEMPLATE, title="Activation mass per neuron, sorted")
    fig.update_xaxes(title_text="neurons, sorted by activation mass (rank)")
    fig.update_yaxes(title_text="share of the layer's activation mass (%)", type="log" if log_y else "linear")
    return fig


def timeline(profiles: Sequence[Profile], kind: str = "token", reference: str = "previous") -> go.Figure:
    """Shared / avoided / gained neuron counts and mean Hellinger over many checkpoints.

    ``reference`` as in :func:`txray.analysis.timeline`: each checkpoint
    against the previous one, or against the first.
    """
    table = analysis.timeline(profiles, kind, reference)
    x = [f"{a} → {b}" for a, b in zip(table.column("stage_a").to_pylist(), table.column("stage_b").to_pylist())]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1, row_heights=[0.55, 0.45])
    for state in ("shared", "avoided", "gained"):
        fig.add_trace(
            go.Scatter(x=x, y=_col(table, state), name=state, mode="lines+markers", line_color=STATE_COLORS[state]),
            row=1,
            col=1,
        )
    for stat, dash in (("mean_hellinger", "solid"), ("median_hellinger", "dot")):
        fig.add_trace(
            go.Scatter(
                x=x,
                y=_col(table, stat).astype(np.float64),
                name=stat.replace("_", " "),
                mode="lines+markers",
                line=dict(color="#6a3d9a", dash=dash),
            ),
            row=2,
            col=1,
        )
    # Short axis titles: a long one on a short subplot runs into the other subplot's title.
    fig.update_layout(
        template=TEMPLATE, title=f"Neuron states over checkpoints ({analysis.kind_words(kind)})", height=560
    )
    fig.update_yaxes(title_text="neurons", row=1, col=1)
    fig.update_yaxes(title_text="Hellinger (shared)", range=[0, 1.02], row=2, col=1)
    # Half a category of room either side: the first label would otherwise run under the y-axis ticks.
    fig.update_xaxes(range=[-0.5, len(x) - 0.5])
    fig.update_xaxes(title_text="checkpoints compared", row=2, col=1)
    return fig


def nearest_view(a: Profile, b: Profile, kind: str = "token", with_match: bool = True) -> go.Figure:
    """How close the neurons of two layers (two stages, or two models) are to each other.

    Left: every neuron of A in the one-to-one matching (``with_match``; else
    its nearest neuron of B), the distance to its partner against the
    distance to the neuron of B with the same index (same widths only; two
    models get the nearest distance instead). On the diagonal a neuron kept
    its index; far below it another neuron of B took over its preferences.
    Right: histograms of the nearest and matched distances.
    """
    name_a, name_b = analysis.stage_names([a, b])
    near = nearest(a, b, kind, k=1)
    pairs = match(a, b, kind) if with_match else near.rename_columns(["neuron_a", "rank", "neuron_b", "hellinger"])
    same_width = a.n_neurons == b.n_neurons
    neuron_a, neuron_b, partner = _col(pairs, "neuron_a"), _col(pairs, "neuron_b"), _col(pairs, "hellinger")
    if same_width:
        same = compare(a, b, kind).column("hellinger").to_numpy(zero_copy_only=False).astype(np.float64)
        x = same[neuron_a]
        x_title = f"Hellinger to the same neuron of {name_b}"
    else:
        by_a = dict(zip(_col(near, "neuron_a").tolist(), _col(near, "hellinger").tolist()))
        x = np.asarray([by_a.get(n, np.nan) for n in neuron_a.tolist()], dtype=np.float64)
        x_title = f"Hellinger to the nearest neuron of {name_b}"
    shown = ~np.isnan(x)
    partner_word = "matched" if with_match else "nearest"
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.55, 0.45],
        horizontal_spacing=0.12,
        subplot_titles=(f"{partner_word} neuron vs {'same index' if same_width else 'nearest'}", "distances"),
    )
    fig.add_trace(
        go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color="#999999", dash="dot"), showlegend=False),
        row=1,
        col=1,
    )
    kept = neuron_a == neuron_b
    for label, rows, color in (
        (f"{partner_word} to itself", shown & kept, "#2a9d8f"),
        (f"{partner_word} to another neuron", shown & ~kept, "#e76f51"),
    ):
        fig.add_trace(
            _scatter(
                int(rows.sum()),
                x=x[rows],
                y=partner[rows],
                mode="markers",
                name=f"{label} ({int(rows.sum())})",
                marker=dict(size=5, opacity=0.6, color=color),
                customdata=np.stack([neuron_a[rows], neuron_b[rows]], axis=-1),
                hovertemplate=(
                    f"{name_a} neuron %{{customdata[0]}} → {name_b} neuron %{{customdata[1]}}<br>"
                    f"{partner_word} H %{{y:.3f}}, {'same index' if same_width else 'nearest'} H %{{x:.3f}}"
                    "<extra></extra>"
                ),
            ),
            row=1,
            col=1,
        )
    fig.add_trace(
        go.Histogram(x=_col(near, "hellinger"), name="nearest", nbinsx=40, marker_color="#440154", opacity=0.7),
        row=1,
        col=2,
    )
    if with_match:
        fig.add_trace(
            go.Histogram(x=partner, name="matched", nbinsx=40, marker_color="#e76f51", opacity=0.7), row=1, col=2
        )
    fig.update_layout(
        template=TEMPLATE,
        barmode="overlay",
        title=f"Nearest neurons: {name_a} vs {name_b} ({analysis.kind_words(kind)})",
        height=520,
    )
    fig.update_xaxes(title_text=x_title, range=[-0.05, 1.05], row=1, col=1)  # room between the two 0 ticks
    fig.update_yaxes(title_text=f"Hellinger to the {partner_word} neuron", range=[-0.05, 1.05], row=1, col=1)
    fig.update_xaxes(title_text="Hellinger distance", range=[-0.05, 1.05], row=1, col=2)
    fig.update_yaxes(title_text=f"neurons of {name_a}", row=1, col=2)
    return fig


# -- detail ---------------------------------------------------------------------


def _token_pos(profiles: Sequence[Profile], token_pos: Mapping[str, str] | None) -> Mapping[str, str] | None:
    """The token -> POS tag map: given, or from a profile's metadata["token_pos"]."""
    if token_pos is not None:
        return token_pos
    for p in profiles:
        found = p.metadata.get("token_pos")
        if isinstance(found, Mapping):
            return found
    return None


def _bars(table: pa.Table, neuron: int, token_pos: Mapping[str, str] | None) -> tuple[list, list]:
    """(labels, per-stage rows) for one neuron; labels are [POS, token] pairs when grouping by POS."""
    rows = _col(table, "neuron") == neuron
    sub = table.filter(pa.array(rows))
    labels = np.asarray([analysis.display_label(x) for x in analysis.feature_labels(sub)], dtype=object)
    stages = list(dict.fromkeys(sub.column("stage").to_pylist()))
    first = _col(sub, "stage") == stages[0]
    features = labels[first]
    per_stage = [_col(sub, "p")[_col(sub, "stage") == s] for s in stages]
    if token_pos is None:
        return list(features), list(zip(stages, per_stage))
    raw = np.asarray(analysis.feature_labels(sub), dtype=object)[first]
    tags = np.asarray([token_pos.get(f, "?") for f in raw], dtype=object)
    # Tokens grouped by tag (tags in order of their strongest token), then by p.
    peak = np.max(np.stack(per_stage), axis=0)
    tag_peak = {t: max(peak[tags == t]) for t in set(tags)}
    order = sorted(range(len(features)), key=lambda i: (-tag_peak[tags[i]], tags[i], -peak[i]))
    x = [list(tags[order]), list(features[order])]
    return x, [(s, p[order]) for s, p in zip(stages, per_stage)]


_DETAIL_ROW_PX = 18  # height of one bar group in the detail figures
_DETAIL_GAP_PX = 90  # room between rows for the x-axis title and the next subplot title


def neuron_detail(
    profiles: Sequence[Profile],
    neurons: Sequence[int],
    token_kind: str = "token",
    pos_kind: str | None = "pos",
    top: int = 10,
    token_pos: Mapping[str, str] | None = None,
    titles: Sequence[str] | None = None,
) -> go.Figure:
    """Preference distributions of chosen neurons, stages side by side (paper figs 5, 7, 9).

    One row per neuron: its token distribution (the union of each stage's
    ``top`` tokens) and, when the profiles have ``pos_kind``, its POS
    distribution, as horizontal bars (labels never collide) with one colour
    per stage. With ``token_pos`` (a token -> POS tag mapping, or
    ``metadata["token_pos"]`` of a profile) the tokens are grouped under
    their tag on the axis.
    """
    profiles = list(profiles)
    neurons = [int(n) for n in neurons]
    if not neurons:
        raise ValueError("neuron_detail needs at least one neuron")
    kinds = [token_kind] + ([pos_kind] if pos_kind and all(pos_kind in p.kinds for p in profiles) else [])
    tables = [analysis.neuron_distributions(profiles, neurons, kind, top) for kind in kinds]
    mapping = _token_pos(profiles, token_pos)
    titles = list(titles) if titles is not None else [f"neuron {n}" for n in neurons]
    bars = [
        [_bars(table, n, mapping if kind == token_kind else None) for kind, table in zip(kinds, tables)]
        for n in neurons
    ]
    # Each row as tall as its longest bar list, plus a fixed gap for titles: computed in pixels.
    row_px = [max(120, len(profiles) * _DETAIL_ROW_PX * max(len(b[1][0][1]) for b in row)) for row in bars]
    height = sum(row_px) + _DETAIL_GAP_PX * len(neurons) + 60
    fig = make_subplots(
        rows=len(neurons),
        cols=len(kinds),
        column_widths=[0.62, 0.38][: len(kinds)] if len(kinds) == 2 else None,
        row_heights=row_px,
        subplot_titles=[f"{t}: {analysis.kind_words(k)}" for t in titles for k in kinds],
        vertical_spacing=_DETAIL_GAP_PX / height,
        horizontal_spacing=0.16 if len(kinds) == 2 else 0.02,
    )
    colors = ["#7f7f7f", "#e377c2", "#d62728", "#2ca02c", "#1f77b4", "#ff7f0e"]
    for r, (n, row) in enumerate(zip(neurons, bars), start=1):
        for c, (kind, (labels, series)) in enumerate(zip(kinds, row), start=1):
            for s, (stage, p) in enumerate(series):
                fig.add_trace(
                    go.Bar(
                        y=labels,
                        x=p,
                        orientation="h",
                        name=stage,
                        legendgroup=stage,
                        showlegend=(r == 1 and c == 1),
                        marker_color=colors[s % len(colors)],
                        hovertemplate=f"neuron {n}, {stage}<br>%{{y}}: p = %{{x:.3f}}<extra></extra>",
                    ),
                    row=r,
                    col=c,
                )
            grouped = " by POS" if kind == token_kind and mapping else ""
            fig.update_yaxes(title_text=analysis.kind_words(kind) + grouped, autorange="reversed", row=r, col=c)
            fig.update_xaxes(title_text="preference p", row=r, col=c)
    fig.update_layout(template=TEMPLATE, barmode="group", height=height, legend_title_text="stage")
    return fig


def changed_neuron_detail(
    profiles: Sequence[Profile],
    k: int = 5,
    which: str = "most",
    kind: str = "token",
    pos_kind: str | None = "pos",
    top: int = 10,
    token_pos: Mapping[str, str] | None = None,
    min_length: int = analysis.LEAST_CHANGED_MIN_LENGTH,
) -> go.Figure:
    """:func:`neuron_detail` of the k most (or least) changed neurons.

    Neurons are ranked by the Hellinger distance between the first two
    profiles (as the paper ranks epoch 1 vs 48 and shows epochs 1, 48, 49),
    ties and trivial neurons handled as in :func:`txray.analysis.changed_neurons`
    (``min_length``); every given profile is shown.
    """
    if which not in ("most", "least"):
        raise ValueError(f"which must be 'most' or 'least', not {which!r}")
    profiles = list(profiles)
    if len(profiles) < 2:
        raise ValueError("changed_neuron_detail needs at least two profiles")
    changed = analysis.changed_neurons(compare(profiles[0], profiles[1], kind), k, min_length)
    chosen = changed.filter(pc.equal(changed.column("group"), which))
    if chosen.num_rows == 0:
        raise ValueError(
            "no neuron is preferred in both of the first two profiles"
            + (f" with at least {min_length} features in each" if which == "least" else "")
        )
    neurons = chosen.column("neuron").to_pylist()
    titles = [f"neuron {n} (H = {h:.3f})" for n, h in zip(neurons, chosen.column("hellinger").to_pylist())]
    fig = neuron_detail(profiles, neurons, kind, pos_kind, top, token_pos, titles)
    fig.update_layout(title=f"The {len(neurons)} {which} changed neurons")
    return fig
