"""What the study measured: one :class:`Comparison` per pair of stages, and the :class:`StudyResult`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..profile import Profile
from .config import DemoConfig


@dataclasses.dataclass
class Comparison:
    """One comparison of two stages, token features."""

    question: str  # RQ1, RQ2, RQ3
    a: str
    b: str
    table: pa.Table  # analysis.neuron_overview: compare() columns plus each stage's top features
    counts: dict[str, Any]  # txray.summary, plus mean lengths of the shared neurons

    @property
    def slug(self) -> str:
        return f"{self.question}_{self.a}_vs_{self.b}".lower().replace(" ", "_").replace("-", "_")


@dataclasses.dataclass
class StudyResult:
    """What the study measured and where it wrote it."""

    config: DemoConfig
    perplexity: list[float]
    stages: dict[str, Profile]
    comparisons: list[Comparison]
    f1: dict[str, float]  # the fine-tuned classifier, unpruned
    pruning: pa.Table
    gained: pa.Table
    files: dict[str, Path]
    seconds: float
    summary: str
