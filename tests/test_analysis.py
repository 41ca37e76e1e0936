"""txray.analysis tables against hand computations from the plain NumPy reference."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import reference

import txray
from txray import analysis

SIZES = {"token": 10, "pos": 4}
N = 8


def stage(seed: int, shift: float = 0.0):
    """A recorded profile plus the reference's (P per kind, freq, mass) of the same activations."""
    rng = np.random.default_rng(100)  # the corpus is the same for every stage
    tokens = 150
    feats = {kind: rng.integers(0, size, tokens) for kind, size in SIZES.items()}
    base = rng.standard_normal((tokens, N))
    acts = (base + np.random.default_rng(seed).normal(0, 1.0, (tokens, N)) * shift + np.linspace(-2, 1, N)).astype(
        np.float32
    )
    rec = txray.Recorder(N, SIZES)
    rec.update(acts, feats)
    prof = rec.profile(name=f"s{seed}", feature_names={k: [f"{k}{i}" for i in range(s)] for k, s in SIZES.items()})
    count, total, freq, mass, _ = reference.record(acts, feats, SIZES)
    P = {k: reference.distribution(count[k], total[k]) for k in SIZES}
    return prof, {"P": P, "total": total, "freq": freq, "mass": mass}


@pytest.fixture(scope="module")
def stages():
    return [stage(s, shift) for s, shift in ((1, 0.0), (2, 0.8), (3, 1.2))]


def test_length_shift_matches_reference(stages):
    table = analysis.length_shift([p for p, _ in stages], "token")
    assert table.schema == analysis.LENGTH_SHIFT_SCHEMA
    rows = table.to_pylist()
    expected = []
    for step in range(2):
        la = (stages[step][1]["P"]["token"] > 0).sum(1)
        lb = (stages[step + 1][1]["P"]["token"] > 0).sum(1)
        for n in range(N):
            if la[n] and lb[n]:
                change = "longer" if lb[n] > la[n] else "shorter" if lb[n] < la[n] else "unchanged"
                expected.append((step, n, int(la[n]), int(lb[n]), change))
    assert len({e[-1] for e in expected}) >= 2  # the stages really differ
    assert [(r["step"], r["neuron"], r["length_a"], r["length_b"], r["change"]) for r in rows] == expected
    assert {(r["stage_a"], r["stage_b"]) for r in rows} <= {("s1", "s2"), ("s2", "s3")}


def test_feature_mass_matches_reference(stages):
    profiles = [p for p, _ in stages]
    table = analysis.feature_mass(profiles, "pos")
    assert table.schema == analysis.FEATURE_MASS_SCHEMA
    for prof, ref in stages:
        rows = [r for r in table.to_pylist() if r["profile"] == prof.name]
        tag_mass = ref["total"]["pos"].sum(axis=0)
        assert [r["feature_name"] for r in rows] == [f"pos{i}" for i in range(4)]
        np.testing.assert_array_equal([r["frequency"] for r in rows], ref["freq"]["pos"])
        np.testing.assert_allclose([r["frequency_share"] for r in rows], ref["freq"]["pos"] / ref["freq"]["pos"].sum())
        np.testing.assert_allclose([r["mass"] for r in rows], tag_mass)
        np.testing.assert_allclose([r["mass_share"] for r in rows], tag_mass / ref["mass"].sum())
        assert sum(r["mass_share"] for r in rows) == pytest.approx(1.0)


def test_mass_curve_sorted(stages):
    table = analysis.mass_curve([stages[0][0]])
    mass = stages[0][1]["mass"]
    order = sorted(range(N), key=lambda n: (-mass[n], n))
    assert table.column("neuron").to_pylist() == order
    assert table.column("rank").to_pylist() == list(range(1, N + 1))
    np.testing.assert_allclose(table.column("mass").to_numpy(), mass[order])
    np.testing.assert_allclose(table.column("mass_share").to_numpy(), mass[order] / mass.sum())


def test_top_features_and_labels(stages):
    prof, ref = stages[1]
    P = ref["P"]["token"]
    table = analysis.top_features(prof, "token", top=3)
    expected = []
    for n in range(N):
        best = sorted(np.flatnonzero(P[n] > 0), key=lambda f: (-P[n, f], f))[:3]
        expected += [(n, r + 1, int(f), f"token{f}") for r, f in enumerate(best)]
    assert [(r["neuron"], r["rank"], r["feature"], r["feature_name"]) for r in table.to_pylist()] == expected
    np.testing.assert_allclose(table.column("p").to_numpy(), [P[n, f] for n, _, f, _ in expected])
    labels = analysis.top_feature_labels(prof, "token", top=2)
    for n in range(N):
        best = sorted(np.flatnonzero(P[n] > 0), key=lambda f: (-P[n, f], f))[:2]
        assert labels[n] == ", ".join(f"token{f} {P[n, f]:.2f}" for f in best)
    only = analysis.top_features(prof, "token", top=1, neurons=[N - 1])
    assert set(only.column("neuron").to_pylist()) <= {N - 1}
    with pytest.raises(ValueError, match="out of range"):
        analysis.top_features(prof, "token", neurons=[N])


@pytest.mark.parametrize("top", [1, 2, 5, analysis.SELECT_TOP, analysis.SELECT_TOP + 1, 40])
def test_top_features_with_ties_both_paths(top):
    """The selection passes (top <= SELECT_TOP) and the sort agree with a brute force, ties included."""
    rng = np.random.default_rng(top)
    n_neurons, vocab = 30, 25
    key = np.unique(rng.integers(0, (n_neurons - 3) * vocab, 400))  # the last neurons stay unpreferred
    neuron, feature = (key // vocab).astype(np.int32), (key % vocab).astype(np.int32)
    count = rng.integers(1, 4, len(key))
    total = count * rng.integers(-1, 4, len(key)).astype(float)  # few values: many ties, some p = 0
    cells = txray.KindCells(neuron, feature, count, total, np.ones(vocab, np.int64))
    prof = txray.Profile(n_neurons, "max1", None, {"token": cells}, np.zeros(n_neurons), int(count.sum()))
    P = prof.distributions("token").to_scipy().toarray()
    for neurons in (None, [29, 3, 3, 0]):
        table = analysis.top_features(prof, "token", top=top, neurons=neurons)
        expected = []
        for n in range(n_neurons) if neurons is None else sorted(set(neurons)):
            best = sorted(np.flatnonzero(P[n] > 0), key=lambda f: (-P[n, f], f))[:top]
            expected += [(n, r + 1, int(f), P[n, f]) for r, f in enumerate(best)]
        assert [(r["neuron"], r["rank"], r["feature"], r["p"]) for r in table.to_pylist()] == expected


def test_changed_neurons(stages):
    a, b = stages[0][0], stages[2][0]
    cmp = txray.compare(a, b)
    table = analysis.changed_neurons(cmp, k=2)
    rows = {r["neuron"]: r for r in cmp.to_pylist() if r["hellinger"] is not None}

    def key(n):
        r = rows[n]
        return (-(r["mass_a"] + r["mass_b"]), -r["union_length"], n)

    most = sorted(rows, key=lambda n: (-rows[n]["hellinger"], *key(n)))[:2]
    eligible = [n for n in rows if min(rows[n]["length_a"], rows[n]["length_b"]) >= analysis.LEAST_CHANGED_MIN_LENGTH]
    least = sorted(eligible, key=lambda n: (rows[n]["hellinger"], *key(n)))[:2]
    assert table.column("group").to_pylist() == ["most"] * 2 + ["least"] * 2
    assert table.column("neuron").to_pylist() == most + least
    assert table.column("hellinger").to_pylist() == [rows[n]["hellinger"] for n in most + least]


def test_changed_neurons_break_ties_by_mass_and_skip_trivial_neurons():
    # Neurons 0-3 all moved completely (H = 1); 4 and 5 prefer one feature and did not move (H = 0).
    cmp = pa.table(
        {
            "neuron": pa.array([0, 1, 2, 3, 4, 5, 6], pa.int32()),
            "state": ["shared"] * 7,
            "length_a": pa.array([2, 2, 5, 2, 1, 1, 4], pa.int64()),
            "length_b": pa.array([2, 2, 5, 2, 1, 1, 3], pa.int64()),
            "union_length": pa.array([4, 4, 10, 4, 1, 1, 5], pa.int64()),
            "shared_length": pa.array([0, 0, 0, 0, 1, 1, 2], pa.int64()),
            "hellinger": [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.4],
            "mass_a": [1.0, 5.0, 1.0, 1.0, 9.0, 9.0, 1.0],
            "mass_b": [1.0, 5.0, 1.0, 1.0, 9.0, 9.0, 1.0],
        }
    )
    table = analysis.changed_neurons(cmp, k=3)
    most = table.filter(pc.equal(table.column("group"), "most")).column("neuron").to_pylist()
    least = table.filter(pc.equal(table.column("group"), "least")).column("neuron").to_pylist()
    assert most == [1, 2, 0]  # the most massive tie first, then the longer union, then the lower id
    assert least == [6, 2]  # neurons 4 and 5 (one feature, H = 0) say nothing, nor 0, 1, 3 (two features)
    every = analysis.changed_neurons(cmp, k=3, min_length=1)
    assert every.filter(pc.equal(every.column("group"), "least")).column("neuron").to_pylist()[:2] == [4, 5]
    with pytest.raises(ValueError, match="min_length"):
        analysis.changed_neurons(cmp, min_length=0)


def test_neuron_distributions_align_stages(stages):
    profiles = [p for p, _ in stages]
    table = analysis.neuron_distributions(profiles, [5], "token", top=2)
    rows = table.to_pylist()
    features = None
    for prof, ref in stages:
        mine = [r for r in rows if r["stage"] == prof.name]
        assert features is None or [r["feature"] for r in mine] == features
        features = [r["feature"] for r in mine]
        np.testing.assert_allclose([r["p"] for r in mine], ref["P"]["token"][5, features])
    tops = set()
    for _, ref in stages:
        P = ref["P"]["token"][5]
        tops |= set(sorted(np.flatnonzero(P > 0), key=lambda f: (-P[f], f))[:2])
    assert set(features) == tops


def test_timeline_counts(stages):
    profiles = [p for p, _ in stages]
    table = analysis.timeline(profiles)
    assert table.schema == analysis.TIMELINE_SCHEMA
    for row, (a, b) in zip(table.to_pylist(), zip(profiles, profiles[1:])):
        s = txray.summary(txray.compare(a, b))
        assert {k: row[k] for k in ("shared", "avoided", "gained", "dead")} == {
            k: s[k] for k in ("shared", "avoided", "gained", "dead")
        }
        assert row["mean_hellinger"] == pytest.approx(s["mean_hellinger"])
        assert row["preferred_b"] == int(b.preferred("token").sum())
    first = analysis.timeline(profiles, reference="first")
    assert first.column("stage_a").to_pylist() == ["s1", "s1"]
    with pytest.raises(ValueError, match="reference"):
        analysis.timeline(profiles, reference="last")


def test_neuron_overview_and_stage_names(stages):
    a, b = stages[0][0], stages[1][0]
    table = analysis.neuron_overview(a, b, top=2)
    assert table.column_names[-2:] == ["top_a", "top_b"]
    assert table.column("top_a").to_pylist() == analysis.top_feature_labels(a, "token", 2)
    assert analysis.stage_names([a, a, b]) == ["s1 (1)", "s1 (2)", "s2"]


def test_errors(stages):
    with pytest.raises(ValueError, match="at least 2"):
        analysis.length_shift([stages[0][0]])
    rec = txray.Recorder(N + 1, SIZES)
    rec.update(np.ones((3, N + 1), np.float32), {k: np.zeros(3, int) for k in SIZES})
    with pytest.raises(ValueError, match="neurons"):
        analysis.length_shift([stages[0][0], rec.profile()])
    with pytest.raises(KeyError, match="label"):
        analysis.feature_mass([stages[0][0]], "label")
