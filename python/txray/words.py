"""From words to model inputs and back: windows, batches, pooling.

txray records *words*. A tokenizer (:mod:`txray.word_tokenizers`) cuts each
word into pieces (subwords); sequences longer than the model takes are split
into windows of whole words (every word lands in exactly one window, nothing
is cut off); windows are padded into batches by a token budget; after the
forward pass the pieces of each word are pooled back into one activation row
(first / last / mean / max, as NeuroX offers).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch

from .corpus import Example
from .word_tokenizers import WordTokenizer

POOLING = ("first", "last", "mean", "max")


@dataclasses.dataclass
class Window:
    """A run of whole words of one example, ready to feed the model."""

    example: Example
    start: int  # first word (index into example.words)
    stop: int  # one past the last word
    input_ids: np.ndarray  # int64, with the special tokens
    word_of_piece: np.ndarray  # int64, per input position: word index, or -1 for a special token
    features: dict[str, np.ndarray]  # per kind: one id per word of the example
    special_features: dict[str, dict[int, int]] | None = None  # per kind: {special token id: feature id}

    @property
    def length(self) -> int:
        return len(self.input_ids)


@dataclasses.dataclass
class PackedWindows:
    """The windows of a chunk of examples as a few flat arrays, without the examples:
    what a worker process sends back (:mod:`txray.workers`). :meth:`unpack` rebuilds
    the very windows from the examples the reader holds."""

    spans: np.ndarray  # (windows, 3) int64: the example's place in the chunk, first word, one past the last
    lengths: np.ndarray  # (windows,) int64: input positions of each window
    input_ids: np.ndarray  # every window's input ids, one after the other
    word_of_piece: np.ndarray  # likewise
    features: dict[str, np.ndarray]  # per kind: every example's word ids, one after the other
    special_features: list[dict[str, dict[int, int]] | None]  # per example

    @classmethod
    def pack(
        cls, windows_: Sequence[Window], examples: Sequence[Example], features: Sequence[dict[str, np.ndarray]]
    ) -> PackedWindows:
        """``windows_`` of ``examples``, whose word feature ids are ``features`` (one dict per example)."""
        place = {id(e): i for i, e in enumerate(examples)}
        spans = np.array([(place[id(w.example)], w.start, w.stop) for w in windows_], dtype=np.int64).reshape(-1, 3)
        lengths = np.fromiter((w.length for w in windows_), dtype=np.int64, count=len(windows_))
        empty = np.zeros(0, dtype=np.int64)
        kinds = features[0].keys() if features else ()
        specials: dict[int, dict[str, dict[int, int]] | None] = {}
        for w in windows_:
            specials.setdefault(place[id(w.example)], w.special_features)
        return cls(
            spans,
            lengths,
            np.concatenate([w.input_ids for w in windows_]) if windows_ else empty,
            np.concatenate([w.word_of_piece for w in windows_]) if windows_ else empty,
            {kind: np.concatenate([f[kind] for f in features]) for kind in kinds},
            [specials.get(i) for i in range(len(examples))],
        )

    def unpack(self, examples: Sequence[Example]) -> list[Window]:
        """The windows, each of its example in ``examples`` (the chunk :meth:`pack` was given)."""
        # Slices, not np.split: a view per example and window, without np.split's work per piece.
        ends = list(itertools.accumulate(len(e.words) for e in examples))
        features = [{kind: ids[lo:hi] for kind, ids in self.features.items()} for lo, hi in zip([0, *ends], ends)]
        ends = np.cumsum(self.lengths).tolist()
        ids, owner = self.input_ids, self.word_of_piece
        return [
            Window(examples[e], start, stop, ids[lo:hi], owner[lo:hi], features[e], self.special_features[e])
            for (e, start, stop), lo, hi in zip(self.spans.tolist(), [0, *ends], ends)
        ]


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
    counts = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
    ids = np.fromiter(itertools.chain.from_iterable(pieces), dtype=np.int64, count=int(counts.sum()))
    return windows_of_arrays(example, ids, counts, tokenizer, features, special_features)


def _piece_budget(tokenizer: WordTokenizer) -> int | None:
    """The pieces a window holds beside its special tokens (None: no limit); a ValueError
    when ``max_length`` leaves no room for any."""
    specials = len(tokenizer.prefix) + len(tokenizer.suffix)
    if tokenizer.max_length is None:
        return None
    if tokenizer.max_length - specials < 1:
        raise ValueError(f"max_length {tokenizer.max_length} leaves no room beside {specials} special tokens")
    return tokenizer.max_length - specials


def windows_of_arrays(
    example: Example,
    ids: np.ndarray,
    counts: np.ndarray,
    tokenizer: WordTokenizer,
    features: dict[str, np.ndarray],
    special_features: dict[str, dict[int, int]] | None = None,
) -> Iterator[Window]:
    """:func:`windows` from the example's pieces as flat arrays (:func:`piece_arrays`)."""
    prefix, suffix = tokenizer.prefix, tokenizer.suffix
    budget = _piece_budget(tokenizer)
    n = len(counts)
    head, tail = np.array(prefix, dtype=np.int64), np.array(suffix, dtype=np.int64)
    no_head, no_tail = np.full(len(prefix), -1, dtype=np.int64), np.full(len(suffix), -1, dtype=np.int64)
    if budget is None or len(ids) <= budget:  # the usual case: the whole example is one window
        if len(ids):
            owner = np.repeat(np.arange(n, dtype=np.int64), counts)
            yield Window(
                example,
                0,
                n,
                input_ids=np.concatenate([head, ids, tail]),
                word_of_piece=np.concatenate([no_head, owner, no_tail]),
                features=features,
                special_features=special_features,
            )
        return
    if counts.max() > budget:  # keep an over-long word's first pieces
        position_in_word = np.arange(len(ids)) - np.repeat(np.cumsum(counts) - counts, counts)
        ids, counts = ids[position_in_word < budget], np.minimum(counts, budget)
    ends = np.cumsum(counts)  # pieces up to and including each word
    before = np.concatenate([[0], ends])  # pieces before each word
    owner = np.repeat(np.arange(n, dtype=np.int64), counts)
    start = 0
    while before[start] < before[n]:  # pieces left
        # Greedy: the window ends before the first word that would overflow the budget.
        stop = min(int(np.searchsorted(ends, before[start] + budget, side="right")), n)
        lo, hi = before[start], before[stop]
        yield Window(
            example,
            start,
            stop,
            input_ids=np.concatenate([head, ids[lo:hi], tail]),
            word_of_piece=np.concatenate([no_head, owner[lo:hi], no_tail]),
            features=features,
            special_features=special_features,
        )
        start = stop


def chunk_windows(
    examples: Sequence[Example],
    ids: np.ndarray,
    counts: np.ndarray,
    tokenizer: WordTokenizer,
    features: Sequence[dict[str, np.ndarray]],
    special_features: Sequence[dict[str, dict[int, int]] | None] | None = None,
) -> list[Window]:
    """:func:`windows_of_arrays` of every example of a chunk, in order, from the chunk's
    pieces as flat arrays (:func:`piece_arrays` of all its examples' words).

    ``features`` (and ``special_features`` when given) hold one dict per example. An
    example that fits in one window (the usual case) is a view into two arrays built
    for the whole chunk at once; only longer examples are cut one by one."""
    if not examples:
        return []
    prefix, suffix = tokenizer.prefix, tokenizer.suffix
    n_specials = len(prefix) + len(suffix)
    budget = _piece_budget(tokenizer)
    n_words = np.fromiter((len(e.words) for e in examples), dtype=np.int64, count=len(examples))
    word_at = np.concatenate([[0], np.cumsum(n_words)])
    piece_at = np.concatenate([[0], np.cumsum(counts)])[word_at]
    n_pieces = np.diff(piece_at)
    whole = n_pieces > 0 if budget is None else (n_pieces > 0) & (n_pieces <= budget)
    # The windows of the whole examples, one after the other: prefix, pieces, suffix.
    lengths = np.where(whole, n_pieces + n_specials, 0)
    window_at = np.concatenate([[0], np.cumsum(lengths)])
    input_ids = np.empty(int(window_at[-1]), dtype=np.int64)
    word_of_piece = np.full(len(input_ids), -1, dtype=np.int64)
    starts = window_at[:-1][whole]
    for offset, token in enumerate(prefix):
        input_ids[starts + offset] = token
    for offset, token in enumerate(suffix):
        input_ids[starts + lengths[whole] - len(suffix) + offset] = token
    in_whole = np.repeat(whole, n_pieces)  # each piece: of a whole example?
    example_of_piece = np.repeat(np.arange(len(examples)), n_pieces)[in_whole]
    # A piece's place: its window's start, the prefix, then its place among its example's pieces.
    place = window_at[example_of_piece] + len(prefix) + np.flatnonzero(in_whole) - piece_at[example_of_piece]
    input_ids[place] = ids[in_whole]
    word_in_example = np.arange(word_at[-1], dtype=np.int64) - np.repeat(word_at[:-1], n_words)
    word_of_piece[place] = np.repeat(word_in_example, counts)[in_whole]
    specials = special_features if special_features is not None else itertools.repeat(None)
    out: list[Window] = []
    for i, (example, example_features, example_specials) in enumerate(zip(examples, features, specials)):
        if whole[i]:
            lo, hi = window_at[i], window_at[i + 1]
            out.append(
                Window(
                    example,
                    0,
                    int(n_words[i]),
                    input_ids[lo:hi],
                    word_of_piece[lo:hi],
                    example_features,
                    example_specials,
                )
            )
        elif n_pieces[i]:
            words, pieces = slice(word_at[i], word_at[i + 1]), slice(piece_at[i], piece_at[i + 1])
            out.extend(
                windows_of_arrays(example, ids[pieces], counts[words], tokenizer, example_features, example_specials)
            )
    return out


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

    @functools.cached_property
    def positions(self) -> np.ndarray:
        """(recorded positions,) int64: the flat input positions that belong to a unit, in order."""
        return np.flatnonzero(self.unit >= 0)

    @property
    def one_position_per_unit(self) -> bool:
        """Every unit is one input position (a word-level tokenizer): nothing to pool."""
        return len(self.positions) == self.n_units

    @functools.cached_property
    def window_of_unit(self) -> np.ndarray:
        """(n_units,) int64: the index in :attr:`windows` of each unit's window."""
        return np.repeat(np.arange(len(self.windows), dtype=np.int64), self.units_per_window)


def make_batch(group: Sequence[Window], tokenizer: WordTokenizer, include_special: bool = False) -> Batch:
    """Pad windows into a batch and number its units in position order.

    With ``include_special`` the special tokens are units too; their feature
    ids come from each window's ``special_features``. The whole batch is done
    at once in NumPy, not window by window."""
    n = len(group)
    lengths = np.fromiter((w.length for w in group), dtype=np.int64, count=n)
    width = int(lengths.max())
    ids = np.concatenate([w.input_ids for w in group])
    owner = np.concatenate([w.word_of_piece for w in group])
    row_of = np.repeat(np.arange(n), lengths)
    row_start = np.cumsum(lengths) - lengths
    column = np.arange(len(ids)) - row_start[row_of]
    input_ids = np.full((n, width), tokenizer.pad_id, dtype=np.int64)
    input_ids[row_of, column] = ids
    mask = (np.arange(width) < lengths[:, None]).astype(np.int64)
    recorded = owner >= 0 if not include_special else np.ones(len(owner), dtype=bool)
    # A new unit starts at every recorded position whose word differs from the previous one,
    # and at the start of every window (a special token is always a unit of its own).
    boundary = np.empty(len(owner), dtype=bool)
    boundary[0] = True
    np.not_equal(owner[1:], owner[:-1], out=boundary[1:])
    boundary |= owner < 0
    boundary[row_start] = True
    starts = recorded & boundary
    unit = np.full((n, width), -1, dtype=np.int64)
    unit[row_of, column] = np.where(recorded, np.cumsum(starts) - 1, -1)
    first = np.flatnonzero(starts)
    unit_word, window_of_unit = owner[first], row_of[first]
    features = {kind: _unit_features(group, kind, unit_word, window_of_unit, ids[first]) for kind in group[0].features}
    batch = Batch(
        input_ids=torch.from_numpy(input_ids),
        attention_mask=torch.from_numpy(mask),
        lengths=torch.from_numpy(lengths.copy()),
        windows=list(group),
        unit=unit.reshape(-1),
        n_units=len(first),
        features=features,
        units_per_window=np.bincount(window_of_unit, minlength=n).astype(np.int64),
        unit_word=unit_word,
    )
    batch.positions  # noqa: B018 - computed here, on the producer's thread, not by the model's
    return batch


def _unit_features(
    group: Sequence[Window], kind: str, unit_word: np.ndarray, window_of_unit: np.ndarray, unit_token: np.ndarray
) -> np.ndarray:
    """Each unit's feature id: its word's, looked up in its example's array (windows of one
    example share that array: it is joined once), or its special token's."""
    arrays: dict[int, int] = {}  # id(array) -> its place in `parts`
    parts: list[np.ndarray] = []
    place = np.empty(len(group), dtype=np.int64)
    for row, window in enumerate(group):
        array = window.features[kind]
        place[row] = arrays.setdefault(id(array), len(parts))
        if place[row] == len(parts):
            parts.append(array)
    sizes = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
    offset = (np.cumsum(sizes) - sizes)[place]
    joined = np.concatenate(parts)
    special = unit_word < 0
    out = (
        joined[offset[window_of_unit] + np.maximum(unit_word, 0)] if len(joined) else np.zeros(len(unit_word), np.int64)
    )
    # special tokens are units only with include_special
    for i in np.flatnonzero(special):
        features = group[window_of_unit[i]].special_features
        assert features is not None
        out[i] = features[kind][int(unit_token[i])]
    return out


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
    positions = batch.positions
    units = batch.unit[positions]
    if batch.one_position_per_unit:  # word-level models: nothing to pool
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
