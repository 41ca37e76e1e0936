"""Small random profiles for the analysis, plot, report, prune and CLI tests.

``recorded_stages`` records random activations with txray.Recorder (the real
path); ``synthetic_profile`` builds a 10,000-neuron profile directly from
random cells, because recording one would cost seconds of random numbers.
"""

from __future__ import annotations

import numpy as np

import txray
from txray import KindCells, Profile

TAGS = ["NN", "VB", "DT", "IN", "JJ", "RB"]


def vocabulary(n_tokens: int) -> list[str]:
    return [f"w{i}" for i in range(n_tokens)]


def token_pos(n_tokens: int) -> dict[str, str]:
    """Every token's tag: token i is tagged TAGS[i % len(TAGS)]."""
    return {f"w{i}": TAGS[i % len(TAGS)] for i in range(n_tokens)}


def recorded_stages(
    n_stages: int = 3, n_neurons: int = 12, vocab: int = 20, tokens: int = 400, seed: int = 0, shift: float = 0.5
) -> list[Profile]:
    """Profiles of the same layer on the same corpus, the model drifting between stages.

    Stage s sees activations base + s * shift * noise, so consecutive
    stages share most preferences and change some.
    """
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, size=tokens)
    tags = ids % len(TAGS)
    base = rng.normal(size=(tokens, n_neurons)).astype(np.float32)
    profiles = []
    for s in range(n_stages):
        acts = base + s * shift * rng.normal(size=base.shape).astype(np.float32)
        rec = txray.Recorder(n_neurons=n_neurons, features={"token": vocab, "pos": len(TAGS)})
        rec.update(acts, {"token": ids, "pos": tags})
        profiles.append(
            rec.profile(
                name=f"epoch {s + 1}",
                feature_names={"token": vocabulary(vocab), "pos": TAGS},
                metadata={"model": "random", "layer": "rnn"},
            )
        )
    return profiles


def synthetic_profile(
    n_neurons: int = 10_000, vocab: int = 500, cells: int = 60_000, seed: int = 0, name=None
) -> Profile:
    """A large profile from random (neuron, feature) cells; a few neurons stay unpreferred."""
    rng = np.random.default_rng(seed)
    key = np.unique(rng.integers(0, (n_neurons - 50) * vocab, size=cells))
    neuron, feature = (key // vocab).astype(np.int32), (key % vocab).astype(np.int32)
    count = rng.integers(1, 20, size=len(key))
    total = count * rng.uniform(0.01, 3.0, size=len(key))
    pos_feature = (feature % len(TAGS)).astype(np.int32)
    pos_key, inverse = np.unique(neuron.astype(np.int64) * len(TAGS) + pos_feature, return_inverse=True)
    kinds = {
        "token": KindCells(neuron, feature, count, total, rng.integers(1, 100, size=vocab), vocabulary(vocab)),
        "pos": KindCells(
            (pos_key // len(TAGS)).astype(np.int32),
            (pos_key % len(TAGS)).astype(np.int32),
            np.bincount(inverse, weights=count).astype(np.int64),
            np.bincount(inverse, weights=total),
            rng.integers(1, 1000, size=len(TAGS)),
            TAGS,
        ),
    }
    mass = np.bincount(neuron, weights=total, minlength=n_neurons)
    return Profile(n_neurons, "max1", None, kinds, mass, int(count.sum()), name=name)
