"""Table 2 with controls: each pruned set beside random sets of the same size, with a bootstrap interval.

Pruning zeroes neurons of the LSTM's output (``txray.prune`` on
``encoder.rnn``); the recurrence inside the LSTM is untouched, so the
classifier's input under pruning is its unpruned last state with those
neurons zeroed. The study therefore computes every tweet's last state once
and prunes a stand-in module that returns those states (:class:`ReadOut`,
whose layer ``encoder.rnn`` txray prunes exactly as it would the LSTM): the
same numbers as pruning the full model, at the cost of one matrix product per
set, which is what makes many random sets affordable. ``tests/test_demo.py``
checks the two against each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from ..profile import Profile
from ..prune import BASELINE, prune, pruning_table
from .classifier import SentimentClassifier
from .lm import LAYER
from .stats import bootstrap_change, f1_score, relative_change


class _States(nn.Module):
    """Stands in for the LSTM: returns the cached last states it is given."""

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return states


class ReadOut(nn.Module):
    """The classifier's head on cached last states, with the LSTM's layer name (``encoder.rnn``)."""

    def __init__(self, head: nn.Linear) -> None:
        super().__init__()
        self.encoder = nn.ModuleDict({"rnn": _States()})
        self.head = head

    @torch.inference_mode()
    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """Logits, one per row of ``states``."""
        return self.head(self.encoder["rnn"](states)).squeeze(-1)


class Evaluation:
    """Predictions and F1 of a :class:`ReadOut` on each split's cached states."""

    def __init__(self, model: SentimentClassifier, states: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]):
        self.readout = ReadOut(model.head).eval()
        device = next(model.head.parameters()).device
        self.states = {split: torch.as_tensor(s, device=device) for split, s in states.items()}
        self.labels = {split: np.asarray(y, dtype=bool) for split, y in labels.items()}

    def predictions(self, neurons: Sequence[int] = ()) -> dict[str, np.ndarray]:
        """Per split, whether each example is predicted positive with ``neurons`` pruned."""
        with prune(self.readout, LAYER, list(neurons)):
            return {split: (self.readout(s) > 0).cpu().numpy() for split, s in self.states.items()}

    def f1(self, model: Any = None) -> dict[str, float]:
        """F1 per split of ``model`` (a ReadOut, possibly being pruned): ``pruning_table``'s ``evaluate``."""
        readout = self.readout if model is None else model
        return {
            split: float(f1_score((readout(s) > 0).cpu().numpy(), self.labels[split]))
            for split, s in self.states.items()
        }


def pruning_with_controls(
    evaluation: Evaluation,
    sets: Mapping[str, Sequence[int]],
    profile: Profile,
    n_neurons: int,
    controls: int,
    resamples: int,
    seed: int,
) -> tuple[pa.Table, list[dict[str, Any]]]:
    """``txray.pruning_table`` of ``sets``, and per set its controls and test interval.

    Per set: ``controls`` random sets of the same size (uniform over all
    ``n_neurons``), their relative F1 changes, and the set's change minus
    their mean (``excess_*``); a 95 % bootstrap interval of the set's test
    change over ``resamples`` resamples of the test tweets.
    """
    table = pruning_table(evaluation.readout, LAYER, sets, evaluation.f1, profile=profile)
    base = evaluation.predictions()
    base_f1 = {split: float(f1_score(p, evaluation.labels[split])) for split, p in base.items()}
    rng = np.random.default_rng(seed)
    rows = []
    for i, row in enumerate(table.to_pylist()):
        if row["set"] == BASELINE:
            continue
        neurons = list(sets[row["set"]])
        pruned = evaluation.predictions(neurons)
        control: dict[str, list[float]] = {split: [] for split in base}
        for _ in range(controls if neurons else 0):
            drawn = rng.choice(n_neurons, size=len(neurons), replace=False)
            for split, p in evaluation.predictions(drawn.tolist()).items():
                f1 = f1_score(p, evaluation.labels[split])
                control[split].append(float(relative_change(f1, base_f1[split])))
        low, high = bootstrap_change(base["test"], pruned["test"], evaluation.labels["test"], resamples, seed + i)
        out = {
            "set": row["set"],
            "neurons": row["neurons"],
            "mass_removed": row["mass_removed"],
            "test_low": low,
            "test_high": high,
        }
        for split in base:
            change = row[f"change_{split}"]
            mean = float(np.mean(control[split])) if control[split] else None
            out[f"change_{split}"] = change
            out[f"control_{split}"] = control[split]
            out[f"control_mean_{split}"] = mean
            out[f"excess_{split}"] = None if change is None or mean is None else change - mean
        rows.append(out)
    return table, rows
