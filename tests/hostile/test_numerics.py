"""Hostile sizes and mixed modes in comparisons (issue 15, part 4)."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

import txray


def _profile(n_neurons, mode="max1", seed=0, tokens=600, vocab=30, k=None):
    rng = np.random.default_rng(seed)
    rec = txray.Recorder(n_neurons, {"token": vocab}, mode=mode, k=k)
    rec.update(rng.random((tokens, n_neurons), dtype=np.float32), {"token": rng.integers(0, vocab, tokens)})
    return rec.profile(name=f"{mode}{seed}")


def test_nearest_caps_k_at_the_neurons_of_b():
    """Reproducer: 200 x 7 neurons with k=2,000,000 took 69 s and 6.8 GB."""
    a, b = _profile(200), _profile(7, seed=1)
    want = txray.nearest(a, b, k=7)  # also compiles the kernel before the timing
    tracemalloc.start()
    start = time.perf_counter()
    table = txray.nearest(a, b, k=2_000_000)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert seconds < 5 and peak < 50 << 20
    assert table.equals(want)
    assert table.column("rank").to_numpy().max() < 7


@pytest.mark.parametrize("k, error", [(2.7, ValueError), (0, ValueError), (True, TypeError), ("3", TypeError)])
def test_nearest_refuses_k_that_is_not_a_positive_integer(k, error):
    a = _profile(5)
    with pytest.raises(error, match="k must be"):
        txray.nearest(a, a, k=k)


def test_nearest_takes_numpy_and_integral_k():
    a = _profile(5)
    assert txray.nearest(a, a, k=np.int64(2)).equals(txray.nearest(a, a, k=2.0))


@pytest.mark.parametrize("other", [dict(mode="all"), dict(mode="topk", k=2)])
def test_comparing_profiles_of_different_modes_is_refused(other):
    a, b = _profile(6), _profile(6, seed=1, **other)
    for call in (
        lambda **kw: txray.compare(a, b, **kw),
        lambda **kw: txray.nearest(a, b, k=2, **kw),
        lambda **kw: txray.match(a, b, **kw),
    ):
        with pytest.raises(ValueError, match="recorded with mode 'max1' and .* with mode .*allow_mode_mismatch=True"):
            call()
        assert call(allow_mode_mismatch=True).num_rows > 0


def test_topk_profiles_with_different_k_are_refused():
    a, b = _profile(6, mode="topk", k=2), _profile(6, seed=1, mode="topk", k=3)
    with pytest.raises(ValueError, match=r"mode 'topk' \(k=2\) and .* mode 'topk' \(k=3\)"):
        txray.compare(a, b)
    assert txray.compare(a, _profile(6, seed=2, mode="topk", k=2)).num_rows == 6
