"""The statistics of the study: intervals over seeds, the bootstrap over the test set, verdicts.

Replicates (seeds) give one value of a statistic each; :func:`describe`
turns them into mean, sd and a 95 % t-interval. :func:`verdict` compares
that interval with the null value and with the paper's value, by the rules
the docs' study page states.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

REPRODUCED = "reproduced"
DIRECTION_ONLY = "direction only"
WITHIN_NOISE = "within noise"
CONTRADICTED = "contradicted"
VERDICTS = (REPRODUCED, DIRECTION_ONLY, WITHIN_NOISE, CONTRADICTED)

MAGNITUDE_FACTOR = 2.0
"""An effect counts as the paper's size when it is within this factor of the paper's effect."""


def describe(values: Sequence[float | None]) -> dict[str, Any]:
    """n, mean, sd (n - 1) and the 95 % t-interval of the mean of ``values``; sd and interval are None below 2."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = len(x)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "low": None, "high": None, "values": []}
    mean = float(x.mean())
    if n < 2:
        return {"n": 1, "mean": mean, "sd": None, "low": None, "high": None, "values": x.tolist()}
    sd = float(x.std(ddof=1))
    half = float(scipy_stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "low": mean - half, "high": mean + half, "values": x.tolist()}


def verdict(summary: dict[str, Any], null: float, paper: float | None, direction: int) -> str:
    """The verdict on one claim from its :func:`describe` summary.

    ``direction`` is the sign the paper's claim gives the effect (statistic
    minus ``null``); ``paper`` is the paper's value of the statistic, or
    None where the paper gives a direction but no number.

    - contradicted: the interval lies on the other side of the null;
    - within noise: the interval contains the null (or there is no interval);
    - reproduced: the interval lies on the paper's side and the mean effect
      is within :data:`MAGNITUDE_FACTOR` of the paper's effect (any size where
      the paper gives none);
    - direction only: on the paper's side, but of another size.
    """
    low, high, mean = summary["low"], summary["high"], summary["mean"]
    if low is None or high is None or mean is None:
        return WITHIN_NOISE
    lo, hi = sorted(((low - null) * direction, (high - null) * direction))  # the paper's side positive
    if hi < 0:
        return CONTRADICTED
    if lo <= 0:
        return WITHIN_NOISE
    if paper is None:
        return REPRODUCED
    ours, theirs = (mean - null) * direction, (paper - null) * direction
    if theirs > 0 and theirs / MAGNITUDE_FACTOR <= ours <= theirs * MAGNITUDE_FACTOR:
        return REPRODUCED
    return DIRECTION_ONLY


def f1_score(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """F1 of the positive class along the last axis (0 where nothing is predicted or true)."""
    tp = (predicted & truth).sum(-1)
    denominator = predicted.sum(-1) + truth.sum(-1)
    return np.where(denominator == 0, 0.0, 2 * tp / np.maximum(denominator, 1))


def relative_change(value: np.ndarray | float, base: np.ndarray | float) -> np.ndarray:
    """(value - base) / |base|, NaN where the base is 0."""
    value, base = np.asarray(value, dtype=np.float64), np.asarray(base, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(base == 0, np.nan, (value - base) / np.abs(base))


def bootstrap_change(
    baseline: np.ndarray, pruned: np.ndarray, truth: np.ndarray, resamples: int, seed: int
) -> tuple[float, float]:
    """95 % percentile interval of the relative F1 change from ``baseline`` to ``pruned`` predictions,
    resampling the examples (the same resample for both)."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(truth), size=(resamples, len(truth)))
    change = relative_change(f1_score(pruned[rows], truth[rows]), f1_score(baseline[rows], truth[rows]))
    low, high = np.nanpercentile(change, [2.5, 97.5])
    return float(low), float(high)
