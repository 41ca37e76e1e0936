"""Every figure builds on small recorded profiles and on 10,000 synthetic neurons."""

from __future__ import annotations

import pytest

pytest.importorskip("plotly")

import stages as st  # noqa: E402

import txray  # noqa: E402
from txray import plots  # noqa: E402


@pytest.fixture(scope="module")
def small():
    return st.recorded_stages()


@pytest.fixture(scope="module")
def large():
    return [st.synthetic_profile(seed=i, name=f"checkpoint {i}") for i in range(3)]


def trace_types(fig) -> set[str]:
    return {type(t).__name__ for t in fig.data}


def axis_titles(fig) -> list[str]:
    """Titles of every x and y axis that shows tick labels (a shared axis hidden under its twin needs none)."""
    layout = fig.layout
    axes = [getattr(layout, k) for k in layout if k.startswith(("xaxis", "yaxis"))]
    return [ax.title.text for ax in axes if ax.showticklabels is not False]


def assert_labelled(fig):
    titles = axis_titles(fig)
    assert titles and all(t and any(c.isalpha() for c in t) for t in titles), titles


FIGURES = {
    "hellinger_length": lambda ps: plots.hellinger_length(ps),
    "length_shift_token": lambda ps: plots.length_shift(ps, "token"),
    "length_shift_pos": lambda ps: plots.length_shift(ps, "pos"),
    "feature_mass": lambda ps: plots.feature_mass(ps, "pos"),
    "mass_curve": lambda ps: plots.mass_curve(ps),
    "most_changed": lambda ps: plots.changed_neuron_detail(ps, k=3, which="most"),
    "least_changed": lambda ps: plots.changed_neuron_detail(ps, k=3, which="least"),
    "timeline": lambda ps: plots.timeline(ps),
    "nearest": lambda ps: plots.nearest_view(ps[0], ps[-1]),
}
SCATTERS = {"hellinger_length", "length_shift_token", "length_shift_pos", "mass_curve"}


@pytest.mark.parametrize("name", FIGURES)
def test_small_figures(small, name):
    fig = FIGURES[name](small)
    assert fig.data and fig.layout.title.text
    assert_labelled(fig)
    if name in SCATTERS:
        assert trace_types(fig) == {"Scatter"}  # few points: SVG


@pytest.mark.parametrize("name", FIGURES)
def test_figures_with_10000_neurons(large, name):
    fig = FIGURES[name](large)
    assert_labelled(fig)
    if name in SCATTERS - {"length_shift_token", "length_shift_pos"}:
        assert trace_types(fig) == {"Scattergl"}
    if name.startswith("length_shift"):  # lines alone, one SVG path each: no WebGL, no marker per neuron
        assert trace_types(fig) == {"Scatter"} and {t.mode for t in fig.data} == {"lines"}
    if name == "nearest":
        assert "Scattergl" in trace_types(fig) and "Histogram" in trace_types(fig)


def test_hellinger_length_hover_has_neuron_lengths_and_features(small):
    fig = plots.hellinger_length(small[:2])
    trace = fig.data[0]
    assert trace.mode == "markers" and fig.layout.xaxis.type in ("log", "linear")  # see log_axis
    assert "neuron %{customdata[0]}" in trace.hovertemplate
    neuron, la, lb, top_a, top_b = trace.customdata[0]
    assert isinstance(top_a, str) and top_a.startswith("w") and la >= 1 and lb >= 1
    assert len(trace.x) == int((small[0].preferred("token") & small[1].preferred("token")).sum())


def test_length_shift_colours_and_segments(small):
    fig = plots.length_shift(small, "token")
    names = [t.name.split(" ")[0] for t in fig.data]
    assert names == ["longer", "shorter", "unchanged"]
    assert fig.data[0].line.color == plots.CHANGE_STYLE["longer"]["color"]
    assert fig.data[2].line.dash == "dot"
    # Each neuron's segment is (stage, stage + 1, gap).
    x = list(fig.data[0].x)
    assert all(x[i + 1] == x[i] + 1 and x[i + 2] is None for i in range(0, len(x), 3))
    assert list(fig.layout.xaxis.ticktext) == ["epoch 1", "epoch 2", "epoch 3"]


def test_feature_mass_bars(small):
    fig = plots.feature_mass(small, "pos")
    assert [t.name for t in fig.data][:2] == ["corpus frequency", "activation mass: epoch 1"]
    assert len(fig.data) == 4  # one corpus: one frequency series, then a mass series per profile
    assert sum(fig.data[0].y) == pytest.approx(100)


def test_neuron_detail_groups_tokens_by_pos(small):
    fig = plots.neuron_detail(small, [0, 4], token_pos=st.token_pos(20), top=4)
    token_bars = [t for t in fig.data if t.yaxis == "y"]
    assert token_bars[0].orientation == "h"  # horizontal bars: feature labels never collide
    tags, tokens = token_bars[0].y
    assert all(st.token_pos(20)[tok] == tag for tag, tok in zip(tags, tokens))
    # Tags are contiguous: tokens of one tag sit together.
    runs = [t for i, t in enumerate(tags) if i == 0 or tags[i - 1] != t]
    assert len(runs) == len(set(tags))
    assert len(token_bars) == 3  # one bar series per stage
    plain = plots.neuron_detail(small, [0], pos_kind=None)
    assert {t.yaxis for t in plain.data} == {"y"}
    with pytest.raises(ValueError, match="at least one neuron"):
        plots.neuron_detail(small, [])


def test_changed_detail_titles_name_hellinger(small):
    fig = plots.changed_neuron_detail(small, k=2, which="most")
    titles = [a.text for a in fig.layout.annotations]
    assert titles[0].startswith("neuron ") and "H = " in titles[0]
    with pytest.raises(ValueError, match="which"):
        plots.changed_neuron_detail(small, which="middle")


def test_nearest_view_between_different_widths():
    a = st.recorded_stages(n_stages=1, n_neurons=12)[0]
    b = st.recorded_stages(n_stages=1, n_neurons=30, seed=4)[0]
    fig = plots.nearest_view(a, b)
    points = [t for t in fig.data if getattr(t, "mode", None) == "markers"]
    assert sum(len(t.x) for t in points) == int(a.preferred("token").sum())  # every matched neuron of A
    # Two models: the matched distance against the nearest one, never below it.
    assert all(y >= x - 1e-12 for t in points for x, y in zip(t.x, t.y))
    assert fig.layout.xaxis.title.text == "Hellinger to the nearest neuron of epoch 1 (2)"


def test_nearest_view_of_one_layer_plots_matched_against_same_index(small):
    a, b = small[0], small[-1]
    fig = plots.nearest_view(a, b)
    assert fig.layout.xaxis.title.text == "Hellinger to the same neuron of epoch 3"
    h = txray.compare(a, b).column("hellinger").to_pylist()
    pairs = {r["neuron_a"]: r for r in txray.match(a, b).to_pylist()}
    for trace in (t for t in fig.data if getattr(t, "mode", None) == "markers"):
        for x, y, (na, nb) in zip(trace.x, trace.y, trace.customdata):
            assert (
                x == pytest.approx(h[na]) and y == pytest.approx(pairs[na]["hellinger"]) and pairs[na]["neuron_b"] == nb
            )
            assert (na == nb) == trace.name.startswith("matched to itself")
    # A layer against itself: every neuron matched to itself at distance 0, on the diagonal.
    same = plots.nearest_view(a, a)
    itself = [t for t in same.data if getattr(t, "mode", None) == "markers" and t.name.startswith("matched to itself")][
        0
    ]
    assert len(itself.x) == int(a.preferred("token").sum()) and max(itself.y) == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize(
    ("smallest", "largest", "ticks"),
    [
        (1, 150, [1, 2, 5, 10, 20, 50, 100, 200]),
        (1, 5000, [1, 10, 100, 1000]),
        (5, 22, [4, 5, 6, 7, 8, 9, 10, 20, 30]),  # within a decade: every step, so that ticks show
    ],
)
def test_log_axis_ticks_are_round_and_written_out(smallest, largest, ticks):
    axis = plots.log_axis(largest, smallest)
    assert axis["type"] == "log" and axis["tickvals"] == ticks
    assert axis["ticktext"] == [f"{t:,}" for t in ticks]  # "1,000", never plotly's bare "2 5" of each decade


def test_log_axes_of_figures_use_tidy_ticks(small):
    for axis in (plots.hellinger_length(small).layout.xaxis, plots.length_shift(small).layout.yaxis):
        if axis.type == "log":
            assert len(axis.tickvals) >= 3 and list(axis.ticktext) == [f"{v:,}" for v in axis.tickvals]
        else:
            assert axis.type == "linear" and axis.tickvals is None  # lengths within a factor of 4
    assert plots.log_axis(30, 17) == {"type": "linear"}


def test_display_label_makes_mojibake_and_blanks_visible():
    from txray.analysis import display_label

    assert display_label("\ufffd") == "\\ufffd" and display_label("ab\ufffd") == "ab\\ufffd"
    assert display_label(" ") == "␣" and display_label("\t") == "\\t" and display_label("") == "(empty)"
    assert display_label("naïve") == "naïve" and display_label("a b") == "a b"
