"""The CPU kernels' instruction sets (cpp/kernels.cpp): every set this build
has and this CPU runs records exactly what the reference does, and exactly
what every other set does (same values, same order of adds).

A portable build (TXRAY_NATIVE_ARCH=OFF) has 'avx512', 'avx2' and 'baseline'
as the CPU allows; a -march=native build has the one set 'native', so there
the sweep checks that set alone."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest
import reference
import torch

import txray
from txray import _native

SIZES = {"token": 50, "pos": 7}
VARIANTS = _native.simd_variants()


@contextlib.contextmanager
def using(name, threads=None):
    before, before_threads = _native.simd(), txray.get_num_threads()
    _native.set_simd(name)
    if threads is not None:
        txray.set_num_threads(threads)
    try:
        yield
    finally:
        _native.set_simd(before)
        txray.set_num_threads(before_threads)


def batch(rng, tokens, neurons, ties):
    if ties:  # small integers: exact ties everywhere
        return rng.integers(-3, 3, size=(tokens, neurons)).astype(np.float32)
    return rng.standard_normal((tokens, neurons)).astype(np.float32)


# (name, tokens, neurons, mode, k, dtype, layout, masked, ties, threads). The
# large cases are above the 4M values at which a batch is split between
# threads; k=20 takes topk's nth_element branch; 'strided' rows go through
# the top-k path even for max1; neurons not a multiple of 16 leave a tail.
CASES = [
    ("max1 float32", 300, 37, "max1", None, "float32", "contiguous", False, False, 1),
    ("max1 ties masked", 300, 64, "max1", None, "float32", "contiguous", True, True, 1),
    ("max1 float16", 200, 45, "max1", None, "float16", "contiguous", False, False, 1),
    ("max1 bfloat16", 200, 45, "max1", None, "bfloat16", "contiguous", False, True, 1),
    ("max1 strided", 200, 33, "max1", None, "float32", "strided", False, False, 1),
    ("max1 large, 2 threads", 3000, 1500, "max1", None, "float32", "contiguous", True, False, 2),
    ("topk 5", 300, 40, "topk", 5, "float32", "contiguous", False, True, 1),
    ("topk 20 float16", 200, 50, "topk", 20, "float16", "contiguous", True, False, 1),
    ("topk 5 large, 2 threads", 3000, 1500, "topk", 5, "float32", "contiguous", False, False, 2),
    ("all float32", 200, 41, "all", None, "float32", "contiguous", True, False, 1),
    ("all bfloat16 strided", 200, 24, "all", None, "bfloat16", "strided", False, False, 1),
    ("all large, 2 threads", 3000, 1500, "all", None, "float32", "contiguous", False, False, 2),
]


def make_case(case):
    name, tokens, neurons, mode, k, dtype, layout, masked, ties, threads = case
    rng = np.random.default_rng(CASES.index(case))
    acts = batch(rng, tokens, neurons, ties)
    feats = {kind: rng.integers(0, size, tokens) for kind, size in SIZES.items()}
    mask = rng.random(tokens) < 0.8 if masked else None
    tensor = torch.from_numpy(acts).to(getattr(torch, dtype))
    if layout == "strided":  # every other column of a wider matrix
        wide = torch.zeros((tokens, 2 * neurons), dtype=tensor.dtype)
        wide[:, ::2] = tensor
        tensor = wide[:, ::2]
    exact = tensor.float().numpy()  # half -> float32 is exact: the reference sees the same values
    return tensor, exact, feats, mask


def record(variant, case, tensor, feats, mask):
    _, _, neurons, mode, k, _, _, _, _, threads = case
    with using(variant, threads):
        rec = txray.Recorder(neurons, SIZES, mode=mode, k=k)
        rec.update(tensor, feats, mask=mask)
        return rec.profile()


def test_the_chosen_set_is_available():
    assert VARIANTS, "no instruction set at all"
    assert _native.simd() in VARIANTS
    assert VARIANTS[-1] in ("baseline", "native")
    if VARIANTS != ["native"]:
        assert VARIANTS[-1] == "baseline" and "native" not in VARIANTS
        assert set(VARIANTS) <= {"avx512", "avx2", "baseline"}
        assert VARIANTS.index("avx512") < VARIANTS.index("avx2") if {"avx512", "avx2"} <= set(VARIANTS) else True


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_every_instruction_set_matches_the_reference_and_the_others(case):
    tensor, exact, feats, mask = make_case(case)
    _, _, neurons, mode, k, *_ = case
    profiles = {v: record(v, case, tensor, feats, mask) for v in VARIANTS}
    first = VARIANTS[0]
    count, total, freq, mass, tokens = reference.record(exact, feats, SIZES, mode, k, mask)
    prof = profiles[first]
    assert prof.tokens == tokens
    np.testing.assert_allclose(prof.mass(), mass, rtol=1e-12, atol=1e-12)
    for kind, size in SIZES.items():
        got_count, got_sum = reference.dense_from_table(prof.table(kind), neurons, size)
        np.testing.assert_array_equal(got_count, count[kind])
        np.testing.assert_allclose(got_sum, total[kind], rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(prof.frequencies(kind), freq[kind])
    for v, other in profiles.items():  # bit for bit: the same adds in the same order
        np.testing.assert_array_equal(other.mass(), prof.mass(), err_msg=f"{v} vs {first}")
        for kind in SIZES:
            assert other.table(kind).equals(prof.table(kind)), f"{kind} table: {v} vs {first}"


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("mode,k", [("max1", None), ("topk", 3), ("all", None)])
@pytest.mark.parametrize("bad,word", [(np.nan, "NaN"), (np.inf, "infinite"), (-np.inf, "infinite")])
def test_every_instruction_set_finds_non_finite_values(variant, mode, k, bad, word):
    acts = np.ones((40, 70), np.float32)
    acts[33, 66] = bad  # in the vector part of the row, not the tail
    acts[37, 2] = bad  # a later token: the first one is named
    feats = {kind: np.zeros(40, int) for kind in SIZES}
    with using(variant):
        rec = txray.Recorder(70, SIZES, mode=mode, k=k)
        with pytest.raises(ValueError, match=f"token 33 at neuron 66 is {word}"):
            rec.update(acts, feats)
        assert rec.tokens == 0


def test_large_topk_checks_every_row_first_on_every_set():
    # k=500 of 1000 needs more scratch than one chunk (kernels' first_nonfinite_row runs up front).
    rng = np.random.default_rng(5)
    acts = rng.standard_normal((9000, 1000)).astype(np.float32)
    acts[8999, 10] = np.nan
    feats = {"pos": rng.integers(0, 3, 9000)}
    for variant in VARIANTS:
        with using(variant, threads=2):
            rec = txray.Recorder(1000, {"pos": 3}, mode="topk", k=500)
            with pytest.raises(ValueError, match="token 8999 at neuron 10 is NaN"):
                rec.update(acts, feats)
            assert rec.tokens == 0


def test_set_simd_rejects_unknown_names():
    with pytest.raises(ValueError, match="'sse1' is not available.*available: " + ", ".join(VARIANTS)):
        _native.set_simd("sse1")
    assert _native.simd() in VARIANTS


def run_python(code, **env):
    full = dict(os.environ)
    full.pop("TXRAY_SIMD", None)
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=120)


def test_the_environment_chooses_the_set():
    code = "from txray import _native; print(_native.simd(), ','.join(_native.simd_variants()))"
    best = run_python(code)
    assert best.returncode == 0, best.stderr
    assert best.stdout.split() == [VARIANTS[0], ",".join(VARIANTS)]  # the best set by default
    last = run_python(code, TXRAY_SIMD=VARIANTS[-1])
    assert last.returncode == 0, last.stderr
    assert last.stdout.split()[0] == VARIANTS[-1]
    bad = run_python(code, TXRAY_SIMD="avx1024")
    assert bad.returncode != 0
    assert "instruction set 'avx1024' is not available" in bad.stderr


# The argmax loop (cpp/select.hpp, and its AVX-512 form in cpp/kernels.cpp)
# keeps four 8-lane accumulators over blocks of 32 values, then 8 values at a
# time into the first, then a scalar tail. Widths around those boundaries:
# shorter than one vector, one vector, one block, blocks plus vectors plus a tail.
WIDTHS = [1, 3, 7, 8, 9, 16, 31, 32, 33, 40, 63, 64, 65, 100, 129, 1500]


def winners_of(variant, acts):
    """Each token's max1 winner as txray records it (feature 'token' = the row's index)."""
    tokens, neurons = acts.shape
    with using(variant):
        rec = txray.Recorder(neurons, {"token": tokens}, mode="max1")
        rec.update(acts, {"token": np.arange(tokens)})
        count, total = reference.dense_from_table(rec.profile().table("token"), neurons, tokens)
    assert (count.sum(0) == 1).all()  # one winner per token
    return count.argmax(0), total.sum(0)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("neurons", WIDTHS)
def test_argmax_ties_across_accumulators_and_blocks_go_to_the_lowest_index(variant, neurons):
    rng = np.random.default_rng(neurons)
    tokens = 400
    acts = rng.standard_normal((tokens, neurons)).astype(np.float32) - 4.0
    for t in range(tokens):  # the maximum 2 to 5 times, anywhere: other lanes, accumulators, blocks, the tail
        acts[t, rng.choice(neurons, size=min(neurons, rng.integers(2, 6)), replace=False)] = 1.5
    acts[0] = 1.5  # a row of one value
    if neurons > 40:  # the same lane of two accumulators of one block, and of two blocks
        acts[1] = -2.0
        acts[1, [8 + 3, 24 + 3]] = 0.5
        acts[2] = -2.0
        acts[2, [32 + 5, 5]] = 0.5
    expected = acts.argmax(1)  # NumPy: the first maximum
    got, values = winners_of(variant, acts)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(values, acts[np.arange(tokens), expected])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("neurons", WIDTHS)
def test_argmax_of_rows_with_gaps_between_them(variant, neurons):
    # Rows of a wider matrix (row stride > neurons, values contiguous): the
    # argmax path, reading each row from its own start.
    rng = np.random.default_rng(100 + neurons)
    wide = rng.integers(-3, 3, size=(300, neurons + 5)).astype(np.float32)
    acts = wide[:, :neurons]
    assert not acts.flags.c_contiguous and acts.strides[1] == 4
    got, values = winners_of(variant, acts)
    np.testing.assert_array_equal(got, acts.argmax(1))
    np.testing.assert_array_equal(values, acts.max(1))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("neurons", WIDTHS)
@pytest.mark.parametrize("bad,word", [(np.nan, "NaN"), (np.inf, "infinite"), (-np.inf, "infinite")])
def test_argmax_finds_a_non_finite_value_at_the_end_of_a_row(variant, neurons, bad, word):
    acts = np.full((20, neurons), -1.0, np.float32)
    acts[13, neurons - 1] = bad  # the row's last element: the tail, a vector or a block
    with using(variant):
        rec = txray.Recorder(neurons, SIZES, mode="max1")
        with pytest.raises(ValueError, match=f"token 13 at neuron {neurons - 1} is {word}"):
            rec.update(acts, {kind: np.zeros(20, int) for kind in SIZES})
        assert rec.tokens == 0


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_stream_read_sums_every_row(variant, dtype):
    # The benchmark's floor (bench_record.py) reads with this; it must read everything.
    rng = np.random.default_rng(7)
    values = rng.integers(-4, 5, size=(333, 1500)).astype(np.float32)  # exact in every dtype and sum order
    tensor = torch.from_numpy(values).to(getattr(torch, dtype))
    buffer = tensor.view(torch.uint16).numpy() if dtype == "bfloat16" else tensor.numpy()
    with using(variant, threads=2):
        assert _native.stream_read(buffer, dtype) == float(values.sum())
        assert _native.stream_read(buffer[:, :37], dtype) == float(values[:, :37].sum())
    with pytest.raises(ValueError, match="contiguous"):
        _native.stream_read(buffer[:, ::2], dtype)


# The top-k loop for small k (cpp/select.hpp's topk_row_direct) streams
# contiguous rows in blocks of 32 keeping 16 lanes' maxima, then takes the
# values at or above their k-th largest as candidates (up to 128, else the
# insertion over the whole row); strided rows and k > 16 take the float copy
# and topk_row. _native.select_winners runs the selection alone, as
# Recorder.update does.
def expected_topk(acts, k):
    """Each row's k largest, largest first, equal values in increasing index order."""
    order = np.argsort(-acts, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(acts, order, 1)


def assert_topk_as_expected(acts, k, variant):
    """The native top-k of float32 ``acts`` with instruction set ``variant`` equals
    :func:`expected_topk`, neurons and values; returns (values, expected values)."""
    with using(variant, threads=2):
        neuron, value = _native.select_winners(acts, "float32", k)
    order, top = expected_topk(acts, k)
    np.testing.assert_array_equal(neuron.reshape(-1, k), order)
    np.testing.assert_array_equal(value.reshape(-1, k), top)
    return value.reshape(-1, k), top


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("neurons", WIDTHS)
@pytest.mark.parametrize("k", [2, 5, 16, 17])
@pytest.mark.parametrize("layout", ["contiguous", "gaps", "strided"])
def test_topk_ties_in_any_block_go_to_the_lowest_index(variant, neurons, k, layout):
    if k > neurons:
        pytest.skip("k is above the row's width")
    rng = np.random.default_rng(1000 * k + neurons)
    wide = rng.integers(-3, 3, size=(200, 2 * neurons + 5)).astype(np.float32)  # ties everywhere
    wide[0] = 1.0  # a row of one value
    if neurons > 64:  # the same value entering late, in another block and lane
        wide[1, : 2 * neurons] = -2.0
        wide[1, [3, 40, 2 * (neurons // 2) + 1]] = 0.5
    acts = {"contiguous": np.ascontiguousarray(wide[:, :neurons]), "gaps": wide[:, :neurons]}.get(
        layout, wide[:, : 2 * neurons : 2]
    )
    assert_topk_as_expected(acts, k, variant)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("k", [1, 5, 16])
@pytest.mark.parametrize("at_top", [1, 4, 5, 6, 16, 17, 31, 32, 33, 65, 127, 128, 129, 159, 160, 161, 300, 1500])
@pytest.mark.parametrize("neurons", [1500, 2100])
def test_topk_with_many_values_tied_at_the_top(variant, k, at_top, neurons):
    # at_top copies of the row's largest value, in random lanes, accumulators
    # and blocks (and the tail): fewer than k, about the candidates' room (128
    # and a block more), or the whole row, where the whole row is inserted.
    # 2,100 values: blocks past the 64 whose maxima the stream keeps.
    rng = np.random.default_rng(at_top * 100 + k + neurons)
    tokens = 40
    acts = rng.integers(-6, 3, size=(tokens, neurons)).astype(np.float32)  # ties below the top too
    for t in range(tokens):
        acts[t, rng.choice(neurons, size=at_top, replace=False)] = 4.0
    acts[1, -at_top:] = 5.0  # the top in the last blocks and the tail only
    acts[2, :at_top] = 5.0  # in the first blocks only
    assert_topk_as_expected(acts, k, variant)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("neurons", [32, 33, 47, 64, 100, 1500])
@pytest.mark.parametrize("k", [3, 5, 16])
def test_topk_with_fewer_distinct_values_than_k(variant, neurons, k):
    # Two or three distinct values: the k-th largest is tied across lanes,
    # accumulators and blocks, and so is every lane maximum.
    rng = np.random.default_rng(neurons + k)
    acts = rng.integers(0, 2, size=(60, neurons)).astype(np.float32)
    acts[:20] -= 1.0  # 0 and -1: the bound is 0, half the row ties it
    acts[40:, rng.integers(0, neurons)] = 2.0  # one value above the rest
    acts[50:] = np.where(acts[50:] == 1.0, -0.0, acts[50:])  # -0.0 ties 0.0, as in topk_row
    value, top = assert_topk_as_expected(acts, k, variant)
    np.testing.assert_array_equal(np.signbit(value), np.signbit(top))  # the row's own zeros


@pytest.mark.parametrize("variant", VARIANTS)
def test_topk_of_kept_rows_reads_each_row_not_the_next(variant):
    # Masked rows: the selection requests the next kept row's lines ahead;
    # the winners are still each kept row's own.
    rng = np.random.default_rng(3)
    tokens, neurons = 500, 1500
    acts = rng.standard_normal((tokens, neurons)).astype(np.float32)
    feats = {"token": np.arange(tokens)}
    mask = rng.random(tokens) < 0.5
    mask[-1] = False  # the last row is skipped: the last kept row has no next in the batch
    with using(variant, threads=2):
        rec = txray.Recorder(neurons, {"token": tokens}, mode="topk", k=5)
        rec.update(acts, feats, mask=mask)
        count, total = reference.dense_from_table(rec.profile().table("token"), neurons, tokens)
    order, top = expected_topk(acts, 5)
    expected = np.zeros((neurons, tokens), np.int64)
    for t in np.flatnonzero(mask):
        expected[order[t], t] = 1
    np.testing.assert_array_equal(count, expected)
    np.testing.assert_allclose(total.sum(0)[mask], top[mask].astype(np.float64).sum(1), rtol=1e-12)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_topk_of_half_rows_matches_their_float_values(variant, dtype):
    rng = np.random.default_rng(11)
    tensor = torch.from_numpy(rng.standard_normal((300, 1500)).astype(np.float32)).to(getattr(torch, dtype))
    buffer = tensor.view(torch.uint16).numpy() if dtype == "bfloat16" else tensor.numpy()
    with using(variant, threads=2):
        neuron, value = _native.select_winners(buffer, dtype, 5)
    order, top = expected_topk(tensor.float().numpy(), 5)
    np.testing.assert_array_equal(neuron.reshape(-1, 5), order)
    np.testing.assert_array_equal(value.reshape(-1, 5), top)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("neurons", [n for n in WIDTHS if n >= 5])
@pytest.mark.parametrize("bad,word", [(np.nan, "NaN"), (np.inf, "infinite"), (-np.inf, "infinite")])
def test_topk_finds_a_non_finite_value_at_the_end_of_a_row(variant, neurons, bad, word):
    acts = np.full((20, neurons), -1.0, np.float32)
    acts[13, neurons - 1] = bad  # the row's last element: the tail, a vector or a block
    with using(variant):
        rec = txray.Recorder(neurons, SIZES, mode="topk", k=5)
        with pytest.raises(ValueError, match=f"token 13 at neuron {neurons - 1} is {word}"):
            rec.update(acts, {kind: np.zeros(20, int) for kind in SIZES})
        assert rec.tokens == 0


def test_select_winners_checks_its_arguments():
    acts = np.zeros((4, 6), np.float32)
    with pytest.raises(ValueError, match="k must be between 1 and the number of neurons"):
        _native.select_winners(acts, "float32", 7)
    acts[2, 1] = np.nan
    with pytest.raises(ValueError, match="row 2 holds a non-finite value"):
        _native.select_winners(acts, "float32", 2)


# Mode all groups a batch's tokens by the feature of its largest vocabulary:
# a counting sort when the vocabulary is not much larger than the batch, a
# comparison sort otherwise; feature rows are allocated in blocks of 32.
@pytest.mark.parametrize("vocab", [90, 300_000], ids=["counting sort", "comparison sort"])
def test_all_groups_tokens_by_feature_in_either_way(vocab):
    rng = np.random.default_rng(vocab)
    sizes = {"word": vocab, "pos": 5}
    neurons, tokens = 3, 400  # 3 neurons: a tail only, no vector
    acts = rng.standard_normal((tokens, neurons)).astype(np.float32)
    feats = {"word": rng.integers(0, 90, tokens) * (vocab // 90), "pos": rng.integers(0, 5, tokens)}
    halves = [txray.Recorder(neurons, sizes, mode="all") for _ in range(2)]
    halves[0].update(acts[:250], {k: v[:250] for k, v in feats.items()})
    halves[1].update(acts[250:], {k: v[250:] for k, v in feats.items()})
    halves[0].merge(halves[1])  # rows of the second land in blocks of the first in another order
    count, total, freq, mass, _ = reference.record(acts, feats, sizes, "all")
    prof = halves[0].profile()
    assert prof.tokens == tokens
    np.testing.assert_allclose(prof.mass(), mass, rtol=1e-12, atol=1e-12)
    for kind, size in sizes.items():
        got_count, got_sum = reference.dense_from_table(prof.table(kind), neurons, size)
        np.testing.assert_array_equal(got_count, count[kind])
        np.testing.assert_allclose(got_sum, total[kind], rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(prof.frequencies(kind), freq[kind])
