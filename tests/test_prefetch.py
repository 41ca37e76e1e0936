"""Prefetch: order, errors and Ctrl-C reach the consumer, the thread never outlives the block."""

from __future__ import annotations

import threading

import pytest
from tiny_model import Tiny

import txray
import txray.pipeline
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


# record_model builds its batches on a Prefetch thread: the same guarantees end to end.


def records(n: int, broken_at: int | None = None) -> list[dict]:
    out = [{"text": f"word{i % 7} and word{i % 5} then word{i % 3} .", "topic": f"t{i % 4}"} for i in range(n)]
    if broken_at is not None:
        del out[broken_at]["topic"]
    return out


def record(corpus, **settings):
    vocab = ["<pad>", "<unk>", "and", "then", "."] + [f"word{i}" for i in range(7)]
    tok = txray.VocabTokenizer(vocab, pad_id=0, max_length=6)
    return txray.record_model(Tiny(len(vocab)), tok, corpus, ["out"], progress=False, max_tokens=64, **settings)


def test_record_model_gives_the_same_profiles_whatever_the_prefetch_depth(monkeypatch):
    corpus = records(300)
    deep = record(corpus, features=["token", "column:topic"], mode="all")["out"]
    monkeypatch.setattr(txray.pipeline, "PREFETCH_BATCHES", 1)
    shallow = record(corpus, features=["token", "column:topic"], mode="all")["out"]
    for kind in ("token", "topic"):
        assert deep.table(kind).equals(shallow.table(kind))
    assert deep.tokens == shallow.tokens == 300 * 6  # six words a record
    assert not prefetch_threads()


def test_an_error_building_a_late_batch_is_raised_by_record_model():
    topics = txray.Column(
        "topic", vocabulary=["t0", "t1", "t2", "t3"]
    )  # no vocabulary pass: the error is met while recording
    with pytest.raises(KeyError, match="column 'topic', which sequence 250"):
        record(records(300, broken_at=250), features=["token", topics])
    assert not prefetch_threads()


def test_ctrl_c_in_the_model_stops_the_prefetch_thread():
    calls = []

    def forward(model, batch):
        calls.append(batch)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return model(batch.input_ids)

    with pytest.raises(KeyboardInterrupt):
        record(records(2000), forward=forward)
    assert len(calls) == 3
    assert not prefetch_threads()
