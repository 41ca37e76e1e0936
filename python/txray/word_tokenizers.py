"""Tokenizers fed words: a word's pieces (subwords), for :mod:`txray.words`.

txray records *words*, so a tokenizer is asked for the pieces of each word of
a sentence already split into words. Two tokenizers are provided behind one
small interface, :class:`WordTokenizer`: :class:`HFWordTokenizer` wraps a
Hugging Face fast tokenizer (its ``word_ids`` map pieces to words; its
:class:`WordPieces` cache cuts each distinct word once), and
:class:`VocabTokenizer` maps each word to one id of a fixed vocabulary (a
word-level LSTM, the paper's case).
"""

from __future__ import annotations

import copy
import itertools
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class WordTokenizer(Protocol):
    """What txray needs from a tokenizer to feed a model word by word.

    Optional: a ``piece_arrays(sentences)`` method (see :func:`piece_arrays`)."""

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


class WordPieces:
    """The pieces of the words a tokenizer has cut, so that each word is cut once.

    Exact for a Hugging Face fast tokenizer fed pre-split words: its Rust side
    (``encode_single_sequence`` in the ``tokenizers`` crate) normalizes,
    pre-tokenizes and cuts each word of a pre-split sentence on its own, as if
    it were the whole input, and then chains the results; a word's pieces
    depend on its text alone. :class:`HFWordTokenizer` uses a cache only for a
    tokenizer class whose encoding is transformers' own, after a probe sentence.

    Holds at most about ``limit`` words: when it holds more, it is emptied
    before the next call. One call at a time (a lock), from any thread; a forked
    process takes its own lock, and a pickled cache comes back empty."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock_pid, self._lock = os.getpid(), threading.Lock()
        self._empty()

    def _empty(self) -> None:
        # The data only: the lock stays, since a thread may be waiting on it.
        self._slot: dict[str, int] = {}  # word -> its row in the arrays below
        self._start = np.zeros(1024, dtype=np.int64)  # per row: first piece in _pieces
        self._count = np.zeros(1024, dtype=np.int64)  # per row: number of pieces
        self._pieces = np.zeros(4096, dtype=np.int64)
        self._n_pieces = 0

    def _locked(self) -> threading.Lock:
        if self._lock_pid != os.getpid():  # forked while another thread may have held it
            self._lock_pid, self._lock = os.getpid(), threading.Lock()
        return self._lock

    def clear(self) -> None:
        """Forget every word (as when the tokenizer has changed)."""
        with self._locked():
            self._empty()

    def __len__(self) -> int:
        return len(self._slot)

    def __getstate__(self) -> dict[str, Any]:
        return {"limit": self.limit}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["limit"])  # type: ignore[misc]

    def lookup(
        self, words: list[str], cut: Callable[[list[str]], tuple[np.ndarray, np.ndarray]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The pieces of ``words`` as :func:`piece_arrays` gives them; ``cut`` gives those
        of the words not seen before (each once, in one call)."""
        with self._locked():
            if len(self._slot) > self.limit:
                self._empty()
            rows = np.fromiter(map(self._slot.get, words, itertools.repeat(-1)), dtype=np.int64, count=len(words))
            missing = rows < 0
            if missing.any():
                unseen = list(itertools.compress(words, missing.tolist()))
                new = list(dict.fromkeys(unseen))
                ids, counts = cut(new)
                _check_piece_counts("cut", ids, counts, len(new))
                first = len(self._slot)
                self._add(ids, counts)
                self._slot.update(zip(new, range(first, first + len(new))))
                rows[missing] = np.fromiter(map(self._slot.__getitem__, unseen), dtype=np.int64, count=len(unseen))
            counts = self._count[rows]
            starts = self._start[rows]
            pieces = self._pieces
        # Piece i of the output: its word's first piece plus its place within the word.
        if np.all(counts == 1):  # one piece per word (most words of a large vocabulary)
            return pieces[starts], counts
        total = int(counts.sum())
        before = np.cumsum(counts) - counts
        at = np.repeat(starts - before, counts) + np.arange(total, dtype=np.int64)
        return pieces[at], counts

    def _add(self, ids: np.ndarray, counts: np.ndarray) -> None:
        rows, n = len(self._slot), len(counts)
        if rows + n > len(self._count):
            size = max(2 * len(self._count), rows + n)
            self._start = np.resize(self._start, size)
            self._count = np.resize(self._count, size)
        if self._n_pieces + len(ids) > len(self._pieces):
            self._pieces = np.resize(self._pieces, max(2 * len(self._pieces), self._n_pieces + len(ids)))
        self._start[rows : rows + n] = self._n_pieces + np.cumsum(counts) - counts
        self._count[rows : rows + n] = counts
        self._pieces[self._n_pieces : self._n_pieces + len(ids)] = ids
        self._n_pieces += len(ids)


_PROBE = ["The", "the", "THE", "don't", "Zürich", "1999", ",", "naïve", "ﬁne", "x", "xx"]


def _encodes_with_transformers_code(tokenizer: Any) -> bool:
    """Whether the tokenizer's batch call is transformers' own code, not a subclass's or a
    function set on the object."""
    methods = ("__call__", "_call_one", "batch_encode_plus", "_batch_encode_plus")
    cls = type(tokenizer)
    own = all(getattr(getattr(cls, m, None), "__module__", "").startswith("transformers.") for m in methods)
    return own and not any(m in vars(tokenizer) for m in methods)


# What HFWordTokenizer's cached path calls: a subclass that replaces one gets no cache.
_WORD_PATH = ("piece_arrays", "_cut_words", "_direct_piece_arrays", "_encode", "_call")


def _cuts_words_alone(cut: Callable[[Sequence[Sequence[str]]], tuple[np.ndarray, np.ndarray]]) -> bool:
    """Whether ``cut`` gives each word of a sentence the pieces it gives the word alone."""
    together = cut([_PROBE])
    alone = cut([[w] for w in _PROBE])
    return all(np.array_equal(a, b) for a, b in zip(together, alone))


class HFWordTokenizer:
    """A Hugging Face *fast* tokenizer, fed words (``is_split_into_words=True``).

    ``record_model`` wraps a Hugging Face tokenizer in one of these; make one
    yourself to set its options:

    - ``max_length``: the longest window, special tokens included (default:
      the tokenizer's ``model_max_length``, or no limit where it has none);
    - ``word_cache``: how many distinct words' pieces to keep (default
      262,144; 0 turns the cache off). The tokenizer is then called only for
      words it has not cut before: a word's pieces depend on its text alone
      (see :class:`WordPieces`). The cache is used only where the
      tokenizer's class encodes with transformers' own code (not a subclass
      of yours that might rewrite its input) and a probe sentence gives each
      word the pieces it gets alone. It is kept across ``record_model`` calls
      that get this same object, and emptied when one finds the tokenizer
      changed (:meth:`refresh`: added tokens, a new normalizer,
      ``split_special_tokens``, ...).

    Raises ``TypeError`` for a slow (Python) tokenizer, and ``ValueError``
    for one that cannot take pre-split words (GPT-2's without
    ``add_prefix_space=True``)."""

    def __init__(self, tokenizer: Any, max_length: int | None = None, word_cache: int = 1 << 18) -> None:
        if isinstance(word_cache, bool) or not isinstance(word_cache, (int, np.integer)) or word_cache < 0:
            raise ValueError(f"word_cache must be a whole number of words >= 0 (0: no cache), not {word_cache!r}")
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
        try:  # here, before any pass over a corpus: e.g. GPT-2 needs add_prefix_space=True
            self._call([["a"]])
        except Exception as err:  # noqa: BLE001 - transformers raises ValueError or AssertionError
            raise ValueError(
                f"tokenizer {self.name!r} cannot take pre-split words ({type(err).__name__}: {err})"
            ) from err
        # The Rust tokenizer cuts each pre-split word alone; a Python subclass might not.
        alone = (
            word_cache > 0
            and _encodes_with_transformers_code(tokenizer)
            and all(getattr(type(self), m) is getattr(HFWordTokenizer, m) for m in _WORD_PATH)
            and not any(m in vars(self) for m in _WORD_PATH)
            and _cuts_words_alone(self._direct_piece_arrays)
        )
        self._cache = WordPieces(int(word_cache)) if alone else None
        self._state = self._tokenizer_state() if alone else None

    def refresh(self) -> None:
        """Empty the word cache if the tokenizer has changed since it was filled (its
        vocabulary, added tokens, normalizer, ...: the Rust tokenizer's whole state; and
        ``split_special_tokens``).
        ``record_model`` calls this once at its start; call it yourself if you change the
        tokenizer between your own calls of :meth:`piece_arrays`."""
        if self._cache is None:
            return
        state = self._tokenizer_state()
        if state != self._state:
            self._cache.clear()
            self._state = state

    def _tokenizer_state(self) -> int:
        # The Rust tokenizer's whole state (a few ms for a 30,000-piece vocabulary), and the one
        # setting transformers passes it at each call.
        return hash((self._tok.backend_tokenizer.to_str(), getattr(self._tok, "split_special_tokens", None)))

    def pieces(self, sentences: Sequence[Sequence[str]]) -> list[list[list[int]]]:
        encoded = self._encode(sentences)
        out = []
        for row, words in enumerate(sentences):
            per_word: list[list[int]] = [[] for _ in words]
            for piece, word in zip(encoded["input_ids"][row], encoded.word_ids(row)):
                if word is not None:
                    per_word[word].append(piece)
            out.append(per_word)
        return out

    def piece_arrays(self, sentences: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`pieces` as two flat arrays (see :func:`piece_arrays`): from the word cache,
        calling the tokenizer only for words it has not cut before (or for all, without a cache)."""
        if self._cache is None:
            return self._direct_piece_arrays(sentences)
        try:
            return self._cache.lookup(list(itertools.chain.from_iterable(sentences)), self._cut_words)
        except TypeError:  # a word that is no string (a list, say): the tokenizer's call names it
            return self._direct_piece_arrays(sentences)

    def _cut_words(self, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
        # Runs of 16 words as one "sentence" each: one Encoding per run, not one per word.
        return self._direct_piece_arrays([words[at : at + 16] for at in range(0, len(words), 16)])

    def _direct_piece_arrays(self, sentences: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """The pieces from one batch call: the ids and word ids of every sentence are chained
        into two arrays, with no work per sentence beyond reading the tokenizer's own lists."""
        encoded = self._encode(sentences)
        rows = encoded["input_ids"]
        n_pieces = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        total = int(n_pieces.sum())
        ids = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=total)
        word_ids = itertools.chain.from_iterable(e.word_ids for e in encoded.encodings)
        try:
            word = np.fromiter(word_ids, dtype=np.int64, count=total)
        except TypeError:  # pieces of no word (None, e.g. an added special token): dropped
            as_float = np.array(list(itertools.chain.from_iterable(e.word_ids for e in encoded.encodings)), np.float64)
            kept = ~np.isnan(as_float)
            row_of = np.repeat(np.arange(len(rows)), n_pieces)
            ids, word = ids[kept], as_float[kept].astype(np.int64)
            n_pieces = np.bincount(row_of[kept], minlength=len(rows)).astype(np.int64)
        n_words = np.fromiter(map(len, sentences), dtype=np.int64, count=len(sentences))
        # word ids count from 0 in every sentence: shifted by the words of the sentences before
        owner = word + np.repeat(np.cumsum(n_words) - n_words, n_pieces)
        if len(owner) > 1 and np.any(owner[1:] < owner[:-1]):
            order = np.argsort(owner, kind="stable")  # a word's pieces together, in their order
            ids, owner = ids[order], owner[order]
        return ids, np.bincount(owner, minlength=int(n_words.sum())).astype(np.int64)

    def _encode(self, sentences: Sequence[Sequence[str]]) -> Any:
        """:meth:`_call`, whose error names the first word the tokenizer cannot take."""
        try:
            return self._call(sentences)
        except Exception as err:
            failing = [w for w in itertools.chain.from_iterable(sentences) if not self._takes(w)][:1]
            if not failing:
                raise
            raise ValueError(
                f"tokenizer {self.name!r} cannot tokenize the word {failing[0]!r} ({type(err).__name__}: {err})"
            ) from err

    def _takes(self, word: str) -> bool:
        try:
            self._call([[word]])
        except Exception:  # noqa: BLE001 - any error: this word is one the tokenizer cannot take
            return False
        return True

    def _call(self, sentences: Sequence[Sequence[str]]) -> Any:
        return self._tok(
            [list(s) for s in sentences],
            is_split_into_words=True,
            add_special_tokens=False,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,  # no warning about inputs longer than the model's: txray cuts windows
        )

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

    def piece_arrays(self, sentences: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`pieces` as two flat arrays (see :func:`piece_arrays`): one lookup per word."""
        words: Iterable[str] = itertools.chain.from_iterable(sentences)
        if self.lower:
            words = map(str.lower, words)
        n = sum(map(len, sentences))
        ids = np.fromiter(map(self._index.get, words, itertools.repeat(self._unk)), dtype=np.int64, count=n)
        return ids, np.ones(n, dtype=np.int64)

    def token_names(self, ids: Sequence[int]) -> list[str]:
        return [self._names.get(i, str(i)) for i in ids]


def as_word_tokenizer(tokenizer: Any, max_length: int | None = None) -> WordTokenizer:
    """Wrap a Hugging Face tokenizer in :class:`HFWordTokenizer`; pass a
    :class:`WordTokenizer` through."""
    if isinstance(tokenizer, WordTokenizer):
        if isinstance(tokenizer, HFWordTokenizer):
            tokenizer.refresh()
        if max_length is not None and max_length != tokenizer.max_length:
            tokenizer = copy.copy(tokenizer)  # the caller's keeps its own (a copy shares the word cache)
            tokenizer.max_length = max_length
        return tokenizer
    if hasattr(tokenizer, "build_inputs_with_special_tokens"):
        return HFWordTokenizer(tokenizer, max_length)
    missing = [
        a
        for a in ("name", "max_length", "pad_id", "prefix", "suffix", "pieces", "token_names")
        if not hasattr(tokenizer, a)
    ]
    raise TypeError(
        f"{type(tokenizer).__name__} is not a tokenizer txray knows: pass a Hugging Face fast tokenizer, "
        "a txray.VocabTokenizer, or an object with the txray.WordTokenizer attributes (this one lacks "
        f"{', '.join(missing)})"
    )


def piece_arrays(tokenizer: WordTokenizer, sentences: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
    """The piece ids of every word of the sentences as two flat int64 arrays: all
    the pieces in order, and the number of pieces of each word.

    Tokenizers with a ``piece_arrays`` method of their own (both of txray's) give
    them without a Python list per word; for others :meth:`WordTokenizer.pieces` is flattened."""
    own = getattr(tokenizer, "piece_arrays", None)
    if own is not None:
        ids, counts = (np.asarray(a, dtype=np.int64) for a in own(sentences))
        _check_piece_counts(f"tokenizer {tokenizer.name!r}: piece_arrays", ids, counts, sum(map(len, sentences)))
        return ids, counts
    words = list(itertools.chain.from_iterable(tokenizer.pieces(sentences)))
    counts = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    ids = np.fromiter(itertools.chain.from_iterable(words), dtype=np.int64, count=int(counts.sum()))
    return ids, counts


def _check_piece_counts(source: str, ids: np.ndarray, counts: np.ndarray, n_words: int) -> None:
    """A ValueError unless ``counts`` has one count per word and they add up to ``ids``."""
    if len(counts) != n_words or int(np.sum(counts)) != len(ids):
        raise ValueError(
            f"{source} gave {len(counts)} piece counts (summing to {int(np.sum(counts))}) and "
            f"{len(ids)} piece ids for {n_words} words"
        )
