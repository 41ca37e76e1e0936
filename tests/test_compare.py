"""compare / nearest / match on Profiles, against the dense NumPy reference."""

from __future__ import annotations

import json

import numpy as np
import pytest
import reference
from hypothesis import given
from hypothesis import strategies as st

import txray
from txray.profile import check_compatible

SIZES = {"token": 12, "pos": 4}


def profile_of(acts, feats, name, sizes=SIZES, mode="max1"):
    rec = txray.Recorder(acts.shape[1], sizes, mode=mode)
    rec.update(acts, feats)
    return rec.profile(name=name)


def random_pair(seed, n_a=10, n_b=10, tokens=60):
    rng = np.random.default_rng(seed)
    feats = {kind: rng.integers(0, s, tokens) for kind, s in SIZES.items()}
    # Shifted activations make some neurons win nothing, others only negative values.
    acts_a = (rng.standard_normal((tokens, n_a)) + rng.normal(0, 1.5, n_a)).astype(np.float32)
    acts_b = (rng.standard_normal((tokens, n_b)) + rng.normal(0, 1.5, n_b)).astype(np.float32)
    return profile_of(acts_a, feats, "a"), profile_of(acts_b, feats, "b")


def dense_p(prof, kind):
    return prof.distributions(kind).to_scipy().toarray()


@given(seed=st.integers(0, 2**32 - 1))
def test_compare_matches_reference(seed):
    a, b = random_pair(seed)
    for kind in SIZES:
        table = txray.compare(a, b, kind=kind)
        assert table.schema.equals(txray.COMPARE_SCHEMA, check_metadata=False)
        pa_, pb = dense_p(a, kind), dense_p(b, kind)
        rows = table.to_pylist()
        for n, row in enumerate(rows):
            ina, inb = pa_[n].any(), pb[n].any()
            expected = {(True, True): "shared", (True, False): "avoided", (False, True): "gained"}.get(
                (ina, inb), "dead"
            )
            assert row["neuron"] == n and row["state"] == expected
            assert row["length_a"] == np.count_nonzero(pa_[n]) and row["length_b"] == np.count_nonzero(pb[n])
            assert row["union_length"] == np.count_nonzero(pa_[n] + pb[n])
            assert row["shared_length"] == np.count_nonzero(pa_[n] * pb[n])
            if expected == "shared":
                # sqrt(1 - BC) amplifies rounding near H = 0: 1e-7 absolute covers it.
                assert row["hellinger"] == pytest.approx(reference.hellinger(pa_[n], pb[n]), abs=1e-7)
            else:
                assert row["hellinger"] is None
            assert row["mass_a"] == pytest.approx(a.mass()[n]) and row["mass_b"] == pytest.approx(b.mass()[n])
        info = txray.summary(table)
        assert info["shared"] + info["avoided"] + info["gained"] + info["dead"] == a.n_neurons
        assert json.loads(table.schema.metadata[b"txray_summary"])["shared"] == info["shared"]


def test_compare_with_itself_is_all_zero():
    a, _ = random_pair(1)
    table = txray.compare(a, a, kind="token")
    h = np.array([x for x in table.column("hellinger").to_pylist() if x is not None])
    assert len(h) > 0 and np.all(h < 1e-7)
    assert set(table.column("state").to_pylist()) <= {"shared", "dead"}


@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 15))
def test_nearest_matches_brute_force(seed, k):
    a, b = random_pair(seed, n_a=9, n_b=13)
    table = txray.nearest(a, b, kind="token", k=k)
    pa_, pb = dense_p(a, "token"), dense_p(b, "token")
    got = {}
    for row in table.to_pylist():
        got.setdefault(row["neuron_a"], []).append((row["rank"], row["neuron_b"], row["hellinger"]))
    candidates = [j for j in range(13) if pb[j].any()]
    for i in range(9):
        if not pa_[i].any():
            assert i not in got
            continue
        dist = {j: reference.hellinger(pa_[i], pb[j]) for j in candidates}
        ours = got[i]
        assert [r for r, _, _ in ours] == list(range(min(k, len(candidates))))
        for _, j, h in ours:
            assert h == pytest.approx(dist[j], abs=1e-7)
        # every neuron left out is at least as far as the last one kept
        kept = {j for _, j, _ in ours}
        worst = max(h for _, _, h in ours)
        assert all(dist[j] >= worst - 1e-7 for j in candidates if j not in kept)


def test_match_is_one_to_one_and_optimal_on_small_layers():
    from scipy.optimize import linear_sum_assignment

    a, b = random_pair(7, n_a=8, n_b=11)
    table = txray.match(a, b, kind="token", method="exact")
    pa_, pb = dense_p(a, "token"), dense_p(b, "token")
    ra = [i for i in range(8) if pa_[i].any()]
    rb = [j for j in range(11) if pb[j].any()]
    cost = np.array([[reference.hellinger(pa_[i], pb[j]) for j in rb] for i in ra])
    r, c = linear_sum_assignment(cost)
    rows = table.to_pylist()
    assert (
        len({x["neuron_a"] for x in rows}) == len(rows) == len({x["neuron_b"] for x in rows}) == min(len(ra), len(rb))
    )
    assert sum(x["hellinger"] for x in rows) == pytest.approx(cost[r, c].sum(), abs=1e-6)
    greedy = txray.match(a, b, kind="token", method="greedy").to_pylist()
    assert len({x["neuron_b"] for x in greedy}) == len(greedy)


def test_errors_name_the_problem():
    a, b = random_pair(3, n_a=10, n_b=12)
    with pytest.raises(ValueError, match="10 and 12 neurons"):
        txray.compare(a, b, kind="token")
    rng = np.random.default_rng(0)
    other_vocab = profile_of(
        rng.standard_normal((5, 10)).astype(np.float32),
        {"token": rng.integers(0, 13, 5), "pos": rng.integers(0, 4, 5)},
        "c",
        sizes={"token": 13, "pos": 4},
    )
    with pytest.raises(ValueError, match="different 'token' vocabularies \\(12 vs 13"):
        txray.compare(a, other_vocab, kind="token")
    with pytest.raises(ValueError, match="no feature kind 'lemma'"):
        txray.compare(a, a, kind="lemma")
    with pytest.raises(ValueError, match="k must be a positive integer"):
        txray.nearest(a, b, kind="token", k=0)

    def named(names):
        rec = txray.Recorder(2, {"pos": 2})
        rec.update(np.eye(2, dtype=np.float32), {"pos": [0, 1]})
        return rec.profile(feature_names={"pos": names})

    # Named features line up by name (issue 16): NN is shared, VB and JJ each seen by one only.
    table = txray.compare(named(["NN", "VB"]), named(["NN", "JJ"]), kind="pos")
    assert table.column("hellinger").to_pylist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="id 1 is 'VB' in one and 'JJ'"):
        check_compatible(named(["NN", "VB"]), named(["NN", "JJ"]), ["pos"], same_ids=True)
