"""``record_model``: one call from a model, a tokenizer and a corpus to one
Profile per layer.

The corpus streams through: words -> features (vocabularies built in a first
pass when not given; POS tags cached) -> windows of whole words -> padded
batches by token budget -> one forward pass capturing every layer -> pieces
pooled into words -> one Recorder per layer. Memory is bounded by the batch
budget and the accumulators, never by the corpus.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ._version import __version__
from .capture import Capture, Layer, check_shape
from .corpus import Corpus, Example, Shard, as_corpus, take
from .features import (
    Feature,
    Prediction,
    annotate,
    build_vocabularies,
    needs_vocabulary_pass,
    resolve_features,
    word_feature_ids,
)
from .profile import Profile
from .recorder import DEFAULT_DENSE_LIMIT, Recorder
from .taggers import default_cache_dir
from .words import Batch, Window, WordTokenizer, as_word_tokenizer, batches, make_batch, pool, windows

TOKENIZE_CHUNK = 64  # sequences tokenized per call (fast tokenizers batch internally)
Forward = Callable[[nn.Module, Batch], Any]


def record_model(
    model: nn.Module,
    tokenizer: Any,
    corpus: Corpus | str | os.PathLike | Iterable[Any],
    layers: Sequence[str | Layer],
    features: Sequence[str | Feature] = ("token",),
    mode: str = "max1",
    k: int | None = None,
    pooling: str = "mean",
    include_special: bool = False,
    limit_tokens: int | None = None,
    max_tokens: int = 4096,
    max_length: int | None = None,
    forward: Forward | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    name: str | None = None,
    dense_limit_bytes: int = DEFAULT_DENSE_LIMIT,
    shard: Shard | tuple[int, int] | None = None,
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
        Feature kinds recorded per word: ``"token"``, ``"pos"``, ``"label"``,
        ``"prediction"``, ``"ngram2"``, ``"column:NAME"``, or
        :class:`txray.Feature` objects.
    mode, k:
        ``"max1"`` (the paper), ``"topk"`` with ``k``, or ``"all"``.
    pooling:
        How a word's pieces become one row: ``"first"``, ``"last"``,
        ``"mean"`` or ``"max"``.
    include_special:
        Also record special tokens (``[CLS]``, ``[SEP]``) as units of their
        own; their word-level features are their own strings.
    limit_tokens:
        Record only the first this-many words of the corpus.
    max_tokens:
        Padded input positions per forward pass (the batch budget).
    max_length:
        Longest window (special tokens included); default: the tokenizer's
        ``model_max_length``. Longer sequences are split into windows.
    forward:
        ``forward(model, batch)`` runs the model on a :class:`txray.words.Batch`;
        default: ``model(input_ids=..., attention_mask=...)`` for Hugging Face
        models, ``model(input_ids)`` otherwise.
    cache_dir:
        Where POS tags are cached (default ``~/.cache/txray``; ``False`` disables).
    name:
        Model name for the metadata; default: the model's ``name_or_path``.
    shard:
        ``(index, count)`` or a :class:`txray.corpus.Shard`: record only the
        sequences ``i`` with ``i % count == index`` (counted after
        ``limit_tokens``). Vocabularies are still built from the whole corpus,
        so the parts of all shards merge (:func:`txray.distributed.merge_profiles`,
        ``txray merge``) into the profile of a whole run. Each part's metadata
        holds ``"shards": [[index, count]]``; an empty shard (more shards than
        sequences) returns ``{}``.

    Returns
    -------
    dict
        ``{layer name: Profile}``; each profile's metadata holds the model,
        layer, corpus, tokenizer, pooling and token count.
    """
    corpus = as_corpus(corpus)
    word_tokenizer = as_word_tokenizer(tokenizer, max_length)
    features = resolve_features(features)
    capture = Capture(model, layers)
    special_names = _prepare_vocabularies(features, corpus, limit_tokens, word_tokenizer, include_special)
    cache = None if cache_dir is False else (cache_dir or default_cache_dir())
    run = _Run(model, capture, features, mode, k, pooling, forward or default_forward(model), dense_limit_bytes)

    if shard is not None:  # a fresh Shard: it counts the sequences this run reads
        shard = Shard(*shard) if isinstance(shard, tuple) else Shard(shard.index, shard.count)
    examples = corpus.examples(limit_tokens) if shard is None else shard.select(corpus.examples(limit_tokens))
    examples = annotate(examples, features, cache)
    was_training = model.training
    model.eval()
    bar = tqdm(total=limit_tokens, unit="tok", unit_scale=True, disable=not progress, desc="txray record")
    try:
        with capture, torch.inference_mode():
            for group in batches(_windows(examples, features, word_tokenizer, special_names), max_tokens):
                batch = make_batch(group, word_tokenizer, include_special)
                run.step(batch)
                bar.update(batch.words)
    finally:
        bar.close()
        model.train(was_training)
    if not run.recorders and shard is not None and shard.seen:
        return {}
    if not run.recorders:
        raise ValueError(f"corpus {corpus.name!r} has no words to record")
    metadata = {
        "model": name or _model_name(model),
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
    return run.profiles(metadata)


def default_forward(model: nn.Module) -> Forward:
    """How to call a model on a batch: Hugging Face models get the attention mask."""
    if hasattr(model, "config") and hasattr(model, "main_input_name"):
        return lambda m, b: m(input_ids=b.input_ids.to(_device(m)), attention_mask=b.attention_mask.to(_device(m)))
    return lambda m, b: m(b.input_ids.to(_device(m)))


class _Run:
    """The per-batch work of one recording: forward, capture, pool, record."""

    def __init__(
        self,
        model: nn.Module,
        capture: Capture,
        features: list[Feature],
        mode: str,
        k: int | None,
        pooling: str,
        forward: Forward,
        dense_limit_bytes: int,
    ) -> None:
        self.model, self.capture, self.features = model, capture, features
        self.mode, self.k, self.pooling, self.forward = mode, k, pooling, forward
        self.dense_limit_bytes = dense_limit_bytes
        self.recorders: dict[str, Recorder] = {}
        self.words = 0
        self._batch: Batch | None = None  # the batch being recorded, for the hooks
        self._ids: dict[str, np.ndarray] = {}
        # Without a Prediction feature every layer can be recorded inside its hook, during the
        # forward pass; predictions need the model's output first.
        if not any(isinstance(f, Prediction) for f in features):
            capture.consumer = self._record

    def step(self, batch: Batch) -> None:
        self._batch, self._ids = batch, dict(batch.features)
        output = self.forward(self.model, batch)
        for feature in self.features:
            if isinstance(feature, Prediction):
                self._ids[feature.kind] = self._predictions(feature, output, batch)
        for layer, tensor in self.capture.collect(output).items():
            self._record(layer, tensor)
        self.words += batch.n_units

    def _record(self, layer: str, tensor: torch.Tensor) -> None:
        check_shape(layer, tensor, tuple(self._batch.input_ids.shape))
        rows = pool(tensor, self._batch, self.pooling)
        if rows.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            rows = rows.float()
        recorder = self.recorders.get(layer) or self._new_recorder(layer, rows.shape[1])
        try:
            recorder.update(rows.cpu(), self._ids)
        except ValueError as err:
            raise ValueError(f"layer {layer!r}: {err}") from None

    def _new_recorder(self, layer: str, width: int) -> Recorder:
        sizes = {f.kind: len(f.vocabulary) for f in self.features}
        recorder = Recorder(width, sizes, mode=self.mode, k=self.k, dense_limit_bytes=self.dense_limit_bytes)
        self.recorders[layer] = recorder
        return recorder

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

    def profiles(self, metadata: Mapping[str, Any]) -> dict[str, Profile]:
        names = {f.kind: f.names() for f in self.features}
        return {
            layer: recorder.profile(
                name=layer,
                feature_names=names,
                metadata={**metadata, "layer": layer, "tokens": recorder.tokens},
            )
            for layer, recorder in self.recorders.items()
        }


def _prepare_vocabularies(
    features: list[Feature], corpus: Corpus, limit_tokens: int | None, tokenizer: WordTokenizer, include_special: bool
) -> dict[int, str] | None:
    """Build missing vocabularies (a first pass); with ``include_special`` add
    the special tokens to them and return ``{token id: token string}``."""
    if needs_vocabulary_pass(features):
        if not corpus.reiterable:
            raise ValueError(
                f"corpus {corpus.name!r} can be read only once, but features "
                f"{[f.kind for f in features if f.vocabulary is None]} need a first pass to build "
                "their vocabularies: give them a vocabulary, or pass a list or a file"
            )
        build_vocabularies(features, corpus.examples(limit_tokens))
    if not include_special:
        return None
    special = sorted(set(tokenizer.prefix + tokenizer.suffix))
    names = dict(zip(special, tokenizer.token_names(special)))
    for feature in features:
        if not isinstance(feature, Prediction):
            feature.vocabulary = feature.vocabulary.extend(names.values())
    return names


def _windows(
    examples: Iterable[Example],
    features: list[Feature],
    tokenizer: WordTokenizer,
    special_names: Mapping[int, str] | None,
) -> Iterator[Window]:
    for group in take(examples, TOKENIZE_CHUNK):
        pieces = tokenizer.pieces([e.words for e in group])
        for example, example_pieces in zip(group, pieces):
            ids = word_feature_ids(features, example)
            specials = _special_feature_ids(features, example, special_names) if special_names else None
            yield from windows(example, example_pieces, tokenizer, ids, specials)


def _special_feature_ids(
    features: list[Feature], example: Example, special_names: Mapping[int, str]
) -> dict[str, dict[int, int]]:
    return {
        f.kind: {token: f.vocabulary.id(f.special_string(example, name)) for token, name in special_names.items()}
        for f in features
        if not isinstance(f, Prediction)
    }


def _device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _model_name(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "name_or_path", None) or getattr(config, "_name_or_path", None) or type(model).__name__
