"""Comparing two profiles: per-neuron states and Hellinger distances, and
all-pairs nearest neurons between layers of different models."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from . import _inputs, hellinger
from .profile import Distributions, Profile, align, check_compatible

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

PAIRED_SCHEMA = pa.schema([COMPARE_SCHEMA.field(name) for name in COMPARE_SCHEMA.names[1:7]])
"""Schema of :func:`compare_distributions`: the :data:`COMPARE_SCHEMA` columns from
``state`` to ``hellinger``."""

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


def _mode(p: Profile) -> str:
    return f"mode 'topk' (k={p.k})" if p.mode == "topk" else f"mode {p.mode!r}"


def check_modes(a: Profile, b: Profile, allow_mode_mismatch: bool = False) -> None:
    """Refuse to compare profiles recorded in different modes (or topk with
    different k) unless ``allow_mode_mismatch``: their distributions measure
    different things, so a distance between them mixes a change of neuron
    with a change of method."""
    if allow_mode_mismatch or (a.mode, a.k) == (b.mode, b.k):
        return
    raise ValueError(
        f"profile {a.name!r} was recorded with {_mode(a)} and {b.name!r} with {_mode(b)}: in max1 a neuron's "
        "distribution is over the tokens it won (was the most active neuron for), in topk over the tokens where "
        "it was among the k most active, in all over every token, so distances between them measure the change "
        "of method as much as of the neurons. Record both with the same mode (txray record --mode), or pass "
        "allow_mode_mismatch=True to compare them anyway."
    )


def _csr(profile: Profile, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = profile.distributions(kind)
    return d.indptr, d.indices, d.data


def compare(
    a: Profile,
    b: Profile,
    kind: str = "token",
    *,
    neurons: Sequence[int] | None = None,
    allow_mode_mismatch: bool = False,
) -> pa.Table:
    """Neuron-by-neuron comparison of two profiles of the same layer.

    Both must be recorded in the same mode (see :func:`check_modes`; a
    ValueError otherwise, unless ``allow_mode_mismatch=True``). Profiles of
    different corpora (different vocabularies) are lined up by feature name
    (:func:`txray.align`): the result is the one both would give recorded with
    one shared vocabulary. ``neurons``: only these neurons, one row each in the
    order given (default: every neuron). Returns a table with
    :data:`COMPARE_SCHEMA`; its schema metadata holds the :func:`summary` of its
    rows as JSON under ``txray_summary``.
    """
    check_compatible(a, b, [kind], same_neurons=True)
    check_modes(a, b, allow_mode_mismatch)
    a, b = align([a, b], [kind])
    rows = np.arange(a.n_neurons) if neurons is None else _inputs.neuron_ids(neurons, a.n_neurons)
    dist_a, dist_b = a.distributions(kind), b.distributions(kind)
    if neurons is not None:
        dist_a, dist_b = dist_a.rows(rows), dist_b.rows(rows)
    rows_compared = compare_distributions(dist_a, dist_b)
    table = pa.Table.from_arrays(
        [pa.array(rows.astype(np.int32)), *rows_compared.columns, pa.array(a.mass()[rows]), pa.array(b.mass()[rows])],
        schema=COMPARE_SCHEMA,
    )
    info = summary(table)
    info.update({"kind": kind, "a": a.name, "b": b.name})
    return table.replace_schema_metadata({"txray_summary": json.dumps(info)})


def compare_distributions(a: Distributions, b: Distributions) -> pa.Table:
    """Row ``i`` of ``a`` against row ``i`` of ``b`` (feature ids on one vocabulary): the
    :data:`COMPARE_SCHEMA` columns from ``state`` to ``hellinger``. :func:`compare` is this
    for the same neurons of two profiles; :func:`txray.neuron_detail` stacks one neuron's
    rows of several stages to compare them all in one pass."""
    distance, union, shared = hellinger.hellinger_paired(a.indptr, a.indices, a.data, b.indptr, b.indices, b.data)
    length_a, length_b = np.diff(a.indptr), np.diff(b.indptr)
    pref_a, pref_b = length_a > 0, length_b > 0
    state = np.select(
        [pref_a & pref_b, pref_a & ~pref_b, ~pref_a & pref_b],
        ["shared", "avoided", "gained"],
        default="dead",
    )
    columns = [state, length_a, length_b, union, shared, pa.array(distance, mask=np.isnan(distance))]
    return pa.Table.from_arrays(columns, schema=PAIRED_SCHEMA)


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


def nearest(a: Profile, b: Profile, kind: str = "token", k: int = 10, *, allow_mode_mismatch: bool = False) -> pa.Table:
    """For every preferred neuron of A, its k nearest preferred neurons of B.

    A and B may be layers of different models with different widths, recorded
    on different corpora (vocabularies are lined up by feature name, as in
    :func:`compare`). Distances are Hellinger; ties go to
    the lower B index. Computed in blocks, never as a dense A x B matrix.
    Returns a table with :data:`NEAREST_SCHEMA` sorted by neuron_a, rank;
    k larger than B's neurons gives every preferred neuron of B. Both must
    be recorded in the same mode (see :func:`compare`).
    """
    check_compatible(a, b, [kind], same_neurons=False)
    check_modes(a, b, allow_mode_mismatch)
    a, b = align([a, b], [kind])
    k = min(_inputs.integer(k, "k", minimum=1), b.n_neurons)
    neighbors, distances = hellinger.hellinger_topk(*_csr(a, kind), *_csr(b, kind), a.vocab_size(kind), k)
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


def match(
    a: Profile, b: Profile, kind: str = "token", method: str = "auto", *, allow_mode_mismatch: bool = False
) -> pa.Table:
    """One-to-one matching of preferred neurons of A and B minimising total Hellinger.

    ``method``: "exact" (Hungarian algorithm on the dense distance matrix),
    "greedy" (approximate, on each neuron's nearest candidates) or "auto"
    (exact up to 25 million pairs). Returns :data:`MATCH_SCHEMA`. Both must
    be recorded in the same mode; vocabularies are lined up by feature name
    (see :func:`compare`).
    """
    check_compatible(a, b, [kind], same_neurons=False)
    check_modes(a, b, allow_mode_mismatch)
    a, b = align([a, b], [kind])
    rows, cols, dist = hellinger.match(*_csr(a, kind), *_csr(b, kind), a.vocab_size(kind), method=method)
    return pa.Table.from_arrays(
        [rows.astype(np.int32), cols.astype(np.int32), dist.astype(np.float64)], schema=MATCH_SCHEMA
    )
