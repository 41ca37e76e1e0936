"""Prefetch: order, errors and Ctrl-C reach the consumer, the thread never outlives the block."""

from __future__ import annotations

import threading

import pytest

from txray.prefetch import Prefetch


def prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "txray-prefetch"]


def test_items_come_in_order():
    with Prefetch(iter(range(1000)), depth=3) as items:
        assert list(items) == list(range(1000))
    assert not prefetch_threads()


def failing(n, error):
    yield from range(n)
    raise error


def test_an_error_of_the_source_reaches_the_consumer_after_the_items_before_it():
    seen = []
    with pytest.raises(ValueError, match="bad record 5"):
        with Prefetch(failing(5, ValueError("bad record 5")), depth=2) as items:
            for item in items:
                seen.append(item)
    assert seen == [0, 1, 2, 3, 4]
    assert not prefetch_threads()


def test_keyboard_interrupt_in_the_source_propagates():
    with pytest.raises(KeyboardInterrupt):
        with Prefetch(failing(2, KeyboardInterrupt()), depth=1) as items:
            list(items)
    assert not prefetch_threads()


def test_leaving_early_stops_a_producer_blocked_on_a_full_queue():
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    with pytest.raises(KeyboardInterrupt):
        with Prefetch(endless(), depth=2) as items:
            for item in items:
                if item == 3:
                    raise KeyboardInterrupt  # Ctrl-C while the model runs
    assert not prefetch_threads()
    assert len(produced) <= 3 + 2 + 2  # bounded: consumed, queued, one blocked in put
    with Prefetch(endless(), depth=2) as items:
        assert next(items) == 0
    assert not prefetch_threads()


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        Prefetch([], depth=0)
