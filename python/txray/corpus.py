"""Corpora that stream: plain text, CSV/Parquet columns, Hugging Face datasets, or any iterable.

A corpus yields *records* (dicts): the text of one sequence (or its words,
already split) plus any other columns (a label, a topic, per-word tags).
Files are read in record batches, never whole, and a saved dataset is
memory-mapped, so memory stays constant however large the corpus is.

    corpus = txray.Corpus("wiki.txt")                          # one sequence a line
    corpus = txray.Corpus("tweets.csv", text="text")           # a CSV column (others kept)
    corpus = txray.Corpus("sst2_train/", text="sentence")      # a folder Dataset.save_to_disk wrote
    corpus = txray.Corpus(dataset, text="sentence")            # a datasets Dataset or IterableDataset
    corpus = txray.Corpus(records, text="sentence")            # any iterable of dicts / strings
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import numbers
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from pathlib import Path
from typing import Any

import pyarrow as pa
import regex

Record = Mapping[str, Any]
WordSplitter = Callable[[str], list[str]]

# Words and punctuation apart ("it's" and "well-known" stay whole): what the
# paper's word-level models saw, and what a POS tagger expects. Numbers with
# a decimal or thousands separator ("5.5", "1,000"), a currency sign before a
# number ("$3.20") and dotted abbreviations ("U.S.", "e.g.") stay whole too.
#
# A word is never cut inside a grapheme cluster (Unicode UAX #29): combining
# marks (decomposed accents, Devanagari vowel signs and viramas, Hebrew
# points, Arabic harakat, Thai vowels and tones), joiners and Hangul jamo stay
# with their letter, and an emoji sequence (ZWJ, skin tone, flag, keycap) is
# one token. Text with none of the characters that join clusters (every
# ASCII text, and most text in Latin, Greek, Cyrillic, CJK) takes the fast
# `re` pattern; the rest the `regex` one with \X. The two give the same
# words on text without such characters (tests/hostile/test_words.py).
_CURRENCY = "\u0024\u00a2-\u00a5\u058f\u060b\u07fe-\u07ff\u09f2-\u09f3\u09fb\u0af1\u0bf9\u0e3f\u17db\u20a0-\u20c0\ua838\ufdfc\ufe69\uff04\uffe0-\uffe1\uffe5-\uffe6"
_NUMBER_OR_ABBREVIATION = (
    r"[.,](?:(?<=\d[.,])\d++"  # 5.5, 1,000 (a number goes on)
    r"|(?<=(?<!\w)[^\W\d_]\.)[^\W\d_](?:\.[^\W\d_])*+\.)"  # U.S. (single letters and dots)
)
_WORD_RE = (
    rf"\w++(?:[-'’]\w++|{_NUMBER_OR_ABBREVIATION})*+"  # words
    rf"|[{_CURRENCY}]\d++(?:[.,]\d++)*+"  # $3.20
    r"|[^\w\s]"  # punctuation, symbols
)
# The same rules over grapheme clusters: a word cluster starts with a word
# character (re's \w: letters, numbers, _), a mark or a joiner.
_WC = r"[\p{L}\p{N}_\p{M}\u200c\u200d]"
_W = rf"(?:(?={_WC})\X)"
_L = r"(?:(?=[\p{L}\p{Nl}\p{No}])\X)"
_D = r"(?:(?=\p{Nd})\X)"
_GRAPHEME_WORD = regex.compile(
    rf"{_W}++(?:[-'’]{_W}++|[.,](?:(?<=\p{{Nd}}\p{{M}}*[.,]){_D}++"
    rf"|(?<=(?<!{_WC})[\p{{L}}\p{{Nl}}\p{{No}}]\p{{M}}*\.){_L}(?:\.{_L})*+\.))*+"
    rf"|[{_CURRENCY}]{_D}++(?:[.,]{_D}++)*+"
    r"|(?![\s\x1c-\x1f])\X",  # re's \s has \x1c-\x1f too
    regex.V0,
)
# Possessive quantifiers need Python 3.11's re; 3.10 takes the regex pattern.
_WORD = re.compile(_WORD_RE) if sys.version_info >= (3, 11) else _GRAPHEME_WORD
# Characters that join a grapheme cluster with a neighbour, and marks. None
# is below U+0300, so the search skips those first (14 times faster on
# Wikipedia text than testing the properties of every character).
_CLUSTERING_PROPERTIES = (
    r"[\p{M}\p{GCB=Extend}\p{GCB=SpacingMark}\p{GCB=ZWJ}\p{GCB=Prepend}"
    r"\p{GCB=RI}\p{GCB=L}\p{GCB=V}\p{GCB=T}]"
)
_CLUSTERING = regex.compile(rf"[^\x00-\u02ff](?<={_CLUSTERING_PROPERTIES})")


class ColumnError(KeyError, ValueError):
    """A record lacks a column the caller asked for. A KeyError (a missing
    key) and a ValueError (bad input: the command line reports it without a
    traceback), whose message reads as written."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


TEXT_SUFFIXES = (".txt", ".text", ".tok", ".raw")
TABLE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}
READ_BATCH_ROWS = 4096


def split_words(text: str) -> list[str]:
    """The default word splitter: words (with inner hyphens/apostrophes) and
    punctuation marks, e.g. ``"It's well-known, isn't it?"`` ->
    ``["It's", "well-known", ",", "isn't", "it", "?"]``.

    Numbers and abbreviations stay whole (``"$3.20"``, ``"5.5"``,
    ``"1,000"``, ``"U.S."``), and no grapheme cluster is ever cut: a
    combining mark stays with its letter (``"cafe\u0301"``, ``"श्री"``,
    pointed Hebrew, vocalised Arabic, Thai) and an emoji sequence is one
    token. Scripts written without spaces (Thai, Chinese, Japanese) are not
    segmented into words: a run of letters is one word."""
    if text.isascii() or _CLUSTERING.search(text) is None:
        return _WORD.findall(text)
    return _GRAPHEME_WORD.findall(text)


def split_whitespace(text: str) -> list[str]:
    """Split on whitespace only (for corpora that are already tokenized, such as WikiText)."""
    return text.split()


@dataclasses.dataclass
class Example:
    """One sequence of the corpus as txray sees it: its words and its record.

    ``index`` is the sequence's position in the corpus; ``first_word`` the
    position of its first word among the corpus's words (both count from 0,
    after ``limit_tokens``, across every shard); ``tags`` holds the
    word-level annotations computed for it (e.g. ``tags["pos"]``)."""

    index: int
    words: list[str]
    record: Record
    tags: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    first_word: int = 0
    position: int = 0
    """How far the corpus had been read once this sequence was, in the unit of
    :meth:`Corpus.size` (bytes of a text or CSV file, records otherwise)."""


class Corpus:
    """A re-readable stream of sequences.

    Parameters
    ----------
    source:
        A path (``.txt`` and other plain text: one sequence a line, blank lines
        skipped; ``.csv``/``.tsv``; ``.parquet``; a folder that a Hugging Face
        ``Dataset.save_to_disk`` wrote, memory-mapped), a Hugging Face
        ``datasets.Dataset`` or ``IterableDataset`` (iterated row by row, never
        loaded whole), or any iterable of strings, of word lists, or of dicts.
        A path, a dataset or a list can be read several times (txray needs that
        to build vocabularies before recording); a one-shot iterator only once.
    text:
        The column holding each sequence's text (or its list of words).
    split:
        Turns a text into words (default :func:`split_words`); ignored when
        the column already holds lists of words.
    name:
        Shown in profile metadata; defaults to the file name. Profile names
        use :attr:`label`.
    """

    def __init__(
        self,
        source: str | os.PathLike | Iterable[Any],
        text: str = "text",
        split: WordSplitter = split_words,
        name: str | None = None,
    ) -> None:
        self.text = text
        self.split = split
        self._given_name = name
        self._source: Iterable[Any] | None = None
        if isinstance(source, (str, os.PathLike)):
            self.path: Path | None = Path(source)
            if self.path.is_dir():
                self._source = load_saved_dataset(self.path)
            elif not self.path.is_file():
                raise FileNotFoundError(f"corpus file not found: {self.path}")
            self.name = name or self.path.name
        else:
            if _is_dataset_dict(source):
                raise TypeError(
                    f"a corpus is one split of a dataset, not a {type(source).__name__} of splits "
                    f"{', '.join(map(repr, source))}: pass e.g. dataset[{next(iter(source), 'train')!r}]"
                )
            if isinstance(source, (bytes, Mapping)) or not isinstance(source, Iterable):
                raise TypeError(f"a corpus is a path or an iterable of texts/records, not {type(source).__name__}")
            self.path = None
            self._source = source
            self.name = name or _dataset_name(source) or type(source).__name__
        self._check_text_column()
        self._consumed = False

    @property
    def label(self) -> str | None:
        """The corpus in profile names: the name given, else the file name without its
        suffix (``wiki`` for ``data/wiki.txt``), else a Hugging Face dataset's name;
        None for an unnamed in-memory source."""
        if self._given_name:
            return self._given_name
        return self.path.stem if self.path is not None else _dataset_name(self._source)

    def size(self) -> tuple[int, str] | None:
        """How much there is to read, and in what unit: ``(bytes, "B")`` for a text,
        CSV or TSV file; ``(records, "seq")`` for a Parquet file, a saved dataset or a
        source with a length (a list, a ``Dataset``, an ``IterableDataset`` whose
        split size its info holds); None when unknown (a generator). Progress bars
        use it for their total; :attr:`Example.position` counts in the same unit."""
        if self._source is not None:
            return _source_size(self._source)
        assert self.path is not None  # no source: the corpus is a file
        kind = TABLE_SUFFIXES.get(self.path.suffix.lower())
        if kind == "parquet":
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(self.path).metadata.num_rows), "seq"
        return self.path.stat().st_size, "B"

    @property
    def reiterable(self) -> bool:
        """Whether the corpus can be read more than once (a file or a collection, not an iterator)."""
        return self._source is None or iter(self._source) is not self._source

    def records(self) -> Iterator[Record]:
        """Yield every record as a dict with (at least) the text column."""
        return (record for _, record in self._read())

    def _read(self) -> Iterator[tuple[int, Record]]:
        """Every record, with how far the reader got once it was read (see :meth:`size`)."""
        if self._source is not None:
            if not self.reiterable:
                if self._consumed:
                    raise ValueError(
                        f"corpus {self.name!r} is a one-shot iterator that was already read; "
                        "pass a list, a file, or a re-iterable dataset"
                    )
                self._consumed = True
            return ((n, self._as_record(item)) for n, item in enumerate(self._source, 1))
        assert self.path is not None  # no source: the corpus is a file
        kind = TABLE_SUFFIXES.get(self.path.suffix.lower())
        if kind is None:
            return self._text_records()
        return self._table_records(kind)

    def positioned_records(self) -> Iterator[tuple[int, Record]]:
        """Every record, with how far the reader had got once it was read (see :meth:`size`)."""
        return self._read()

    def examples(self, limit_tokens: int | None = None) -> Iterator[Example]:
        """Yield the sequences as :class:`Example` (records with their words).

        Sequences without words are skipped. With ``limit_tokens`` the stream
        stops after that many words, cutting the last sequence short (the
        paper's "first 400,000 tokens")."""
        numbering = Numbering(limit_tokens)
        for position, record in self._read():
            example = numbering.example(position, record, self.words_of(record))
            if example is not None:
                yield example
            if numbering.done:
                return

    def words_of(self, record: Record) -> list[str]:
        """The words of a record: its text column split, or its list of words."""
        try:
            value = record[self.text]
        except KeyError:
            raise ColumnError(
                f"corpus {self.name!r} has no column {self.text!r}; its records have {sorted(record)}"
            ) from None
        if value is None:
            return []
        if isinstance(value, str):
            return self.split(value)
        if isinstance(value, Sequence):
            return [str(w) for w in value]
        raise TypeError(f"column {self.text!r} must hold a text or a list of words, not {type(value).__name__}")

    def _as_record(self, item: Any) -> Record:
        if isinstance(item, Mapping):
            return item
        if isinstance(item, (str, list, tuple)):
            return {self.text: item}
        raise TypeError(
            f"corpus {self.name!r} yielded a {type(item).__name__}; items must be texts, word lists or dicts"
        )

    def _check_text_column(self) -> None:
        """A dataset that lists its columns must have the text column (checked before any reading)."""
        columns = getattr(self._source, "column_names", None) if _is_dataset(self._source) else None
        if isinstance(columns, list) and self.text not in columns:
            where = self.path if self.path is not None else f"dataset {self.name!r}"
            raise ColumnError(f"{where} has no column {self.text!r}; its columns are {columns}")

    def _text_records(self) -> Iterator[tuple[int, Record]]:
        assert self.path is not None
        # Lines are decoded as before (universal newlines); the binary file's position is the progress.
        with open(self.path, "rb") as binary, io.TextIOWrapper(binary, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                line = line.rstrip("\n")
                if line.strip():
                    yield binary.tell(), {self.text: line}

    def _table_records(self, kind: str) -> Iterator[tuple[int, Record]]:
        assert self.path is not None
        for batch, positions in _read_table_batches(self.path, kind):
            if self.text not in batch.schema.names:
                raise ColumnError(f"{self.path} has no column {self.text!r}; its columns are {batch.schema.names}")
            columns = {name: _column_values(batch.column(name)) for name in batch.schema.names}
            for row, position in zip(range(batch.num_rows), positions):
                yield position, {name: values[row] for name, values in columns.items()}

    def __repr__(self) -> str:
        return f"Corpus({self.name!r}, text={self.text!r})"


class Numbering:
    """Turns records and their words into numbered :class:`Example` s, as
    :meth:`Corpus.examples` does: records without words are skipped, and with
    ``limit_tokens`` the words stop after that many (the last sequence cut short).
    ``record_model``'s worker processes split the words; the numbering stays in
    one place, here."""

    def __init__(self, limit_tokens: int | None = None) -> None:
        if limit_tokens is not None and limit_tokens < 1:
            raise ValueError(f"limit_tokens must be a positive number of words, not {limit_tokens}")
        self.limit_tokens = limit_tokens
        self.seen = 0  # words so far
        self.index = 0  # sequences so far

    @property
    def done(self) -> bool:
        """Whether ``limit_tokens`` words have been numbered (no more examples)."""
        return self.limit_tokens is not None and self.seen >= self.limit_tokens

    def example(self, position: int, record: Record, words: list[str]) -> Example | None:
        """The next example, or None for a record without words or once :attr:`done`."""
        if not words or self.done:
            return None
        if self.limit_tokens is not None and self.seen + len(words) > self.limit_tokens:
            words = words[: self.limit_tokens - self.seen]
        example = Example(self.index, words, record, first_word=self.seen, position=position)
        self.index += 1
        self.seen += len(words)
        return example


class Shard:
    """One of ``count`` disjoint parts of a corpus: the sequences ``i`` with
    ``i % count == index``.

    ``i`` counts the corpus's sequences (blank ones skipped) after
    ``limit_tokens`` has cut the stream, so the shards of every ``count``
    together hold exactly the words a whole run records: no overlap, no gap,
    whether or not ``count`` divides the number of sequences. Each shard reads
    the whole stream and keeps its sequences (reading text is cheap beside the
    forward pass; tagging and the model run on its sequences only).
    ``seen`` counts the sequences of all shards read so far, so that an empty
    shard can be told from an empty corpus.
    """

    def __init__(self, index: int, count: int) -> None:
        if not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) for n in (index, count)):
            raise ValueError(f"a shard is INDEX/COUNT in whole numbers, not {index!r}/{count!r}")
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"a shard is INDEX/COUNT with 0 <= INDEX < COUNT, not {index}/{count}")
        self.index, self.count = int(index), int(count)
        self.seen = 0

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"3/8"`` -> shard 3 of 8."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match:
            raise ValueError(f"a shard is written INDEX/COUNT, e.g. 0/8, not {text!r}")
        return cls(int(match[1]), int(match[2]))

    def select(self, examples: Iterable[Example]) -> Iterator[Example]:
        """The examples of this shard (by their ``index``)."""
        for example in examples:
            self.seen += 1
            if example.index % self.count == self.index:
                yield example

    def __repr__(self) -> str:
        return f"Shard({self.index}/{self.count})"


def as_corpus(corpus: Corpus | str | os.PathLike | Iterable[Any], **options: Any) -> Corpus:
    """Return ``corpus`` if it is a :class:`Corpus`, else wrap it in one."""
    return corpus if isinstance(corpus, Corpus) else Corpus(corpus, **options)


def take(iterable: Iterable[Any], n: int) -> Iterator[list[Any]]:
    """Consecutive lists of up to ``n`` items."""
    iterator = iter(iterable)
    while chunk := list(itertools.islice(iterator, n)):
        yield chunk


def _read_table_batches(path: Path, kind: str) -> Iterator[tuple[pa.RecordBatch, Iterable[int]]]:
    """Record batches, each with the reader's position after each of its rows: rows
    read of a Parquet file, bytes read of a CSV/TSV file (to the batch's end). A file
    that does not parse is a ValueError that names it (pyarrow's message does not)."""
    try:
        yield from _table_batches(path, kind)
    except pa.ArrowInvalid as err:
        raise ValueError(f"{path}: {err}") from None


def _table_batches(path: Path, kind: str) -> Iterator[tuple[pa.RecordBatch, Iterable[int]]]:
    if kind == "parquet":
        import pyarrow.parquet as pq

        done = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=READ_BATCH_ROWS):
            yield batch, range(done + 1, done + batch.num_rows + 1)
            done += batch.num_rows
        return
    import pyarrow.csv as pacsv

    parse = pacsv.ParseOptions(delimiter="\t" if kind == "tsv" else ",")
    with pa.OSFile(str(path), "rb") as source:
        for batch in pacsv.open_csv(source, parse_options=parse):
            yield batch, itertools.repeat(source.tell(), batch.num_rows)


def load_saved_dataset(path: str | os.PathLike) -> Any:
    """The Hugging Face dataset that ``Dataset.save_to_disk`` wrote to folder ``path``,
    memory-mapped: its rows are read from disk as they are iterated.

    A folder of several splits (a saved ``DatasetDict``) is refused with the
    folders of its splits, each of which is a dataset folder."""
    folder = Path(path)
    if (folder / "dataset_dict.json").is_file():
        splits = sorted(child.name for child in folder.iterdir() if (child / "state.json").is_file())
        raise ValueError(
            f"corpus {folder} holds a dataset of several splits ({', '.join(splits)}); "
            f"give the folder of one split, e.g. {folder / (splits[0] if splits else 'train')}"
        )
    if not (folder / "state.json").is_file():
        raise FileNotFoundError(
            f"corpus {folder} is a folder, but not one that Dataset.save_to_disk wrote (it has no state.json); "
            "give a text, CSV, TSV or Parquet file, or a saved dataset folder"
        )
    try:
        import datasets
    except ImportError:
        raise ImportError(
            f"corpus {folder} is a saved Hugging Face dataset; reading it needs the datasets package: "
            "pip install 'txray[datasets]'"
        ) from None
    return datasets.load_from_disk(str(folder), keep_in_memory=False)


def _hf_datasets() -> Any:
    """The ``datasets`` module if it is loaded (a dataset object exists only then), else None."""
    return sys.modules.get("datasets")


def _is_dataset(source: Any) -> bool:
    hf = _hf_datasets()
    return hf is not None and isinstance(source, (hf.Dataset, hf.IterableDataset))


def _is_dataset_dict(source: Any) -> bool:
    hf = _hf_datasets()
    return hf is not None and isinstance(source, (hf.DatasetDict, hf.IterableDatasetDict))


def _dataset_name(source: Any) -> str | None:
    """A Hugging Face dataset's name, with its split when it has one (``sst2-train``)."""
    if not _is_dataset(source) or not source.info.dataset_name:
        return None
    return "-".join(str(part) for part in (source.info.dataset_name, source.split) if part)


def _source_size(source: Any) -> tuple[int, str] | None:
    if isinstance(source, Sized):
        return len(source), "seq"
    if _is_dataset(source):  # an IterableDataset: the split's size, when its info holds it
        split = (source.info.splits or {}).get(str(source.split)) if source.split is not None else None
        if split is not None and split.num_examples:
            return int(split.num_examples), "seq"
    return None


def _column_values(column: pa.Array) -> list[Any]:
    # Real CSV files hold stray non-UTF-8 bytes (pyarrow then types the column
    # as binary); decode them leniently instead of failing on one tweet.
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        return [None if v is None else v.decode("utf-8", errors="replace") for v in column.to_pylist()]
    return column.to_pylist()
