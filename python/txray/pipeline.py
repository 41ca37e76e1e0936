"""``record_model``: one call from a model, a tokenizer and a corpus to one
Profile per layer.

The corpus streams through: words -> features (vocabularies built in a first
pass when not given; POS tags cached) -> windows of whole words -> padded
batches by token budget -> one forward pass capturing every layer -> pieces
pooled into words -> one Recorder per layer. Memory is bounded by the batch
budget and the accumulators, never by the corpus.
"""

from __future__ import annotations

import collections
import contextlib
import inspect
import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from ._inputs import TokenError
from ._version import __version__
from .capture import Capture, Layer, check_shape
from .contexts import ContextTexts, entered_units, live_units, unit_numbers
from .corpus import Corpus, Example, Numbering, Record, Shard, as_corpus, take
from .features import (
    Feature,
    Prediction,
    annotate,
    build_vocabularies,
    chunk_feature_ids,
    needs_vocabulary_pass,
    resolve_features,
    reuse_vocabularies,
)
from .options import RecordOptions
from .prefetch import Prefetch
from .profile import Profile
from .progress import CorpusBar, Progress
from .recording import LayerRecorders, profile_name
from .taggers import default_cache_dir
from .words import (
    Batch,
    PackedWindows,
    Window,
    WordTokenizer,
    as_word_tokenizer,
    batches,
    chunk_windows,
    make_batch,
    piece_arrays,
    pool,
)
from .workers import ChunkWorkers, WorkerTraceback

TOKENIZE_CHUNK = 64  # sequences tokenized per call (fast tokenizers batch internally)
PREFETCH_BATCHES = 4  # batches built ahead of the model
WORKER_CHUNK = 4 * TOKENIZE_CHUNK  # sequences a worker process takes at a time (a task costs ~0.1 ms to send)
FIRST_WORKER_CHUNK = 32  # the first chunks are smaller, so that every worker has one soon after the start
Forward = Callable[[nn.Module, Batch], Any]
T = TypeVar("T")
_RECORDED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # others are recorded as float32


def record_model(
    model: nn.Module,
    tokenizer: Any,
    corpus: Corpus | str | os.PathLike[str] | Iterable[Any],
    layers: Sequence[str | Layer],
    features: Sequence[str | Feature] | None = None,
    options: RecordOptions | None = None,
    **settings: Any,
) -> dict[str, Profile]:
    """Record what the neurons of each layer prefer over a corpus.

    Parameters
    ----------
    model:
        Any ``torch.nn.Module`` (put it on its device first; it is run in
        eval mode under ``torch.inference_mode``, and its mode is restored).
    tokenizer:
        A Hugging Face fast tokenizer, a :class:`txray.VocabTokenizer`
        (word-level models), or any :class:`txray.WordTokenizer`.
    corpus:
        A :class:`txray.Corpus`, a file path, or an iterable of texts/records.
    layers:
        Dotted module names (``"encoder.layer.0.intermediate"``, ``"rnn"``) or
        :class:`txray.Layer` objects; :func:`txray.mlp_layers` lists a
        transformer's MLP layers.
    features:
        The feature kinds (:attr:`RecordOptions.features`; default ``("token",)``).
    options, settings:
        How to record: a :class:`txray.RecordOptions`, and/or any of its fields
        by name (``mode="all"``, ``limit_tokens=10_000``, ``shard=(0, 8)``, ...),
        which override those of ``options``. The fields are documented there.

    Returns
    -------
    dict
        ``{layer name: Profile}``, each named after the corpus and the layer
        (:attr:`RecordOptions.profile_name`); each profile's metadata holds the model,
        layer, corpus, tokenizer, pooling and token count (and ``"shards"``
        for a shard, which returns ``{}`` when it is empty).
    """
    opts = RecordOptions.resolve(options, features, settings)
    pooling, include_special = opts.pooling, opts.include_special
    limit_tokens, cache_dir = opts.limit_tokens, opts.cache_dir
    corpus = as_corpus(corpus)
    word_tokenizer = as_word_tokenizer(tokenizer, opts.max_length)
    resolved = resolve_features(opts.features)
    if opts.vocab_from is not None:
        reuse_vocabularies(resolved, opts.vocab_from)
    capture = Capture(model, layers)
    special_names = _prepare_vocabularies(
        resolved, corpus, limit_tokens, word_tokenizer, include_special, opts.progress
    )
    cache = None if cache_dir is False else (cache_dir or default_cache_dir())
    forward = opts.forward or default_forward(model)
    run = _Run(model, capture, resolved, opts, forward)

    shard = opts.shard
    if shard is not None:  # a fresh Shard: it counts the sequences this run reads
        shard = Shard(*shard) if isinstance(shard, tuple) else Shard(shard.index, shard.count)
    progress = Progress(corpus, limit_tokens, sharded=shard is not None, enabled=opts.progress)
    bar = progress.bar("txray record")

    def examples_here() -> Iterator[Example]:
        """The examples, split into words on this side (annotated; the bar reads them)."""
        examples = corpus.examples(limit_tokens) if shard is None else shard.select(corpus.examples(limit_tokens))
        return bar.read(annotate(examples, resolved, cache, progress))

    was_training = model.training
    model.eval()
    try:
        with contextlib.ExitStack() as stack:
            if not opts.workers:
                ahead = tokenizing_thread(word_tokenizer)
                if ahead is not None:
                    stack.enter_context(ahead)  # joined after the prefetch thread
                windows_ = _windows(examples_here(), resolved, word_tokenizer, special_names, ahead=ahead)
            elif shard is None and not any(f.tagger is not None for f in resolved):
                # The workers split the records into words too: this process reads records and
                # numbers the examples, and does little else for the pipeline.
                split = _split_chunk_windows(corpus, resolved, word_tokenizer, special_names)
                splitters = stack.enter_context(ChunkWorkers(split, opts.workers))  # forked before the thread starts
                windows_ = _split_windows(corpus, limit_tokens, resolved, word_tokenizer, special_names, splitters, bar)
            else:  # a shard keeps its sequences by number, a tagger tags words: both need the words here first
                cut = _packed_chunk_windows(resolved, word_tokenizer, special_names)
                cutters = stack.enter_context(ChunkWorkers(cut, opts.workers))
                windows_ = _windows(examples_here(), resolved, word_tokenizer, special_names, cutters)
            made = (make_batch(group, word_tokenizer, include_special) for group in batches(windows_, opts.max_tokens))
            # The next batches are built on a thread (with workers: gathered from them) while the
            # model runs this one.
            with capture, torch.inference_mode(), Prefetch(made, PREFETCH_BATCHES) as ready:
                for batch in ready:
                    run.step(batch)
                    bar.done(batch.words)
        progress.finish()
    finally:
        progress.close()
        model.train(was_training)
    if not run.recorders and shard is not None and shard.seen:
        return {}
    if not run.recorders:
        raise ValueError(f"corpus {corpus.name!r} has no words to record")
    metadata = {
        "model": opts.name or _model_name(model),
        "corpus": corpus.name,
        "tokenizer": word_tokenizer.name,
        "pooling": pooling,
        "include_special": include_special,
        "limit_tokens": limit_tokens,
        "words": run.words,
        "txray_version": __version__,
    }
    if shard is not None:
        metadata["shards"] = [[shard.index, shard.count]]
    several = len(run.recorders) > 1
    return run.recorders.profiles(
        metadata,
        name=lambda layer: profile_name(opts.profile_name, corpus.label, layer, several),
        fill_contexts=run.texts.fill if run.texts is not None else None,
    )


def default_forward(model: nn.Module) -> Forward:
    """How to call a model on a batch: Hugging Face models get the attention mask
    by keyword, other models whose ``forward`` takes an ``attention_mask`` (a
    TransformerLens ``HookedTransformer``) get the ids and the mask, the rest the ids."""
    if hasattr(model, "config") and hasattr(model, "main_input_name"):
        return lambda m, b: m(input_ids=b.input_ids.to(_device(m)), attention_mask=b.attention_mask.to(_device(m)))
    if "attention_mask" in inspect.signature(model.forward).parameters:
        return lambda m, b: m(b.input_ids.to(_device(m)), attention_mask=b.attention_mask.to(_device(m)))
    return lambda m, b: m(b.input_ids.to(_device(m)))


class _Run:
    """The per-batch work of one recording: forward, capture, pool, record, keep the contexts' text."""

    def __init__(
        self, model: nn.Module, capture: Capture, features: list[Feature], opts: RecordOptions, forward: Forward
    ) -> None:
        self.model, self.capture, self.features = model, capture, features
        self.pooling, self.forward = opts.pooling, forward
        self.recorders: LayerRecorders[str] = LayerRecorders(
            features, opts.mode, opts.k, opts.dense_limit_bytes, opts.contexts
        )
        self.texts = ContextTexts(opts.context_window) if opts.contexts else None
        # A CUDA model's layers are recorded on its device unless told otherwise, or unless
        # contexts are kept (the CPU engine keeps them, a device recorder does not).
        self.on_device = opts.record_on is None and not opts.contexts
        self.words = 0
        self._batch: Batch | None = None  # the batch being recorded, for the hooks
        self._ids: dict[str, np.ndarray] = {}
        self._device_ids: dict[torch.device, dict[str, torch.Tensor]] = {}  # self._ids on each device, per batch
        self._units: np.ndarray | None = None
        self._positional: tuple[dict[str, np.ndarray], np.ndarray, np.ndarray | None] | None = None
        # Without a Prediction feature every layer can be recorded inside its hook, during the
        # forward pass; predictions need the model's output first.
        if not any(isinstance(f, Prediction) for f in features):
            capture.consumer = self._record

    def step(self, batch: Batch) -> None:
        self._batch, self._ids = batch, dict(batch.features)
        self._device_ids, self._positional = {}, None
        self._units = unit_numbers(batch) if self.texts is not None else None
        output = self.forward(self.model, batch)
        if any(isinstance(f, Prediction) for f in self.features):
            self._device_ids, self._positional = {}, None  # the predictions join the ids
        for feature in self.features:
            if isinstance(feature, Prediction):
                self._ids[feature.kind] = self._predictions(feature, output, batch)
        for layer, tensor in self.capture.collect(output).items():
            self._record(layer, tensor)
        if self.texts is not None and self._units is not None:
            recorders = list(self.recorders.recorders())
            entered = entered_units(recorders, self._units)
            self.texts.keep(batch, self._units, entered, lambda: live_units(recorders))
        self.words += batch.n_units

    def _record(self, layer: str, tensor: torch.Tensor) -> None:
        batch = self._batch
        assert batch is not None  # step() sets it before the forward pass that calls this
        check_shape(layer, tensor, tuple(batch.input_ids.shape))
        device = _cuda_device(tensor) if self.on_device else None
        if device is None and batch.one_position_per_unit and tensor.device.type == "cpu":
            # Nothing to pool: the recorder reads the layer's rows where they are, skipping the
            # padding, instead of a gathered copy (the same rows in the same order).
            flat = tensor.reshape(-1, tensor.shape[-1])
            if flat.dtype not in _RECORDED_DTYPES:
                flat = flat.float()
            ids, mask, units = self._at_positions(batch)
            try:
                self.recorders.update(layer, flat, ids, units=units, mask=mask)
            except TokenError as err:
                raise err.naming(_describe_unit(batch, int(batch.unit[err.token]))) from None
            return
        rows = pool(tensor, batch, self.pooling)
        if rows.dtype not in _RECORDED_DTYPES:
            rows = rows.float()
        if device is not None:
            # Recorded where the model runs, on torch's current stream: the ids go to the device
            # once per batch, the activations never leave it, and nothing waits for the device.
            self.recorders.update(layer, rows, self._ids_on(rows.device), device=device)
        else:
            try:
                self.recorders.update(layer, rows.cpu(), self._ids, units=self._units)
            except TokenError as err:
                raise err.naming(_describe_unit(batch, err.token)) from None

    def _at_positions(self, batch: Batch) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray | None]:
        """The batch's feature ids and unit numbers per input position (padding: 0 and -1), and
        the mask of the recorded positions: made once per batch, for every layer."""
        if self._positional is None:
            size, positions = batch.unit.size, batch.positions
            ids = {}
            for kind, values in self._ids.items():
                ids[kind] = np.zeros(size, dtype=np.int64)
                ids[kind][positions] = values
            units = None
            if self._units is not None:
                units = np.full(size, -1, dtype=np.int64)
                units[positions] = self._units
            self._positional = (ids, batch.unit >= 0, units)
        return self._positional

    def _ids_on(self, device: torch.device) -> dict[str, torch.Tensor]:
        ids = self._device_ids.get(device)
        if ids is None:
            ids = {kind: torch.from_numpy(np.asarray(v, dtype=np.int64)).to(device) for kind, v in self._ids.items()}
            self._device_ids[device] = ids
        return ids

    def _predictions(self, feature: Prediction, output: Any, batch: Batch) -> np.ndarray:
        logits = feature.pick(output)
        if feature.vocabulary is None:
            config = getattr(self.model, "config", None)
            feature.set_classes(logits.shape[-1], getattr(config, "id2label", None))
        if logits.dim() == 2:  # one prediction per window: every unit of the window records it
            per_window = logits.argmax(-1).cpu().numpy()
            return np.repeat(per_window, batch.units_per_window)
        if logits.dim() == 3:  # one per position: the word's first piece
            check_shape(f"prediction {feature.kind!r}", logits, tuple(batch.input_ids.shape))
            per_position = logits.argmax(-1).reshape(-1).cpu().numpy()
            positions = np.flatnonzero(batch.unit >= 0)
            _, first = np.unique(batch.unit[positions], return_index=True)
            return per_position[positions[first]]
        raise ValueError(
            f"prediction logits must be (batch, classes) or (batch, seq, classes), got {tuple(logits.shape)}"
        )


def _describe_unit(batch: Batch, unit: int) -> str:
    """A unit of ``batch`` as an error names it: 'the word 'cat' (word 3 of sequence 12)'."""
    window = batch.windows[int(batch.window_of_unit[unit])]
    word = int(batch.unit_word[unit])
    if word < 0:
        return f"a special token of sequence {window.example.index}"
    return f"the word {window.example.words[word]!r} (word {word} of sequence {window.example.index})"


def _prepare_vocabularies(
    features: list[Feature],
    corpus: Corpus,
    limit_tokens: int | None,
    tokenizer: WordTokenizer,
    include_special: bool,
    progress: bool,
) -> dict[int, str] | None:
    """Build missing vocabularies (a first pass, with a bar); with ``include_special``
    add the special tokens to them and return ``{token id: token string}``."""
    if needs_vocabulary_pass(features):
        if not corpus.reiterable:
            raise ValueError(
                f"corpus {corpus.name!r} can be read only once, but features "
                f"{[f.kind for f in features if f.vocabulary is None]} need a first pass to build "
                "their vocabularies: give them a vocabulary, or pass a list or a file"
            )
        with Progress(corpus, limit_tokens, enabled=progress) as bars:
            examples = bars.bar("txray vocabulary").track(corpus.examples(limit_tokens))
            build_vocabularies(features, examples)
            bars.finish()
    if not include_special:
        return None
    special = sorted(set(tokenizer.prefix + tokenizer.suffix))
    names = dict(zip(special, tokenizer.token_names(special)))
    for feature in features:
        if not isinstance(feature, Prediction):
            feature.vocabulary = feature._vocab().extend(names.values())
    return names


def _windows(
    examples: Iterable[Example],
    features: list[Feature],
    tokenizer: WordTokenizer,
    special_names: Mapping[int, str] | None,
    workers: ChunkWorkers[list[Example], PackedWindows] | None = None,
    ahead: Executor | None = None,
) -> Iterator[Window]:
    """The windows of the examples, built a chunk of examples at a time: here (each chunk
    tokenized on ``ahead`` while the one before is cut, when given: :func:`tokenizing_thread`),
    or by ``workers`` (made with :func:`_chunk_windows`), read back in chunk order."""
    if workers is None:
        for group, pieces in _pieces_ahead(take(examples, TOKENIZE_CHUNK), tokenizer, ahead):
            yield from _chunk_windows(group, features, tokenizer, special_names, pieces)[0]
        return
    # Each chunk's examples stay here, for the windows to point to (their text is the contexts').
    sent: collections.deque[list[Example]] = collections.deque()

    def send() -> Iterator[list[Example]]:
        for group in _growing_chunks(examples):
            sent.append(group)
            yield group

    for packed in workers.map(send()):
        yield from packed.unpack(sent.popleft())


def _pieces_ahead(
    groups: Iterable[list[Example]], tokenizer: WordTokenizer, ahead: Executor | None = None
) -> Iterator[tuple[list[Example], tuple[np.ndarray, np.ndarray]]]:
    """Each chunk of examples with its :func:`piece_arrays`, in order. With ``ahead`` (a thread,
    for a tokenizer whose call releases the interpreter's lock: a Hugging Face fast one) the
    next chunk is tokenized there meanwhile, so that its call overlaps the Python work here."""
    if ahead is None:
        for group in groups:
            yield group, piece_arrays(tokenizer, [e.words for e in group])
        return
    pending: tuple[list[Example], Future[tuple[np.ndarray, np.ndarray]]] | None = None
    try:
        for group in groups:
            future = ahead.submit(piece_arrays, tokenizer, [e.words for e in group])
            if pending is not None:
                yield pending[0], pending[1].result()
            pending = (group, future)
        if pending is not None:
            yield pending[0], pending[1].result()
            pending = None
    finally:
        if pending is not None:  # left early: the call under way is not waited for here
            pending[1].cancel()


def tokenizing_thread(tokenizer: WordTokenizer) -> ThreadPoolExecutor | None:
    """A thread for :func:`_pieces_ahead` when the tokenizer's call releases the interpreter's
    lock (``releases_gil``), else None. Use it as a context manager: leaving it joins the thread."""
    if not getattr(tokenizer, "releases_gil", False):
        return None
    return ThreadPoolExecutor(1, thread_name_prefix="txray-tokenize")


def _chunk_windows(
    group: list[Example],
    features: list[Feature],
    tokenizer: WordTokenizer,
    special_names: Mapping[int, str] | None,
    pieces: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[list[Window], list[dict[str, np.ndarray]]]:
    """The windows of a chunk of examples (one tokenizer call for all, or its ``pieces`` when
    given), and the examples' word feature ids."""
    ids, counts = pieces if pieces is not None else piece_arrays(tokenizer, [e.words for e in group])
    feature_ids = chunk_feature_ids(features, group)
    specials = [_special_feature_ids(features, e, special_names) for e in group] if special_names else None
    return chunk_windows(group, ids, counts, tokenizer, feature_ids, specials), feature_ids


def _packed_chunk_windows(
    features: list[Feature], tokenizer: WordTokenizer, special_names: Mapping[int, str] | None
) -> Callable[[list[Example]], PackedWindows]:
    """What a worker does with a chunk of examples: :func:`_chunk_windows`, packed to send back."""

    def work(group: list[Example]) -> PackedWindows:
        windows_, feature_ids = _chunk_windows(group, features, tokenizer, special_names)
        return PackedWindows.pack(windows_, group, feature_ids)

    return work


def _growing_chunks(items: Iterable[T]) -> Iterator[list[T]]:
    """Consecutive lists of :data:`FIRST_WORKER_CHUNK` items, then twice as many, and so on up to
    :data:`WORKER_CHUNK`: the model's first batch needs a pool of windows sorted by length, and
    small first chunks spread that pool over all the workers."""
    iterator, size = iter(items), FIRST_WORKER_CHUNK
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
        size = min(2 * size, WORKER_CHUNK)


def _split_chunk_windows(
    corpus: Corpus, features: list[Feature], tokenizer: WordTokenizer, special_names: Mapping[int, str] | None
) -> Callable[[list[Record]], tuple[list[list[str]], PackedWindows]]:
    """What a worker does with a chunk of records: their words (empty for a record without
    any), and the windows of those with words, packed to send back."""

    def work(records: list[Record]) -> tuple[list[list[str]], PackedWindows]:
        words = [corpus.words_of(record) for record in records]
        # Numbered in the parent (the numbers depend on every chunk before); only errors name them.
        group = [Example(0, w, record) for w, record in zip(words, records) if w]
        windows_, feature_ids = _chunk_windows(group, features, tokenizer, special_names)
        return words, PackedWindows.pack(windows_, group, feature_ids)

    return work


def _split_windows(
    corpus: Corpus,
    limit_tokens: int | None,
    features: list[Feature],
    tokenizer: WordTokenizer,
    special_names: Mapping[int, str] | None,
    workers: ChunkWorkers[list[Record], tuple[list[list[str]], PackedWindows]],
    bar: CorpusBar,
) -> Iterator[Window]:
    """The windows of the corpus, its records split into words and windows by ``workers``
    (made with :func:`_split_chunk_windows`); the examples are numbered here, in corpus
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
                _chunk_windows([e for e in failed if e is not None], features, tokenizer, special_names)
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
            yield from _chunk_windows(examples, features, tokenizer, special_names)[0]
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


def _cuda_device(rows: torch.Tensor) -> str | None:
    """``"cuda:N"`` when a layer's rows are on a CUDA device (recorded there), else None
    (tests stand in for it without a GPU)."""
    return f"cuda:{rows.device.index or 0}" if rows.is_cuda else None


def _device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _model_name(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "name_or_path", None) or getattr(config, "_name_or_path", None) or type(model).__name__
