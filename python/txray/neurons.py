"""Per-neuron views of profiles: every neuron of every stage in one table, and all there
is to know about one neuron (``txray show``, the report's neuron browser).

Profiles given as a sequence are *stages* of the same layer (epoch 1, epoch 48; a model
on Wikipedia, then on tweets); a single :class:`~txray.Profile` is one stage. Stages are
labelled by :func:`txray.analysis.stage_names` and lined up by feature name
(:func:`txray.align`), so a feature id means the same feature in every stage and in
every table here.

States and Hellinger distances come from :func:`txray.compare`, with the *reference*
stage as A and the stage itself as B: ``gained`` is preferred in this stage but not in
the reference. A stage compared with nothing (the first one with
``reference="previous"``, the reference stage itself, a single profile) has the state
``preferred`` or ``unpreferred`` (docs/method.md) and no Hellinger distance.

Every function returns Arrow tables with the schemas documented below (``*_SCHEMA``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import _inputs
from .analysis import mass_order, stage_names, top_features
from .compare import check_modes, compare, compare_distributions
from .profile import CONTEXTS_SCHEMA, Distributions, Profile, align, check_compatible

STATES = ("shared", "avoided", "gained", "dead", "preferred", "unpreferred")
"""Values of the ``state`` columns: the four of :func:`txray.compare` for a stage compared
with a reference, ``preferred`` / ``unpreferred`` for a stage compared with nothing."""

NEURON_TABLE_SCHEMA = pa.schema(
    [
        pa.field("stage_index", pa.int32(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("neuron", pa.int32(), nullable=False),
        pa.field("reference", pa.string()),
        pa.field("state", pa.string(), nullable=False),
        pa.field("hellinger", pa.float64()),
        pa.field("mass", pa.float64(), nullable=False),
        pa.field("mass_share", pa.float64()),
        pa.field("mass_rank", pa.int32(), nullable=False),
        pa.field("length", pa.int64(), nullable=False),
        pa.field("top_feature", pa.int32()),
        pa.field("top_feature_name", pa.string()),
        pa.field("top_p", pa.float64()),
        pa.field("contexts", pa.int32()),
    ]
)
"""Schema of :func:`neuron_table`: one row per (stage, neuron), sorted by stage then neuron.

- ``stage_index``: the stage's position (0-based); ``stage``: its label.
- ``reference``: the label of the stage it is compared with, null when none.
- ``state``: one of :data:`STATES` (of the table's feature kind).
- ``hellinger``: distance to the neuron's distribution in the reference stage; null
  unless the state is ``shared``.
- ``mass``: the neuron's activation mass in this stage; ``mass_share`` its fraction of
  the stage's total (null when the total is 0); ``mass_rank`` 1 = the most massive
  neuron of the stage (ties: lower neuron first, as in :func:`txray.analysis.mass_curve`).
- ``length``: the number of features the neuron prefers (p > 0).
- ``top_feature``, ``top_feature_name``, ``top_p``: its most preferred feature (ties:
  lower id), null for an unpreferred neuron; the name is null when the profile has no
  vocabulary.
- ``contexts``: how many top activating contexts the stage holds for the neuron; null
  when the profile has none recorded.
"""

NEURON_SUMMARY_SCHEMA = pa.schema(
    [
        pa.field("stage_index", pa.int32(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("reference", pa.string()),
        pa.field("state", pa.string(), nullable=False),
        pa.field("hellinger", pa.float64()),
        pa.field("length", pa.int64(), nullable=False),
        pa.field("mass", pa.float64(), nullable=False),
        pa.field("mass_share", pa.float64()),
        pa.field("mass_rank", pa.int32(), nullable=False),
        pa.field("neurons", pa.int32(), nullable=False),
        pa.field("contexts", pa.int32()),
    ]
)
"""Schema of :func:`neuron_detail`'s ``"summary"``: one row per (stage, kind), the
columns of :data:`NEURON_TABLE_SCHEMA` for the one neuron (``neurons``: the layer's
width, the bottom of the mass rank)."""

NEURON_PAIRS_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.string(), nullable=False),
        pa.field("stage_a_index", pa.int32(), nullable=False),
        pa.field("stage_a", pa.string(), nullable=False),
        pa.field("stage_b_index", pa.int32(), nullable=False),
        pa.field("stage_b", pa.string(), nullable=False),
        pa.field("state", pa.string(), nullable=False),
        pa.field("hellinger", pa.float64()),
        pa.field("length_a", pa.int64(), nullable=False),
        pa.field("length_b", pa.int64(), nullable=False),
        pa.field("union_length", pa.int64(), nullable=False),
        pa.field("shared_length", pa.int64(), nullable=False),
    ]
)
"""Schema of :func:`neuron_detail`'s ``"pairs"``: the neuron compared between every two
stages (a < b), per kind: the :data:`txray.COMPARE_SCHEMA` columns of its row."""

NEURON_FEATURES_SCHEMA = pa.schema(
    [
        pa.field("stage_index", pa.int32(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("feature", pa.int32(), nullable=False),
        pa.field("feature_name", pa.string()),
        pa.field("p", pa.float64(), nullable=False),
        pa.field("count", pa.int64(), nullable=False),
        pa.field("mean", pa.float64(), nullable=False),
    ]
)
"""Schema of :func:`neuron_detail`'s ``"features"``: per stage and kind, the neuron's
``top`` most preferred features, rank 1 = largest p (ties: lower id); ``count`` is how
often the neuron recorded the feature and ``mean`` its mean activation then."""

NEURON_CONTEXTS_SCHEMA = pa.schema(
    [
        pa.field("stage_index", pa.int32(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        *CONTEXTS_SCHEMA,
    ]
)
"""Schema of :func:`neuron_detail`'s ``"contexts"``: per stage, the neuron's rows of
:attr:`txray.Profile.contexts` (:data:`txray.CONTEXTS_SCHEMA`, best first); no rows for a
stage without recorded contexts."""

NEURON_CHANGE_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.string(), nullable=False),
        pa.field("step", pa.int32(), nullable=False),
        pa.field("stage_a", pa.string(), nullable=False),
        pa.field("stage_b", pa.string(), nullable=False),
        pa.field("change", pa.string(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("feature", pa.int32(), nullable=False),
        pa.field("feature_name", pa.string()),
        pa.field("p_a", pa.float64(), nullable=False),
        pa.field("p_b", pa.float64(), nullable=False),
    ]
)
"""Schema of :func:`neuron_detail`'s ``"change"``: per kind and consecutive stages
(``step`` 0 is stages 0 -> 1), the features the neuron ``gained`` (p_a = 0 < p_b) and
``lost`` (p_a > 0 = p_b), at most ``top`` of each, rank 1 = the largest p on the side
that has it (ties: lower id)."""

DETAIL_TABLES = ("summary", "pairs", "features", "contexts", "change")
"""The keys of :func:`neuron_detail`'s dict, in order."""


def neuron_table(
    profiles: Profile | Sequence[Profile],
    kind: str = "token",
    reference: int | str = "previous",
    *,
    allow_mode_mismatch: bool = False,
) -> pa.Table:
    """Every neuron of every stage in one table: state, Hellinger, mass and its rank, length,
    top feature and number of contexts. Schema :data:`NEURON_TABLE_SCHEMA`.

    ``profiles``: one profile or stages of the same layer (same number of neurons, the kind
    ``kind`` in each; vocabularies are lined up by name). ``reference``: what each stage is
    compared with: ``"previous"`` (the stage before it), ``"first"`` (= 0) or a stage index.
    Stages compared must be recorded in the same mode (:func:`txray.compare`) unless
    ``allow_mode_mismatch``. Vectorised over neurons: per stage one :func:`txray.compare`
    and one linear pass for the top features (:func:`txray.analysis.top_features`).
    """
    stages = _stages(profiles, [kind])
    labels = stage_names(stages)
    references = _references(len(stages), reference)
    n = stages[0].n_neurons
    parts = []
    for index, (label, profile, ref) in enumerate(zip(labels, stages, references)):
        if ref is None:
            length = profile.lengths(kind)
            state = pa.array(np.where(length > 0, "preferred", "unpreferred"), pa.string())
            hellinger: pa.Array | pa.ChunkedArray = pa.nulls(n, pa.float64())
        else:
            compared = compare(stages[ref], profile, kind, allow_mode_mismatch=allow_mode_mismatch)
            length = compared.column("length_b").to_numpy()
            state, hellinger = compared.column("state"), compared.column("hellinger")
        mass = profile.mass()
        top = top_features(profile, kind, 1)
        at = _positions(top.column("neuron").to_numpy(), n)
        columns = {
            "stage_index": pa.array(np.full(n, index, np.int32)),
            "stage": pa.array([label] * n, pa.string()),
            "neuron": pa.array(np.arange(n, dtype=np.int32)),
            "reference": pa.array([None if ref is None else labels[ref]] * n, pa.string()),
            "state": state,
            "hellinger": hellinger,
            "mass": pa.array(mass),
            "mass_share": _share(mass, float(mass.sum())),
            "mass_rank": pa.array(_ranks(mass)),
            "length": pa.array(length.astype(np.int64)),
            "top_feature": top.column("feature").take(at),
            "top_feature_name": top.column("feature_name").take(at),
            "top_p": top.column("p").take(at),
            "contexts": _context_counts(profile),
        }
        parts.append(
            pa.Table.from_arrays([_flat(columns[f.name]) for f in NEURON_TABLE_SCHEMA], schema=NEURON_TABLE_SCHEMA)
        )
    return pa.concat_tables(parts)


def neuron_detail(
    profiles: Profile | Sequence[Profile],
    neuron: int,
    kinds: str | Sequence[str] | None = None,
    top: int = 10,
    *,
    contexts: int | None = None,
    reference: int | str = "previous",
    allow_mode_mismatch: bool = False,
) -> dict[str, pa.Table]:
    """All there is to know about one neuron across the stages, as a dict of Arrow tables.

    - ``"summary"`` (:data:`NEURON_SUMMARY_SCHEMA`): per stage and kind, its state and
      Hellinger distance against the reference stage (``reference`` as in
      :func:`neuron_table`), length, mass, mass rank and number of contexts;
    - ``"pairs"`` (:data:`NEURON_PAIRS_SCHEMA`): its state and Hellinger between every two
      stages;
    - ``"features"`` (:data:`NEURON_FEATURES_SCHEMA`): per stage and kind its ``top`` most
      preferred features with p, count and mean activation;
    - ``"contexts"`` (:data:`NEURON_CONTEXTS_SCHEMA`): per stage its top activating
      contexts (:meth:`txray.Profile.neuron_contexts`; at most ``contexts`` of them,
      default all recorded), no rows where none were recorded;
    - ``"change"`` (:data:`NEURON_CHANGE_SCHEMA`): the features gained and lost between
      consecutive stages (at most ``top`` of each).

    ``kinds``: the feature kinds to show (default: every kind all stages have, in the first
    profile's order). Computed for the one neuron only (its rows of each distribution), so
    it stays fast on wide layers. Raises ValueError for a neuron out of range, a kind a
    stage lacks, stages that cannot be compared.
    """
    first = _stage_list(profiles)
    kinds = _kinds(first, kinds)
    stages = _stages(first, kinds)
    n = stages[0].n_neurons
    neuron = int(_inputs.neuron_ids(_inputs.integer(neuron, "neuron"), n)[0])
    top = _inputs.integer(top, "top", minimum=1)
    limit = None if contexts is None else _inputs.integer(contexts, "contexts", minimum=0)
    labels = stage_names(stages)
    references = _references(len(stages), reference)

    wanted = [(kind, ref, index) for kind in kinds for index, ref in enumerate(references) if ref is not None]
    wanted += [(kind, a, b) for kind in kinds for a in range(len(stages)) for b in range(a + 1, len(stages))]
    compared = _compare_neuron(stages, neuron, wanted, allow_mode_mismatch)

    summary = _Rows(NEURON_SUMMARY_SCHEMA)
    for index, (label, profile, ref) in enumerate(zip(labels, stages, references)):
        mass = profile.mass()
        counts = _context_counts(profile)
        for kind in kinds:
            if ref is None:
                length = int(profile.lengths(kind)[neuron])
                state, hellinger = ("preferred" if length else "unpreferred"), None
            else:
                row = compared[(kind, ref, index)]
                length, state, hellinger = row["length_b"], row["state"], row["hellinger"]
            summary.add(
                stage_index=index,
                stage=label,
                kind=kind,
                reference=None if ref is None else labels[ref],
                state=state,
                hellinger=hellinger,
                length=length,
                mass=float(mass[neuron]),
                mass_share=float(mass[neuron] / mass.sum()) if mass.sum() != 0 else None,
                mass_rank=int(_ranks(mass)[neuron]),
                neurons=n,
                contexts=counts[neuron].as_py(),
            )

    pairs = _Rows(NEURON_PAIRS_SCHEMA)
    for kind in kinds:
        for a in range(len(stages)):
            for b in range(a + 1, len(stages)):
                pairs.add(
                    kind=kind,
                    stage_a_index=a,
                    stage_a=labels[a],
                    stage_b_index=b,
                    stage_b=labels[b],
                    **{key: compared[(kind, a, b)][key] for key in NEURON_PAIRS_SCHEMA.names[5:]},
                )

    features = [
        _features(profile, kind, neuron, top, index, label)
        for index, (label, profile) in enumerate(zip(labels, stages))
        for kind in kinds
    ]
    context_rows = [
        _contexts(profile, neuron, limit, index, label) for index, (label, profile) in enumerate(zip(labels, stages))
    ]
    change = _Rows(NEURON_CHANGE_SCHEMA)
    for kind in kinds:
        for step in range(len(stages) - 1):
            _change(change, stages[step], stages[step + 1], kind, neuron, top, step, labels)
    return {
        "summary": summary.table(),
        "pairs": pairs.table(),
        "features": _concat(features, NEURON_FEATURES_SCHEMA),
        "contexts": _concat(context_rows, NEURON_CONTEXTS_SCHEMA),
        "change": change.table(),
    }


NEURON_DETAILS_TABLES = ("features", "contexts", "change")
"""The keys of :func:`neuron_details`'s dict, in order."""


def neuron_details(
    profiles: Profile | Sequence[Profile],
    neurons: Sequence[int] | None = None,
    kinds: str | Sequence[str] | None = None,
    top: int = 10,
    *,
    contexts: int | None = None,
) -> dict[str, pa.Table]:
    """The ``features``, ``contexts`` and ``change`` tables of :func:`neuron_detail` for many
    neurons at once (default: all), each with a leading ``neuron`` column (int32).

    The same rows as calling :func:`neuron_detail` once per neuron, in neuron order, but
    vectorised over neurons (one ranking of the cells per stage and kind): the report's
    neuron browser holds every neuron of a 10,000-neuron layer. The per-stage summary of
    every neuron is :func:`neuron_table`.
    """
    first = _stage_list(profiles)
    kinds = _kinds(first, kinds)
    stages = _stages(first, kinds)
    n = stages[0].n_neurons
    ids = np.arange(n) if neurons is None else np.unique(_inputs.neuron_ids(neurons, n))
    top = _inputs.integer(top, "top", minimum=1)
    limit = None if contexts is None else _inputs.integer(contexts, "contexts", minimum=0)
    labels = stage_names(stages)
    features = [
        _features_of(profile, kind, ids, top, index, label)
        for kind in kinds
        for index, (label, profile) in enumerate(zip(labels, stages))
    ]
    context_rows = [
        _contexts_of(profile, ids, limit, index, label) for index, (label, profile) in enumerate(zip(labels, stages))
    ]
    change = [
        _change_of(stages[step], stages[step + 1], kind, ids, top, step, labels)
        for kind in kinds
        for step in range(len(stages) - 1)
    ]
    return {
        "features": _by_neuron(features, NEURON_FEATURES_SCHEMA, ["stage_index", "kind", "rank"], kinds),
        "contexts": _by_neuron(context_rows, NEURON_CONTEXTS_SCHEMA, ["stage_index", "rank"], kinds),
        "change": _by_neuron(change, NEURON_CHANGE_SCHEMA, ["kind", "step", "change", "rank"], kinds),
    }


def _with_neuron(schema: pa.Schema) -> pa.Schema:
    """``schema`` led by a neuron column (the contexts' schema has one already)."""
    if "neuron" in schema.names:
        return schema
    return pa.schema([pa.field("neuron", pa.int32(), nullable=False), *schema])


def _by_neuron(parts: Sequence[pa.Table], schema: pa.Schema, keys: Sequence[str], kinds: Sequence[str]) -> pa.Table:
    """Parts with a neuron column, as one table sorted by neuron then ``keys`` (kinds in ``kinds`` order)."""
    table = pa.concat_tables(parts) if parts else _with_neuron(schema).empty_table()
    order_keys = []
    for key in ["neuron", *keys]:
        if key == "kind":
            table = table.append_column(
                "_kind", pa.array([kinds.index(k) for k in table.column("kind").to_pylist()], pa.int32())
            )
            order_keys.append(("_kind", "ascending"))
        elif key == "change":
            table = table.append_column("_change", pc.equal(table.column("change"), "lost"))
            order_keys.append(("_change", "ascending"))
        else:
            order_keys.append((key, "ascending"))
    table = table.sort_by(order_keys)
    return table.select([f.name for f in _with_neuron(schema)])


def _ranked_rows(neuron: np.ndarray, p: np.ndarray, feature: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions, 1-based ranks) of each neuron's ``top`` largest p (ties: lower feature)."""
    order = np.lexsort((feature, -p, neuron))
    sorted_neuron = neuron[order]
    starts = np.flatnonzero(np.r_[True, sorted_neuron[1:] != sorted_neuron[:-1]]) if len(order) else np.array([], int)
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    keep = rank < top
    return order[keep], rank[keep] + 1


def _cells_of(dist: Distributions, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(neuron, feature, p) of the preferred cells of the neurons ``ids``, from a CSR distribution."""
    lengths = np.diff(dist.indptr)[ids]
    neuron = np.repeat(ids, lengths)
    starts = np.repeat(dist.indptr[ids], lengths)
    at = starts + np.arange(len(neuron)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return neuron.astype(np.int64), dist.indices[at].astype(np.int64), dist.data[at]


def _features_of(profile: Profile, kind: str, ids: np.ndarray, top: int, index: int, label: str) -> pa.Table:
    """The top features of the neurons ``ids`` in one stage and kind, with counts and means (as _features)."""
    ranked = top_features(profile, kind, top, neurons=ids.tolist())
    neuron = ranked.column("neuron").to_numpy().astype(np.int64)
    feature = ranked.column("feature").to_numpy().astype(np.int64)
    cells = profile.cells(kind)  # sorted by (neuron, feature); every preferred feature has a cell
    width = max(profile.vocab_size(kind), 1)
    row = np.searchsorted(cells.neuron.astype(np.int64) * width + cells.feature, neuron * width + feature)
    count = cells.count[row]
    size = ranked.num_rows
    return pa.Table.from_arrays(
        [
            ranked.column("neuron"),
            pa.array(np.full(size, index, np.int32)),
            pa.array([label] * size, pa.string()),
            pa.array([kind] * size, pa.string()),
            ranked.column("rank"),
            ranked.column("feature"),
            ranked.column("feature_name"),
            ranked.column("p"),
            pa.array(count.astype(np.int64)),
            pa.array(cells.sum[row] / count),
        ],
        schema=_with_neuron(NEURON_FEATURES_SCHEMA),
    )


def _contexts_of(profile: Profile, ids: np.ndarray, limit: int | None, index: int, label: str) -> pa.Table:
    table = profile.contexts
    if table is None:
        return NEURON_CONTEXTS_SCHEMA.empty_table()
    keep = pc.is_in(table.column("neuron"), pa.array(ids.astype(np.int32)))
    if limit is not None:
        keep = pc.and_(keep, pc.less_equal(table.column("rank"), limit))
    rows = table.filter(keep)
    size = rows.num_rows
    return pa.Table.from_arrays(
        [pa.array(np.full(size, index, np.int32)), pa.array([label] * size, pa.string()), *rows.columns],
        schema=NEURON_CONTEXTS_SCHEMA,
    )


def _change_of(
    a: Profile, b: Profile, kind: str, ids: np.ndarray, top: int, step: int, labels: Sequence[str]
) -> pa.Table:
    """The features each neuron gained and lost from stage ``step`` to the next (aligned stages)."""
    width = max(a.vocab_size(kind), 1)
    na, fa, pa_ = _cells_of(a.distributions(kind), ids)
    nb, fb, pb = _cells_of(b.distributions(kind), ids)
    ka, kb = na * width + fa, nb * width + fb
    names = a.vocabulary(kind)
    parts = []
    for change, (neuron, feature, p, key), other in (
        ("gained", (nb, fb, pb, kb), ka),
        ("lost", (na, fa, pa_, ka), kb),
    ):
        new = ~np.isin(key, other)
        at, rank = _ranked_rows(neuron[new], p[new], feature[new], top)
        n_, f_, p_ = neuron[new][at], feature[new][at], p[new][at]
        size = len(n_)
        zeros = np.zeros(size)
        parts.append(
            pa.Table.from_arrays(
                [
                    pa.array(n_.astype(np.int32)),
                    pa.array([kind] * size, pa.string()),
                    pa.array(np.full(size, step, np.int32)),
                    pa.array([labels[step]] * size, pa.string()),
                    pa.array([labels[step + 1]] * size, pa.string()),
                    pa.array([change] * size, pa.string()),
                    pa.array(rank.astype(np.int32)),
                    pa.array(f_.astype(np.int32)),
                    pa.array(names, pa.string()).take(pa.array(f_))
                    if names is not None
                    else pa.nulls(size, pa.string()),
                    pa.array(zeros if change == "gained" else p_),
                    pa.array(p_ if change == "gained" else zeros),
                ],
                schema=_with_neuron(NEURON_CHANGE_SCHEMA),
            )
        )
    return pa.concat_tables(parts)


# -- helpers -------------------------------------------------------------------------------


class _Rows:
    """Rows of one schema, collected as dicts and made into a table at the end."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.rows: list[dict] = []

    def add(self, **row: object) -> None:
        self.rows.append(row)

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows, schema=self.schema)


def _stage_list(profiles: Profile | Sequence[Profile]) -> list[Profile]:
    stages = [profiles] if isinstance(profiles, Profile) else list(profiles)
    if not stages:
        raise ValueError("profiles: need at least one profile, got none")
    for i, p in enumerate(stages):
        if not isinstance(p, Profile):
            raise TypeError(f"profiles[{i}] is a {type(p).__name__}, not a txray.Profile")
    return stages


def _kinds(stages: Sequence[Profile], kinds: str | Sequence[str] | None) -> list[str]:
    """The kinds asked for (a string is one kind), or those every stage has."""
    if kinds is None:
        common = [k for k in stages[0].kinds if all(k in p.kinds for p in stages[1:])]
        if not common:
            raise ValueError(
                "the profiles have no feature kind in common: "
                + "; ".join(f"{p.name!r}: {list(p.kinds)}" for p in stages)
            )
        return common
    chosen = [kinds] if isinstance(kinds, str) else list(kinds)
    if not chosen:
        raise ValueError("kinds: name at least one feature kind (or None for all)")
    return list(dict.fromkeys(chosen))


def _stages(profiles: Profile | Sequence[Profile], kinds: Sequence[str]) -> list[Profile]:
    """The stages, checked (same width, the kinds in each, vocabularies that line up) and aligned."""
    stages = _stage_list(profiles)
    for kind in kinds:
        for p in stages:
            if kind not in p.kinds:
                raise ValueError(f"profile {p.name!r} has no feature kind {kind!r} (it has {', '.join(p.kinds)})")
    for other in stages[1:]:
        check_compatible(stages[0], other, kinds, same_neurons=True)
    return align(stages, kinds)


def _references(n_stages: int, reference: int | str) -> list[int | None]:
    """Per stage, the index of the stage it is compared with (None: itself or none)."""
    if reference == "previous":
        return [None, *range(n_stages - 1)]
    if reference == "first":
        reference = 0
    if isinstance(reference, str):
        raise ValueError(f"reference must be 'previous', 'first' or a stage index, not {reference!r}")
    ref = _inputs.integer(reference, "reference", minimum=0)
    if ref >= n_stages:
        raise ValueError(f"reference {ref} is out of range: there are {n_stages} stage(s) (0..{n_stages - 1})")
    return [None if s == ref else ref for s in range(n_stages)]


def _ranks(mass: np.ndarray) -> np.ndarray:
    """Each neuron's mass rank, 1 = most massive (int32)."""
    ranks = np.empty(len(mass), np.int32)
    ranks[mass_order(mass)] = np.arange(1, len(mass) + 1, dtype=np.int32)
    return ranks


def _share(values: np.ndarray, total: float) -> pa.Array:
    return pa.nulls(len(values), pa.float64()) if total == 0 else pa.array(values / total, pa.float64())


def _positions(neurons: np.ndarray, n: int) -> pa.Array:
    """Per neuron, its row in a table with one row per listed neuron; null where unlisted."""
    at = np.full(n, -1, np.int64)
    at[neurons] = np.arange(len(neurons))
    return pa.array(at, mask=at < 0)


def _context_counts(profile: Profile) -> pa.Array:
    """The number of contexts of every neuron (int32), null everywhere when none were recorded."""
    if profile.contexts is None:
        return pa.nulls(profile.n_neurons, pa.int32())
    neurons = profile.contexts.column("neuron").to_numpy()
    return pa.array(np.bincount(neurons, minlength=profile.n_neurons).astype(np.int32))


def _flat(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _concat(tables: Sequence[pa.Table], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _compare_neuron(
    stages: Sequence[Profile], neuron: int, wanted: Sequence[tuple[str, int, int]], allow_mode_mismatch: bool
) -> dict[tuple[str, int, int], dict]:
    """The neuron compared between stages a and b for each (kind, a, b): its row of
    :func:`txray.compare` (as a dict), all in one pass over the stacked rows."""
    if not wanted:
        return {}
    for a, b in {(a, b) for _, a, b in wanted}:
        check_modes(stages[a], stages[b], allow_mode_mismatch)
    rows = {(kind, s): stages[s].distributions(kind).rows(np.array([neuron])) for kind, a, b in wanted for s in (a, b)}
    table = compare_distributions(
        _stack([rows[(kind, a)] for kind, a, _ in wanted]), _stack([rows[(kind, b)] for kind, _, b in wanted])
    )
    return dict(zip(wanted, table.to_pylist()))


def _stack(rows: Sequence[Distributions]) -> Distributions:
    """Distributions one after the other as one set (row i = the i-th set's rows)."""
    indptr = np.zeros(1 + sum(len(r.indptr) - 1 for r in rows), np.int64)
    np.cumsum(np.concatenate([np.diff(r.indptr) for r in rows]), out=indptr[1:])
    return Distributions(
        indptr,
        np.concatenate([r.indices for r in rows]),
        np.concatenate([r.data for r in rows]),
        max(r.n_features for r in rows),
    )


def _features(profile: Profile, kind: str, neuron: int, top: int, index: int, label: str) -> pa.Table:
    """The neuron's top features of one kind in one stage, with their counts and means."""
    ranked = top_features(profile, kind, top, neurons=[neuron])
    feature = ranked.column("feature").to_numpy()
    cells = profile.cells(kind)
    lo, hi = np.searchsorted(cells.neuron, [neuron, neuron + 1])
    at = lo + np.searchsorted(cells.feature[lo:hi], feature)  # every preferred feature has a cell
    count = cells.count[at]
    rows = len(feature)
    return pa.Table.from_arrays(
        [
            pa.array(np.full(rows, index, np.int32)),
            pa.array([label] * rows, pa.string()),
            pa.array([kind] * rows, pa.string()),
            ranked.column("rank"),
            ranked.column("feature"),
            ranked.column("feature_name"),
            ranked.column("p"),
            pa.array(count.astype(np.int64)),
            pa.array(cells.sum[at] / count),
        ],
        schema=NEURON_FEATURES_SCHEMA,
    )


def _contexts(profile: Profile, neuron: int, limit: int | None, index: int, label: str) -> pa.Table:
    rows = profile.neuron_contexts(neuron)
    if rows is None:
        return NEURON_CONTEXTS_SCHEMA.empty_table()
    if limit is not None:
        rows = rows.slice(0, limit)
    n = rows.num_rows
    return pa.Table.from_arrays(
        [pa.array(np.full(n, index, np.int32)), pa.array([label] * n, pa.string()), *rows.columns],
        schema=NEURON_CONTEXTS_SCHEMA,
    )


def _change(
    out: _Rows, a: Profile, b: Profile, kind: str, neuron: int, top: int, step: int, labels: Sequence[str]
) -> None:
    """Add the features the neuron gained and lost from stage ``step`` to the next (aligned stages)."""
    da, db = a.distributions(kind).rows(np.array([neuron])), b.distributions(kind).rows(np.array([neuron]))
    names = a.vocabulary(kind)
    pa_, pb = dict(zip(da.indices.tolist(), da.data.tolist())), dict(zip(db.indices.tolist(), db.data.tolist()))
    for change, side, other in (("gained", pb, pa_), ("lost", pa_, pb)):
        new = sorted((f for f in side if f not in other), key=lambda f: (-side[f], f))[:top]
        for rank, f in enumerate(new, start=1):
            out.add(
                kind=kind,
                step=step,
                stage_a=labels[step],
                stage_b=labels[step + 1],
                change=change,
                rank=rank,
                feature=f,
                feature_name=None if names is None else names[f],
                p_a=pa_.get(f, 0.0),
                p_b=pb.get(f, 0.0),
            )
