"""The Profile: what every neuron of one layer preferred over one corpus.

A profile holds, per feature kind, the recorded cells (neuron, feature,
count, sum), the corpus frequency of every feature, and per neuron the
activation mass. Everything else (means, preference distributions, lengths)
is derived from those as docs/method.md defines.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from . import parquet

TABLE_SCHEMA = pa.schema(
    [
        pa.field("neuron", pa.int32(), nullable=False),
        pa.field("feature", pa.int32(), nullable=False),
        pa.field("feature_name", pa.string()),
        pa.field("count", pa.int64(), nullable=False),
        pa.field("sum", pa.float64(), nullable=False),
        pa.field("mean", pa.float64(), nullable=False),
        pa.field("p", pa.float64(), nullable=False),
    ]
)
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

    def merge(self, other: Profile, name: str | None = None) -> Profile:
        """A profile with the statistics of both (same layer shape, mode and vocabularies)."""
        check_compatible(self, other, self.kinds, same_neurons=True)
        if (self.mode, self.k) != (other.mode, other.k):
            raise ValueError(f"cannot merge a {self.mode!r} profile with a {other.mode!r} one")
        kinds = {kind: _merge_cells(self.cells(kind), other.cells(kind), self.n_neurons) for kind in self.kinds}
        return Profile(
            self.n_neurons,
            self.mode,
            self.k,
            kinds,
            self._mass + other._mass,
            self.tokens + other.tokens,
            name=name if name is not None else self.name,
            metadata=self.metadata,
        )

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
            return cls(data.n_neurons, data.mode, data.k, kinds, data.mass, data.tokens, data.name, data.metadata)
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
            self.n_neurons, self.mode, self.k, self.tokens, self.name, self.metadata, self._mass, kinds
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


def check_compatible(a: Profile, b: Profile, kinds: Sequence[str], same_neurons: bool) -> None:
    """Raise ValueError unless a and b can be compared on these feature kinds."""
    if same_neurons and a.n_neurons != b.n_neurons:
        raise ValueError(
            f"profiles have {a.n_neurons} and {b.n_neurons} neurons; neuron-by-neuron comparison needs "
            "the same layer (use txray.nearest or txray.match for different models)"
        )
    for kind in kinds:
        for p in (a, b):
            if kind not in p.kinds:
                raise ValueError(f"profile {p.name!r} has no feature kind {kind!r} (it has {list(p.kinds)})")
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


def _merge_cells(a: KindCells, b: KindCells, n_neurons: int) -> KindCells:
    n_features = len(a.frequencies)
    key = np.concatenate([c.neuron.astype(np.int64) * n_features + c.feature for c in (a, b)])
    unique, inverse = np.unique(key, return_inverse=True)
    count = np.zeros(len(unique), dtype=np.int64)
    np.add.at(count, inverse, np.concatenate([a.count, b.count]))
    total = np.bincount(inverse, weights=np.concatenate([a.sum, b.sum]), minlength=len(unique))
    return KindCells(
        neuron=(unique // n_features).astype(np.int32),
        feature=(unique % n_features).astype(np.int32),
        count=count,
        sum=total,
        frequencies=a.frequencies + b.frequencies,
        names=a.names if a.names is not None else b.names,
    )
