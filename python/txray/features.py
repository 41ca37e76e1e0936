"""Word-level features: what each recorded word is known by.

Every feature kind maps each word of a sequence to a string (the word, its
POS tag, the sequence's label, the preceding n-gram, a user column) and the
string to an integer id in the kind's :class:`Vocabulary`. Vocabularies are
given, or built in a first streaming pass over the corpus (``min_count``,
rarer strings become ``<unk>``).

    features = ["token", "pos", "label", txray.Ngram(2), txray.Column("topic")]
"""

from __future__ import annotations

import collections
import itertools
import operator
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .corpus import ColumnError, Example, take
from .taggers import Tagger, make_tagger, tag_examples

if TYPE_CHECKING:
    from .profile import Profile
    from .progress import Progress

UNK = "<unk>"
SEQUENCE_START = "<s>"
VOCABULARY_CHUNK = 256  # examples counted per call in build_vocabularies


class Vocabulary:
    """Strings of one feature kind and their ids; unknown strings map to ``<unk>``."""

    def __init__(self, names: Iterable[str]) -> None:
        names = [str(n) for n in names]
        if UNK not in names:
            names.append(UNK)
        if len(set(names)) != len(names):
            dupes = sorted(n for n, c in collections.Counter(names).items() if c > 1)
            raise ValueError(f"a vocabulary lists {dupes[:5]} more than once")
        self.names = names
        self._index = {name: i for i, name in enumerate(names)}
        self.unk_id = self._index[UNK]

    @classmethod
    def build(cls, counts: Mapping[str, int], min_count: int = 1, max_size: int | None = None) -> Vocabulary:
        """``<unk>`` first, then every string seen ``min_count`` times or more,
        most frequent first (ties alphabetically), at most ``max_size`` in all."""
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, not {min_count}")
        # Alphabetically, then (a stable sort) by count: most frequent first, ties alphabetically.
        kept = sorted((s, c) for s, c in counts.items() if c >= min_count and s != UNK)
        kept.sort(key=operator.itemgetter(1), reverse=True)
        if max_size is not None:
            kept = kept[: max(max_size - 1, 0)]
        return cls([UNK, *map(operator.itemgetter(0), kept)])

    @classmethod
    def from_profile(cls, profile: Profile | str | os.PathLike[str], kind: str = "token") -> Vocabulary:
        """The vocabulary a profile recorded for ``kind`` (a :class:`txray.Profile` or its path).

        Recording with it gives every word the id it has in that profile; a word the profile's
        vocabulary lacks becomes ``<unk>`` (appended, when the vocabulary has none). Raises
        :class:`ValueError` when the profile lacks the kind or has no names for it."""
        from .profile import Profile

        if not isinstance(profile, Profile):
            profile = Profile.load(profile)
        if kind not in profile.kinds:
            raise ValueError(
                f"profile {profile.name!r} has no feature kind {kind!r} to take a vocabulary from "
                f"(it has {list(profile.kinds)})"
            )
        names = profile.vocabulary(kind)
        if names is None:
            raise ValueError(f"profile {profile.name!r} has no names for its {kind!r} features: no vocabulary to reuse")
        try:
            return cls(names)
        except ValueError as err:
            raise ValueError(f"the {kind!r} vocabulary of profile {profile.name!r} cannot be reused: {err}") from None

    def extend(self, names: Iterable[str]) -> Vocabulary:
        """A vocabulary with ``names`` appended (those not already in it)."""
        return Vocabulary([*self.names, *(n for n in names if n not in self._index)])

    def id(self, name: str) -> int:
        return self._index.get(name, self.unk_id)

    def ids(self, names: Iterable[str]) -> np.ndarray:
        return np.fromiter(map(self._index.get, names, itertools.repeat(self.unk_id)), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} names: {self.names[:5]}...)"


class Feature:
    """One feature kind. Subclasses say which string each word of an example has.

    ``vocabulary`` is given, or built from the corpus when left None:
    strings seen fewer than ``min_count`` times become ``<unk>``."""

    kind: str

    def __init__(
        self,
        kind: str,
        vocabulary: Vocabulary | Sequence[str] | None = None,
        min_count: int = 1,
        max_size: int | None = None,
    ) -> None:
        self.kind = kind
        if vocabulary is not None and not isinstance(vocabulary, Vocabulary):
            vocabulary = Vocabulary(vocabulary)
        self.vocabulary: Vocabulary | None = vocabulary
        self.min_count = min_count
        self.max_size = max_size

    @property
    def tagger(self) -> Tagger | None:
        """The tagger that must annotate examples before :meth:`strings` (None: no tagging)."""
        return None

    def strings(self, example: Example) -> list[str]:
        """One string per word of the example."""
        raise NotImplementedError

    def special_string(self, example: Example, token: str) -> str:
        """The string a special token (``[CLS]``) of this example records: by default its own."""
        return token

    def ids(self, example: Example) -> np.ndarray:
        """One id per word of the example (int64)."""
        return self._vocab().ids(self.strings(example))

    def names(self) -> list[str]:
        return list(self._vocab().names)

    def _vocab(self) -> Vocabulary:
        if self.vocabulary is None:
            raise RuntimeError(f"feature {self.kind!r} has no vocabulary yet: build_vocabularies() first")
        return self.vocabulary

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r})"


class Token(Feature):
    """The word itself (``lower=True`` lowercases it first)."""

    def __init__(
        self,
        vocabulary: Vocabulary | Sequence[str] | None = None,
        min_count: int = 1,
        max_size: int | None = None,
        lower: bool = False,
        kind: str = "token",
    ) -> None:
        super().__init__(kind, vocabulary, min_count, max_size)
        self.lower = lower

    def strings(self, example: Example) -> list[str]:
        return [w.lower() for w in example.words] if self.lower else list(example.words)


class Ngram(Feature):
    """The ``n`` words ending at this one, joined by spaces (``<s>`` before the start).

    ``Ngram(2)`` of "the cat sat" gives ``<s> the``, ``the cat``, ``cat sat``."""

    def __init__(
        self,
        n: int = 2,
        vocabulary: Vocabulary | Sequence[str] | None = None,
        min_count: int = 1,
        max_size: int | None = None,
        lower: bool = False,
        kind: str | None = None,
    ) -> None:
        if n < 1:
            raise ValueError(f"an n-gram needs n >= 1, not {n}")
        super().__init__(kind or f"ngram{n}", vocabulary, min_count, max_size)
        self.n = n
        self.lower = lower

    def strings(self, example: Example) -> list[str]:
        words = [w.lower() for w in example.words] if self.lower else example.words
        padded = [SEQUENCE_START] * (self.n - 1) + list(words)
        return [" ".join(padded[i : i + self.n]) for i in range(len(words))]


class Column(Feature):
    """A column of the corpus records: one value per sequence (a label, a
    topic) or a list with one value per word (gold tags)."""

    def __init__(
        self,
        column: str,
        vocabulary: Vocabulary | Sequence[str] | None = None,
        min_count: int = 1,
        max_size: int | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(kind or column, vocabulary, min_count, max_size)
        self.column = column

    def _value(self, example: Example) -> Any:
        try:
            return example.record[self.column]
        except KeyError:
            raise ColumnError(
                f"feature {self.kind!r} reads column {self.column!r}, which sequence {example.index} "
                f"does not have (it has {sorted(example.record)})"
            ) from None

    def strings(self, example: Example) -> list[str]:
        value = self._value(example)
        if isinstance(value, (list, tuple, np.ndarray)):
            if len(value) != len(example.words):
                raise ValueError(
                    f"column {self.column!r} of sequence {example.index} has {len(value)} values "
                    f"for {len(example.words)} words"
                )
            return [str(v) for v in value]
        return [str(value)] * len(example.words)

    def special_string(self, example: Example, token: str) -> str:
        # A sequence-level value (the label) belongs to the special tokens too.
        value = self._value(example)
        return token if isinstance(value, (list, tuple, np.ndarray)) else str(value)


class Label(Column):
    """The sequence's label (column ``"label"`` unless told otherwise)."""

    def __init__(
        self, column: str = "label", vocabulary: Vocabulary | Sequence[str] | None = None, kind: str = "label"
    ) -> None:
        super().__init__(column, vocabulary, kind=kind)


class Pos(Feature):
    """Part-of-speech tags from a tagger (default: spaCy, offline, Penn Treebank).

    ``tagger`` is a :class:`~txray.taggers.Tagger` or a spec such as
    ``"spacy"`` or ``"flair:path/to/tagger.pt"``. Its tagset is the vocabulary."""

    def __init__(self, tagger: Tagger | str = "spacy", kind: str = "pos") -> None:
        self._tagger = make_tagger(tagger)
        super().__init__(kind, Vocabulary(self._tagger.tags))

    @property
    def tagger(self) -> Tagger:
        return self._tagger

    def strings(self, example: Example) -> list[str]:
        return example.tags[self.kind]


class Prediction(Feature):
    """The model's prediction: the argmax of its logits for each window
    (shape (batch, classes)) or each word (shape (batch, sequence, classes),
    the word's first piece).

    ``pick(output)`` returns the logits from the model's output (default:
    ``output.logits``, or the output itself if it is a tensor). ``names``
    are the class names; by default the model's ``config.id2label``, else
    the class numbers."""

    def __init__(self, names: Sequence[str] | None = None, pick: Any = None, kind: str = "prediction") -> None:
        super().__init__(kind, names)
        self.pick = pick or _logits
        self._n_names = None if names is None else len(names)

    def strings(self, example: Example) -> list[str]:
        raise TypeError("a prediction comes from the model's output, not from the corpus")

    def set_classes(self, n_classes: int, id2label: Mapping[int, str] | None) -> None:
        """Fix the vocabulary once the number of classes is known (first batch)."""
        if self.vocabulary is None:
            names = [str(id2label[i]) if id2label and i in id2label else str(i) for i in range(n_classes)]
            self.vocabulary = Vocabulary(names)
        elif self._n_names is not None and self._n_names < n_classes:
            raise ValueError(f"Prediction(names=...) lists {self._n_names} classes; the model has {n_classes}")


def _logits(output: Any) -> Any:
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)):
        return output[0]
    return output


FEATURE_NAMES = ("token", "pos", "label", "prediction", "ngram<N>", "column:<NAME>")


def resolve_features(specs: Iterable[str | Feature]) -> list[Feature]:
    """Turn feature specs into :class:`Feature` objects.

    Strings: ``"token"``, ``"pos"``, ``"label"``, ``"prediction"``,
    ``"ngram2"`` (any n), ``"column:NAME"``; or pass Feature objects."""
    features = [spec if isinstance(spec, Feature) else _from_name(spec) for spec in specs]
    if not features:
        raise ValueError("record at least one feature, e.g. features=['token']")
    kinds = [f.kind for f in features]
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"feature kinds must be unique, got {kinds}")
    return features


def _from_name(name: str) -> Feature:
    if not isinstance(name, str):
        raise TypeError(f"a feature is a name or a txray.Feature, not {type(name).__name__}")
    simple = {"token": Token, "pos": Pos, "label": Label, "prediction": Prediction}
    if name in simple:
        return simple[name]()
    if name.startswith("ngram") and name[5:].isdigit():
        return Ngram(int(name[5:]))
    if name.startswith("column:") and name[7:]:
        return Column(name[7:])
    raise ValueError(f"unknown feature {name!r}; use one of {FEATURE_NAMES} or a txray.Feature")


def build_vocabularies(features: Sequence[Feature], examples: Iterable[Example]) -> None:
    """Count the strings of every feature that has no vocabulary yet, in one
    pass over ``examples``, and build those vocabularies.

    The counting stays in this process even when ``record_model`` has worker
    processes: sending every word to a worker and its counts back cost more than
    counting them here (measured in ``benchmarks/bench_pipeline.py``)."""
    todo = [f for f in features if f.vocabulary is None and not isinstance(f, Prediction)]
    if not todo:
        return
    if any(f.tagger is not None for f in todo):
        raise ValueError("a tagged feature needs its tagset as vocabulary")
    counts: dict[str, collections.Counter[str]] = {f.kind: collections.Counter() for f in todo}
    seen = 0
    for chunk in take(examples, VOCABULARY_CHUNK):
        seen += len(chunk)
        for feature in todo:
            # One C-level count over the chunk's strings, not a call per example.
            counts[feature.kind].update(itertools.chain.from_iterable(map(feature.strings, chunk)))
    if not seen:
        raise ValueError("the corpus has no words: nothing to build vocabularies from")
    for feature in todo:
        feature.vocabulary = Vocabulary.build(counts[feature.kind], feature.min_count, feature.max_size)


def reuse_vocabularies(features: Sequence[Feature], profile: Profile | str | os.PathLike[str]) -> None:
    """Give every feature that would build its vocabulary from the corpus (token, n-gram,
    label, column) the vocabulary of the same kind in ``profile`` (:meth:`Vocabulary.from_profile`).

    Features with a vocabulary of their own (given, or a tagger's tagset) and predictions keep
    theirs. Raises :class:`ValueError` when the profile lacks one of those kinds."""
    from .profile import Profile

    if not isinstance(profile, Profile):
        profile = Profile.load(profile)
    for feature in features:
        if feature.vocabulary is None and not isinstance(feature, Prediction):
            feature.vocabulary = Vocabulary.from_profile(profile, feature.kind)


def needs_vocabulary_pass(features: Sequence[Feature]) -> bool:
    return any(f.vocabulary is None and not isinstance(f, Prediction) for f in features)


def annotate(
    examples: Iterable[Example],
    features: Sequence[Feature],
    cache_dir: str | os.PathLike | None,
    progress: Progress | None = None,
) -> Iterator[Example]:
    """Run the taggers that the features need over the stream (batched, cached),
    each with a bar of ``progress`` when given."""
    for feature in features:
        if feature.tagger is not None:
            bar = progress.bar(f"txray tag {feature.kind}") if progress is not None else None
            examples = tag_examples(examples, feature.tagger, feature.kind, cache_dir, bar=bar)
    return iter(examples)


def word_feature_ids(features: Sequence[Feature], example: Example) -> dict[str, np.ndarray]:
    """Ids of every corpus-derived feature for every word of the example."""
    return {f.kind: f.ids(example) for f in features if not isinstance(f, Prediction)}


def chunk_feature_ids(features: Sequence[Feature], examples: Sequence[Example]) -> list[dict[str, np.ndarray]]:
    """:func:`word_feature_ids` of several examples, with one vocabulary lookup per
    feature for all of them."""
    sizes = np.fromiter((len(e.words) for e in examples), dtype=np.int64, count=len(examples))
    cuts = np.cumsum(sizes)[:-1]
    out: list[dict[str, np.ndarray]] = [{} for _ in examples]
    for f in features:
        if isinstance(f, Prediction):
            continue
        strings = [f.strings(e) for e in examples]
        for e, s in zip(examples, strings):
            if len(s) != len(e.words):
                raise ValueError(
                    f"feature {f.kind!r} gives {len(s)} strings for the {len(e.words)} words of sequence {e.index}"
                )
        for ids, example_ids in zip(np.split(f._vocab().ids(itertools.chain.from_iterable(strings)), cuts), out):
            example_ids[f.kind] = ids
    return out
