"""Obviously-correct NumPy references for what txray computes, used by the tests.

Everything here loops token by token in float64 and follows the method
(docs/method.md) literally; it is slow on purpose and only runs on small inputs.
"""

from __future__ import annotations

import numpy as np


def winners(row: np.ndarray, mode: str, k: int | None) -> np.ndarray:
    """Neurons that record this token: argmax / k largest (ties: lowest index) / all."""
    if mode == "max1":
        return np.array([int(np.argmax(row))])  # argmax returns the first maximum
    if mode == "topk":
        return np.argsort(-row, kind="stable")[:k]  # stable: equal values keep index order
    return np.arange(len(row))


def record(acts, features: dict, sizes: dict, mode="max1", k=None, mask=None):
    """Per kind (count[N, F] int64, sum[N, F] float64), frequencies, mass and token count."""
    acts = np.asarray(acts, dtype=np.float64).reshape(-1, np.shape(acts)[-1])
    n = acts.shape[1]
    flat = {kind: np.asarray(ids).reshape(-1) for kind, ids in features.items()}
    valid = np.ones(len(acts), bool) if mask is None else np.asarray(mask).reshape(-1).astype(bool)
    count = {kind: np.zeros((n, sizes[kind]), np.int64) for kind in sizes}
    total = {kind: np.zeros((n, sizes[kind]), np.float64) for kind in sizes}
    freq = {kind: np.zeros(sizes[kind], np.int64) for kind in sizes}
    mass = np.zeros(n)
    for t in np.flatnonzero(valid):
        for neuron in winners(acts[t], mode, k):
            value = acts[t, neuron]
            mass[neuron] += value
            for kind in sizes:
                count[kind][neuron, flat[kind][t]] += 1
                total[kind][neuron, flat[kind][t]] += value
        for kind in sizes:
            freq[kind][flat[kind][t]] += 1
    return count, total, freq, mass, int(valid.sum())


def distribution(count: np.ndarray, total: np.ndarray) -> np.ndarray:
    """P[n, f]: positive part of the mean activation, normalised per neuron."""
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    w = np.maximum(mean, 0.0)
    rows = w.sum(axis=1, keepdims=True)
    return np.divide(w, rows, out=np.zeros_like(w), where=rows > 0)


def hellinger(p: np.ndarray, q: np.ndarray) -> float:
    """(1/sqrt 2) * ||sqrt p - sqrt q||_2, the paper's formula."""
    return float(np.sqrt(np.sum((np.sqrt(p) - np.sqrt(q)) ** 2)) / np.sqrt(2.0))


def dense_from_table(table, n_neurons: int, n_features: int):
    """(count, sum) dense matrices from a Profile.table()."""
    count = np.zeros((n_neurons, n_features), np.int64)
    total = np.zeros((n_neurons, n_features), np.float64)
    neuron = table.column("neuron").to_numpy()
    feature = table.column("feature").to_numpy()
    count[neuron, feature] = table.column("count").to_numpy()
    total[neuron, feature] = table.column("sum").to_numpy()
    return count, total


def contexts(acts, n_contexts: int, mode="max1", k=None, mask=None, units=None):
    """Each neuron's top activating contexts: (neuron, rank, activation, unit) rows,
    neuron-major, best first (activation descending, equal ones by unit ascending).

    A neuron's candidates are the tokens it won (max1, topk) or every token
    (all); masked tokens are skipped; ``units`` numbers the tokens (negative:
    never a context), by default the unmasked tokens counted from 0."""
    values = np.asarray(acts, dtype=np.float64).reshape(-1, np.shape(acts)[-1])
    valid = np.ones(len(values), bool) if mask is None else np.asarray(mask).reshape(-1).astype(bool)
    numbers = None if units is None else np.asarray(units).reshape(-1)
    candidates: dict[int, list[tuple[float, int]]] = {}
    counted = 0
    for t in np.flatnonzero(valid):
        unit = counted if numbers is None else int(numbers[t])
        counted += 1
        if unit < 0:
            continue
        for neuron in winners(values[t], mode, k):
            candidates.setdefault(int(neuron), []).append((float(values[t, neuron]), unit))
    rows = []
    for neuron in sorted(candidates):
        best = sorted(candidates[neuron], key=lambda c: (-c[0], c[1]))[:n_contexts]
        rows += [(neuron, rank, value, unit) for rank, (value, unit) in enumerate(best, start=1)]
    return rows
