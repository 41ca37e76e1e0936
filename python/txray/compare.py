"""Comparing two profiles: per-neuron states and Hellinger distances, and
all-pairs nearest neurons between layers of different models."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from . import hellinger
from .profile import Profile, check_compatible

STATES = ("shared", "avoided", "gained", "dead")

COMPARE_SCHEMA = pa.schema(
    [
        pa.field("neuron", pa.int32(), nullable=False),
        pa.field("state", pa.string(), nullable=False),
        pa.field("length_a", pa.int64(), nullable=False),
        pa.field("length_b", pa.int64(), nullable=False),
        pa.field("union_length", pa.int64(), nullable=False),
        pa.field("shared_length", pa.int64(), nullable=False),
        pa.field("hellinger", pa.float64()),
        pa.field("mass_a", pa.float64(), nullable=False),
        pa.field("mass_b", pa.float64(), nullable=False),
    ]
)
"""Schema of :func:`compare`: one row per neuron. ``state`` is shared
(preferred in both), avoided (in A only), gained (in B only) or dead
(neither); ``hellinger`` is null unless shared; lengths count the features
with p > 0; ``union_length`` is the README's "Hellinger length"."""

NEAREST_SCHEMA = pa.schema(
    [
        pa.field("neuron_a", pa.int32(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("neuron_b", pa.int32(), nullable=False),
        pa.field("hellinger", pa.float64(), nullable=False),
    ]
)

MATCH_SCHEMA = pa.schema(
    [
        pa.field("neuron_a", pa.int32(), nullable=False),
        pa.field("neuron_b", pa.int32(), nullable=False),
        pa.field("hellinger", pa.float64(), nullable=False),
    ]
)


def _csr(profile: Profile, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = profile.distributions(kind)
    return d.indptr, d.indices, d.data


def compare(a: Profile, b: Profile, kind: str = "token") -> pa.Table:
    """Neuron-by-neuron comparison of two profiles of the same layer.

    Returns a table with :data:`COMPARE_SCHEMA`; its schema metadata holds
    the :func:`summary` as JSON under ``txray_summary``.
    """
    check_compatible(a, b, [kind], same_neurons=True)
    distance, union, shared = hellinger.hellinger_paired(*_csr(a, kind), *_csr(b, kind))
    pref_a, pref_b = a.preferred(kind), b.preferred(kind)
    state = np.select(
        [pref_a & pref_b, pref_a & ~pref_b, ~pref_a & pref_b],
        ["shared", "avoided", "gained"],
        default="dead",
    )
    table = pa.Table.from_arrays(
        [
            pa.array(np.arange(a.n_neurons, dtype=np.int32)),
            pa.array(state),
            a.lengths(kind),
            b.lengths(kind),
            union,
            shared,
            pa.array(distance, mask=np.isnan(distance)),
            a.mass(),
            b.mass(),
        ],
        schema=COMPARE_SCHEMA,
    )
    info = summary(table)
    info.update({"kind": kind, "a": a.name, "b": b.name})
    return table.replace_schema_metadata({"txray_summary": json.dumps(info)})


def summary(comparison: pa.Table) -> dict[str, Any]:
    """Counts per state and Hellinger statistics of a :func:`compare` table."""
    states = comparison.column("state").to_numpy(zero_copy_only=False)
    h = comparison.column("hellinger").to_numpy(zero_copy_only=False).astype(np.float64)
    h = h[~np.isnan(h)]
    out: dict[str, Any] = {s: int(np.sum(states == s)) for s in STATES}
    out["neurons"] = int(len(states))
    out["mean_hellinger"] = float(h.mean()) if len(h) else None
    out["median_hellinger"] = float(np.median(h)) if len(h) else None
    return out


def nearest(a: Profile, b: Profile, kind: str = "token", k: int = 10) -> pa.Table:
    """For every preferred neuron of A, its k nearest preferred neurons of B.

    A and B may be layers of different models with different widths; their
    vocabularies for ``kind`` must agree. Distances are Hellinger; ties go to
    the lower B index. Computed in blocks, never as a dense A x B matrix.
    Returns a table with :data:`NEAREST_SCHEMA` sorted by neuron_a, rank.
    """
    check_compatible(a, b, [kind], same_neurons=False)
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, not {k!r}")
    neighbors, distances = hellinger.hellinger_topk(*_csr(a, kind), *_csr(b, kind), a.vocab_size(kind), int(k))
    rows, ranks = np.nonzero(neighbors >= 0)
    return pa.Table.from_arrays(
        [
            rows.astype(np.int32),
            ranks.astype(np.int32),
            neighbors[rows, ranks].astype(np.int32),
            distances[rows, ranks],
        ],
        schema=NEAREST_SCHEMA,
    )


def match(a: Profile, b: Profile, kind: str = "token", method: str = "auto") -> pa.Table:
    """One-to-one matching of preferred neurons of A and B minimising total Hellinger.

    ``method``: "exact" (Hungarian algorithm on the dense distance matrix),
    "greedy" (approximate, on each neuron's nearest candidates) or "auto"
    (exact up to 25 million pairs). Returns :data:`MATCH_SCHEMA`.
    """
    check_compatible(a, b, [kind], same_neurons=False)
    rows, cols, dist = hellinger.match(*_csr(a, kind), *_csr(b, kind), a.vocab_size(kind), method=method)
    return pa.Table.from_arrays(
        [rows.astype(np.int32), cols.astype(np.int32), dist.astype(np.float64)], schema=MATCH_SCHEMA
    )
