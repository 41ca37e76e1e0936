"""Profiles as Parquet files.

One file per profile. Its rows are the cells of every feature kind, the
columns of :data:`txray.profile.TABLE_SCHEMA` plus a leading ``kind``
column, grouped by kind in the profile's kind order. Everything else (mode,
vocabularies, corpus frequencies, activation mass, user metadata) is JSON in
the schema metadata under the key ``txray``, so DuckDB, polars and pandas
read the cells as an ordinary table::

    duckdb.sql("SELECT neuron, feature_name, p FROM 'epoch1.parquet' WHERE kind = 'pos'")
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ._version import __version__

if TYPE_CHECKING:
    from .profile import Profile

FORMAT_VERSION = 1
METADATA_KEY = b"txray"


def write(profile: Profile, path: str | os.PathLike) -> None:
    """Write atomically: a crash leaves either the old file or the new one."""
    path = os.fspath(path)
    tables, kinds = [], []
    for kind in profile.kinds:
        table = profile.table(kind)
        tables.append(table.add_column(0, "kind", pa.array([kind] * len(table), pa.string()).dictionary_encode()))
        cells = profile.cells(kind)
        kinds.append(
            {
                "name": kind,
                "rows": len(table),
                "names": cells.names,
                "frequencies": cells.frequencies.tolist(),
            }
        )
    meta = {
        "format": FORMAT_VERSION,
        "txray_version": __version__,
        "name": profile.name,
        "mode": profile.mode,
        "k": profile.k,
        "n_neurons": profile.n_neurons,
        "tokens": profile.tokens,
        "kinds": kinds,
        "mass": profile.mass().tolist(),
        "metadata": profile.metadata,
    }
    table = pa.concat_tables(tables, promote_options="permissive")
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".txray-", suffix=".parquet.tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            pq.write_table(table, handle, compression="zstd")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read(path: str | os.PathLike) -> Profile:
    from .profile import KindCells, Profile

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no profile at {path}")
    try:
        table = pq.read_table(path)
    except pa.ArrowInvalid as err:
        raise ValueError(f"{path} is not a Parquet file: {err}") from None
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise ValueError(f"{path} is a Parquet file but not a txray profile (no 'txray' schema metadata)")
    meta = json.loads(raw)
    if meta.get("format", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by txray {meta.get('txray_version')} in profile format "
            f"{meta['format']}; this txray reads format {FORMAT_VERSION}: upgrade txray"
        )
    kinds, start = {}, 0
    for entry in meta["kinds"]:
        part = table.slice(start, entry["rows"])
        start += entry["rows"]
        if part.num_rows and set(part.column("kind").unique().to_pylist()) != {entry["name"]}:
            raise ValueError(f"{path} is corrupt: rows of kind {entry['name']!r} are out of place")
        kinds[entry["name"]] = KindCells(
            neuron=part.column("neuron").to_numpy().astype(np.int32, copy=False),
            feature=part.column("feature").to_numpy().astype(np.int32, copy=False),
            count=part.column("count").to_numpy().astype(np.int64, copy=False),
            sum=part.column("sum").to_numpy().astype(np.float64, copy=False),
            frequencies=np.asarray(entry["frequencies"], dtype=np.int64),
            names=entry["names"],
        )
    if start != table.num_rows:
        raise ValueError(f"{path} is corrupt: {table.num_rows} rows, metadata accounts for {start}")
    return Profile(
        n_neurons=meta["n_neurons"],
        mode=meta["mode"],
        k=meta["k"],
        kinds=kinds,
        mass=np.asarray(meta["mass"], dtype=np.float64),
        tokens=meta["tokens"],
        name=meta["name"],
        metadata=meta["metadata"],
    )
