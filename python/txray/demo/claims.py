"""The paper's claims (RQ1-RQ3, Table 2), each measured in every replicate and given a verdict.

A :class:`Claim` names the paper's statement, the statistic that tests it
(computed from one replicate's numbers), the value it would have under no
effect (``null``), the paper's own value where it gives one, and the sign
the paper's claim gives the effect. :func:`claims_table` describes the
statistic over the replicates (mean, sd, 95 % t-interval) and applies
:func:`.stats.verdict`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from .result import Replicate
from .stats import describe, verdict

PAPER_NEURONS = 1500


def _row(r: Replicate, name: str) -> dict[str, Any]:
    for row in r.pruning:
        if row["set"] == name:
            return row
    raise KeyError(f"no pruning row {name!r}")


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _minus(a: float | None, b: float | None) -> float | None:
    """a - b, undefined (None) where either is."""
    return None if a is None or b is None else a - b


@dataclasses.dataclass(frozen=True)
class Claim:
    """One statement of the paper and how the study tests it."""

    id: str
    question: str
    claim: str  # the paper's statement, with its numbers
    statistic: str  # what is computed per replicate
    value: Callable[[Replicate], float | None]
    paper: float | None  # the paper's value of the statistic (None: the paper gives a direction only)
    direction: int  # +1: the paper's effect is above the null, -1: below
    null: Callable[[Replicate], float] = lambda r: 0.0
    paper_null: float = 0.0  # the null at the paper's size (differs where it depends on the neuron count)
    percent: bool = True  # shown as a percentage


def paper_claims(k: int) -> list[Claim]:
    """The claims this study tests; ``k`` is Table 2's k least / most massive."""
    return [
        Claim(
            "RQ1-shared",
            "RQ1",
            "Late epochs share more neurons than epoch 1 and a late epoch (1,335 vs 544 of 1,500)",
            "(shared late - shared early) / neurons",
            lambda r: (r.counts["rq1_late"]["shared"] - r.counts["rq1_early"]["shared"]) / r.neurons,
            (1335 - 544) / PAPER_NEURONS,
            +1,
        ),
        Claim(
            "RQ1-hellinger",
            "RQ1",
            "Preferences move less between late epochs: mean Hellinger distance shrinks (by 99.92 %)",
            "1 - mean H late / mean H early",
            lambda r: (
                1 - (_ratio(r.counts["rq1_late"]["mean_hellinger"], r.counts["rq1_early"]["mean_hellinger"]) or 1)
            ),
            0.9992,
            +1,
        ),
        Claim(
            "RQ1-spread",
            "RQ1",
            "Pretraining spreads the maximal activations over more neurons (more gained than avoided)",
            "(gained - avoided) / neurons, epoch 1 -> late",
            lambda r: (r.counts["rq1_early"]["gained"] - r.counts["rq1_early"]["avoided"]) / r.neurons,
            None,
            +1,
        ),
        Claim(
            "RQ1-length",
            "RQ1",
            "Shared neurons prefer fewer tokens in a late epoch than in epoch 1 (944.76 -> 524.55)",
            "mean token length late / epoch 1 - 1 (shared neurons)",
            lambda r: _length_change(r, "rq1_early"),
            524.55 / 944.76 - 1,
            -1,
        ),
        Claim(
            "RQ2-ratio",
            "RQ2",
            "Zero-shot, the encoder shares almost as many neurons as between late epochs (1,323 vs 1,335)",
            "shared zero-shot / shared late epochs - 1",
            lambda r: _minus(_ratio(r.counts["rq2"]["shared"], r.counts["rq1_late"]["shared"]), 1),
            1323 / 1335 - 1,
            -1,
        ),
        Claim(
            "RQ3-ratio",
            "RQ3",
            "Supervision roughly halves the shared neurons (1,323 -> 675)",
            "shared supervised / shared zero-shot - 1",
            lambda r: _minus(_ratio(r.counts["rq3"]["shared"], r.counts["rq2"]["shared"]), 1),
            675 / 1323 - 1,
            -1,
        ),
        Claim(
            "RQ3-avoided",
            "RQ3",
            "Supervision makes about half the neurons avoided (740 of 1,500)",
            "avoided / neurons, zero-shot -> supervised",
            lambda r: r.counts["rq3"]["avoided"] / r.neurons,
            740 / PAPER_NEURONS,
            +1,
        ),
        Claim(
            "RQ3-gained",
            "RQ3",
            "Supervision gains neurons that were unpreferred zero-shot (85 of 1,500)",
            "gained / neurons, zero-shot -> supervised",
            lambda r: r.counts["rq3"]["gained"] / r.neurons,
            85 / PAPER_NEURONS,
            +1,
        ),
        Claim(
            "RQ3-length",
            "RQ3",
            "Shared neurons' token lists lengthen slightly after supervision (+4.62 %)",
            "mean token length supervised / zero-shot - 1 (shared neurons)",
            lambda r: _length_change(r, "rq3"),
            0.0462,
            +1,
        ),
        Claim(
            "T2-avoided",
            "Table 2",
            "Pruning the avoided neurons raises test F1 (+2.80 %)",
            "relative test F1 change, avoided pruned",
            lambda r: _row(r, "avoided")["change_test"],
            0.0280,
            +1,
        ),
        Claim(
            "T2-least",
            "Table 2",
            f"Pruning the {k} least massive neurons costs train F1 (-3.79 %)",
            f"relative train F1 change, {k} least massive pruned",
            lambda r: _row(r, f"{k} least massive")["change_train"],
            -0.0379,
            -1,
        ),
        Claim(
            "T2-mass",
            "Table 2",
            f"The {k} most massive neurons carry most of the activation mass (83.12 %)",
            f"mass share of the {k} most massive (null: {k} / neurons)",
            lambda r: _row(r, f"{k} most massive")["mass_removed"],
            0.8312,
            +1,
            null=lambda r: k / r.neurons,
            paper_null=k / PAPER_NEURONS,
        ),
        Claim(
            "T2-most",
            "Table 2",
            f"Pruning the {k} most massive neurons costs train F1 (-4.99 %)",
            f"relative train F1 change, {k} most massive pruned",
            lambda r: _row(r, f"{k} most massive")["change_train"],
            -0.0499,
            -1,
        ),
        Claim(
            "T2-gained",
            "Table 2",
            "Pruning the neurons gained by supervision costs test F1 (-3.87 %)",
            "relative test F1 change, gained pruned",
            lambda r: _row(r, "gained")["change_test"],
            -0.0387,
            -1,
        ),
        Claim(
            "T2-gained-control",
            "Table 2",
            "... more than other neurons would: the gained neurons carry supervision-only knowledge",
            "test F1 change, gained pruned, minus the mean of random sets of the same size",
            lambda r: _row(r, "gained")["excess_test"],
            None,
            -1,
        ),
    ]


def _length_change(r: Replicate, comparison: str) -> float | None:
    c = r.counts[comparison]
    return None if not c["mean_token_length_a"] else c["mean_token_length_b"] / c["mean_token_length_a"] - 1


def claims_table(replicates: Sequence[Replicate], k: int) -> list[dict[str, Any]]:
    """Per claim: the statistic over the replicates (mean, sd, 95 % interval), the paper's value, the verdict."""
    rows = []
    for claim in paper_claims(k):
        values = [claim.value(r) for r in replicates]
        nulls = [claim.null(r) for r in replicates]
        summary = describe(values)
        null = sum(nulls) / len(nulls) if nulls else 0.0
        # Compare effects (statistic minus null), each at its own size.
        paper = None if claim.paper is None else claim.paper - claim.paper_null + null
        rows.append(
            {
                "id": claim.id,
                "question": claim.question,
                "claim": claim.claim,
                "statistic": claim.statistic,
                "percent": claim.percent,
                **summary,
                "null": null,
                "paper": claim.paper,
                "direction": claim.direction,
                "verdict": verdict(summary, null, paper, claim.direction),
            }
        )
    return rows
