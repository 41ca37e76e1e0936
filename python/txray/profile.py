"""The Profile: what every neuron of one layer preferred over one corpus.

A profile holds, per feature kind, the recorded cells (neuron, feature,
count, sum), the corpus frequency of every feature, and per neuron the
activation mass. Everything else (means, preference distributions, lengths)
is derived from those as docs/method.md defines.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from . import parquet

CONTEXTS_SCHEMA = parquet.CONTEXTS_SCHEMA

TABLE_SCHEMA = parquet.CELLS_SCHEMA.remove(parquet.CELLS_SCHEMA.get_field_index("kind"))
"""Schema of :meth:`Profile.table`: one row per recorded (neuron, feature)
cell, sorted by neuron then feature. ``mean = sum / count``; ``p`` is the
cell's probability in the neuron's preference distribution (0 where the mean
is not positive)."""


@dataclasses.dataclass(frozen=True)
class KindCells:
    """Recorded statistics of one feature kind (arrays sorted by neuron, feature)."""

    neuron: np.ndarray  # int32
    feature: np.ndarray  # int32
    count: np.ndarray  # int64
    sum: np.ndarray  # float64
    frequencies: np.ndarray  # int64, one per feature id
    names: Sequence[str] | None = None  # the vocabulary, one string per id

    def __post_init__(self) -> None:
        if self.names is not None:
            names = [str(n) for n in self.names]
            if len(names) != len(self.frequencies):
                raise ValueError(f"the vocabulary has {len(names)} names for {len(self.frequencies)} feature ids")
            object.__setattr__(self, "names", names)


@dataclasses.dataclass(frozen=True)
class Distributions:
    """Preference distributions of all neurons for one kind, in CSR form.

    Row ``n`` holds the features with ``p > 0`` (sorted) and their
    probabilities; an empty row is an unpreferred neuron."""

    indptr: np.ndarray  # int64, n_neurons + 1
    indices: np.ndarray  # int32
    data: np.ndarray  # float64
    n_features: int

    def to_scipy(self) -> sp.csr_array:
        n = len(self.indptr) - 1
        return sp.csr_array((self.data, self.indices, self.indptr), shape=(n, self.n_features))

    def rows(self, neurons: np.ndarray) -> Distributions:
        """The distributions of the given neurons (ids in range), in that order, as a new set
        whose row ``i`` is neuron ``neurons[i]``: a few neurons without copying all rows."""
        neurons = np.asarray(neurons, dtype=np.int64)
        starts = self.indptr[neurons]
        lengths = self.indptr[neurons + 1] - starts
        indptr = np.zeros(len(neurons) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        positions = np.arange(indptr[-1]) + np.repeat(starts - indptr[:-1], lengths)
        return Distributions(indptr, self.indices[positions], self.data[positions], self.n_features)


class Profile:
    """Preference statistics of one (model state, layer, corpus).

    Make one with :meth:`Recorder.profile` or :meth:`Profile.load`.
    """

    def __init__(
        self,
        n_neurons: int,
        mode: str,
        k: int | None,
        kinds: Mapping[str, KindCells],
        mass: np.ndarray,
        tokens: int,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        contexts: pa.Table | None = None,
        contexts_k: int | None = None,
    ) -> None:
        self.n_neurons = int(n_neurons)
        self.mode = mode
        self.k = k
        self.tokens = int(tokens)
        self.name = name
        self.metadata = dict(metadata or {})
        try:
            json.dumps(self.metadata)
        except TypeError as err:
            raise TypeError(f"profile metadata must be JSON-serialisable: {err}") from None
        self._kinds = dict(kinds)
        self._mass = np.asarray(mass, dtype=np.float64)
        if self._mass.shape != (self.n_neurons,):
            raise ValueError(f"mass must have one value per neuron ({self.n_neurons})")
        if contexts is not None:
            contexts = pa.table(contexts) if not isinstance(contexts, pa.Table) else contexts
            problem = parquet.contexts_problem(contexts, self.n_neurons, contexts_k)
            if problem:
                raise ValueError(f"contexts: {problem} (txray.top_contexts builds a valid table)")
            contexts = contexts.cast(CONTEXTS_SCHEMA).replace_schema_metadata(None)
        elif contexts_k is not None:
            raise ValueError("contexts_k is given without contexts")
        self._contexts = contexts
        self.contexts_k = contexts_k

    # -- what was recorded ------------------------------------------------
    @property
    def kinds(self) -> tuple[str, ...]:
        """The feature kinds, e.g. ('token', 'pos')."""
        return tuple(self._kinds)

    def cells(self, kind: str) -> KindCells:
        """The raw recorded cells of one kind."""
        try:
            return self._kinds[kind]
        except KeyError:
            raise KeyError(f"this profile has no feature kind {kind!r}; it has {list(self._kinds)}") from None

    def vocabulary(self, kind: str) -> list[str] | None:
        """The strings of the kind's feature ids, or None if none were given."""
        names = self.cells(kind).names
        return None if names is None else list(names)

    def vocab_size(self, kind: str) -> int:
        return len(self.cells(kind).frequencies)

    def frequencies(self, kind: str) -> np.ndarray:
        """Corpus frequency of every feature id (int64), whoever won."""
        return self.cells(kind).frequencies.copy()

    def mass(self) -> np.ndarray:
        """Activation mass per neuron: the sum of every value it recorded."""
        return self._mass.copy()

    @property
    def contexts(self) -> pa.Table | None:
        """Each neuron's top activating contexts (schema :data:`CONTEXTS_SCHEMA`, at most
        :attr:`contexts_k` rows per neuron, sorted by neuron and rank), or None when they
        were not recorded."""
        return self._contexts

    def with_contexts(self, contexts: pa.Table | None, contexts_k: int | None) -> Profile:
        """The same profile (statistics, name, metadata) with other top contexts (None: none)."""
        return Profile(
            self.n_neurons,
            self.mode,
            self.k,
            self._kinds,
            self._mass,
            self.tokens,
            self.name,
            self.metadata,
            contexts=contexts,
            contexts_k=contexts_k,
        )

    def neuron_contexts(self, neuron: int) -> pa.Table | None:
        """The rows of :attr:`contexts` of one neuron (best first), or None when not recorded."""
        if not 0 <= neuron < self.n_neurons:
            raise IndexError(f"neuron {neuron} is outside 0..{self.n_neurons - 1}")
        if self._contexts is None:
            return None
        column = self._contexts.column("neuron").to_numpy()
        start, stop = np.searchsorted(column, [neuron, neuron + 1])
        return self._contexts.slice(int(start), int(stop - start))

    # -- derived --------------------------------------------------------------
    def table(self, kind: str) -> pa.Table:
        """One row per (neuron, feature) cell; schema :data:`TABLE_SCHEMA`."""
        cells = self.cells(kind)
        mean, p = self._mean_and_p(kind)
        if cells.names is None:
            names = pa.nulls(len(cells.feature), pa.string())
        else:
            names = pa.array(cells.names, pa.string()).take(pa.array(cells.feature))
        columns = [cells.neuron, cells.feature, names, cells.count, cells.sum, mean, p]
        return pa.Table.from_arrays(columns, schema=TABLE_SCHEMA)

    def distributions(self, kind: str) -> Distributions:
        """Preference distributions P[n, f] (CSR over neurons)."""
        return self._distributions(kind)

    def lengths(self, kind: str) -> np.ndarray:
        """Number of features each neuron prefers (its distribution's support)."""
        return np.diff(self._distributions(kind).indptr)

    def preferred(self, kind: str) -> np.ndarray:
        """Whether each neuron has a non-empty preference distribution."""
        return self.lengths(kind) > 0

    def merge(self, other: Profile, name: str | None = None, allow_duplicates: bool = False) -> Profile:
        """A profile with the statistics of both: :func:`merge_profiles` of ``[self, other]``."""
        return merge_profiles(
            [self, other], name=name if name is not None else self.name, allow_duplicates=allow_duplicates
        )

    def digest(self) -> str:
        """A hash of the recorded statistics (cells, frequencies, feature names, mass, token
        count, mode and shape), not of the name or metadata: two profiles with the same digest
        hold the same data."""
        h = hashlib.blake2b(digest_size=16)
        h.update(json.dumps([self.n_neurons, self.mode, self.k, self.tokens, list(self._kinds)]).encode())
        h.update(self._mass.tobytes())
        for cells in self._kinds.values():
            for array in (cells.neuron, cells.feature, cells.count, cells.sum, cells.frequencies):
                h.update(np.ascontiguousarray(array).tobytes())
            # The same ids under other names are other data (profiles of different corpora).
            h.update(b"\x00" if cells.names is None else json.dumps(list(cells.names)).encode())
        if self._contexts is not None:
            h.update(json.dumps(self.contexts_k).encode())
            for column in self._contexts.columns:
                h.update(json.dumps(column.to_pylist()).encode())
        return h.hexdigest()

    # -- persistence -----------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the profile to ``path``, replacing what is there.

        The profile is a folder of Parquet tables (profile format 2,
        docs/profile-format.md), written under a temporary name and renamed
        into place: a crash leaves the old profile or the new one."""
        parquet.write(self._data(), path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Profile:
        """Read and validate a profile written by :meth:`save` (format 2, or a format 1 file).

        Raises FileNotFoundError, or :class:`txray.ProfileError` (a ValueError
        that names the file) when it is not a valid profile."""
        data = parquet.read(path)
        try:
            kinds = {
                kind.name: KindCells(kind.neuron, kind.feature, kind.count, kind.sum, kind.frequencies, kind.names)
                for kind in data.kinds
            }
            return cls(
                data.n_neurons,
                data.mode,
                data.k,
                kinds,
                data.mass,
                data.tokens,
                data.name,
                data.metadata,
                contexts=data.contexts,
                contexts_k=data.contexts_k,
            )
        except (TypeError, ValueError) as err:
            raise parquet.ProfileError(f"{os.fspath(path)} is not a valid profile: {err}") from None

    def _data(self) -> parquet.ProfileData:
        """The parts :mod:`txray.parquet` writes."""
        kinds = []
        for kind in self.kinds:
            cells = self.cells(kind)
            mean, p = self._mean_and_p(kind)
            kinds.append(
                parquet.KindData(
                    kind,
                    cells.neuron,
                    cells.feature,
                    cells.count,
                    cells.sum,
                    cells.frequencies,
                    cells.names,  # type: ignore[arg-type]  # a list (KindCells makes it one)
                    mean=mean,
                    p=p,
                    lengths=self.lengths(kind),
                )
            )
        return parquet.ProfileData(
            self.n_neurons,
            self.mode,
            self.k,
            self.tokens,
            self.name,
            self.metadata,
            self._mass,
            kinds,
            contexts=self._contexts,
            contexts_k=self.contexts_k,
        )

    def __repr__(self) -> str:
        kinds = ", ".join(f"{k}:{self.vocab_size(k)}" for k in self.kinds)
        return (
            f"Profile(name={self.name!r}, n_neurons={self.n_neurons}, mode={self.mode!r}, "
            f"tokens={self.tokens}, kinds=[{kinds}])"
        )

    # -- internals ----------------------------------------------------------------
    def _mean_and_p(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        cells = self.cells(kind)
        mean = cells.sum / np.maximum(cells.count, 1)
        weight = np.maximum(mean, 0.0)
        total = np.bincount(cells.neuron, weights=weight, minlength=self.n_neurons)
        denom = total[cells.neuron]
        p = np.divide(weight, denom, out=np.zeros_like(weight), where=denom > 0)
        return mean, p

    def _distributions(self, kind: str) -> Distributions:
        cache = self.__dict__.setdefault("_distribution_cache", {})
        if kind not in cache:
            cells = self.cells(kind)
            _, p = self._mean_and_p(kind)
            keep = p > 0
            indptr = np.zeros(self.n_neurons + 1, dtype=np.int64)
            np.cumsum(np.bincount(cells.neuron[keep], minlength=self.n_neurons), out=indptr[1:])
            cache[kind] = Distributions(indptr, cells.feature[keep], p[keep], self.vocab_size(kind))
        return cache[kind]


PathName = TypeVar("PathName", bound="str | os.PathLike[str]")

IDENTITY_KEYS = ("model", "layer", "tokenizer", "pooling", "include_special")
"""Metadata that must agree between merged parts: they record the same neurons the same way."""

SUMMED_KEYS = ("tokens", "words")
"""Metadata that a merge adds up (where every part has an integer)."""


def check_compatible(
    a: Profile,
    b: Profile,
    kinds: Sequence[str] | None = None,
    same_neurons: bool = True,
    *,
    same_recording: bool = False,
    same_ids: bool = False,
) -> None:
    """Raise :class:`ValueError` saying what differs unless ``a`` and ``b`` can be used together.

    ``kinds``: the feature kinds both must have, with vocabularies that line up (default: all
    of them, and both must have the same kinds). Vocabularies line up when :func:`align` can
    put both on one: named features by name (any two vocabularies of unique names), unnamed
    ones by id (the same number of features). ``same_ids``: the vocabularies must instead be
    the same, id for id (no alignment). ``same_neurons``: the same number of neurons (a
    neuron-by-neuron comparison or a merge; not for nearest neurons across models).
    ``same_recording``: also the same mode and k, the same feature kinds, and the same
    :data:`IDENTITY_KEYS` metadata where both have them (what a merge needs).
    """
    if same_recording and (a.mode, a.k) != (b.mode, b.k):
        raise ValueError(f"mode {b.mode!r} (k={b.k}) differs from mode {a.mode!r} (k={a.k})")
    if kinds is None or same_recording:
        for p, q in ((a, b), (b, a)):
            extra = [kind for kind in p.kinds if kind not in q.kinds]
            if extra:
                raise ValueError(
                    f"profile {p.name!r} has feature kind(s) {extra} that profile {q.name!r} lacks "
                    f"(kinds {list(p.kinds)} vs {list(q.kinds)})"
                )
    if same_neurons and a.n_neurons != b.n_neurons:
        raise ValueError(
            f"profiles {_describe(a)} and {_describe(b)} have {a.n_neurons} and {b.n_neurons} neurons; "
            "neuron-by-neuron comparison needs the same layer (use txray.nearest or txray.match for "
            "different layers or models)"
        )
    for kind in a.kinds if kinds is None else kinds:
        for p in (a, b):
            if kind not in p.kinds:
                raise ValueError(f"profile {p.name!r} has no feature kind {kind!r} (it has {list(p.kinds)})")
        if not same_ids:
            _names_to_line_up([a, b], kind)  # raises when they cannot be lined up
            continue
        if a.vocab_size(kind) != b.vocab_size(kind):
            raise ValueError(
                f"profiles use different {kind!r} vocabularies ({a.vocab_size(kind)} vs "
                f"{b.vocab_size(kind)} features); record both with the same vocabulary"
            )
        va, vb = a.cells(kind).names, b.cells(kind).names
        if va is not None and vb is not None and va != vb:
            first = next(i for i, (x, y) in enumerate(zip(va, vb)) if x != y)
            raise ValueError(
                f"profiles use different {kind!r} vocabularies: id {first} is {va[first]!r} in one "
                f"and {vb[first]!r} in the other"
            )
    if same_recording:
        for key in IDENTITY_KEYS:
            if key in a.metadata and key in b.metadata and a.metadata[key] != b.metadata[key]:
                raise ValueError(f"{key} {b.metadata[key]!r} differs from {a.metadata[key]!r}")


def _describe(profile: Profile) -> str:
    """``'name'`` and, where the metadata says, its layer and model."""
    where = [f"{key} {profile.metadata[key]!r}" for key in ("layer", "model") if key in profile.metadata]
    return repr(profile.name) + (f" ({', '.join(where)})" if where else "")


def union_vocabulary(vocabularies: Sequence[Sequence[str]]) -> list[str]:
    """The names of several vocabularies, each once: the first vocabulary's in its order
    (so its ids stay), then each later one's new names in order of appearance."""
    union: dict[str, None] = {}
    for names in vocabularies:
        union.update(dict.fromkeys(names))
    return list(union)


def _union(profiles: Sequence[Profile], kind: str) -> list[str] | None:
    """The vocabulary that :func:`align` puts the profiles' ``kind`` on, or None when they
    already share one. Raises as :func:`_names_to_line_up` does."""
    names = _names_to_line_up(profiles, kind)
    return None if names is None else union_vocabulary(names)


def _names_to_line_up(profiles: Sequence[Profile], kind: str) -> list[Sequence[str]] | None:
    """The profiles' vocabularies of ``kind`` that :func:`align` joins, or None when they
    already share one (the same names, or unnamed features of the same number). Raises
    :class:`ValueError` when they cannot be lined up (:class:`KeyError` when one lacks
    ``kind``). :func:`check_compatible` checks with it without building the union."""
    vocabularies = [p.cells(kind).names for p in profiles]
    first = vocabularies[0]
    if first is not None and all(v == first for v in vocabularies[1:]):
        return None  # the same ids (duplicate names included: nothing to line up)
    unnamed = [p for p, v in zip(profiles, vocabularies) if v is None]
    if unnamed:
        sizes = {p.vocab_size(kind) for p in profiles}
        named = [v for v in vocabularies if v is not None]
        if len(sizes) > 1:
            raise ValueError(
                f"profiles use different {kind!r} vocabularies ("
                + " vs ".join(f"{p.vocab_size(kind)}" for p in profiles)
                + f" features), and profile {unnamed[0].name!r} has no names for its {kind!r} features "
                "to line them up by: record both with the same vocabulary"
            )
        if any(v != named[0] for v in named):
            raise ValueError(
                f"profile {unnamed[0].name!r} has no names for its {kind!r} features, so they line up "
                "only by id, but the other profiles' vocabularies differ in their names"
            )
        return None
    for p, names in zip(profiles, vocabularies):
        assert names is not None
        if len(set(names)) != len(names):
            seen: dict[str, int] = {}
            for i, name in enumerate(names):
                if name in seen:
                    raise ValueError(
                        f"profile {p.name!r} lists {name!r} twice in its {kind!r} vocabulary (ids {seen[name]} "
                        f"and {i}), so its features cannot be lined up by name with another vocabulary; "
                        "record both with the same vocabulary"
                    )
                seen[name] = i
    return [v for v in vocabularies if v is not None]


def align(profiles: Sequence[Profile], kinds: Sequence[str] | None = None) -> list[Profile]:
    """The profiles re-indexed so that each kind of ``kinds`` has one vocabulary in all of them.

    Named features line up by name, on :func:`union_vocabulary`: the first profile's ids stay,
    the names it lacks follow in order of appearance. A feature a profile never saw has
    frequency 0 and no cells there. Unnamed features line up by id (the numbers of features
    must agree). ``kinds``: default every kind of the first profile. A profile that needs no
    change is returned itself (aligning profiles that share their vocabularies changes
    nothing); the others are new profiles with the same name, metadata and statistics.
    Raises :class:`KeyError` when a profile lacks a kind, :class:`ValueError` when the
    vocabularies cannot be lined up (different numbers of unnamed features, a name listed
    twice in a vocabulary).
    """
    profiles = list(profiles)
    if not profiles:
        return []
    found = {kind: _union(profiles, kind) for kind in (profiles[0].kinds if kinds is None else kinds)}
    unions = {kind: union for kind, union in found.items() if union is not None}
    if not unions:
        return profiles
    out = []
    for p in profiles:
        changed = {
            kind: _reindex(p.cells(kind), union) for kind, union in unions.items() if p.cells(kind).names != union
        }
        if not changed:
            out.append(p)
            continue
        kinds_cells = {kind: changed.get(kind, p.cells(kind)) for kind in p.kinds}
        out.append(
            Profile(
                p.n_neurons,
                p.mode,
                p.k,
                kinds_cells,
                p._mass,
                p.tokens,
                p.name,
                p.metadata,
                contexts=p.contexts,
                contexts_k=p.contexts_k,
            )
        )
    return out


def _reindex(cells: KindCells, union: list[str]) -> KindCells:
    """The cells of one kind with their feature ids moved onto ``union`` (which holds every name)."""
    names = cells.names
    assert names is not None
    size = len(union)
    if list(union[: len(names)]) == list(names):  # the ids stay: only new, empty features follow
        mapping = None
        feature = cells.feature
        neuron, count, total = cells.neuron, cells.count, cells.sum
    else:
        index = {name: i for i, name in enumerate(union)}
        mapping = np.fromiter((index[name] for name in names), dtype=np.int64, count=len(names))
        key = cells.neuron.astype(np.int64) * size + mapping[cells.feature]
        order = np.argsort(key, kind="stable")
        neuron, count, total = cells.neuron[order], cells.count[order], cells.sum[order]
        feature = (key[order] % size).astype(np.int32)
    frequencies = np.zeros(size, dtype=np.int64)
    if mapping is None:
        frequencies[: len(names)] = cells.frequencies
    else:
        frequencies[mapping] = cells.frequencies
    return KindCells(neuron, feature, count, total, frequencies, union)


def merge_profiles(parts: Sequence[Profile], name: str | None = None, allow_duplicates: bool = False) -> Profile:
    """Combine profiles recorded on disjoint parts of a corpus into one.

    The parts must record the same layer the same way (:func:`check_compatible` with
    ``same_recording``: same number of neurons, mode and k, feature kinds, and the same
    :data:`IDENTITY_KEYS` metadata where they have them), else :class:`ValueError` says
    which part differs and how. Parts with different vocabularies (other corpora) are put on
    their union first (:func:`align`: the first part's ids stay). Counts, frequencies and
    token counts add up exactly; sums and masses are float64, added in part order.

    The same data given twice would count twice: parts with the same :func:`duplicate_key`
    are refused unless ``allow_duplicates``.

    Metadata: that of the first part, with :data:`SUMMED_KEYS` summed; any other key whose
    values differ becomes the list of its distinct values. Parts recorded as shards
    (``"shards"`` metadata) must not repeat a shard and must agree on the number of shards;
    the merge's ``"shards"`` lists the shards it holds, and is dropped once they are all there
    (:func:`missing_shards`). The parts are not changed.
    """
    if not parts:
        raise ValueError("nothing to merge: no profiles given")
    first = parts[0]
    for index, part in enumerate(parts[1:], start=1):
        try:
            check_compatible(first, part, same_recording=True)
        except ValueError as err:
            raise ValueError(f"cannot merge part {index} into part 0: {err}") from None
    if not allow_duplicates:
        _check_distinct(parts)
    parts = align(parts)
    first = parts[0]
    shards = _merge_shards([p.metadata for p in parts])
    kinds = {kind: merge_cells([p.cells(kind) for p in parts]) for kind in first.kinds}
    mass = np.sum([p.mass() for p in parts], axis=0)
    contexts, contexts_k = _merge_contexts(parts)
    return Profile(
        first.n_neurons,
        first.mode,
        first.k,
        kinds,
        mass,
        sum(p.tokens for p in parts),
        name=name if name is not None else first.name,
        metadata=_merge_metadata([p.metadata for p in parts], shards),
        contexts=contexts,
        contexts_k=contexts_k,
    )


def top_contexts(candidates: pa.Table | Mapping[str, Any], k: int) -> pa.Table:
    """Each neuron's ``k`` best contexts among ``candidates``, as a :data:`CONTEXTS_SCHEMA` table.

    ``candidates``: a table (or mapping of columns) with at least ``neuron``, ``activation``
    and ``unit``; ``document``, ``word``, ``text`` and ``word_offset`` are kept where given
    (null where not); a ``rank`` column is ignored. Per neuron the candidates are ordered by
    activation (highest first), ties by the lower unit, then by order given; the first ``k``
    are kept and ranked 1, 2, ...: the exact top k of the union, whatever the candidates
    were split into (the merge of parts uses it)."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    table = candidates if isinstance(candidates, pa.Table) else pa.table(dict(candidates))
    for name in ("neuron", "activation", "unit"):
        if name not in table.column_names:
            raise ValueError(f"the context candidates have no {name!r} column (they have {table.column_names})")
    n = table.num_rows
    columns: dict[str, pa.Array | pa.ChunkedArray] = {}
    for field in CONTEXTS_SCHEMA:
        if field.name == "rank":
            continue
        if field.name in table.column_names:
            columns[field.name] = table.column(field.name).cast(field.type)
        else:
            columns[field.name] = pa.nulls(n, field.type)
    neuron = np.asarray(columns["neuron"].to_numpy(), dtype=np.int64)
    activation = np.asarray(columns["activation"].to_numpy(), dtype=np.float64)
    unit = np.asarray(columns["unit"].to_numpy(), dtype=np.int64)
    order = np.lexsort((np.arange(n), unit, -activation, neuron))  # the last key sorts first
    neuron = neuron[order]
    starts = np.flatnonzero(np.concatenate([[True], neuron[1:] != neuron[:-1]])) if n else np.zeros(0, np.int64)
    rank = np.arange(n) - np.repeat(starts, np.diff(np.append(starts, n))) + 1
    keep = order[rank <= k]
    arrays = [
        pa.array(rank[rank <= k].astype(np.int32)) if f.name == "rank" else columns[f.name].take(pa.array(keep))
        for f in CONTEXTS_SCHEMA
    ]
    return pa.Table.from_arrays(
        [a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in arrays], schema=CONTEXTS_SCHEMA
    )


def _merge_contexts(parts: Sequence[Profile]) -> tuple[pa.Table | None, int | None]:
    """The exact top k of the parts' contexts (k: the smallest the parts asked for), or
    (None, None) when some part has none."""
    have = [p for p in parts if p.contexts is not None]
    if len(have) < len(parts):
        if have:
            warnings.warn(
                f"{len(parts) - len(have)} of {len(parts)} merged profiles have no top contexts; "
                "the merged profile has none",
                stacklevel=3,
            )
        return None, None
    k = min(int(p.contexts_k) for p in have)  # type: ignore[arg-type]  # set wherever contexts are
    return top_contexts(pa.concat_tables([p.contexts for p in have]), k), k


def merge_cells(parts: Sequence[KindCells]) -> KindCells:
    """Add up the cells of one kind from several parts, in one stable sort (key: neuron * size + feature)."""
    n_features = len(parts[0].frequencies)
    key = np.concatenate([c.neuron.astype(np.int64) * n_features + c.feature for c in parts])
    order = np.argsort(key, kind="stable")  # stable: a cell's sums are added in part order
    key = key[order]
    starts = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]])) if len(key) else np.zeros(0, np.int64)
    unique = key[starts]
    count = _sum_runs(np.concatenate([c.count for c in parts])[order], starts)
    total = _sum_runs(np.concatenate([c.sum for c in parts])[order], starts)
    return KindCells(
        neuron=(unique // n_features).astype(np.int32),
        feature=(unique % n_features).astype(np.int32),
        count=count,
        sum=total,
        frequencies=np.asarray(np.sum([c.frequencies for c in parts], axis=0, dtype=np.int64)),
        names=next((c.names for c in parts if c.names is not None), None),
    )


def missing_shards(profile: Profile) -> list[int]:
    """The shards a merged profile still lacks (``[]`` when complete or unsharded)."""
    shards = profile.metadata.get("shards")
    if not shards:
        return []
    have = {index for index, _ in shards}
    return [index for index in range(shards[0][1]) if index not in have]


def duplicate_key(profile: Profile) -> str | None:
    """What makes two merge parts the same data: equal keys mean the same statistics twice.

    The key is the :meth:`Profile.digest`, or None for a shard of a split (``"shards"``
    metadata): different shards are distinct parts even when their text is the same, and a
    repeated shard is refused by the shard bookkeeping of :func:`merge_profiles` itself."""
    return None if profile.metadata.get("shards") else profile.digest()


def save_profiles(profiles: Mapping[PathName, Profile]) -> None:
    """Write ``{path: profile}`` all or nothing: every profile to a temporary
    name first, renamed once all of them are written. On an error the
    temporary files are removed and no target is touched."""
    temporary = {Path(path): Path(parquet.temporary_path(path)) for path in profiles}
    try:
        for profile, tmp in zip(profiles.values(), temporary.values()):
            profile.save(tmp)
        for path, tmp in temporary.items():
            parquet.replace(tmp, path)
    finally:
        for tmp in temporary.values():
            parquet.remove(tmp)


def _check_distinct(parts: Sequence[Profile]) -> None:
    # Hashing every cell costs time on large parts: only parts with the same token count and
    # the same activation mass (equal in practice only for the same data) are hashed.
    alike: dict[tuple[int, bytes], list[int]] = {}
    for index, part in enumerate(parts):
        if not part.metadata.get("shards"):  # shards: see duplicate_key
            alike.setdefault((part.tokens, part._mass.tobytes()), []).append(index)
    for indices in alike.values():
        seen: dict[str | None, int] = {}
        for index in indices if len(indices) > 1 else ():
            key = duplicate_key(parts[index])
            if key in seen:
                raise ValueError(
                    f"part {index} holds the same data as part {seen[key]} (profile {parts[index].name!r}); "
                    f"merging it would count its {parts[index].tokens} tokens twice "
                    "(allow_duplicates=True merges it anyway)"
                )
            seen[key] = index


def _sum_runs(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The sum of each run ``values[starts[i]:starts[i + 1]]`` (exact for integers)."""
    return np.add.reduceat(values, starts) if len(starts) else values[:0]


def _merge_metadata(parts: Sequence[Mapping[str, Any]], shards: list[list[int]] | None) -> dict[str, Any]:
    merged = dict(parts[0])
    for key in merged.keys() - set(SUMMED_KEYS) - {"shards"}:
        values = _distinct(part.get(key) for part in parts)
        if len(values) > 1:
            merged[key] = values
    for key in SUMMED_KEYS:
        if all(isinstance(part.get(key), int) for part in parts):
            merged[key] = sum(part[key] for part in parts)
    merged.pop("shards", None)
    if shards is not None:
        merged["shards"] = shards
    return merged


def _merge_shards(parts: Sequence[Mapping[str, Any]]) -> list[list[int]] | None:
    """The union of the parts' shards; None when complete or when no part is a shard."""
    listed = [(int(i), int(n)) for part in parts for i, n in part.get("shards") or ()]
    if not listed:
        return None
    counts = {n for _, n in listed}
    if len(counts) > 1:
        raise ValueError(f"cannot merge shards of different splits: parts were cut into {sorted(counts)} shards")
    seen: set[int] = set()
    for index, count in listed:
        if index in seen:
            raise ValueError(f"cannot merge: shard {index}/{count} is in more than one part (it would count twice)")
        seen.add(index)
    count = counts.pop()
    if len(seen) == count:
        return None
    return [[index, count] for index in sorted(seen)]


def _distinct(values: Iterable[Any]) -> list[Any]:
    distinct: list[Any] = []
    for value in values:
        if value not in distinct:
            distinct.append(value)
    return distinct
