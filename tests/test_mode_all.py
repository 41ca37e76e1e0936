"""Mode all's paths in the CPU kernels (cpp/kernels.cpp check_rows_of, add_all_rows),
on every instruction set this build has: the check before the adds (finiteness,
read as the floor reads, and the rows that reach some neuron's context
threshold), and the adds of both kinds in one pass over each row.

Widths around the check's blocks of 32 values and 8-value vectors; rows
contiguous, with gaps between them, and strided; exact ties at the context
thresholds over several updates; a non-finite value at a row's last element."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import reference
import torch

import txray
from txray import _native

SIZES = {"token": 6, "pos": 3}
VARIANTS = _native.simd_variants()
WIDTHS = [1, 7, 8, 31, 32, 33, 40, 65, 129]


@contextlib.contextmanager
def using(name):
    before = _native.simd()
    _native.set_simd(name)
    try:
        yield
    finally:
        _native.set_simd(before)


def layout_of(values: np.ndarray, layout: str, dtype: str) -> torch.Tensor:
    """values (exact in dtype) as a tensor whose rows are contiguous, have gaps between them, or are strided."""
    tensor = torch.from_numpy(values).to(getattr(torch, dtype))
    tokens, neurons = values.shape
    if layout == "gaps":  # row stride > neurons, values contiguous
        wide = torch.zeros((tokens, neurons + 5), dtype=tensor.dtype)
        wide[:, :neurons] = tensor
        return wide[:, :neurons]
    if layout == "strided":  # every other column of a wider matrix
        wide = torch.zeros((tokens, 2 * neurons), dtype=tensor.dtype)
        wide[:, ::2] = tensor
        return wide[:, ::2]
    return tensor


def context_rows(profile) -> list[tuple[int, int, float, int]]:
    return list(zip(*(profile.contexts.column(c).to_pylist() for c in ("neuron", "rank", "activation", "unit"))))


def record_in_updates(variant, tensor, feats, cuts, contexts):
    with using(variant):
        rec = txray.Recorder(tensor.shape[1], SIZES, mode="all", contexts=contexts)
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            rec.update(tensor[lo:hi], {kind: ids[lo:hi] for kind, ids in feats.items()})
        return rec.profile()


@pytest.mark.parametrize("neurons", WIDTHS)
@pytest.mark.parametrize("layout", ["contiguous", "gaps", "strided"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_sums_and_contexts_over_several_updates_match_the_reference_on_every_set(neurons, layout, dtype):
    rng = np.random.default_rng(neurons * 7 + len(layout))
    tokens = 90
    values = rng.integers(-2, 3, size=(tokens, neurons)).astype(np.float32)  # exact ties at every threshold
    values[40:50] = 2.0  # a later update's rows tie the thresholds the earlier ones set
    feats = {kind: rng.integers(0, size, tokens) for kind, size in SIZES.items()}
    tensor = layout_of(values, layout, dtype)
    cuts = [0, 30, 45, 90]
    profiles = {v: record_in_updates(v, tensor, feats, cuts, contexts=3) for v in VARIANTS}
    count, total, freq, _, n = reference.record(values, feats, SIZES, "all")
    first = profiles[VARIANTS[0]]
    assert first.tokens == n
    for kind, size in SIZES.items():
        got_count, got_sum = reference.dense_from_table(first.table(kind), neurons, size)
        np.testing.assert_array_equal(got_count, count[kind])
        np.testing.assert_allclose(got_sum, total[kind], rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(first.frequencies(kind), freq[kind])
    expected = reference.contexts(values, 3, "all")
    for v, prof in profiles.items():
        assert context_rows(prof) == expected, v
        for kind in SIZES:  # bit for bit: the same adds in the same order on every set
            assert prof.table(kind).equals(first.table(kind)), f"{kind} table: {v} vs {VARIANTS[0]}"


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("neurons", WIDTHS)
@pytest.mark.parametrize("bad,word", [(np.nan, "NaN"), (np.inf, "infinite"), (-np.inf, "infinite")])
def test_a_non_finite_last_element_changes_nothing(variant, neurons, bad, word):
    rng = np.random.default_rng(neurons)
    good = rng.standard_normal((20, neurons)).astype(np.float32)
    acts = rng.standard_normal((20, neurons)).astype(np.float32) + 5.0  # would raise every threshold
    acts[13, neurons - 1] = bad  # the row's last element: the tail, a vector or a block
    feats = {kind: rng.integers(0, size, 20) for kind, size in SIZES.items()}
    with using(variant):
        rec = txray.Recorder(neurons, SIZES, mode="all", contexts=2)
        rec.update(good, feats)
        before = rec.profile()
        with pytest.raises(ValueError, match=f"token 13 at neuron {neurons - 1} is {word}"):
            rec.update(acts, feats)
        after = rec.profile()
    assert after.tokens == before.tokens == 20
    assert after.contexts.equals(before.contexts)
    for kind in SIZES:
        assert after.table(kind).equals(before.table(kind))
        np.testing.assert_array_equal(after.frequencies(kind), before.frequencies(kind))


@pytest.mark.parametrize("variant", VARIANTS)
def test_only_rows_reaching_a_threshold_are_offered_and_none_is_missed(variant):
    # After the first update every neuron's threshold is 1.0 (its 2 best are 1.0 and 1.0);
    # the second update's rows are below it except one value per row, in a different
    # neuron each time, equal to the threshold (a tie: a lower unit stays ahead) or above it.
    neurons = 70
    first = np.full((2, neurons), 1.0, np.float32)
    second = np.full((neurons, neurons), -1.0, np.float32)
    second[np.arange(neurons), np.arange(neurons)] = np.where(np.arange(neurons) % 2 == 0, 1.0, 3.0)
    feats = {kind: np.zeros(2 + neurons, np.int64) for kind in SIZES}
    with using(variant):
        rec = txray.Recorder(neurons, SIZES, mode="all", contexts=2)
        rec.update(first, {kind: ids[:2] for kind, ids in feats.items()})
        rec.update(second, {kind: ids[2:] for kind, ids in feats.items()})
        got = context_rows(rec.profile())
    assert got == reference.contexts(np.vstack([first, second]), 2, "all")
