"""Prefetch: order, errors and Ctrl-C reach the consumer, the thread never outlives the block."""

from __future__ import annotations

import threading

import pytest
from tiny_model import VOCAB, FailingTokenizer, Tiny, broken_stream, interrupted_at, records

import txray
import txray.pipeline
import txray.producer
from txray.prefetch import Prefetch


def prefetch_threads():
    """The prefetch threads."""
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


def record(corpus, **settings):
    tok = txray.VocabTokenizer(VOCAB, pad_id=0, max_length=6)
    return txray.record_model(Tiny(len(VOCAB)), tok, corpus, ["out"], progress=False, max_tokens=64, **settings)


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
    forward, calls = interrupted_at(3)
    with pytest.raises(KeyboardInterrupt):
        record(records(2000), forward=forward)
    assert len(calls) == 3
    assert not prefetch_threads()


def test_windows_before_a_tokenizer_error_come_first():
    from txray.features import Token, build_vocabularies

    examples = list(txray.Corpus(records(300)).examples())
    token = Token()
    build_vocabularies([token], examples)
    tok = FailingTokenizer(VOCAB, pad_id=0, max_length=6, fail_at_call=3)
    seen = []
    with pytest.raises(ValueError, match="tokenizer failed on call 3"):
        for window in txray.producer.windows_of_examples(iter(examples), [token], tok, None):
            seen.append(window.example.index)
    assert seen == list(range(2 * txray.producer.TOKENIZE_CHUNK))  # the two chunks before it, whole


@pytest.mark.parametrize(
    ("fail_at_call", "want"),
    [(1, "tokenizer failed on call 1"), (2, "the stream broke at record 70"), (None, "the stream broke at record 70")],
)
def test_errors_come_in_corpus_order(fail_at_call, want):
    # Record 70 is in the second chunk of 64: the first chunk's tokenizer error comes before it.
    topic = txray.Column("topic", vocabulary=["t0", "t1", "t2", "t3"])  # a stream: no vocabulary pass
    tok = FailingTokenizer(VOCAB, pad_id=0, fail_at_call=fail_at_call)
    with pytest.raises((ValueError, OSError), match=want):
        txray.record_model(Tiny(len(VOCAB)), tok, broken_stream(300, 70), ["out"], features=[topic], progress=False)
    assert tok.threads == {"txray-prefetch"}
    assert not prefetch_threads()


def test_an_error_in_the_model_stops_the_prefetch_thread_while_its_traceback_lives():
    def forward(model, batch):
        raise RuntimeError("the model failed")

    with pytest.raises(RuntimeError, match="the model failed") as caught:
        record(records(2000), forward=forward)
    assert caught.value.__traceback__ is not None  # the traceback (and record_model's frame) is alive
    assert not prefetch_threads()
