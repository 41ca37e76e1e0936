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
    """

    def __init__(self, window: int = DEFAULT_CONTEXT_WINDOW) -> None:
        if window < 0:
            raise ValueError(f"context_window must be 0 or more words, not {window}")
        self.window = window
        # unit -> (document, word, text, word offset)
        self._texts: dict[int, tuple[int, str, str, int]] = {}
        self._prune_above = 0  # held texts that make keep() drop the dead ones

    def __len__(self) -> int:
        """How many units' texts are held."""
        return len(self._texts)

    def keep(self, batch: Batch, units: np.ndarray, entered: np.ndarray, live: Callable[[], np.ndarray]) -> None:
        """Store the text of each unit of a recorded batch that entered some neuron's
        top k with it; drop texts no neuron keeps any more.

        ``units`` are the batch's unit numbers (:func:`unit_numbers`), ``entered``
        the sorted units that entered with the batch (:func:`live_units` with
        ``latest``), and ``live()`` gives every unit the recorders keep.
        """
        texts = self._texts
        if len(entered):
            at = np.minimum(np.searchsorted(entered, units), len(entered) - 1)
            hits = np.flatnonzero((entered[at] == units) & (units >= 0))
            window_of_unit = np.repeat(np.arange(len(batch.windows)), batch.units_per_window)
            for i in hits:
                example, word = batch.windows[window_of_unit[i]].example, int(batch.unit_word[i])
                text, offset = word_window(example.words, word, self.window)
                texts[int(units[i])] = (example.index, example.words[word], text, offset)
        # Dropping asks the recorders for every unit they keep and passes over the held
        # texts, so it waits until the texts have doubled since the last drop: its cost
        # is spread over the texts added, and memory stays within twice the live texts
        # (and one batch).
        if len(texts) > self._prune_above:
            kept = live()
            held = np.fromiter(texts, dtype=np.int64, count=len(texts))
            for unit in held[~np.isin(held, kept)]:
                del texts[int(unit)]
            self._prune_above = 2 * len(texts) + len(units)

    def fill(self, contexts: pa.Table, k: int) -> pa.Table:
        """``contexts`` (a :data:`txray.CONTEXTS_SCHEMA` table, at most ``k`` per neuron) with
        ``document``, ``word``, ``text`` and ``word_offset`` filled from the held texts (null for
        a unit whose text is not held). The rows keep their order and ranks: the text does not
        change them, so ranking again (a sort per layer) would only cost time."""
        found = [self._texts.get(unit) for unit in contexts.column("unit").to_pylist()]
        for j, name in enumerate(("document", "word", "text", "word_offset")):
            field = CONTEXTS_SCHEMA.field(name)
            values = pa.array([None if f is None else f[j] for f in found], field.type)
            contexts = contexts.set_column(contexts.schema.get_field_index(name), field, values)
        return contexts


def unit_numbers(batch: Batch) -> np.ndarray:
    """The unit number of every unit of a batch: its word's position among the
    corpus's words (:attr:`txray.corpus.Example.first_word` plus its index in
    its sequence), the same for every model, tokenizer and shard; -1 for a
    special token (never a context: it has no place in the corpus's text)."""
    window_of_unit = np.repeat(np.arange(len(batch.windows)), batch.units_per_window)
    first_word = np.fromiter((w.example.first_word for w in batch.windows), dtype=np.int64, count=len(batch.windows))
    return np.where(batch.unit_word >= 0, first_word[window_of_unit] + batch.unit_word, -1)


def live_units(recorders: Iterable[Any], latest: bool = False) -> np.ndarray:
    """The sorted distinct units that any of ``recorders`` keeps as a context (with
    ``latest``: that entered with its latest update)."""
    parts = [units for r in recorders if (units := r.context_units(latest)) is not None]
    if not parts:
        return np.zeros(0, dtype=np.int64)
    return parts[0] if len(parts) == 1 else np.unique(np.concatenate(parts))
