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
    n_stages: int = 3,
    n_neurons: int = 12,
    vocab: int = 20,
    tokens: int = 400,
    seed: int = 0,
    shift: float = 0.5,
    contexts: int = 0,
    silent: dict[int, list[int]] | None = None,
) -> list[Profile]:
    """Profiles of the same layer on the same corpus, the model drifting between stages.

    Stage s sees activations base + s * shift * noise, so consecutive
    stages share most preferences and change some. ``silent`` {stage: neurons}:
    neurons that never fire in that stage (so that stages avoid and gain some). ``contexts`` > 0 also gives
    each stage its top contexts (the tokens each neuron won, as max1 records
    them; documents of 20 tokens, a window of 3 words either side).
    """
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, size=tokens)
    tags = ids % len(TAGS)
    base = rng.normal(size=(tokens, n_neurons)).astype(np.float32)
    profiles = []
    for s in range(n_stages):
        acts = base + s * shift * rng.normal(size=base.shape).astype(np.float32)
        acts[:, (silent or {}).get(s, [])] = -100.0
        # contexts=0: the stages have contexts only when asked for, and then those of with_contexts.
        rec = txray.Recorder(n_neurons=n_neurons, features={"token": vocab, "pos": len(TAGS)}, contexts=0)
        rec.update(acts, {"token": ids, "pos": tags})
        profile = rec.profile(
            name=f"epoch {s + 1}",
            feature_names={"token": vocabulary(vocab), "pos": TAGS},
            metadata={"model": "random", "layer": "rnn"},
        )
        if contexts:
            profile = with_contexts(profile, acts, ids, contexts)
        profiles.append(profile)
    return profiles


def with_contexts(profile: Profile, acts: np.ndarray, ids: np.ndarray, k: int, document: int = 20) -> Profile:
    """``profile`` with the top ``k`` contexts of max1 recording of ``acts`` over the words ``ids``."""
    words = vocabulary(int(ids.max()) + 1)
    winner = acts.argmax(axis=1)
    units = np.arange(len(ids))
    texts, offsets = [], []
    for u in units:
        doc = u // document
        lo, hi = max(u - 3, doc * document), min(u + 4, (doc + 1) * document, len(ids))
        before = " ".join(words[i] for i in ids[lo:u])
        texts.append(" ".join(words[i] for i in ids[lo:hi]))
        offsets.append(len(before) + 1 if before else 0)
    candidates = {
        "neuron": winner,
        "activation": acts[units, winner].astype(np.float64),
        "unit": units,
        "document": units // document,
        "word": [words[i] for i in ids],
        "text": texts,
        "word_offset": offsets,
    }
    return profile.with_contexts(txray.top_contexts(candidates, k), k)


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


def with_random_contexts(
    profile: Profile, k: int = 20, seed: int = 0, corpus: int = 50_000, window: int = 8
) -> Profile:
    """``profile`` with ``k`` made-up contexts per preferred neuron of its token kind: random units
    of a random corpus over its token vocabulary, a window of ``window`` words either side, as
    ``record_model`` writes them (sizes of reports with contexts)."""
    rng = np.random.default_rng(seed)
    words = profile.vocabulary("token")
    text_ids = rng.integers(0, len(words), size=corpus)
    neurons = np.flatnonzero(profile.preferred("token"))
    neuron = np.repeat(neurons, k)
    unit = rng.integers(window, corpus - window, size=len(neuron))
    texts, offsets, chosen = [], [], []
    for u in unit.tolist():
        before = " ".join(words[i] for i in text_ids[u - window : u])
        texts.append(" ".join(words[i] for i in text_ids[u - window : u + window + 1]))
        offsets.append(len(before) + 1)
        chosen.append(words[text_ids[u]])
    table = txray.top_contexts(
        {
            "neuron": neuron.astype(np.int32),
            "activation": rng.gamma(2.0, 1.0, size=len(neuron)),
            "unit": unit.astype(np.int64),
            "document": (unit // 40).astype(np.int64),
            "word": chosen,
            "text": texts,
            "word_offset": np.asarray(offsets, np.int32),
        },
        k,
    )
    return profile.with_contexts(table, k)
