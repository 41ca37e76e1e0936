"""What the study measured: :class:`Comparison` (two stages), :class:`Replicate` (one seed), :class:`StudyResult`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..profile import Profile
from .config import DemoConfig

COMPARISONS = ("rq1_early", "rq1_late", "rq2", "rq3")
"""The four comparisons of a replicate: epoch 1 vs the second to last, the last two epochs,
Wikipedia vs tweets (zero-shot), zero-shot vs supervised."""


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
class Replicate:
    """The numbers of one replicate (one seed): what the claims are computed from."""

    seed: int  # fine-tuning, recorded text sample, controls
    lm_seed: int
    neurons: int
    lm_epochs: int  # epochs the LM trained (its snapshots: 1 and the last two)
    counts: dict[str, dict[str, Any]]  # per comparison (COMPARISONS): txray.summary and mean lengths
    f1: dict[str, float]  # the fine-tuned classifier, unpruned: train, val, test
    supervision: dict[str, Any]  # validation F1 and seconds per epoch, the epoch kept
    pruning: list[dict[str, Any]]  # per pruned set: changes, controls, bootstrap interval
    seconds: float


@dataclasses.dataclass
class StudyResult:
    """What the study measured and where it wrote it.

    ``stages``, ``comparisons``, ``pruning`` and ``gained`` are the first
    replicate's (its profiles, reports and tables are written out);
    ``replicates`` holds every replicate's numbers and ``claims`` the
    verdicts over all of them.
    """

    config: DemoConfig
    lm: list[dict[str, Any]]  # per LM: seed, epochs, perplexities, seconds per epoch, why it stopped
    stages: dict[str, Profile]
    comparisons: list[Comparison]
    f1: dict[str, float]
    pruning: pa.Table
    gained: pa.Table
    replicates: list[Replicate]
    claims: list[dict[str, Any]]
    files: dict[str, Path]
    seconds: float
    summary: str
    run: dict[str, Any] = dataclasses.field(default_factory=dict)  # conditions: seconds, date, machine, threads
