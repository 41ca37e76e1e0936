"""Top activating contexts: their table, and their text during :func:`txray.record_model`.

The engine keeps, per neuron, the k highest activations and the *unit*
(token) numbers they occurred at (:class:`txray.Recorder`'s ``contexts``).
:func:`txray.record_model` numbers units by their word's position in the
corpus and turns the surviving candidates into text with
:class:`ContextTexts`: the word, and a window of words around it.

Why text is kept during the pass, not found by a second one: a second pass
would read (and, for most corpora, split into words) the whole corpus again,
and a one-shot stream cannot be read twice. Instead, after every batch the
window of each of its units that entered some neuron's top k is stored, and
windows no neuron keeps any more are dropped, so memory is bounded by
neurons x k x window (for every layer together), never by the corpus.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .profile import CONTEXTS_SCHEMA

if TYPE_CHECKING:  # words.py needs torch; this module must not (the Recorder uses it)
    from .words import Batch

DEFAULT_CONTEXT_WINDOW = 8
"""Words of a context's text on either side of its word, unless told otherwise."""


def word_window(words: list[str], at: int, window: int) -> tuple[str, int]:
    """``(text, offset)``: ``words[at]`` with up to ``window`` words either side,
    joined by single spaces, and the character offset of ``words[at]`` in it."""
    lo = max(0, at - window)
    before = " ".join(words[lo:at])
    offset = len(before) + 1 if before else 0
    return " ".join(words[lo : at + window + 1]), offset


class ContextTexts:
    """The document, word and text of every unit some neuron keeps as a context.

    Call :meth:`keep` after each batch is recorded, with the batch's units and
    the recorders; :meth:`fill` completes a profile's contexts table at the end.
    The texts are held as columns (one chunk per batch, joined when dropping),
    and each batch's are cut from one string of its windows' words: the work
    per kept unit is two slices, not a join and a tuple.
    """

    def __init__(self, window: int = DEFAULT_CONTEXT_WINDOW) -> None:
        if window < 0:
            raise ValueError(f"context_window must be 0 or more words, not {window}")
        self.window = window
        self._chunks: list[_Texts] = []  # the held texts, a chunk per batch (or one, once joined)
        self._held = 0
        self._prune_above = 0  # held texts that make keep() drop the dead ones
        self._lookup: tuple[np.ndarray, np.ndarray, list[pa.Array]] | None = None  # fill()'s, until keep()

    def __len__(self) -> int:
        """How many units' texts are held."""
        return self._held

    def keep(self, batch: Batch, units: np.ndarray, entered: np.ndarray, live: Callable[[], np.ndarray]) -> None:
        """Store the text of each unit of a recorded batch that entered some neuron's
        top k with it; drop texts no neuron keeps any more.

        ``units`` are the batch's unit numbers (:func:`unit_numbers`), ``entered``
        the sorted units that entered with the batch (:func:`entered_units`), and
        ``live()`` gives every unit the recorders keep.
        """
        self._lookup = None
        if len(entered):
            at = np.minimum(np.searchsorted(entered, units), len(entered) - 1)
            hits = np.flatnonzero((entered[at] == units) & (units >= 0))
            if len(hits):
                self._chunks.append(_batch_texts(batch, units, hits, self.window))
                self._held += len(hits)
        # Dropping asks the recorders for every unit they keep and passes over the held
        # texts, so it waits until the texts have doubled since the last drop: its cost
        # is spread over the texts added, and memory stays within twice the live texts
        # (and one batch).
        if self._held > self._prune_above:
            held = self._joined()
            self._chunks = [held.select(np.isin(held.units, live()))]
            self._held = len(self._chunks[0].units)
            self._prune_above = 2 * self._held + len(units)

    def fill(self, contexts: pa.Table, k: int) -> pa.Table:
        """``contexts`` (a :data:`txray.CONTEXTS_SCHEMA` table, at most ``k`` per neuron) with
        ``document``, ``word``, ``text`` and ``word_offset`` filled from the held texts (null for
        a unit whose text is not held). The rows keep their order and ranks: the text does not
        change them, so ranking again (a sort per layer) would only cost time."""
        held_units, order, columns = self._lookup or self._make_lookup()
        units = contexts.column("unit").to_numpy()
        at = np.searchsorted(held_units, units, sorter=order)
        found = at < len(order)
        found[found] = held_units[order[at[found]]] == units[found]
        # A take with a null index gives a null: the rows of units whose text is not held.
        index = np.zeros(len(units), dtype=np.int64)
        index[found] = order[at[found]]
        take = pa.array(index, mask=~found)
        for name, column in zip(_TEXT_COLUMNS, columns):
            field = CONTEXTS_SCHEMA.field(name)
            contexts = contexts.set_column(contexts.schema.get_field_index(name), field, column.take(take))
        return contexts

    def _make_lookup(self) -> tuple[np.ndarray, np.ndarray, list[pa.Array]]:
        """The held units, their ascending order, and the text columns as Arrow arrays:
        made once for the fills of every layer at the end of a run."""
        held = self._joined()
        values = (held.documents, held.words, held.texts, held.offsets)
        columns = [pa.array(v, CONTEXTS_SCHEMA.field(name).type) for name, v in zip(_TEXT_COLUMNS, values)]
        self._lookup = (held.units, np.argsort(held.units, kind="stable"), columns)
        return self._lookup

    def _joined(self) -> _Texts:
        """The held texts as one chunk."""
        if len(self._chunks) != 1:
            self._chunks = [_Texts.concat(self._chunks)]
        return self._chunks[0]


_TEXT_COLUMNS = ("document", "word", "text", "word_offset")


@dataclasses.dataclass
class _Texts:
    """Held texts as columns, one row per unit."""

    units: np.ndarray  # int64
    documents: np.ndarray  # int64
    offsets: np.ndarray  # int64: the word's character offset in its text
    words: list[str]
    texts: list[str]

    @staticmethod
    def concat(chunks: list[_Texts]) -> _Texts:
        if not chunks:
            empty = np.zeros(0, dtype=np.int64)
            return _Texts(empty, empty, empty, [], [])
        return _Texts(
            np.concatenate([c.units for c in chunks]),
            np.concatenate([c.documents for c in chunks]),
            np.concatenate([c.offsets for c in chunks]),
            list(itertools.chain.from_iterable(c.words for c in chunks)),
            list(itertools.chain.from_iterable(c.texts for c in chunks)),
        )

    def select(self, keep: np.ndarray) -> _Texts:
        """The rows where ``keep`` (a boolean mask) is true."""
        flags = keep.tolist()
        return _Texts(
            self.units[keep],
            self.documents[keep],
            self.offsets[keep],
            list(itertools.compress(self.words, flags)),
            list(itertools.compress(self.texts, flags)),
        )


def _batch_texts(batch: Batch, units: np.ndarray, hits: np.ndarray, window: int) -> _Texts:
    """The texts of a batch's units ``hits`` (indices into its units), each what
    :func:`word_window` gives. The words of every window of the batch that has a
    hit, with ``window`` words of its example on either side, are joined once
    into one string; each text is then a slice of it, found by arithmetic on
    the words' character starts."""
    n_windows = len(batch.windows)
    window_of_unit = batch.window_of_unit[hits]
    word = batch.unit_word[hits]
    used = np.unique(window_of_unit)
    # Each used window's region of its example's words: [first, last) in the example,
    # starting at `base` in the batch's list of words.
    first = np.zeros(n_windows, dtype=np.int64)
    base = np.zeros(n_windows, dtype=np.int64)
    n_words = np.zeros(n_windows, dtype=np.int64)  # words of the window's example
    documents = np.zeros(n_windows, dtype=np.int64)
    flat: list[str] = []
    for w in used.tolist():
        example = batch.windows[w].example
        words = example.words
        lo, hi = max(0, batch.windows[w].start - window), min(len(words), batch.windows[w].stop + window)
        first[w], base[w], n_words[w], documents[w] = lo, len(flat), len(words), example.index
        flat.extend(words[lo:hi])
    # starts[i]: where flat[i] begins in " ".join(flat); one more for the end
    starts = np.zeros(len(flat) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, flat), dtype=np.int64, count=len(flat)) + 1, out=starts[1:])
    joined = " ".join(flat)
    shift = base[window_of_unit] - first[window_of_unit]  # example word -> index in flat
    at = word + shift
    lo = np.maximum(0, word - window) + shift
    hi = np.minimum(n_words[window_of_unit], word + window + 1) + shift  # one past the window's last word
    begin, end = starts[lo], starts[hi] - 1
    return _Texts(
        units[hits],
        documents[window_of_unit],
        starts[at] - begin,
        [flat[i] for i in at.tolist()],
        [joined[b:e] for b, e in zip(begin.tolist(), end.tolist())],
    )


def unit_numbers(batch: Batch) -> np.ndarray:
    """The unit number of every unit of a batch: its word's position among the
    corpus's words (:attr:`txray.corpus.Example.first_word` plus its index in
    its sequence), the same for every model, tokenizer and shard; -1 for a
    special token (never a context: it has no place in the corpus's text)."""
    window_of_unit = batch.window_of_unit
    first_word = np.fromiter((w.example.first_word for w in batch.windows), dtype=np.int64, count=len(batch.windows))
    return np.where(batch.unit_word >= 0, first_word[window_of_unit] + batch.unit_word, -1)


def entered_units(recorders: Iterable[Any], units: np.ndarray) -> np.ndarray:
    """The sorted distinct units of a batch (``units``, -1 for none) that entered some
    recorder's top k with its latest update: what :func:`live_units` with ``latest``
    gives, found without a sort per recorder. The recorders mark the units they hold
    since the latest update in one flag per unit of the batch's span (a batch's units
    are numbered close together), and the marks are read once."""
    recorders = [r for r in recorders if r.contexts]
    valid = units[units >= 0]
    if not recorders or not len(valid):
        return np.zeros(0, dtype=np.int64)
    lo = int(valid.min())
    mark = np.zeros(int(valid.max()) - lo + 1, dtype=np.uint8)
    outside = sum(r.mark_context_units(lo, mark) for r in recorders)
    if outside:  # not the batch's units (a merge since the update): ask the slow way
        return live_units(recorders, latest=True)
    return np.flatnonzero(mark) + lo


def live_units(recorders: Iterable[Any], latest: bool = False) -> np.ndarray:
    """The sorted distinct units that any of ``recorders`` keeps as a context (with
    ``latest``: that entered with its latest update)."""
    parts = [units for r in recorders if (units := r.context_units(latest)) is not None]
    if not parts:
        return np.zeros(0, dtype=np.int64)
    return parts[0] if len(parts) == 1 else np.unique(np.concatenate(parts))
