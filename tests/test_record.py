"""Recorder and Profile against the NumPy reference in reference.py.

Tolerances: txray adds the same float32 values in float64 in the same token
order as the reference, so counts must match exactly and sums to 1e-12
relative (the slack only covers a different summation order, should one
ever be introduced)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import reference
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import txray

SIZES = {"token": 7, "pos": 3}
RTOL = 1e-12


def make_batch(rng, tokens, neurons, sizes=SIZES, ties=False, dtype=np.float32):
    if ties:  # small integers: many exact ties and all-negative rows
        acts = rng.integers(-3, 3, size=(tokens, neurons)).astype(dtype)
    else:
        acts = rng.standard_normal((tokens, neurons)).astype(dtype)
    feats = {kind: rng.integers(0, size, tokens) for kind, size in sizes.items()}
    return acts, feats


@contextlib.contextmanager
def on_threads(n):
    before = txray.get_num_threads()
    txray.set_num_threads(n)
    try:
        yield
    finally:
        txray.set_num_threads(before)


def assert_neuron_major(table, n_features):
    cell = table.column("neuron").to_numpy().astype(np.int64) * n_features + table.column("feature").to_numpy()
    assert np.all(np.diff(cell) > 0)


def assert_matches_reference(prof, acts, feats, sizes, mode, k=None, mask=None):
    count, total, freq, mass, tokens = reference.record(acts, feats, sizes, mode, k, mask)
    assert prof.tokens == tokens
    np.testing.assert_allclose(prof.mass(), mass, rtol=RTOL, atol=1e-12)
    for kind, size in sizes.items():
        got_count, got_sum = reference.dense_from_table(prof.table(kind), prof.n_neurons, size)
        np.testing.assert_array_equal(got_count, count[kind])
        np.testing.assert_allclose(got_sum, total[kind], rtol=RTOL, atol=1e-12)
        np.testing.assert_array_equal(prof.frequencies(kind), freq[kind])
        # Only cells that recorded something are rows of the table, neuron-major, features ascending.
        assert prof.table(kind).num_rows == int(np.count_nonzero(count[kind]))
        assert_neuron_major(prof.table(kind), size)
        p = reference.distribution(count[kind], total[kind])
        dist = prof.distributions(kind).to_scipy().toarray()
        np.testing.assert_allclose(dist, p, rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(prof.lengths(kind), np.count_nonzero(p, axis=1))


modes = st.sampled_from([("max1", None), ("all", None), ("topk", 1), ("topk", 2), ("topk", 5)])


@given(
    seed=st.integers(0, 2**32 - 1),
    tokens=st.integers(1, 40),
    neurons=st.integers(1, 12),
    mode_k=modes,
    ties=st.booleans(),
    masked=st.booleans(),
    dense=st.booleans(),
)
def test_record_matches_reference(seed, tokens, neurons, mode_k, ties, masked, dense):
    mode, k = mode_k
    k = None if k is None else min(k, neurons)
    rng = np.random.default_rng(seed)
    acts, feats = make_batch(rng, tokens, neurons, ties=ties)
    mask = rng.random(tokens) < 0.7 if masked else None
    if mask is not None and not mask.any():
        mask[0] = True
    rec = txray.Recorder(neurons, SIZES, mode=mode, k=k, dense_limit_bytes=1 << 30 if dense else 0)
    rec.update(acts, feats, mask=mask)
    assert_matches_reference(rec.profile(), acts, feats, SIZES, mode, k, mask)


@given(values=hnp.arrays(np.float32, (6, 5), elements=st.sampled_from([-2.0, -1.0, -0.0, 0.0, 1.0, 2.0])))
def test_ties_go_to_the_lowest_neuron(values):
    feats = {"token": np.arange(6) % 7, "pos": np.zeros(6, int)}
    for mode, k in [("max1", None), ("topk", 3)]:
        rec = txray.Recorder(5, SIZES, mode=mode, k=k)
        rec.update(values, feats)
        assert_matches_reference(rec.profile(), values, feats, SIZES, mode, k)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("mode,k", [("max1", None), ("topk", 3), ("all", None)])
def test_torch_half_precision_matches_reference(dtype, mode, k):
    rng = np.random.default_rng(1)
    acts = torch.from_numpy(rng.standard_normal((50, 33)).astype(np.float32)).to(getattr(torch, dtype))
    feats = {kind: torch.from_numpy(rng.integers(0, s, 50)) for kind, s in SIZES.items()}
    rec = txray.Recorder(33, SIZES, mode=mode, k=k)
    rec.update(acts, feats)
    exact = acts.float().numpy()  # half -> float32 is exact, so the reference sees the same values
    assert_matches_reference(rec.profile(), exact, {k_: v.numpy() for k_, v in feats.items()}, SIZES, mode, k)


def test_numpy_float16_and_special_values():
    # subnormal, largest finite and negative halves convert exactly
    row = np.array([[6e-8, 65504.0, -65504.0, 1e-5, 0.0]], dtype=np.float16)
    rec = txray.Recorder(5, {"token": 1}, mode="all")
    rec.update(row, {"token": [0]})
    np.testing.assert_array_equal(rec.profile().mass(), row[0].astype(np.float64))


@pytest.mark.parametrize("mode,k", [("max1", None), ("topk", 2), ("all", None)])
def test_non_contiguous_activations(mode, k):
    rng = np.random.default_rng(2)
    base = rng.standard_normal((30, 16)).astype(np.float32)
    views = [base.T.copy().T, base[:, ::-1], np.asfortranarray(base), base[::2]]
    for acts in views:
        feats = {kind: rng.integers(0, s, acts.shape[0]) for kind, s in SIZES.items()}
        rec = txray.Recorder(acts.shape[1], SIZES, mode=mode, k=k)
        rec.update(acts, feats)
        assert_matches_reference(rec.profile(), acts, feats, SIZES, mode, k)


def test_batch_shape_and_padding_mask():
    rng = np.random.default_rng(3)
    acts = rng.standard_normal((4, 9, 6)).astype(np.float32)  # (batch, sequence, neurons)
    feats = {kind: rng.integers(0, s, (4, 9)) for kind, s in SIZES.items()}
    lengths = np.array([9, 3, 0, 5])
    mask = np.arange(9)[None, :] < lengths[:, None]
    acts[~mask] = 1e6  # padding must never win
    rec = txray.Recorder(6, SIZES)
    rec.update(torch.from_numpy(acts), feats, mask=torch.from_numpy(mask.astype(np.int64)))
    assert rec.tokens == lengths.sum()
    assert_matches_reference(rec.profile(), acts, feats, SIZES, "max1", None, mask)


@given(seed=st.integers(0, 2**32 - 1), cuts=st.lists(st.integers(0, 60), max_size=4), mode_k=modes)
def test_batches_and_merges_equal_the_whole(seed, cuts, mode_k):
    mode, k = mode_k
    rng = np.random.default_rng(seed)
    acts, feats = make_batch(rng, 60, 8, ties=True)
    whole = txray.Recorder(8, SIZES, mode=mode, k=k)
    whole.update(acts, feats)
    bounds = [0, *sorted(cuts), 60]
    batched = txray.Recorder(8, SIZES, mode=mode, k=k)
    parts = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        sl = {kind: v[lo:hi] for kind, v in feats.items()}
        batched.update(acts[lo:hi], sl)
        part = txray.Recorder(8, SIZES, mode=mode, k=k, dense_limit_bytes=0)
        part.update(acts[lo:hi], sl)
        parts.append(part)
    merged = parts[0]
    for part in parts[1:]:
        merged.merge(part)
    expected = whole.profile()
    for other in (batched.profile(), merged.profile() if merged.tokens else None):
        if other is None:
            continue
        for kind in SIZES:
            a, b = expected.table(kind), other.table(kind)
            assert a.column("count").equals(b.column("count"))
            np.testing.assert_allclose(a.column("sum").to_numpy(), b.column("sum").to_numpy(), rtol=1e-12)
    # Profiles merge too: first half + second half = whole.
    h1, h2 = txray.Recorder(8, SIZES, mode=mode, k=k), txray.Recorder(8, SIZES, mode=mode, k=k)
    h1.update(acts[:25], {kind: v[:25] for kind, v in feats.items()})
    h2.update(acts[25:], {kind: v[25:] for kind, v in feats.items()})
    joined = h1.profile().merge(h2.profile())
    assert joined.tokens == expected.tokens
    for kind in SIZES:
        a, b = expected.table(kind), joined.table(kind)
        assert a.column("neuron").equals(b.column("neuron")) and a.column("count").equals(b.column("count"))
        np.testing.assert_allclose(a.column("p").to_numpy(), b.column("p").to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(joined.mass(), expected.mass(), rtol=1e-12)


def test_topk_with_k_equal_to_n_counts_every_neuron():
    rng = np.random.default_rng(4)
    acts, feats = make_batch(rng, 20, 7, ties=True)
    rec = txray.Recorder(7, SIZES, mode="topk", k=7)
    rec.update(acts, feats)
    assert_matches_reference(rec.profile(), acts, feats, SIZES, "topk", 7)
    every = txray.Recorder(7, SIZES, mode="all")
    every.update(acts, feats)
    assert rec.profile().table("pos").equals(every.profile().table("pos"))


def test_large_topk_batch_is_recorded_in_chunks():
    # 64 MiB of scratch / (1000 winners * (8 + 12) bytes) = 3355 tokens per chunk.
    rng = np.random.default_rng(5)
    acts = rng.standard_normal((9000, 1000)).astype(np.float32)
    feats = {"pos": rng.integers(0, 3, 9000)}
    rec = txray.Recorder(1000, {"pos": 3}, mode="topk", k=1000)
    rec.update(acts, feats)
    prof = rec.profile()
    counts = reference.dense_from_table(prof.table("pos"), 1000, 3)[0]
    np.testing.assert_array_equal(counts, np.tile(np.bincount(feats["pos"], minlength=3), (1000, 1)))
    np.testing.assert_allclose(prof.mass(), acts.astype(np.float64).sum(axis=0), rtol=1e-9)
    acts[8999, 10] = np.nan  # in the second chunk: the update must fail whole
    with pytest.raises(ValueError, match="token 8999 at neuron 10 is NaN"):
        rec.update(acts, feats)
    assert rec.tokens == 9000


@pytest.mark.parametrize("mode, k", [("max1", None), ("topk", 3)])
@pytest.mark.parametrize("dense", [True, False])
def test_large_batches_on_every_thread_match_numpy(mode, k, dense):
    # 70,000 tokens x 64 neurons is above both sizes at which a batch is
    # shared between threads: 4M values (selection) and 65,536 winners
    # (adding them to the cells, bucket by bucket).
    T, N = 70_000, 64
    sizes = {"token": 5000, "pos": 45}
    rng = np.random.default_rng(11)
    acts = rng.integers(-40, 40, size=(T, N)).astype(np.float32) / 8  # with ties
    feats = {"token": rng.zipf(1.3, T) % sizes["token"], "pos": rng.integers(0, sizes["pos"], T)}
    mask = rng.random(T) < 0.95

    def record(threads):
        with on_threads(threads):
            rec = txray.Recorder(N, sizes, mode=mode, k=k, dense_limit_bytes=1 << 30 if dense else 0)
            rec.update(acts, feats, mask=mask)
        return rec.profile()

    prof = record(2)
    # Vectorised NumPy: a stable sort gives the lowest index first among equals.
    kept = np.flatnonzero(mask)
    order = np.argsort(-acts[kept], axis=1, kind="stable")[:, : (k or 1)]
    values = np.take_along_axis(acts[kept], order, axis=1).astype(np.float64)
    np.testing.assert_allclose(prof.mass(), np.bincount(order.ravel(), values.ravel(), N), rtol=1e-12)
    for kind, size in sizes.items():
        ids = np.repeat(feats[kind][kept], order.shape[1])
        count = np.zeros((N, size), np.int64)
        total = np.zeros((N, size))
        np.add.at(count, (order.ravel(), ids), 1)
        np.add.at(total, (order.ravel(), ids), values.ravel())
        got_count, got_sum = reference.dense_from_table(prof.table(kind), N, size)
        np.testing.assert_array_equal(got_count, count)
        np.testing.assert_allclose(got_sum, total, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(prof.frequencies(kind), np.bincount(feats[kind][kept], minlength=size))
        # Within a cell the adds keep token order, so one thread gives the same table bit for bit.
        assert record(1).table(kind).equals(prof.table(kind))


def test_hash_tables_grow_across_batches_and_match_numpy():
    # Three batches of 70,000 tokens over a large vocabulary: nearly every
    # cell is new, so the hash shards grow (several doublings at once while
    # young, by the rate of new cells) within and across batches, on 1 and
    # on 2 threads.
    T, N, F = 210_000, 8, 200_000
    rng = np.random.default_rng(5)
    acts = rng.standard_normal((T, N), dtype=np.float32)
    ids = rng.integers(0, F, T)

    def record(threads):
        with on_threads(threads):
            rec = txray.Recorder(N, {"token": F}, dense_limit_bytes=0)
            for lo in range(0, T, 70_000):
                rec.update(acts[lo : lo + 70_000], {"token": ids[lo : lo + 70_000]})
        return rec.profile()

    prof = record(2)
    winner = acts.argmax(axis=1)
    count = np.zeros((N, F), np.int64)
    total = np.zeros((N, F))
    np.add.at(count, (winner, ids), 1)
    np.add.at(total, (winner, ids), acts[np.arange(T), winner].astype(np.float64))
    got_count, got_sum = reference.dense_from_table(prof.table("token"), N, F)
    np.testing.assert_array_equal(got_count, count)
    np.testing.assert_allclose(got_sum, total, rtol=1e-12, atol=1e-12)
    assert_neuron_major(prof.table("token"), F)
    assert record(1).table("token").equals(prof.table("token"))


@pytest.mark.parametrize("n_neurons, vocab", [(2, 4), (4, 1000)])
def test_hash_table_memory_follows_cells_not_adds(n_neurons, vocab):
    # A million adds to 8 or 4,000 cells in one batch: the shards must not
    # grow for adds that find their cell, nor for ones they guess will come
    # (64 shards of 24-byte slots: ~0.1 and ~0.4 MB; 50 MB when a shard
    # reserved room for all the adds of its bucket).
    rng = np.random.default_rng(0)
    T = 1_000_000
    rec = txray.Recorder(n_neurons, {"token": vocab}, dense_limit_bytes=0)
    rec.update(rng.standard_normal((T, n_neurons), dtype=np.float32), {"token": rng.integers(0, vocab, T)})
    assert rec.profile().table("token").num_rows == n_neurons * vocab
    assert rec.nbytes < 1 << 20


def test_one_token_corpus_and_unpreferred_neurons():
    rec = txray.Recorder(4, {"token": 3})
    rec.update(np.array([[-1.0, -0.5, -2.0, -3.0]], np.float32), {"token": [2]})
    prof = rec.profile()
    # neuron 1 won with a negative value: its distribution is empty
    assert prof.table("token").to_pylist() == [
        {"neuron": 1, "feature": 2, "feature_name": None, "count": 1, "sum": -0.5, "mean": -0.5, "p": 0.0}
    ]
    assert prof.lengths("token").tolist() == [0, 0, 0, 0]
    assert not prof.preferred("token").any()


def test_feature_names_and_metadata():
    rec = txray.Recorder(2, {"token": 3, "pos": 2})
    rec.update(np.array([[1, 0], [0, 1]], np.float32), {"token": [2, 0], "pos": [1, 1]})
    prof = rec.profile(name="e1", feature_names={"token": ["a", "b", "c"]}, metadata={"layer": "rnn"})
    assert prof.table("token").column("feature_name").to_pylist() == ["c", "a"]
    assert prof.vocabulary("token") == ["a", "b", "c"] and prof.vocabulary("pos") is None
    assert prof.name == "e1" and prof.metadata == {"layer": "rnn"}
    with pytest.raises(ValueError, match="2 names for 3 feature ids"):
        rec.profile(feature_names={"token": ["a", "b"]})
    with pytest.raises(ValueError, match="kinds \\['word'\\]"):
        rec.profile(feature_names={"word": ["a"]})
    with pytest.raises(TypeError, match="JSON"):
        rec.profile(metadata={"x": object()})


# -- errors ------------------------------------------------------------------


def test_empty_recorder_and_fully_masked_batch():
    rec = txray.Recorder(3, SIZES)
    with pytest.raises(ValueError, match="nothing was recorded"):
        rec.profile()
    rec.update(np.ones((2, 3), np.float32), {"token": [0, 1], "pos": [0, 0]}, mask=[False, False])
    rec.update(np.ones((0, 3), np.float32), {"token": np.array([], int), "pos": np.array([], int)})
    assert rec.tokens == 0


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(n_neurons=0, features=SIZES), "positive integer"),
        (dict(n_neurons=3, features={}), "at least one kind"),
        (dict(n_neurons=3, features={"token": 0}), "vocabulary size"),
        (dict(n_neurons=3, features=SIZES, mode="max2"), "mode must be"),
        (dict(n_neurons=3, features=SIZES, mode="topk"), "needs k"),
        (dict(n_neurons=3, features=SIZES, mode="topk", k=4), "k must be between 1 and n_neurons"),
        (dict(n_neurons=3, features=SIZES, mode="topk", k=0), "k must be between 1 and n_neurons"),
        (dict(n_neurons=3, features=SIZES, mode="all", k=2), "only used with mode='topk'"),
    ],
)
def test_bad_recorder_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        txray.Recorder(**kwargs)


def test_bad_batches_are_rejected_whole():
    rec = txray.Recorder(3, SIZES)
    ok = {"token": np.array([0, 6]), "pos": np.array([0, 2])}
    acts = np.zeros((2, 3), np.float32)
    cases = [
        (TypeError, "float64", lambda: rec.update(acts.astype(np.float64), ok)),
        (TypeError, "int64", lambda: rec.update(acts.astype(np.int64), ok)),
        (ValueError, "4 neurons", lambda: rec.update(np.zeros((2, 4), np.float32), ok)),
        (ValueError, "shape", lambda: rec.update(np.zeros(3, np.float32), ok)),
        (ValueError, "missing \\['pos'\\]", lambda: rec.update(acts, {"token": ok["token"]})),
        (ValueError, "unexpected \\['word'\\]", lambda: rec.update(acts, {**ok, "word": ok["pos"]})),
        (ValueError, "has shape \\(3,\\)", lambda: rec.update(acts, {**ok, "pos": np.zeros(3, int)})),
        (TypeError, "must be integers", lambda: rec.update(acts, {**ok, "pos": np.zeros(2)})),
        (
            ValueError,
            "feature 'token' of token 1 is 7, outside its vocabulary \\[0, 7\\)",
            lambda: rec.update(acts, {**ok, "token": np.array([0, 7])}),
        ),
        (ValueError, "feature 'pos' of token 0 is -1", lambda: rec.update(acts, {**ok, "pos": np.array([-1, 0])})),
        (ValueError, "mask has shape", lambda: rec.update(acts, ok, mask=[True])),
        (TypeError, "mask must be boolean", lambda: rec.update(acts, ok, mask=[0.5, 1.0])),
    ]
    for error, message, call in cases:
        with pytest.raises(error, match=message):
            call()
    assert rec.tokens == 0


@pytest.mark.parametrize("mode,k", [("max1", None), ("topk", 2), ("all", None)])
@pytest.mark.parametrize("bad,word", [(np.nan, "NaN"), (np.inf, "infinite"), (-np.inf, "infinite")])
def test_non_finite_activations_name_the_token(mode, k, bad, word):
    rec = txray.Recorder(4, SIZES, mode=mode, k=k)
    acts = np.ones((2, 3, 4), np.float32)
    acts[1, 2, 3] = bad
    feats = {kind: np.zeros((2, 3), int) for kind in SIZES}
    with pytest.raises(ValueError, match=f"token 5 \\(axis 0: 1, axis 1: 2\\) at neuron 3 is {word}"):
        rec.update(acts, feats)
    assert rec.tokens == 0
    mask = np.ones((2, 3), bool)
    mask[1, 2] = False  # padding may hold anything
    rec.update(acts, feats, mask=mask)
    assert rec.tokens == 5


def test_merge_rejects_other_shapes():
    a = txray.Recorder(3, SIZES)
    with pytest.raises(ValueError, match="different shapes"):
        a.merge(txray.Recorder(4, SIZES))
    with pytest.raises(ValueError, match="different shapes"):
        a.merge(txray.Recorder(3, SIZES, mode="all"))
    with pytest.raises(TypeError):
        a.merge("profile")


def test_tensors_off_the_cpu_are_refused_with_advice():
    rec = txray.Recorder(3, SIZES)
    meta = torch.zeros(2, 3, device="meta")  # stands in for a CUDA tensor on a machine without a GPU
    with pytest.raises(ValueError, match="move it with .cpu\\(\\)"):
        rec.update(meta, {"token": [0, 0], "pos": [0, 0]})
    rec.update(torch.zeros(2, 3, requires_grad=True), {"token": [0, 0], "pos": [0, 0]})
    assert rec.tokens == 2


@pytest.mark.parametrize("mode,k", [("max1", None), ("topk", 2), ("all", None)])
def test_huge_finite_activations_are_not_mistaken_for_infinite(mode, k):
    # 64 values of 3e38 overflow a float32 running sum; that must not be an error
    acts = np.full((3, 64), 3e38, np.float32)
    acts[:, 5] = 3.4e38
    rec = txray.Recorder(64, {"token": 2}, mode=mode, k=k)
    rec.update(acts, {"token": [0, 1, 1]})
    assert rec.tokens == 3
    if mode == "max1":
        assert rec.profile().table("token").column("neuron").to_pylist() == [5, 5]
