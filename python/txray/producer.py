"""From a corpus to windows, ahead of the model: ``record_model``'s producer.

Sequences are tokenized a chunk at a time and cut into windows of whole words
(:func:`tokenize_chunk`, which ends in :func:`txray.words.chunk_windows`), in one
of three ways that give the same windows in the same order:

- here, chunk after chunk (:func:`windows_of_examples`);
- in worker processes, from sequences split into words here
  (:func:`windows_of_examples` with workers running :func:`worker_cut`): what a
  shard or a tagged feature needs;
- in worker processes that split the corpus's records into words too
  (:func:`split_windows`, workers running :func:`worker_split`): this process
  then only reads the records and numbers the sequences.

``record_model`` pads the windows into batches (:func:`txray.words.batches`,
:func:`txray.words.make_batch`) on its prefetch thread.
"""

from __future__ import annotations

import collections
import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TypeVar

import numpy as np

from .corpus import Corpus, Example, Numbering, Record, take
from .features import Feature, Prediction, chunk_feature_ids
from .progress import CorpusBar
from .word_tokenizers import WordTokenizer, piece_arrays
from .words import PackedWindows, Window, chunk_windows
from .workers import ChunkWorkers, WorkerTraceback

TOKENIZE_CHUNK = 64  # sequences tokenized per call (fast tokenizers batch internally)
WORKER_CHUNK = 4 * TOKENIZE_CHUNK  # sequences a worker process takes at a time (a task costs ~0.1 ms to send)
FIRST_WORKER_CHUNK = 32  # the first chunks are smaller, so that every worker has one soon after the start
T = TypeVar("T")


def windows_of_examples(
    examples: Iterable[Example],
    features: list[Feature],
    tokenizer: WordTokenizer,
    special_names: Mapping[int, str] | None,
    workers: ChunkWorkers[list[Example], PackedWindows] | None = None,
) -> Iterator[Window]:
    """The windows of the examples, built a chunk of examples at a time: here, or by
    ``workers`` (running :func:`worker_cut`), read back in chunk order."""
    if workers is None:
        for group in take(examples, TOKENIZE_CHUNK):
            yield from tokenize_chunk(group, features, tokenizer, special_names)[0]
        return
    # Each chunk's examples stay here, for the windows to point to (their text is the contexts').
    sent: collections.deque[list[Example]] = collections.deque()

    def send() -> Iterator[list[Example]]:
        for group in _growing_chunks(examples):
            sent.append(group)
            yield group

    for packed in workers.map(send()):
        yield from packed.unpack(sent.popleft())


def tokenize_chunk(
    group: list[Example],
    features: list[Feature],
    tokenizer: WordTokenizer,
    special_names: Mapping[int, str] | None,
) -> tuple[list[Window], list[dict[str, np.ndarray]]]:
    """The windows of a chunk of examples (one tokenizer call for all), and the examples'
    word feature ids."""
    ids, counts = piece_arrays(tokenizer, [e.words for e in group])
    feature_ids = chunk_feature_ids(features, group)
    specials = [_special_feature_ids(features, e, special_names) for e in group] if special_names else None
    return chunk_windows(group, ids, counts, tokenizer, feature_ids, specials), feature_ids


def worker_cut(
    features: list[Feature], tokenizer: WordTokenizer, special_names: Mapping[int, str] | None
) -> Callable[[list[Example]], PackedWindows]:
    """What a worker does with a chunk of examples: :func:`tokenize_chunk`, packed to send back."""

    def work(group: list[Example]) -> PackedWindows:
        windows_, feature_ids = tokenize_chunk(group, features, tokenizer, special_names)
        return PackedWindows.pack(windows_, group, feature_ids)

    return work


def one_core_tokenizer() -> None:
    """Each worker process's initializer: a Hugging Face tokenizer there runs on one core
    (``TOKENIZERS_PARALLELISM=false``, unless it is set), so that N workers use N cores. In a
    worker forked from a process that has not used the tokenizer's threads yet, each worker
    would start a thread per core of the machine: N times as many threads as cores."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _growing_chunks(items: Iterable[T]) -> Iterator[list[T]]:
    """Consecutive lists of :data:`FIRST_WORKER_CHUNK` items, then twice as many, and so on up to
    :data:`WORKER_CHUNK`: the model's first batch needs a pool of windows sorted by length, and
    small first chunks spread that pool over all the workers."""
    iterator, size = iter(items), FIRST_WORKER_CHUNK
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
        size = min(2 * size, WORKER_CHUNK)


def worker_split(
    corpus: Corpus, features: list[Feature], tokenizer: WordTokenizer, special_names: Mapping[int, str] | None
) -> Callable[[list[Record]], tuple[list[list[str]], PackedWindows]]:
    """What a worker does with a chunk of records: their words (empty for a record without
    any), and the windows of those with words, packed to send back."""

    def work(records: list[Record]) -> tuple[list[list[str]], PackedWindows]:
        words = [corpus.words_of(record) for record in records]
        # Numbered in the parent (the numbers depend on every chunk before); only errors name them.
        group = [Example(0, w, record) for w, record in zip(words, records) if w]
        windows_, feature_ids = tokenize_chunk(group, features, tokenizer, special_names)
        return words, PackedWindows.pack(windows_, group, feature_ids)

    return work


def split_windows(
    corpus: Corpus,
    limit_tokens: int | None,
    features: list[Feature],
    tokenizer: WordTokenizer,
    special_names: Mapping[int, str] | None,
    workers: ChunkWorkers[list[Record], tuple[list[list[str]], PackedWindows]],
    bar: CorpusBar,
) -> Iterator[Window]:
    """The windows of the corpus, its records split into words and windows by ``workers``
    (made with :func:`worker_split`); the examples are numbered here, in corpus
    order (``limit_tokens`` too), and ``bar`` reads them."""
    numbering = Numbering(limit_tokens)
    sent: collections.deque[list[tuple[int, Record]]] = collections.deque()

    def send() -> Iterator[list[Record]]:
        for group in _growing_chunks(corpus.positioned_records()):
            sent.append(group)
            yield [record for _, record in group]

    results = workers.map(send())
    while not numbering.done:
        failure = None
        try:
            result = next(results, None)
        except Exception as error:
            failure = error
        if failure is not None:
            if isinstance(failure.__cause__, WorkerTraceback):
                # Raised in a worker: the chunk is numbered and done again on this thread, so that
                # its error names the sequence as it would without workers.
                failed = [numbering.example(p, r, corpus.words_of(r)) for p, r in sent.popleft()]
                tokenize_chunk([e for e in failed if e is not None], features, tokenizer, special_names)
            raise failure  # raised here (reading the corpus, sending a chunk), or not again here
        if result is None:
            return
        words, packed = result
        group = sent.popleft()
        examples = []
        for (position, record), record_words in zip(group, words):
            example = numbering.example(position, record, record_words)
            if example is not None:
                examples.append(example)
        for _ in bar.read(examples):  # the bar learns where each example ends
            pass
        if numbering.done:  # the limit cut this chunk short: its windows are cut again here
            yield from tokenize_chunk(examples, features, tokenizer, special_names)[0]
        else:
            yield from packed.unpack(examples)


def _special_feature_ids(
    features: list[Feature], example: Example, special_names: Mapping[int, str]
) -> dict[str, dict[int, int]]:
    return {
        f.kind: {token: f._vocab().id(f.special_string(example, name)) for token, name in special_names.items()}
        for f in features
        if not isinstance(f, Prediction)
    }
