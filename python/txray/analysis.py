"""The tables behind txray's figures, computed from profiles.

Every function returns a ``pyarrow.Table`` with a documented schema (the
``*_SCHEMA`` constants below), so the numbers behind a figure can be read,
tested and exported without plotly. Profiles given as a sequence are
*stages* (epoch 1, epoch 48, ...); a stage's label is the profile's name, or
``stage N`` when it has none.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from . import _inputs
from .compare import compare
from .profile import Profile, align, check_compatible

LENGTH_SHIFT_SCHEMA = pa.schema(
    [
        pa.field("step", pa.int32(), nullable=False),
        pa.field("stage_a", pa.string(), nullable=False),
        pa.field("stage_b", pa.string(), nullable=False),
        pa.field("neuron", pa.int32(), nullable=False),
        pa.field("length_a", pa.int64(), nullable=False),
        pa.field("length_b", pa.int64(), nullable=False),
        pa.field("change", pa.string(), nullable=False),
    ]
)
"""Schema of :func:`length_shift`: one row per (consecutive stage pair, neuron
shared by both). ``step`` 0 is stages 0 -> 1; ``change`` is ``longer``,
``shorter`` or ``unchanged`` (length_b versus length_a)."""

FEATURE_MASS_SCHEMA = pa.schema(
    [
        pa.field("profile", pa.string(), nullable=False),
        pa.field("feature", pa.int32(), nullable=False),
        pa.field("feature_name", pa.string()),
        pa.field("frequency", pa.int64(), nullable=False),
        pa.field("frequency_share", pa.float64()),
        pa.field("mass", pa.float64(), nullable=False),
        pa.field("mass_share", pa.float64()),
    ]
)
"""Schema of :func:`feature_mass`: one row per (profile, feature id).
``frequency`` is the feature's corpus frequency and ``frequency_share`` its
fraction of all tokens; ``mass`` is the activation recorded with the feature
summed over all neurons and ``mass_share`` its fraction of the layer's total
activation mass (null when the total is zero)."""

MASS_CURVE_SCHEMA = pa.schema(
    [
        pa.field("profile", pa.string(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("neuron", pa.int32(), nullable=False),
        pa.field("mass", pa.float64(), nullable=False),
        pa.field("mass_share", pa.float64()),
    ]
)
"""Schema of :func:`mass_curve`: per profile, every neuron sorted by
activation mass, largest first (``rank`` 1; ties: lower neuron first).
``mass_share`` is the neuron's fraction of the profile's total mass."""

TOP_FEATURES_SCHEMA = pa.schema(
    [
        pa.field("neuron", pa.int32(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("feature", pa.int32(), nullable=False),
        pa.field("feature_name", pa.string()),
        pa.field("p", pa.float64(), nullable=False),
    ]
)
"""Schema of :func:`top_features`: each neuron's most preferred features,
``rank`` 1 first (largest p; ties: lower feature id)."""

CHANGED_SCHEMA = pa.schema(
    [
        pa.field("group", pa.string(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("neuron", pa.int32(), nullable=False),
        pa.field("hellinger", pa.float64(), nullable=False),
        pa.field("length_a", pa.int64(), nullable=False),
        pa.field("length_b", pa.int64(), nullable=False),
        pa.field("union_length", pa.int64(), nullable=False),
    ]
)
"""Schema of :func:`changed_neurons`: the k shared neurons with the largest
Hellinger distance (``group`` = ``most``, rank 1 = largest) and the k with the
smallest among non-trivial neurons (``least``, rank 1 = smallest); ties: more
activation mass first, then the longer union, then the lower neuron."""

LEAST_CHANGED_MIN_LENGTH = 3
"""The least changed neurons prefer at least this many features in each stage
(fewer make H = 0 trivial: a neuron preferring only "I" in both stages)."""

NEURON_DISTRIBUTION_SCHEMA = pa.schema(
    [
        pa.field("neuron", pa.int32(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("feature", pa.int32(), nullable=False),
        pa.field("feature_name", pa.string()),
        pa.field("p", pa.float64(), nullable=False),
    ]
)
"""Schema of :func:`neuron_distributions`: for each neuron, the union over
stages of its ``top`` features in each stage, with the feature's probability
in every stage (0 where the stage does not prefer it), so stages line up."""

TIMELINE_SCHEMA = pa.schema(
    [
        pa.field("step", pa.int32(), nullable=False),
        pa.field("stage_a", pa.string(), nullable=False),
        pa.field("stage_b", pa.string(), nullable=False),
        pa.field("shared", pa.int64(), nullable=False),
        pa.field("avoided", pa.int64(), nullable=False),
        pa.field("gained", pa.int64(), nullable=False),
        pa.field("dead", pa.int64(), nullable=False),
        pa.field("preferred_b", pa.int64(), nullable=False),
        pa.field("mean_hellinger", pa.float64()),
        pa.field("median_hellinger", pa.float64()),
    ]
)
"""Schema of :func:`timeline`: one row per compared pair of checkpoints (the
:func:`txray.summary` counts, the number of neurons preferred in stage B, and
the mean and median Hellinger distance of shared neurons, null if none)."""


def stage_names(profiles: Sequence[Profile]) -> list[str]:
    """A distinct label per profile: its name, else ``stage N`` (1-based).

    Figures key traces by label, so repeated names are told apart: by the first of
    the metadata ``corpus``, ``model`` and ``layer`` that differs between the profiles
    sharing the name (``wiki.txt``; a model path by its last part), appended in
    parentheses, else by `` (N)``, the profile's position.
    """
    names = [p.name or f"stage {i + 1}" for i, p in enumerate(profiles)]
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        groups.setdefault(name, []).append(i)
    out = list(names)
    for name, members in groups.items():
        if len(members) == 1:
            continue
        for key in ("corpus", "model", "layer"):
            values = [_short(profiles[i].metadata.get(key)) for i in members]
            if all(values) and len(set(values)) == len(values):
                for i, value in zip(members, values):
                    out[i] = f"{name} ({value})"
                break
        else:
            for i in members:
                out[i] = f"{name} ({i + 1})"
    if len(set(out)) != len(out):  # a told-apart name met another profile's name
        out = [f"{n} ({i + 1})" if len(groups[n]) > 1 else n for i, n in enumerate(names)]
    return out


def kind_words(kind: str) -> str:
    """How a feature kind reads in a title or on an axis: ``tokens``, ``part-of-speech tags``, ..."""
    return {"token": "tokens", "pos": "part-of-speech tags", "label": "labels"}.get(kind, f"{kind} features")


def display_label(label: str) -> str:
    """A feature name as it can be read: blanks, control characters and U+FFFD written as escapes.

    A token that is only whitespace, or a piece of a UTF-8 character that a
    tokenizer split (decoded as U+FFFD, "�"), is otherwise invisible or mojibake.
    """
    if label == "":
        return "(empty)"
    out = []
    for ch in label:
        if ch == "\ufffd":
            out.append("\\ufffd")
        elif ch == " " and label.strip() == "":
            out.append("␣")
        elif not ch.isprintable() and ch != " ":
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def _short(value: object) -> str | None:
    """A metadata value as a label: a path by its last part; None for none or a list (a merge)."""
    if not isinstance(value, str) or not value:
        return None
    return value.rstrip("/").rsplit("/", 1)[-1] or value


def _need_stages(profiles: Sequence[Profile], minimum: int) -> list[Profile]:
    profiles = list(profiles)
    if len(profiles) < minimum:
        raise ValueError(f"need at least {minimum} profile(s), got {len(profiles)}")
    return profiles


def length_shift(profiles: Sequence[Profile], kind: str = "token") -> pa.Table:
    """Distribution lengths of shared neurons across consecutive stages.

    For every consecutive pair (stage i, stage i+1) of two or more profiles
    of the same layer, one row per neuron preferred in both, with its length
    in each and whether it got longer, shorter or stayed the same (the
    paper's figures 2 and 10). Schema :data:`LENGTH_SHIFT_SCHEMA`.
    """
    profiles = _need_stages(profiles, 2)
    names = stage_names(profiles)
    parts = []
    for step, (a, b) in enumerate(zip(profiles, profiles[1:])):
        check_compatible(a, b, [kind], same_neurons=True)
        len_a, len_b = a.lengths(kind), b.lengths(kind)
        shared = np.flatnonzero((len_a > 0) & (len_b > 0))
        la, lb = len_a[shared], len_b[shared]
        change = np.select([lb > la, lb < la], ["longer", "shorter"], default="unchanged")
        parts.append(
            pa.Table.from_arrays(
                [
                    pa.array(np.full(len(shared), step, np.int32)),
                    pa.array([names[step]] * len(shared), pa.string()),
                    pa.array([names[step + 1]] * len(shared), pa.string()),
                    pa.array(shared.astype(np.int32)),
                    pa.array(la.astype(np.int64)),
                    pa.array(lb.astype(np.int64)),
                    pa.array(change.astype(str), pa.string()),
                ],
                schema=LENGTH_SHIFT_SCHEMA,
            )
        )
    return pa.concat_tables(parts)


def _share(values: np.ndarray, total: float) -> pa.Array:
    """values / total, null everywhere when the total is zero (no share exists)."""
    if total == 0:
        return pa.nulls(len(values), pa.float64())
    return pa.array(values / total, pa.float64())


def feature_mass(profiles: Sequence[Profile], kind: str = "pos") -> pa.Table:
    """Corpus frequency versus share of activation mass, per feature of a kind.

    The paper's figure 3 for ``kind="pos"``: does the layer spend its
    activation on each POS tag in proportion to how often the tag occurs?
    Profiles with different vocabularies are lined up by feature name
    (:func:`txray.align`), so every profile has a row for every feature of any.
    Schema :data:`FEATURE_MASS_SCHEMA`.
    """
    profiles = _need_stages(profiles, 1)
    names = stage_names(profiles)
    profiles = align(profiles, [kind])  # one row per feature of any profile, the same ids in each
    parts = []
    for label, profile in zip(names, profiles):
        cells = profile.cells(kind)
        size = profile.vocab_size(kind)
        freq = profile.frequencies(kind)
        mass = np.bincount(cells.feature, weights=cells.sum, minlength=size)
        vocab = profile.vocabulary(kind)
        parts.append(
            pa.Table.from_arrays(
                [
                    pa.array([label] * size, pa.string()),
                    pa.array(np.arange(size, dtype=np.int32)),
                    pa.array(vocab, pa.string()) if vocab is not None else pa.nulls(size, pa.string()),
                    pa.array(freq),
                    _share(freq.astype(np.float64), float(freq.sum())),
                    pa.array(mass, pa.float64()),
                    _share(mass, float(profile.mass().sum())),
                ],
                schema=FEATURE_MASS_SCHEMA,
            )
        )
    return pa.concat_tables(parts)


def mass_curve(profiles: Sequence[Profile]) -> pa.Table:
    """Every neuron's activation mass, sorted largest first, per profile.

    The paper's figure 11 ("supervision sparsifies"): a steep head and a
    short tail mean few neurons carry the layer's activation.
    Schema :data:`MASS_CURVE_SCHEMA`.
    """
    profiles = _need_stages(profiles, 1)
    parts = []
    for label, profile in zip(stage_names(profiles), profiles):
        mass = profile.mass()
        order = mass_order(mass)
        parts.append(
            pa.Table.from_arrays(
                [
                    pa.array([label] * len(mass), pa.string()),
                    pa.array(np.arange(1, len(mass) + 1, dtype=np.int32)),
                    pa.array(order.astype(np.int32)),
                    pa.array(mass[order]),
                    _share(mass[order], float(mass.sum())),
                ],
                schema=MASS_CURVE_SCHEMA,
            )
        )
    return pa.concat_tables(parts)


def mass_order(mass: np.ndarray) -> np.ndarray:
    """Neuron ids by activation mass, largest first (ties: lower neuron first): the order
    of :func:`mass_curve`, and of the mass rank in :func:`txray.neuron_table`."""
    return np.lexsort((np.arange(len(mass)), -np.asarray(mass)))


SELECT_TOP = 16
"""Up to this many features per neuron, :func:`top_features` picks them in passes over the
cells (one per rank, linear time) instead of sorting every cell."""


def _ranked_cells(
    profile: Profile, kind: str, top: int, neurons: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(neuron, rank, feature, p) of each neuron's ``top`` most preferred cells (of all
    neurons, or of the given distinct ids), sorted by neuron then rank; rank 0 = largest p
    (ties: lower feature id)."""
    dist = profile.distributions(kind)
    rows = np.arange(profile.n_neurons) if neurons is None else np.unique(neurons)
    if neurons is not None:
        dist = dist.rows(rows)
    lengths = np.diff(dist.indptr)
    row = np.repeat(np.arange(len(rows)), lengths)
    if top <= SELECT_TOP:
        position, rank = _select_top(dist.indptr, dist.data, row, top)
    else:
        # CSR rows are sorted by feature, so a stable sort on -p keeps lower ids first among ties.
        order = np.lexsort((dist.indices, -dist.data, row))
        rank = np.arange(len(order)) - np.repeat(dist.indptr[:-1], lengths)
        keep = rank < top
        position, rank = order[keep], rank[keep]
    return rows[row[position]].astype(np.int32), rank, dist.indices[position], dist.data[position]


def _select_top(indptr: np.ndarray, data: np.ndarray, row: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of each CSR row's ``top`` largest entries (ties: the first in the row) and
    their ranks, sorted by row then rank: ``top`` passes, each taking every row's largest
    remaining entry (p > 0, so a taken entry is marked -1)."""
    remaining = data.copy()
    starts = indptr[:-1][np.diff(indptr) > 0]
    picked, ranks = [], []
    for rank in range(top):
        if not len(starts):
            break
        best = np.maximum.reduceat(remaining, starts)
        best_of_cell = np.repeat(best, np.diff(np.append(starts, len(remaining))))
        hits = np.flatnonzero((remaining == best_of_cell) & (best_of_cell > 0))
        if not len(hits):
            break
        first = hits[np.concatenate([[True], row[hits[1:]] != row[hits[:-1]]])]
        remaining[first] = -1.0
        picked.append(first)
        ranks.append(np.full(len(first), rank))
    if not picked:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    position, rank_of = np.concatenate(picked), np.concatenate(ranks)
    order = np.lexsort((rank_of, row[position]))
    return position[order], rank_of[order]


def top_features(profile: Profile, kind: str = "token", top: int = 5, neurons: Sequence[int] | None = None) -> pa.Table:
    """Each neuron's ``top`` most preferred features (all neurons, or the given ones).

    Schema :data:`TOP_FEATURES_SCHEMA`, sorted by neuron then rank.
    """
    if top < 1:
        raise ValueError(f"top must be at least 1, not {top}")
    ids = None if neurons is None else _inputs.neuron_ids(neurons, profile.n_neurons)
    neuron, rank, feature, p = _ranked_cells(profile, kind, top, ids)
    vocab = profile.vocabulary(kind)
    names = (
        pa.array(vocab, pa.string()).take(pa.array(feature))
        if vocab is not None
        else pa.nulls(len(feature), pa.string())
    )
    return pa.Table.from_arrays(
        [pa.array(neuron), pa.array((rank + 1).astype(np.int32)), pa.array(feature), names, pa.array(p)],
        schema=TOP_FEATURES_SCHEMA,
    )


def top_feature_labels(profile: Profile, kind: str = "token", top: int = 5) -> list[str]:
    """Per neuron, its top features as one string, e.g. ``"the 0.31, with 0.12"``.

    Unpreferred neurons get ``""``; names as :func:`display_label` writes them. Used for hover text.
    """
    table = top_features(profile, kind, top)
    neuron = table.column("neuron").to_numpy()
    names = feature_labels(table)
    p = table.column("p").to_numpy()
    labels: list[list[str]] = [[] for _ in range(profile.n_neurons)]
    for n, name, value in zip(neuron.tolist(), names, p.tolist()):
        labels[n].append(f"{display_label(name)} {value:.2f}")
    return [", ".join(parts) for parts in labels]


def feature_labels(table: pa.Table) -> list[str]:
    """feature_name where known, else the feature id as text."""
    names = table.column("feature_name").to_pylist()
    ids = table.column("feature").to_pylist()
    return [str(f) if name is None else name for name, f in zip(names, ids)]


def changed_neurons(comparison: pa.Table, k: int = 10, min_length: int = LEAST_CHANGED_MIN_LENGTH) -> pa.Table:
    """The k most and k least changed shared neurons of a :func:`txray.compare` table.

    "Changed" is the Hellinger distance between the neuron's two
    distributions. Many neurons tie (at H = 1 when a neuron's preferences are
    disjoint), so ties go to the neuron with more activation mass in the two
    stages together, then to the longer union of features, then to the lower
    id. The least changed are chosen among neurons preferring at least
    ``min_length`` features in each stage: a neuron that prefers one feature
    in both stages (``"I" -> "I"``) has H = 0 and says nothing. Schema
    :data:`CHANGED_SCHEMA` (``most`` rows first).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    if min_length < 1:
        raise ValueError(f"min_length must be at least 1, not {min_length}")
    h = comparison.column("hellinger").to_numpy(zero_copy_only=False).astype(np.float64)
    neuron = comparison.column("neuron").to_numpy()
    mass = (comparison.column("mass_a").to_numpy() + comparison.column("mass_b").to_numpy()).astype(np.float64)
    union = comparison.column("union_length").to_numpy()
    length_a, length_b = (comparison.column(c).to_numpy() for c in ("length_a", "length_b"))
    shared = np.flatnonzero(~np.isnan(h))
    # np.lexsort sorts by the last key first.
    most = shared[np.lexsort((neuron[shared], -union[shared], -mass[shared], -h[shared]))][:k]
    candidates = shared[np.minimum(length_a[shared], length_b[shared]) >= min_length]
    least = candidates[np.lexsort((neuron[candidates], -union[candidates], -mass[candidates], h[candidates]))][:k]
    rows = np.concatenate([most, least])
    return pa.Table.from_arrays(
        [
            pa.array(["most"] * len(most) + ["least"] * len(least), pa.string()),
            pa.array(np.concatenate([np.arange(1, len(most) + 1), np.arange(1, len(least) + 1)]).astype(np.int32)),
            pa.array(neuron[rows].astype(np.int32)),
            pa.array(h[rows]),
            comparison.column("length_a").take(pa.array(rows)),
            comparison.column("length_b").take(pa.array(rows)),
            comparison.column("union_length").take(pa.array(rows)),
        ],
        schema=CHANGED_SCHEMA,
    )


def neuron_distributions(
    profiles: Sequence[Profile], neurons: Sequence[int], kind: str = "token", top: int = 10
) -> pa.Table:
    """Preference distributions of chosen neurons in every stage, aligned for plotting.

    Per neuron, the features shown are the union of its ``top`` features in
    each stage (ordered by their largest p in any stage); every stage gets a
    row for each of them. Profiles with different vocabularies are lined up by
    feature name (:func:`txray.align`). Schema :data:`NEURON_DISTRIBUTION_SCHEMA`.
    """
    profiles = _need_stages(profiles, 1)
    for other in profiles[1:]:
        check_compatible(profiles[0], other, [kind], same_neurons=True)
    profiles = align(profiles, [kind])
    ids = _inputs.neuron_ids(neurons, profiles[0].n_neurons)
    labels = stage_names(profiles)
    dense = [p.distributions(kind).to_scipy() for p in profiles]
    vocab = profiles[0].vocabulary(kind)
    rows: dict[str, list] = {f.name: [] for f in NEURON_DISTRIBUTION_SCHEMA}
    for n in ids.tolist():
        per_stage = [d[[n], :].toarray()[0] for d in dense]
        chosen = _union_of_tops(per_stage, top)
        for label, p in zip(labels, per_stage):
            for f in chosen:
                rows["neuron"].append(n)
                rows["stage"].append(label)
                rows["feature"].append(f)
                rows["feature_name"].append(None if vocab is None else vocab[f])
                rows["p"].append(float(p[f]))
    return pa.Table.from_pydict(rows, schema=NEURON_DISTRIBUTION_SCHEMA)


def _union_of_tops(per_stage: list[np.ndarray], top: int) -> list[int]:
    """Feature ids in any stage's top ``top`` (p > 0), by their best p, then id."""
    chosen: set[int] = set()
    for p in per_stage:
        nonzero = np.flatnonzero(p > 0)
        best = nonzero[np.lexsort((nonzero, -p[nonzero]))][:top]
        chosen.update(best.tolist())
    peak = np.max(np.stack(per_stage), axis=0)
    return sorted(chosen, key=lambda f: (-peak[f], f))


def neuron_overview(a: Profile, b: Profile, kind: str = "token", top: int = 5) -> pa.Table:
    """:func:`txray.compare` plus each neuron's top features in A and B.

    The :data:`txray.COMPARE_SCHEMA` columns followed by ``top_a`` and
    ``top_b`` (strings from :func:`top_feature_labels`); the report's
    searchable neuron table and the Hellinger scatter's hover text.
    """
    table = compare(a, b, kind)
    table = table.append_column("top_a", pa.array(top_feature_labels(a, kind, top), pa.string()))
    return table.append_column("top_b", pa.array(top_feature_labels(b, kind, top), pa.string()))


def timeline(profiles: Sequence[Profile], kind: str = "token", reference: str = "previous") -> pa.Table:
    """Shared / avoided / gained / dead counts and Hellinger across checkpoints.

    ``reference="previous"`` compares each checkpoint with the one before it;
    ``"first"`` compares every checkpoint with the first (drift from the
    start). Schema :data:`TIMELINE_SCHEMA`.
    """
    from .compare import summary

    if reference not in ("previous", "first"):
        raise ValueError(f"reference must be 'previous' or 'first', not {reference!r}")
    profiles = _need_stages(profiles, 2)
    names = stage_names(profiles)
    rows: dict[str, list] = {f.name: [] for f in TIMELINE_SCHEMA}
    for step in range(len(profiles) - 1):
        i = step if reference == "previous" else 0
        a, b = profiles[i], profiles[step + 1]
        info = summary(compare(a, b, kind))
        values = {
            "step": step,
            "stage_a": names[i],
            "stage_b": names[step + 1],
            "preferred_b": int(b.preferred(kind).sum()),
            **{s: info[s] for s in ("shared", "avoided", "gained", "dead")},
            "mean_hellinger": info["mean_hellinger"],
            "median_hellinger": info["median_hellinger"],
        }
        for key in rows:
            rows[key].append(values[key])
    return pa.Table.from_pydict(rows, schema=TIMELINE_SCHEMA)
