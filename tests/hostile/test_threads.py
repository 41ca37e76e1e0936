"""Hostile use of one Recorder from several threads (issue 15, part 2).

A Recorder serialises concurrent calls: every update, merge and profile
runs whole, one after another, so threads sharing a recorder get exactly
the statistics of some serial order of their calls, never a mix. These
tests hammer one recorder from several threads; before the recorder was
locked they gave wrong counts, segfaults or ``malloc(): corrupted top
size``.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import txray
from txray._device import DeviceBackend

N_NEURONS = 48
VOCAB = {"token": 300, "pos": 7}
ROWS = 3000


def _batches(seed: int, n: int, rows: int = ROWS) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        acts = rng.standard_normal((rows, N_NEURONS), dtype=np.float32)
        ids = {kind: rng.integers(0, size, rows) for kind, size in VOCAB.items()}
        out.append((acts, ids))
    return out


def _recorder(mode: str, dense: bool) -> txray.Recorder:
    return txray.Recorder(
        N_NEURONS,
        VOCAB,
        mode=mode,
        k=3 if mode == "topk" else None,
        dense_limit_bytes=txray.recorder.DEFAULT_DENSE_LIMIT if dense else 0,
    )


def _run(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread did not finish (deadlock?)"


def _assert_same(got: txray.Profile, want: txray.Profile) -> None:
    assert got.tokens == want.tokens
    for kind in VOCAB:
        g, w = got.cells(kind), want.cells(kind)
        np.testing.assert_array_equal(g.frequencies, w.frequencies)
        np.testing.assert_array_equal(g.neuron, w.neuron)
        np.testing.assert_array_equal(g.feature, w.feature)
        np.testing.assert_array_equal(g.count, w.count)
        # float sums in another order: equal up to rounding
        np.testing.assert_allclose(g.sum, w.sum, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got.mass(), want.mass(), rtol=1e-9, atol=1e-9)


def _assert_consistent(p: txray.Profile, k: int | None) -> None:
    """What any snapshot of whole updates satisfies."""
    assert p.tokens % ROWS == 0, "a profile saw part of an update"
    per_token = N_NEURONS if k is None else k
    for kind in VOCAB:
        c = p.cells(kind)
        assert int(c.frequencies.sum()) == p.tokens
        if k is not None:  # max1/topk: every token is counted by k neurons
            assert int(c.count.sum()) == p.tokens * per_token


ERRORS: list[BaseException] = []


def _catching(fn):
    def run(*args):
        try:
            fn(*args)
        except BaseException as err:  # noqa: BLE001 - reported by the test
            ERRORS.append(err)

    return run


@pytest.fixture(autouse=True)
def _clear_errors():
    ERRORS.clear()
    yield
    assert not ERRORS, f"a thread raised: {ERRORS[0]!r}"


MODES = [("max1", True), ("max1", False), ("topk", True), ("topk", False), ("all", True)]


@pytest.mark.parametrize("mode,dense", MODES)
def test_update_update_gives_the_serial_result(mode, dense):
    shares = [_batches(seed, 12) for seed in range(4)]
    serial = _recorder(mode, dense)
    for share in shares:
        for acts, ids in share:
            serial.update(acts, ids)
    shared = _recorder(mode, dense)

    @_catching
    def work(share):
        for acts, ids in share:
            shared.update(acts, ids)

    _run([threading.Thread(target=work, args=(share,)) for share in shares])
    _assert_same(shared.profile(), serial.profile())


@pytest.mark.parametrize("mode,dense", MODES)
def test_profile_during_updates_is_whole_and_consistent(mode, dense):
    batches = _batches(10, 40)
    rec = _recorder(mode, dense)
    rec.update(*batches[0])
    done = threading.Event()
    profiles = []

    @_catching
    def updater():
        try:
            for acts, ids in batches[1:]:
                rec.update(acts, ids)
        finally:
            done.set()

    @_catching
    def reader():
        seen = [0]
        while not done.is_set():
            p = rec.profile()
            _assert_consistent(p, rec.k)
            assert p.tokens >= seen[-1], "a later profile saw fewer tokens"
            seen.append(p.tokens)
            assert rec.nbytes > 0 and rec.tokens >= p.tokens
        profiles.append(len(seen) - 1)

    _run([threading.Thread(target=updater), threading.Thread(target=reader), threading.Thread(target=reader)])
    serial = _recorder(mode, dense)
    for acts, ids in batches:
        serial.update(acts, ids)
    _assert_same(rec.profile(), serial.profile())
    assert len(profiles) == 2


@pytest.mark.parametrize("mode,dense", [("max1", True), ("max1", False), ("topk", False), ("all", True)])
def test_merge_during_updates_gives_the_serial_result(mode, dense):
    batches = _batches(20, 24)
    parts = []
    for seed in range(2):
        part = _recorder(mode, dense)
        part.update(*_batches(100 + seed, 1)[0])
        parts.append(part)
    rec = _recorder(mode, dense)
    sink = _recorder(mode, dense)  # reads rec while rec is being updated
    done = threading.Event()
    merged: list[int] = []

    @_catching
    def updater():
        try:
            for acts, ids in batches:
                rec.update(acts, ids)
        finally:
            done.set()

    @_catching
    def merger():
        while not done.is_set() or not merged:
            rec.merge(parts[len(merged) % 2])
            merged.append(len(merged) % 2)

    @_catching
    def reader():
        while not done.is_set() or sink.tokens == 0:  # at least one merge of a non-empty rec
            sink.merge(rec)

    _run([threading.Thread(target=updater), threading.Thread(target=merger), threading.Thread(target=reader)])
    serial = _recorder(mode, dense)
    for acts, ids in batches:
        serial.update(acts, ids)
    for i in merged:
        serial.merge(parts[i])
    _assert_same(rec.profile(), serial.profile())
    _assert_consistent(sink.profile(), rec.k)


def test_crossed_merges_do_not_deadlock():
    a, b = _recorder("max1", True), _recorder("max1", True)
    for rec, seed in ((a, 1), (b, 2)):
        rec.update(*_batches(seed, 1, rows=200)[0])

    # 25 rounds each: every crossed merge can double the token count, and 2^50 x 200 still fits int64.
    @_catching
    def ab():
        for _ in range(25):
            a.merge(b)

    @_catching
    def ba():
        for _ in range(25):
            b.merge(a)

    _run([threading.Thread(target=ab), threading.Thread(target=ba)])
    assert a.tokens > 0 and b.tokens > 0


def test_a_merge_that_would_overflow_the_token_count_is_refused_and_changes_nothing():
    a, b = _recorder("max1", True), _recorder("max1", True)
    for rec, seed in ((a, 1), (b, 2)):
        rec.update(*_batches(seed, 1, rows=200)[0])
    failed = None
    with pytest.raises(ValueError, match="overflow"):
        for _ in range(100):  # merged into each other in turn, the token counts double: int64 ends in ~60 rounds
            for into, other in ((a, b), (b, a)):
                failed = (into, into.profile())
                into.merge(other)
    into, before = failed
    _assert_same(into.profile(), before)
    assert into.tokens == before.tokens > 0


def test_merging_a_recorder_into_itself_is_refused():
    rec = _recorder("max1", False)
    rec.update(*_batches(3, 1, rows=100)[0])
    before = rec.profile()
    with pytest.raises(ValueError, match="itself"):
        rec.merge(rec)
    _assert_same(rec.profile(), before)


class _CAI:
    def __init__(self, **cai):
        self.__cuda_array_interface__ = cai


class _OneAtATimeNative:
    """Stands in for _native.DeviceRecorder (no GPU needed): fails when two
    threads are inside it at once, as the real one has no lock of its own."""

    def __init__(self):
        self.inside = 0
        self.updates = 0
        self.tokens = 0
        self.overlaps = 0

    def _enter(self):
        self.inside += 1
        if self.inside > 1:
            self.overlaps += 1
        time.sleep(0.0005)  # the GIL is free here, as in the real calls
        self.inside -= 1

    def update(self, ptr, rows, *args):
        self._enter()
        self.updates += 1
        self.tokens += rows
        return self.updates

    def idle(self):
        return False

    def take_error(self):
        self._enter()
        return 0, -1, ""

    def completed(self):
        self._enter()
        return self.updates

    def cells(self, kind):
        self._enter()
        empty = np.zeros(0, np.int32)
        return empty, empty, np.zeros(0, np.int64), np.zeros(0, np.float64)

    def frequencies(self, kind):
        self._enter()
        return np.zeros(VOCAB[list(VOCAB)[kind]], np.int64)

    def mass(self):
        self._enter()
        return np.zeros(N_NEURONS)


def test_device_recorder_calls_are_serialised_in_python():
    rec = txray.Recorder(N_NEURONS, VOCAB)
    native = _OneAtATimeNative()
    backend = DeviceBackend(0, N_NEURONS, VOCAB, "max1", 1, 0, native=native)
    rec._device, rec._backend, rec._native = 0, backend, native
    acts = _CAI(data=(1 << 20, False), shape=(10, N_NEURONS), typestr="<f4", version=3)
    ids = {kind: np.zeros(10, np.int64) for kind in VOCAB}

    @_catching
    def updater():
        for _ in range(40):
            rec.update(acts, ids)

    @_catching
    def reader():
        for _ in range(15):
            rec.profile()

    _run([threading.Thread(target=updater) for _ in range(3)] + [threading.Thread(target=reader)])
    assert rec._native.overlaps == 0 and rec._native.updates == 120 and rec._native.tokens == 1200
