"""``record_model``: one call from a model, a tokenizer and a corpus to one
Profile per layer.

The corpus streams through: words -> features (vocabularies built in a first
pass when not given; POS tags cached) -> windows of whole words -> padded
batches by token budget -> one forward pass capturing every layer -> pieces
pooled into words -> one Recorder per layer. Memory is bounded by the batch
budget and the accumulators, never by the corpus.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ._inputs import TokenError
from ._version import __version__
from .capture import Capture, Layer, check_shape
from .contexts import ContextTexts, entered_units, live_units, unit_numbers
from .corpus import Corpus, Example, as_corpus
from .features import (
    Feature,
    Prediction,
    annotate,
    build_vocabularies,
    needs_vocabulary_pass,
    resolve_features,
    reuse_vocabularies,
)
from .options import RecordOptions
from .prefetch import Prefetch
from .producer import (
    one_core_tokenizer,
    split_windows,
    windows_of_examples,
    worker_cut,
    worker_split,
)
from .profile import Profile
from .progress import Progress
from .recording import LayerRecorders, profile_name
from .taggers import default_cache_dir
from .word_tokenizers import WordTokenizer, as_word_tokenizer
from .words import Batch, batches, make_batch, pool
from .workers import ChunkWorkers

PREFETCH_BATCHES = 4  # batches built ahead of the model
Forward = Callable[[nn.Module, Batch], Any]
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

    shard = opts.fresh_shard()
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
                windows_ = windows_of_examples(examples_here(), resolved, word_tokenizer, special_names)
            elif shard is None and not any(f.tagger is not None for f in resolved):
                # The workers split the records into words too: this process reads records and
                # numbers the examples, and does little else for the pipeline.
                split = worker_split(corpus, resolved, word_tokenizer, special_names)
                # Forked before the prefetch thread starts.
                splitters = stack.enter_context(ChunkWorkers(split, opts.workers, initializer=one_core_tokenizer))
                windows_ = split_windows(corpus, limit_tokens, resolved, word_tokenizer, special_names, splitters, bar)
            else:  # a shard keeps its sequences by number, a tagger tags words: both need the words here first
                cut = worker_cut(resolved, word_tokenizer, special_names)
                cutters = stack.enter_context(ChunkWorkers(cut, opts.workers, initializer=one_core_tokenizer))
                windows_ = windows_of_examples(examples_here(), resolved, word_tokenizer, special_names, cutters)
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
