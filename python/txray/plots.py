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

WEBGL_THRESHOLD = 1000
"""Scatter traces with more points than this are drawn with WebGL."""

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


def _kind_words(kind: str) -> str:
    """How a feature kind reads on an axis."""
    return {"token": "tokens", "pos": "part-of-speech tags", "label": "labels"}.get(kind, f"{kind} features")


def _col(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy(zero_copy_only=False)


# -- overview -----------------------------------------------------------------


def hellinger_length(profiles: Sequence[Profile], kind: str = "token", top: int = 3) -> go.Figure:
    """Hellinger distance versus Hellinger length of shared neurons (paper figs 4, 6, 8).

    One trace per consecutive pair of profiles. Hover shows the neuron id,
    its lengths in both stages and its ``top`` features in each.
    """
    profiles = list(profiles)
    names = analysis.stage_names(profiles)
    fig = go.Figure()
    for i, (a, b) in enumerate(zip(profiles, profiles[1:])):
        table = analysis.neuron_overview(a, b, kind, top)
        h = _col(table, "hellinger").astype(np.float64)
        rows = np.flatnonzero(~np.isnan(h))
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
                hovertemplate=(
                    "neuron %{customdata[0]}<br>Hellinger %{y:.3f}, Hellinger length %{x}<br>"
                    f"length {names[i]}: %{{customdata[1]}}, {names[i + 1]}: %{{customdata[2]}}<br>"
                    f"{names[i]}: %{{customdata[3]}}<br>{names[i + 1]}: %{{customdata[4]}}<extra></extra>"
                ),
            )
        )
    fig.update_layout(
        template=TEMPLATE,
        title=f"Knowledge change of shared neurons ({_kind_words(kind)})",
        legend_title_text="stages compared",
    )
    fig.update_xaxes(title_text="Hellinger length (features preferred in either stage)", type="log")
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
    for label, style in CHANGE_STYLE.items():
        parts = [
            _segments(s, _col(shifts, "length_a")[m], _col(shifts, "length_b")[m], _col(shifts, "neuron")[m])
            for s in range(len(profiles) - 1)
            for m in [(step == s) & (change == label)]
        ]
        x, y, ids = (np.concatenate([p[j] for p in parts]) for j in range(3))
        count = int((change == label).sum())
        fig.add_trace(
            _scatter(
                len(x),
                x=x,
                y=y,
                customdata=ids,
                mode="lines+markers",
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
        title=f"Length shift of shared neurons ({_kind_words(kind)})",
        legend_title_text="length in the later stage",
    )
    fig.update_xaxes(
        title_text="stage",
        tickmode="array",
        tickvals=list(range(len(names))),
        ticktext=names,
        range=[-0.2, len(names) - 0.8],
    )
    fig.update_yaxes(title_text=f"neuron length (number of preferred {_kind_words(kind)})", type="log")
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
    x = np.asarray(analysis.feature_labels(table), dtype=object)[first][order]
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
    title = f"Corpus frequency vs activation mass ({_kind_words(kind)})"
    fig.update_layout(template=TEMPLATE, barmode="group", title=title)
    fig.update_xaxes(title_text=f"{_kind_words(kind)} (most frequent first)")
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
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
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
    fig.update_layout(template=TEMPLATE, title=f"Neuron states over checkpoints ({_kind_words(kind)})")
    fig.update_yaxes(title_text="neurons", row=1, col=1)
    fig.update_yaxes(title_text="Hellinger distance of shared neurons", row=2, col=1)
    fig.update_xaxes(title_text="checkpoints compared", row=2, col=1)
    return fig


def nearest_view(a: Profile, b: Profile, kind: str = "token", with_match: bool = True) -> go.Figure:
    """All-pairs nearest neurons between two layers (e.g. of two different models).

    Left: every preferred neuron of A against its nearest neuron of B,
    coloured by their Hellinger distance, and (``with_match``) the pairs of
    the one-to-one matching. Right: how far the nearest and the matched
    neurons are.
    """
    name_a, name_b = analysis.stage_names([a, b])
    near = nearest(a, b, kind, k=1)
    pairs = match(a, b, kind) if with_match else None
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.6, 0.4],
        subplot_titles=("nearest neuron of B per neuron of A", "distance to the nearest / matched neuron"),
    )
    dist = _col(near, "hellinger")
    fig.add_trace(
        _scatter(
            len(dist),
            x=_col(near, "neuron_a"),
            y=_col(near, "neuron_b"),
            mode="markers",
            name="nearest",
            marker=dict(
                size=5,
                color=dist,
                colorscale="Viridis",
                cmin=0,
                cmax=1,
                colorbar=dict(title="Hellinger", x=1.02, len=0.6, y=0.3),
            ),
            hovertemplate=(
                f"{name_a} neuron %{{x}} → {name_b} neuron %{{y}}<br>"
                "Hellinger %{marker.color:.3f}<extra>nearest</extra>"
            ),
        ),
        row=1,
        col=1,
    )
    fig.add_trace(go.Histogram(x=dist, name="nearest", nbinsx=40, marker_color="#440154", opacity=0.7), row=1, col=2)
    if pairs is not None:
        fig.add_trace(
            _scatter(
                pairs.num_rows,
                x=_col(pairs, "neuron_a"),
                y=_col(pairs, "neuron_b"),
                mode="markers",
                name="matched (one-to-one)",
                marker=dict(size=7, symbol="circle-open", color="#e76f51"),
                customdata=_col(pairs, "hellinger"),
                hovertemplate="matched: %{x} ↔ %{y}<br>Hellinger %{customdata:.3f}<extra></extra>",
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Histogram(x=_col(pairs, "hellinger"), name="matched", nbinsx=40, marker_color="#e76f51", opacity=0.7),
            row=1,
            col=2,
        )
    fig.update_layout(
        template=TEMPLATE,
        barmode="overlay",
        title=f"Nearest neurons: {name_a} vs {name_b} ({_kind_words(kind)})",
        legend=dict(orientation="h", y=-0.18),
    )
    fig.update_xaxes(title_text=f"neuron of A ({name_a})", row=1, col=1)
    fig.update_yaxes(title_text=f"neuron of B ({name_b})", row=1, col=1)
    fig.update_xaxes(title_text="Hellinger distance", range=[0, 1], row=1, col=2)
    fig.update_yaxes(title_text="neurons of A", row=1, col=2)
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
    """(x, per-stage rows) for one neuron; x is [POS, token] pairs when grouping by POS."""
    rows = _col(table, "neuron") == neuron
    sub = table.filter(pa.array(rows))
    labels = np.asarray(analysis.feature_labels(sub), dtype=object)
    stages = list(dict.fromkeys(sub.column("stage").to_pylist()))
    first = _col(sub, "stage") == stages[0]
    features = labels[first]
    per_stage = [_col(sub, "p")[_col(sub, "stage") == s] for s in stages]
    if token_pos is None:
        return list(features), list(zip(stages, per_stage))
    tags = np.asarray([token_pos.get(f, "?") for f in features], dtype=object)
    # Tokens grouped by tag (tags in order of their strongest token), then by p.
    peak = np.max(np.stack(per_stage), axis=0)
    tag_peak = {t: max(peak[tags == t]) for t in set(tags)}
    order = sorted(range(len(features)), key=lambda i: (-tag_peak[tags[i]], tags[i], -peak[i]))
    x = [list(tags[order]), list(features[order])]
    return x, [(s, p[order]) for s, p in zip(stages, per_stage)]


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
    distribution, with one bar colour per stage. With ``token_pos`` (a
    token -> POS tag mapping, or ``metadata["token_pos"]`` of a profile)
    the tokens are grouped under their tag on the axis.
    """
    profiles = list(profiles)
    neurons = [int(n) for n in neurons]
    if not neurons:
        raise ValueError("neuron_detail needs at least one neuron")
    kinds = [token_kind] + ([pos_kind] if pos_kind and all(pos_kind in p.kinds for p in profiles) else [])
    tables = [analysis.neuron_distributions(profiles, neurons, kind, top) for kind in kinds]
    mapping = _token_pos(profiles, token_pos)
    titles = list(titles) if titles is not None else [f"neuron {n}" for n in neurons]
    fig = make_subplots(
        rows=len(neurons),
        cols=len(kinds),
        column_widths=[0.7, 0.3][: len(kinds)] if len(kinds) == 2 else None,
        subplot_titles=[f"{t}: {_kind_words(k)}" for t in titles for k in kinds],
        vertical_spacing=min(0.3 / len(neurons), 0.08),
    )
    colors = ["#7f7f7f", "#e377c2", "#d62728", "#2ca02c", "#1f77b4", "#ff7f0e"]
    for r, n in enumerate(neurons, start=1):
        for c, (kind, table) in enumerate(zip(kinds, tables), start=1):
            x, series = _bars(table, n, mapping if kind == token_kind else None)
            for s, (stage, p) in enumerate(series):
                fig.add_trace(
                    go.Bar(
                        x=x,
                        y=p,
                        name=stage,
                        legendgroup=stage,
                        showlegend=(r == 1 and c == 1),
                        marker_color=colors[s % len(colors)],
                        hovertemplate=f"neuron {n}, {stage}<br>%{{x}}: p = %{{y:.3f}}<extra></extra>",
                    ),
                    row=r,
                    col=c,
                )
            fig.update_yaxes(title_text="preference p", row=r, col=c)
            grouped = " by POS" if kind == token_kind and mapping else ""
            fig.update_xaxes(title_text=_kind_words(kind) + grouped, row=r, col=c)
    height = max(360, 300 * len(neurons))
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
) -> go.Figure:
    """:func:`neuron_detail` of the k most (or least) changed neurons.

    Neurons are ranked by the Hellinger distance between the first two
    profiles (as the paper ranks epoch 1 vs 48 and shows epochs 1, 48, 49);
    every given profile is shown.
    """
    if which not in ("most", "least"):
        raise ValueError(f"which must be 'most' or 'least', not {which!r}")
    profiles = list(profiles)
    if len(profiles) < 2:
        raise ValueError("changed_neuron_detail needs at least two profiles")
    changed = analysis.changed_neurons(compare(profiles[0], profiles[1], kind), k)
    chosen = changed.filter(pc.equal(changed.column("group"), which))
    if chosen.num_rows == 0:
        raise ValueError("no neuron is preferred in both of the first two profiles")
    neurons = chosen.column("neuron").to_pylist()
    titles = [f"neuron {n} (H = {h:.3f})" for n, h in zip(neurons, chosen.column("hellinger").to_pylist())]
    fig = neuron_detail(profiles, neurons, kind, pos_kind, top, token_pos, titles)
    fig.update_layout(title=f"The {len(neurons)} {which} changed neurons")
    return fig
