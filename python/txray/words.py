"""From words to model inputs and back: tokenizers, windows, batches, pooling.

txray records *words*. A tokenizer cuts each word into pieces (subwords);
sequences longer than the model takes are split into windows of whole words
(every word lands in exactly one window, nothing is cut off); windows are
padded into batches by a token budget; after the forward pass the pieces of
each word are pooled back into one activation row (first / last / mean /
max, as NeuroX offers).

Two tokenizers are provided behind one small interface,
:class:`WordTokenizer`: :class:`HFWordTokenizer` wraps a Hugging Face fast
tokenizer (its ``word_ids`` map pieces to words), and :class:`VocabTokenizer`
maps each word to one id of a fixed vocabulary (a word-level LSTM, the
paper's case).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from .corpus import Example

POOLING = ("first", "last", "mean", "max")


@runtime_checkable
class WordTokenizer(Protocol):
    """What txray needs from a tokenizer to feed a model word by word."""

    name: str
    """Shown in profile metadata."""
    max_length: int | None
    """Longest input (special tokens included) the model takes; None: no limit."""
    pad_id: int
    prefix: list[int]
    """Ids of the special tokens before every window (e.g. ``[CLS]``)."""
    suffix: list[int]
    """Ids of the special tokens after every window (e.g. ``[SEP]``)."""

    def pieces(self, sentences: Sequence[Sequence[str]]) -> list[list[list[int]]]:
        """The piece ids of every word of every sentence."""
        ...

    def token_names(self, ids: Sequence[int]) -> list[str]:
        """The strings of token ids (used to name special tokens)."""
        ...


class HFWordTokenizer:
    """A Hugging Face *fast* tokenizer, fed words (``is_split_into_words=True``)."""

    def __init__(self, tokenizer: Any, max_length: int | None = None) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError(
                f"{type(tokenizer).__name__} is not a fast tokenizer; txray needs word_ids() "
                "(load it with AutoTokenizer.from_pretrained(..., use_fast=True))"
            )
        self._tok = tokenizer
        self.name = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
        limit = tokenizer.model_max_length
        # Tokenizers without a limit report a huge sentinel (int(1e30)).
        self.max_length = max_length or (limit if limit and limit < 10**7 else None)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        sentinel = -1  # where the content goes between the special tokens
        wrapped = tokenizer.build_inputs_with_special_tokens([sentinel])
        at = wrapped.index(sentinel)
        self.prefix, self.suffix = list(wrapped[:at]), list(wrapped[at + 1 :])

    def pieces(self, sentences: Sequence[Sequence[str]]) -> list[list[list[int]]]:
        try:
            encoded = self._tok(
                [list(s) for s in sentences],
                is_split_into_words=True,
                add_special_tokens=False,
                return_attention_mask=False,
                return_token_type_ids=False,
            )
        except ValueError as err:  # e.g. GPT-2 needs add_prefix_space=True for pre-split words
            raise ValueError(f"tokenizer {self.name!r} cannot take pre-split words: {err}") from None
        out = []
        for row, words in enumerate(sentences):
            per_word: list[list[int]] = [[] for _ in words]
            for piece, word in zip(encoded["input_ids"][row], encoded.word_ids(row)):
                if word is not None:
                    per_word[word].append(piece)
            out.append(per_word)
        return out

    def token_names(self, ids: Sequence[int]) -> list[str]:
        return list(self._tok.convert_ids_to_tokens(list(ids)))


class VocabTokenizer:
    """One id per word from a fixed vocabulary (a word-level model, e.g. the paper's LSTM).

    ``vocab`` is a list of words (id = position) or a ``{word: id}`` mapping;
    unknown words get the id of ``unk``."""

    def __init__(
        self,
        vocab: Sequence[str] | Mapping[str, int],
        unk: str = "<unk>",
        pad_id: int = 0,
        lower: bool = False,
        max_length: int | None = None,
        name: str = "vocab",
    ) -> None:
        self._index = dict(vocab) if isinstance(vocab, Mapping) else {w: i for i, w in enumerate(vocab)}
        if unk not in self._index:
            raise ValueError(f"the vocabulary has no unknown-word entry {unk!r}")
        self._unk = self._index[unk]
        self._names = {i: w for w, i in self._index.items()}
        self.pad_id = pad_id
        self.lower = lower
        self.max_length = max_length
        self.name = name
        self.prefix: list[int] = []
        self.suffix: list[int] = []

    def pieces(self, sentences: Sequence[Sequence[str]]) -> list[list[list[int]]]:
        index, unk = self._index, self._unk
        return [[[index.get(w.lower() if self.lower else w, unk)] for w in s] for s in sentences]

    def token_names(self, ids: Sequence[int]) -> list[str]:
        return [self._names.get(i, str(i)) for i in ids]


def as_word_tokenizer(tokenizer: Any, max_length: int | None = None) -> WordTokenizer:
    """Wrap a Hugging Face tokenizer in :class:`HFWordTokenizer`; pass a
    :class:`WordTokenizer` through."""
    if isinstance(tokenizer, WordTokenizer):
        if max_length is not None:
            tokenizer.max_length = max_length
        return tokenizer
    if hasattr(tokenizer, "build_inputs_with_special_tokens"):
        return HFWordTokenizer(tokenizer, max_length)
    raise TypeError(
        f"{type(tokenizer).__name__} is not a tokenizer txray knows: pass a Hugging Face fast tokenizer, "
        "a txray.VocabTokenizer, or an object with the txray.WordTokenizer attributes"
    )


@dataclasses.dataclass
class Window:
    """A run of whole words of one example, ready to feed the model."""

    example: Example
    start: int  # first word (index into example.words)
    stop: int  # one past the last word
    input_ids: list[int]  # with the special tokens
    word_of_piece: list[int]  # per input position: word index, or -1 for a special token
    features: dict[str, np.ndarray]  # per kind: one id per word of the example
    special_features: dict[str, dict[int, int]] | None = None  # per kind: {special token id: feature id}

    @property
    def length(self) -> int:
        return len(self.input_ids)


def windows(
    example: Example,
    pieces: list[list[int]],
    tokenizer: WordTokenizer,
    features: dict[str, np.ndarray],
    special_features: dict[str, dict[int, int]] | None = None,
) -> Iterator[Window]:
    """Split an example into windows that fit ``tokenizer.max_length``.

    Windows hold whole words and do not overlap: each word is recorded once
    (its context starts afresh at a window boundary). A word with more pieces
    than a window holds keeps only its first pieces; a word with no pieces
    (the tokenizer dropped it) is skipped."""
    specials = len(tokenizer.prefix) + len(tokenizer.suffix)
    budget = None if tokenizer.max_length is None else tokenizer.max_length - specials
    if budget is not None and budget < 1:
        raise ValueError(f"max_length {tokenizer.max_length} leaves no room beside {specials} special tokens")
    start, ids, owner = 0, list[int](), list[int]()
    for word, word_pieces in enumerate(pieces):
        word_pieces = word_pieces if budget is None else word_pieces[:budget]
        if budget is not None and ids and len(ids) + len(word_pieces) > budget:
            yield _window(example, start, word, ids, owner, tokenizer, features, special_features)
            start, ids, owner = word, [], []
        ids.extend(word_pieces)
        owner.extend([word] * len(word_pieces))
    if ids:
        yield _window(example, start, len(pieces), ids, owner, tokenizer, features, special_features)


def _window(
    example: Example,
    start: int,
    stop: int,
    ids: list[int],
    owner: list[int],
    tokenizer: WordTokenizer,
    features: dict[str, np.ndarray],
    special_features: dict[str, dict[int, int]] | None,
) -> Window:
    prefix, suffix = tokenizer.prefix, tokenizer.suffix
    return Window(
        example,
        start,
        stop,
        input_ids=[*prefix, *ids, *suffix],
        word_of_piece=[-1] * len(prefix) + owner + [-1] * len(suffix),
        features=features,
        special_features=special_features,
    )


@dataclasses.dataclass
class Batch:
    """Padded windows, and for every input position the recorded *unit*
    (a word, or a special token when those are recorded) it belongs to."""

    input_ids: torch.Tensor  # (batch, seq) int64
    attention_mask: torch.Tensor  # (batch, seq) int64, 0 = padding
    lengths: torch.Tensor  # (batch,) int64
    windows: list[Window]
    unit: np.ndarray  # (batch * seq,) int64: unit of each position, -1 = not recorded
    n_units: int
    features: dict[str, np.ndarray]  # per kind: one id per unit
    units_per_window: np.ndarray  # (batch,) int64
    unit_word: np.ndarray  # (n_units,) int64: each unit's word index in its example, -1 = a special token

    @property
    def words(self) -> int:
        """Corpus words in this batch (special tokens not counted)."""
        return sum(w.stop - w.start for w in self.windows)


def make_batch(group: Sequence[Window], tokenizer: WordTokenizer, include_special: bool = False) -> Batch:
    """Pad windows into a batch and number its units in position order.

    With ``include_special`` the special tokens are units too; their feature
    ids come from each window's ``special_features``."""
    width = max(w.length for w in group)
    input_ids = np.full((len(group), width), tokenizer.pad_id, dtype=np.int64)
    mask = np.zeros((len(group), width), dtype=np.int64)
    unit = np.full((len(group), width), -1, dtype=np.int64)
    kinds = list(group[0].features)
    parts: dict[str, list[np.ndarray]] = {kind: [] for kind in kinds}
    per_window = np.zeros(len(group), dtype=np.int64)
    unit_word: list[np.ndarray] = []
    n_units = 0
    for row, window in enumerate(group):
        input_ids[row, : window.length] = window.input_ids
        mask[row, : window.length] = 1
        owner = np.asarray(window.word_of_piece, dtype=np.int64)
        recorded = owner >= 0 if not include_special else np.ones(len(owner), dtype=bool)
        # A new unit starts at every recorded position whose word differs from the previous one
        # (a special token is always a unit of its own).
        starts = recorded & np.concatenate([[True], (owner[1:] != owner[:-1]) | (owner[1:] < 0)])
        ids_of_positions = np.cumsum(starts) - 1 + n_units
        unit[row, : window.length] = np.where(recorded, ids_of_positions, -1)
        count = int(starts.sum())
        per_window[row] = count
        n_units += count
        first_of_unit = np.flatnonzero(starts)
        unit_word.append(owner[first_of_unit])
        for kind in kinds:
            parts[kind].append(_unit_features(window, owner[first_of_unit], kind))
    features = {kind: np.concatenate(parts[kind]) for kind in kinds}
    return Batch(
        input_ids=torch.from_numpy(input_ids),
        attention_mask=torch.from_numpy(mask),
        lengths=torch.from_numpy(mask.sum(axis=1)),
        windows=list(group),
        unit=unit.reshape(-1),
        n_units=n_units,
        features=features,
        units_per_window=per_window,
        unit_word=np.concatenate(unit_word),
    )


def _unit_features(window: Window, owners: np.ndarray, kind: str) -> np.ndarray:
    ids = window.features[kind][np.maximum(owners, 0)]
    special = owners < 0
    if special.any():  # special tokens are units only with include_special; in position order
        assert window.special_features is not None
        positions = np.flatnonzero(np.asarray(window.word_of_piece) < 0)
        ids[special] = [window.special_features[kind][window.input_ids[p]] for p in positions]
    return ids


def batches(windows_: Iterable[Window], max_tokens: int, pool: int = 16) -> Iterator[list[Window]]:
    """Group windows into batches of at most ``max_tokens`` padded positions.

    Up to ``pool`` batches' worth of windows are read ahead and sorted by
    length, so that a batch holds windows of similar length (little padding);
    memory stays bounded by that pool."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, not {max_tokens}")
    buffer: list[Window] = []
    buffered = 0
    for window in windows_:
        buffer.append(window)
        buffered += window.length
        if buffered >= pool * max_tokens:
            yield from _cut(buffer, max_tokens)
            buffer, buffered = [], 0
    yield from _cut(buffer, max_tokens)


def _cut(buffer: list[Window], max_tokens: int) -> Iterator[list[Window]]:
    group: list[Window] = []
    for window in sorted(buffer, key=lambda w: w.length):
        # Sorted ascending, so the newest window is the longest: it sets the padded width.
        if group and (len(group) + 1) * window.length > max_tokens:
            yield group
            group = []
        group.append(window)
    if group:
        yield group


def pool(acts: torch.Tensor, batch: Batch, mode: str = "mean") -> torch.Tensor:
    """Pool a (batch, seq, neurons) tensor into one row per unit (word), in unit order.

    ``first``/``last`` take the word's first/last piece; ``mean``/``max``
    reduce over its pieces (``mean`` in float32). Padding and unrecorded
    special tokens never reach the result."""
    if mode not in POOLING:
        raise ValueError(f"pooling must be one of {POOLING}, not {mode!r}")
    flat = acts.reshape(-1, acts.shape[-1])
    positions = np.flatnonzero(batch.unit >= 0)
    units = batch.unit[positions]
    if len(positions) == batch.n_units:  # one piece per unit (word-level models): nothing to pool
        return flat.index_select(0, torch.from_numpy(positions).to(flat.device))
    if mode in ("first", "last"):
        # Units are numbered in position order, so np.unique finds each unit's first position;
        # reversed, its last.
        if mode == "first":
            _, at = np.unique(units, return_index=True)
        else:
            _, at_rev = np.unique(units[::-1], return_index=True)
            at = len(units) - 1 - at_rev
        return flat.index_select(0, torch.from_numpy(positions[at]).to(flat.device))
    lengths = torch.from_numpy(np.bincount(units, minlength=batch.n_units)).to(flat.device)
    if mode == "mean":
        # One scatter-add over all positions (padding and unrecorded special tokens go to a spare
        # last row): a single pass, several times faster than index_select + segment_reduce.
        owner = np.full(len(flat), batch.n_units, dtype=np.int64)
        owner[positions] = units
        sums = torch.zeros(batch.n_units + 1, flat.shape[1], dtype=torch.float32, device=flat.device)
        sums.index_add_(0, torch.from_numpy(owner).to(flat.device), flat.float())
        return sums[:-1].div_(lengths.unsqueeze(1))
    # Units are numbered in position order, so each unit's pieces are one contiguous segment.
    rows = flat.index_select(0, torch.from_numpy(positions).to(flat.device))
    return torch.segment_reduce(rows, "max", lengths=lengths, axis=0)
