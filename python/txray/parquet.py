"""Profiles on disk: profile format 2, a folder of Parquet tables.

A profile saved at ``PATH`` (any name; ``.parquet`` is the convention) is a
folder with a fixed layout (docs/profile-format.md)::

    PATH/
      cells.parquet                kind, neuron, feature, feature_name, count, sum, mean, p
      _neurons.parquet             neuron, mass, length_<kind>..., preferred_<kind>...
      _vocabulary-<kind>.parquet   feature, name, frequency (one per feature kind)
      _contexts.parquet            neuron, rank, activation, unit, document, word, text, word_offset
                                   (optional: the top activating contexts, when recorded)
      _profile.json                format, small metadata, the list of tables

Every table is an ordinary Parquet file with page checksums (verified on
read). Reading ``PATH`` as a Parquet dataset (pyarrow, pandas, Spark) gives
the cells, as a format 1 file did: the ``_`` files are skipped by dataset
readers, like Hive's ``_SUCCESS``. DuckDB names the files::

    duckdb.sql("SELECT neuron, feature_name, p FROM 'epoch1.parquet/cells.parquet' WHERE kind = 'pos'")
    duckdb.sql("SELECT neuron, mass, length_token FROM 'epoch1.parquet/_neurons.parquet'")

Saving writes a complete folder next to ``PATH`` under a temporary name and
renames it into place (docs/profile-format.md says what a crash leaves and
how the next load or save recovers). Format 1 files (one Parquet file, the
metadata as JSON in its footer) still load.

This module does not import :mod:`txray.profile`: it reads and writes the
plain parts (:class:`ProfileData`), which :class:`txray.Profile` assembles.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ._version import __version__

FORMAT_VERSION = 2
"""The profile format :func:`write` writes; :func:`read` reads formats 1 and 2."""
METADATA_KEY = b"txray"  # format 1: the JSON metadata in the Parquet footer
MODES = ("max1", "topk", "all")

MANIFEST = "_profile.json"
CELLS_FILE = "cells.parquet"
NEURONS_FILE = "_neurons.parquet"
CONTEXTS_FILE = "_contexts.parquet"
ID_KEY = b"txray.id"  # in every table's schema metadata: the id of the save it belongs to
TABLE_KEY = b"txray.table"

CELLS_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.dictionary(pa.int32(), pa.string())),
        pa.field("neuron", pa.int32(), nullable=False),
        pa.field("feature", pa.int32(), nullable=False),
        pa.field("feature_name", pa.string()),
        pa.field("count", pa.int64(), nullable=False),
        pa.field("sum", pa.float64(), nullable=False),
        pa.field("mean", pa.float64(), nullable=False),
        pa.field("p", pa.float64(), nullable=False),
    ]
)
"""``cells.parquet``: :data:`txray.TABLE_SCHEMA` with a leading ``kind``, rows
grouped by kind (in the profile's kind order), then sorted by neuron, feature."""

VOCABULARY_SCHEMA = pa.schema(
    [
        pa.field("feature", pa.int32(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("frequency", pa.int64(), nullable=False),
    ]
)
"""``_vocabulary-<kind>.parquet``: one row per feature id (0, 1, ...): its
string (null when the profile has no vocabulary) and corpus frequency."""

CONTEXTS_SCHEMA = pa.schema(
    [
        pa.field("neuron", pa.int32(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("activation", pa.float64(), nullable=False),
        pa.field("unit", pa.int64(), nullable=False),
        pa.field("document", pa.int64()),
        pa.field("word", pa.string()),
        pa.field("text", pa.string()),
        pa.field("word_offset", pa.int32()),
    ]
)
"""``_contexts.parquet`` and :attr:`txray.Profile.contexts`: each neuron's top activating
contexts, at most k rows per neuron sorted by (neuron, rank). ``rank`` 1 is the neuron's
highest activation (ties: the lower unit first); ``unit`` is the word's position among all
the corpus's words, from 0 in corpus order (record_model; a plain :class:`txray.Recorder`
numbers the rows it recorded); ``document`` is the index of the document (line,
sentence) it is in; ``word`` is its text and ``text`` a window of words around it joined by
single spaces, with ``word`` at character ``word_offset`` of ``text``. The last four are
null where they are not known (a plain :class:`txray.Recorder` knows only units)."""

_SAFE_KIND = re.compile(r"[A-Za-z0-9_+-]{1,64}")
_TEMPORARY = re.compile(
    r"\.(?P<base>.+)\.txray-(?P<what>tmp|old)-(?P<host>[A-Za-z0-9-]*)-(?P<pid>\d+)-(?P<rand>[0-9a-f]{8})"
)
_FORMAT1_TEMPORARY = re.compile(r"\.txray-.+\.parquet\.tmp")  # mkstemp names of the format 1 writer
STALE_AFTER_S = 24 * 3600
"""Temporaries of another host (whose process can't be asked) or of format 1
are removed once this old; those of a dead process on this host at once."""
READ_ATTEMPTS = 10


class ProfileError(ValueError):
    """A file that is not a loadable txray profile; the message names the file."""


class _Changed(Exception):
    """The folder was replaced while it was read: read it again."""


@dataclasses.dataclass
class KindData:
    """One feature kind's part of a profile, as stored."""

    name: str
    neuron: np.ndarray  # int32, sorted with feature
    feature: np.ndarray  # int32
    count: np.ndarray  # int64
    sum: np.ndarray  # float64
    frequencies: np.ndarray  # int64, one per feature id
    names: list[str] | None
    # Derived, written for other tools and not read back (None when read):
    mean: np.ndarray | None = None
    p: np.ndarray | None = None
    lengths: np.ndarray | None = None  # per neuron: its preference distribution's support


@dataclasses.dataclass
class ProfileData:
    """The parts of a profile, as stored (what :class:`txray.Profile` is made of)."""

    n_neurons: int
    mode: str
    k: int | None
    tokens: int
    name: str | None
    metadata: dict[str, Any]
    mass: np.ndarray  # float64, one per neuron
    kinds: list[KindData]
    format: int = FORMAT_VERSION  # the format it was read from
    contexts: pa.Table | None = None  # CONTEXTS_SCHEMA; None when not recorded
    contexts_k: int | None = None  # the number of contexts per neuron asked for


# --------------------------------------------------------------------------
# writing


def write(data: ProfileData, path: str | os.PathLike) -> None:
    """Write a format 2 profile folder at ``path``, replacing what is there.

    The folder is written complete under a temporary name next to ``path``
    and then renamed into place, so that a crash leaves the old profile or
    the new one (a crash between the two renames of a replacement is
    repaired by the next :func:`read` or :func:`write`). Temporaries that
    killed processes left in the folder are removed first.
    """
    target = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(target)
    check_replaceable(target)
    cleanup(parent)
    staging = temporary_path(target)
    try:
        write_folder(data, staging)
        replace(staging, target)
    except BaseException:
        remove(staging)
        raise


def write_folder(data: ProfileData, folder: str | os.PathLike) -> None:
    """Write the tables and manifest of a profile into a new folder (not atomic: see :func:`write`).

    The cells are written in this thread while the small tables and the
    manifest are written and fsynced in others; the function returns once
    every file and the folder are on disk."""
    folder = os.fspath(folder)
    os.mkdir(folder, 0o777)  # the umask decides, as for any other folder
    write_id = uuid.uuid4().hex
    names_arrays = {k.name: None if k.names is None else pa.array(k.names, pa.string()) for k in data.kinds}
    files = _vocabulary_files([k.name for k in data.kinds])
    tables: list[dict[str, Any]] = [
        {"table": "cells", "file": CELLS_FILE, "rows": sum(len(k.neuron) for k in data.kinds)},
        {"table": "neurons", "file": NEURONS_FILE, "rows": data.n_neurons},
    ]
    tables += [
        {"table": "vocabulary", "kind": k.name, "file": files[k.name], "rows": len(k.frequencies)} for k in data.kinds
    ]
    for entry in tables:
        entry["required"] = True
    if data.contexts is not None:
        # Optional: a txray that does not know the table reads the rest of the profile.
        tables.append({"table": "contexts", "file": CONTEXTS_FILE, "rows": data.contexts.num_rows, "required": False})
    manifest = {
        "format": FORMAT_VERSION,
        "txray_version": __version__,
        "id": write_id,
        "name": data.name,
        "mode": data.mode,
        "k": data.k,
        "n_neurons": data.n_neurons,
        "tokens": data.tokens,
        "kinds": [
            {"name": k.name, "features": len(k.frequencies), "names": k.names is not None, "cells": len(k.neuron)}
            for k in data.kinds
        ],
        "tables": tables,
        "metadata": data.metadata,
    }
    if data.contexts is not None:
        manifest["contexts_k"] = data.contexts_k
    manifest["checksum"] = _checksum(manifest)

    def put(table: pa.Table, file: str, name: str) -> None:
        table = table.replace_schema_metadata({ID_KEY: write_id.encode(), TABLE_KEY: name.encode()})
        file_path = os.path.join(folder, file)
        # Statistics (min/max per page and row group) let DuckDB skip pages; not for the names: no query
        # filters on their order, and they cost time.
        statistics = [column for column in table.column_names if column not in ("feature_name", "name")]
        pq.write_table(table, file_path, compression="zstd", write_page_checksum=True, write_statistics=statistics)
        _fsync_path(file_path)

    def small_tables() -> None:
        put(_neurons_table(data), NEURONS_FILE, "neurons")
        for kind in data.kinds:
            n = len(kind.frequencies)
            names = names_arrays[kind.name]
            vocabulary = pa.Table.from_arrays(
                [
                    pa.array(np.arange(n, dtype=np.int32)),
                    pa.nulls(n, pa.string()) if names is None else names,
                    pa.array(np.asarray(kind.frequencies, dtype=np.int64)),
                ],
                schema=VOCABULARY_SCHEMA,
            )
            put(vocabulary, files[kind.name], "vocabulary")
        if data.contexts is not None:
            put(data.contexts, CONTEXTS_FILE, "contexts")

    def write_manifest() -> None:
        fd = os.open(os.path.join(folder, MANIFEST), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(json.dumps(manifest, indent=1, ensure_ascii=False).encode())
            handle.flush()
            os.fsync(handle.fileno())

    with ThreadPoolExecutor(2) as pool:
        others = [pool.submit(small_tables), pool.submit(write_manifest)]
        put(_cells_table(data, names_arrays), CELLS_FILE, "cells")
        for future in others:
            future.result()
    _fsync_path(folder)


def _cells_table(data: ProfileData, names_arrays: Mapping[str, pa.Array | None]) -> pa.Table:
    parts = []
    dictionary = pa.array([k.name for k in data.kinds], pa.string())
    for index, kind in enumerate(data.kinds):
        n = len(kind.neuron)
        names = names_arrays[kind.name]
        feature = pa.array(np.asarray(kind.feature, dtype=np.int32))
        kind_column = pa.DictionaryArray.from_arrays(pa.array(np.full(n, index, dtype=np.int32)), dictionary)
        if kind.mean is None or kind.p is None:
            raise ValueError("writing a profile needs the mean and p of its cells")
        columns = [
            kind_column,
            pa.array(np.asarray(kind.neuron, dtype=np.int32)),
            feature,
            pa.nulls(n, pa.string()) if names is None else names.take(feature),
            pa.array(np.asarray(kind.count, dtype=np.int64)),
            pa.array(np.asarray(kind.sum, dtype=np.float64)),
            pa.array(np.asarray(kind.mean, dtype=np.float64)),
            pa.array(np.asarray(kind.p, dtype=np.float64)),
        ]
        parts.append(pa.Table.from_arrays(columns, schema=CELLS_SCHEMA))
    if not parts:
        return CELLS_SCHEMA.empty_table()
    return pa.concat_tables(parts)


def _neurons_table(data: ProfileData) -> pa.Table:
    columns = {"neuron": pa.array(np.arange(data.n_neurons, dtype=np.int32)), "mass": pa.array(data.mass)}
    for kind in data.kinds:
        if kind.lengths is None:
            raise ValueError("writing a profile needs each neuron's length")
        columns[f"length_{kind.name}"] = pa.array(np.asarray(kind.lengths, dtype=np.int64))
    for kind in data.kinds:
        columns[f"preferred_{kind.name}"] = pa.array(np.asarray(kind.lengths) > 0)
    return pa.table(columns)


def _vocabulary_files(kinds: Sequence[str]) -> dict[str, str]:
    """``_vocabulary-<kind>.parquet``, or ``_vocabulary.<index>.parquet`` for a kind whose name is
    not a plain file name (or equals another's but for case)."""
    lower = [k.lower() for k in kinds]
    return {
        kind: f"_vocabulary-{kind}.parquet"
        if _SAFE_KIND.fullmatch(kind) and lower.count(kind.lower()) == 1
        else f"_vocabulary.{index}.parquet"
        for index, kind in enumerate(kinds)
    }


def _checksum(manifest: Mapping[str, Any]) -> str:
    body = {key: value for key, value in manifest.items() if key != "checksum"}
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def write_format1(data: ProfileData, path: str | os.PathLike) -> None:
    """Write a format 1 file (one Parquet file, the metadata as JSON in its footer).

    For readers with txray 0.1 and for benchmarks; large vocabularies make
    footers that pyarrow refuses to read back (issue 15): use :func:`write`."""
    path = os.fspath(path)
    names_arrays = {k.name: None if k.names is None else pa.array(k.names, pa.string()) for k in data.kinds}
    table = _cells_table(data, names_arrays)
    meta = {
        "format": 1,
        "txray_version": __version__,
        "name": data.name,
        "mode": data.mode,
        "k": data.k,
        "n_neurons": data.n_neurons,
        "tokens": data.tokens,
        "kinds": [
            {
                "name": k.name,
                "rows": len(k.neuron),
                "names": k.names,
                "frequencies": np.asarray(k.frequencies).tolist(),
            }
            for k in data.kinds
        ],
        "mass": np.asarray(data.mass).tolist(),
        "metadata": data.metadata,
    }
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".txray-", suffix=".parquet.tmp", dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            pq.write_table(table, handle, compression="zstd")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------
# placing folders atomically, and cleaning up after killed processes


def temporary_path(path: str | os.PathLike) -> str:
    """A new temporary name next to ``path`` that :func:`cleanup` recognises
    (``.<name>.txray-tmp-<host>-<pid>-<random>``)."""
    target = os.path.abspath(os.fspath(path))
    parent, base = os.path.split(target)
    return os.path.join(parent, f".{base}.txray-tmp-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def replace(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Move the profile ``source`` (a folder or a file) to ``target``, replacing what is there.

    A new target is one rename. An existing one is renamed away to
    ``.<name>.txray-old-<host>-<pid>-<random>`` first and removed after the
    new one is in place; if the process dies between these renames,
    :func:`recover` (called by :func:`read` and :func:`write`) finishes the
    replacement.
    """
    source = os.path.abspath(os.fspath(source))
    target = os.path.abspath(os.fspath(target))
    parent, base = os.path.split(target)
    match = _TEMPORARY.fullmatch(os.path.basename(source))
    rand = match["rand"] if match and match["base"] == base else uuid.uuid4().hex[:8]
    for _ in range(10):  # another process may be replacing the same target
        if not os.path.lexists(target):
            try:
                _rename_new(source, target)
                return
            except FileExistsError:
                continue
        check_replaceable(target)
        old = os.path.join(parent, f".{base}.txray-old-{_host()}-{os.getpid()}-{rand}")
        try:
            os.rename(target, old)
        except FileNotFoundError:
            continue
        try:
            _rename_new(source, target)
        except FileExistsError:
            remove(old)  # another process put its profile in place first: it wins, this one is dropped
            remove(source)
            return
        except BaseException:
            try:
                os.rename(old, target)  # put the old one back
            except OSError:
                pass  # left for recover()
            raise
        remove(old)
        return
    raise OSError(f"could not replace {target}: other processes keep replacing it")


def _rename_new(source: str, target: str) -> None:
    """Rename to a path that must not exist (FileExistsError if it does)."""
    if os.path.isdir(source):
        try:
            os.rename(source, target)  # onto an existing empty folder this succeeds; onto a file it fails
        except OSError as err:
            if err.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                raise FileExistsError(target) from None
            raise
    else:
        try:
            os.link(source, target)  # a file: fails if the target exists
        except FileExistsError:
            raise
        except OSError:  # no hard links here (some network file systems)
            if os.path.lexists(target):
                raise FileExistsError(target) from None
            os.rename(source, target)
            return
        os.unlink(source)


def remove(path: str | os.PathLike) -> None:
    """Remove a file or folder if it exists."""
    path = os.fspath(path)
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def cleanup(folder: str | os.PathLike) -> list[str]:
    """Remove the temporaries that killed txray processes left in ``folder``; returns their paths.

    A temporary of a process on this host that no longer runs goes at once;
    one of another host, or a format 1 temporary (no process id), once it is
    :data:`STALE_AFTER_S` old. A replacement that a crash interrupted is
    finished first (:func:`recover`), so that no profile is lost.
    """
    folder = os.fspath(folder)
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    stale: dict[str, list[str]] = {}
    removed = []
    for entry in entries:
        match = _TEMPORARY.fullmatch(entry)
        path = os.path.join(folder, entry)
        if match and _is_stale(match, path):
            stale.setdefault(match["base"], []).append(entry)
        elif _FORMAT1_TEMPORARY.fullmatch(entry) and _age(path) > STALE_AFTER_S:
            remove(path)
            removed.append(path)
    for base in stale:
        target = os.path.join(folder, base)
        if not os.path.lexists(target):
            recover(target)
        for entry in stale[base]:
            path = os.path.join(folder, entry)
            if os.path.lexists(path):
                remove(path)
                removed.append(path)
    return removed


def recover(target: str | os.PathLike) -> str | None:
    """Finish a replacement of ``target`` that a killed process left half done.

    Such a process renamed the old profile away (``…txray-old-…``) and died
    before renaming the new one (``…txray-tmp-…``, complete once it has its
    manifest) into place. The new one is put in place if complete, else the
    old one back. Returns the path that now holds the profile (``target``, or
    the temporary when the folder is read-only), or None if nothing is to be
    recovered.
    """
    target = os.path.abspath(os.fspath(target))
    parent, base = os.path.split(target)
    if os.path.lexists(target):
        return target
    try:
        entries = os.listdir(parent)
    except OSError:
        return None
    temporaries = [
        (m, os.path.join(parent, e)) for e in entries if (m := _TEMPORARY.fullmatch(e)) and m["base"] == base
    ]
    for match, old in temporaries:
        if match["what"] != "old" or not _is_stale(match, old):
            continue
        new = [
            path
            for m, path in temporaries
            if m["what"] == "tmp" and (m["host"], m["pid"], m["rand"]) == (match["host"], match["pid"], match["rand"])
        ]
        candidates = [p for p in new if os.path.isfile(os.path.join(p, MANIFEST))] + [old]
        for candidate in candidates:
            try:
                os.rename(candidate, target)
                _fsync_path(parent)
                return target
            except FileExistsError:
                return target
            except OSError:
                if os.path.lexists(target):
                    return target
                return candidate  # a read-only folder: read it where it is
    return None


def _swap_in_progress(target: str) -> bool:
    """Whether a live process on this host has renamed ``target`` away and not yet put the new one in."""
    parent, base = os.path.split(target)
    try:
        entries = os.listdir(parent)
    except OSError:
        return False
    for entry in entries:
        match = _TEMPORARY.fullmatch(entry)
        if match and match["base"] == base and match["what"] == "old":
            if not _is_stale(match, os.path.join(parent, entry)):
                return True
    return False


def check_replaceable(target: str | os.PathLike) -> None:
    """Raise :class:`ProfileError` when ``target`` is a folder that is not a profile (a save would refuse it)."""
    target = os.fspath(target)
    if os.path.isdir(target) and not os.path.islink(target) and not os.path.isfile(os.path.join(target, MANIFEST)):
        raise ProfileError(f"{target} is a folder that is not a txray profile: not replacing it")


def _is_stale(match: re.Match, path: str) -> bool:
    if match["host"] == _host() and os.name == "posix":  # (os.kill on Windows would end the process)
        return not _alive(int(match["pid"]))
    return _age(path) > STALE_AFTER_S


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it runs, as another user
        return True
    return True


def _age(path: str) -> float:
    try:
        return time.time() - os.lstat(path).st_mtime
    except OSError:
        return 0.0


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40]


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (os.umask sets it, and another
    thread creating a file meanwhile would get the wrong permissions)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_path(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # folders can't be fsynced everywhere
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------
# reading


def read(path: str | os.PathLike) -> ProfileData:
    """Read and validate a profile (format 2 folder, or format 1 file).

    Raises FileNotFoundError if there is nothing at ``path``, else
    :class:`ProfileError` (a ValueError naming the file) for anything that is
    not a valid profile."""
    path = os.fspath(path)
    for attempt in range(READ_ATTEMPTS):
        where = path
        if not os.path.lexists(path):
            if _swap_in_progress(os.path.abspath(path)):
                time.sleep(0.05 * (attempt + 1))
                continue
            where = recover(path) or path
        if os.path.isdir(where):
            try:
                data = _read_folder(where, path)
            except _Changed:
                time.sleep(0.01 * (attempt + 1))
                continue
        elif os.path.isfile(where):
            data = _read_format1(where)
        elif not os.path.lexists(where):  # a save renamed it away since the first check
            time.sleep(0.01 * (attempt + 1))
            continue
        else:
            raise FileNotFoundError(f"no profile at {path}")
        validate(data, path)
        return data
    if not os.path.lexists(path):
        raise FileNotFoundError(f"no profile at {path}")
    raise ProfileError(f"{path} kept changing while it was read (is another process saving it in a loop?)")


def _read_folder(folder: str, path: str) -> ProfileData:
    manifest_path = os.path.join(folder, MANIFEST)
    try:
        before = os.stat(folder)
    except FileNotFoundError:
        raise _Changed() from None
    if not os.path.isfile(manifest_path):
        # A save may have renamed the folder away between the two checks: only a folder that is
        # still the same one, and still has no manifest, is not a profile.
        try:
            now = os.stat(folder)
        except FileNotFoundError:
            raise _Changed() from None
        if (now.st_ino, now.st_dev) != (before.st_ino, before.st_dev) or os.path.isfile(manifest_path):
            raise _Changed()
        raise ProfileError(f"{path} is a folder but not a txray profile (it has no {MANIFEST})")
    try:
        with open(manifest_path, "rb") as handle:
            manifest = json.loads(handle.read())
    except FileNotFoundError:
        raise _Changed() from None
    except (OSError, ValueError) as err:
        raise ProfileError(f"{manifest_path} is not readable JSON: {err}") from None
    if not isinstance(manifest, dict):
        raise ProfileError(f"{manifest_path} is corrupt: not a JSON object")
    version = manifest.get("format")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise ProfileError(
            f"{path} was written by txray {manifest.get('txray_version')} in profile format "
            f"{version}; this txray reads formats 1 and {FORMAT_VERSION}: upgrade txray"
        )
    if manifest.get("checksum") != _checksum(manifest):
        raise ProfileError(f"{manifest_path} is corrupt: its checksum does not match its content")
    if version != FORMAT_VERSION:
        raise ProfileError(f"{manifest_path} is corrupt: format {version!r}")
    _expect(manifest, manifest_path, {"id": str, "n_neurons": int, "tokens": int, "kinds": list, "tables": list})
    _expect(manifest, manifest_path, {"metadata": dict, "mode": str})
    kinds = []
    for entry in manifest["kinds"]:
        if not isinstance(entry, dict):
            raise ProfileError(f"{manifest_path} is corrupt: a kind is not an object")
        _expect(entry, manifest_path, {"name": str, "features": int, "names": bool, "cells": int})
        kinds.append(entry)
    tables: dict[tuple[str, str | None], dict[str, Any]] = {}
    for entry in manifest["tables"]:
        if not isinstance(entry, dict):
            raise ProfileError(f"{manifest_path} is corrupt: a table is not an object")
        _expect(entry, manifest_path, {"table": str, "file": str, "rows": int, "required": bool})
        key = (entry["table"], entry.get("kind"))
        known = entry["table"] in ("cells", "neurons", "contexts") or (
            entry["table"] == "vocabulary" and entry.get("kind") in [k["name"] for k in kinds]
        )
        if not known:
            if entry["required"]:
                raise ProfileError(
                    f"{path} has a table {entry['table']!r} that this txray does not know "
                    f"(written by txray {manifest.get('txray_version')}): upgrade txray"
                )
            continue  # an optional table of a newer txray: skipped
        if "/" in entry["file"] or "\\" in entry["file"] or entry["file"].startswith("."):
            raise ProfileError(f"{manifest_path} is corrupt: table file {entry['file']!r}")
        tables[key] = entry
    # Open every table at once, before reading any: a save that replaces the folder meanwhile then
    # can't give this reader tables of two saves (the ids would tell, and it would read again).
    handles: dict[tuple[str, str | None], pa.NativeFile] = {}
    try:
        for key, entry in tables.items():
            try:
                handles[key] = pa.OSFile(os.path.join(folder, entry["file"]))
            except FileNotFoundError:
                pass  # reported when the table is read
        return _read_tables(folder, path, manifest_path, manifest, kinds, tables, handles)
    finally:
        for handle in handles.values():
            handle.close()


def _read_tables(
    folder: str,
    path: str,
    manifest_path: str,
    manifest: dict[str, Any],
    kinds: list[dict[str, Any]],
    tables: dict[tuple[str, str | None], dict[str, Any]],
    handles: Mapping[tuple[str, str | None], pa.NativeFile],
) -> ProfileData:
    write_id = manifest["id"].encode()

    def table(key: tuple[str, str | None], schema_names: Sequence[str]) -> pa.Table:
        entry = tables.get(key)
        if entry is None:
            raise ProfileError(
                f"{manifest_path} is corrupt: it lists no {key[0]} table" + (f" for {key[1]!r}" if key[1] else "")
            )
        file_path = os.path.join(folder, entry["file"])
        try:
            if key not in handles:
                raise FileNotFoundError(file_path)
            result = pq.ParquetFile(handles[key], page_checksum_verification=True).read()
        except FileNotFoundError:
            if _manifest_changed(manifest_path, manifest["id"]):
                raise _Changed() from None
            raise ProfileError(f"{file_path} is missing") from None
        except MemoryError:
            raise
        except (OSError, pa.ArrowException) as err:
            if _manifest_changed(manifest_path, manifest["id"]):
                raise _Changed() from None
            raise ProfileError(f"{file_path} is corrupt: {err}") from None
        if (result.schema.metadata or {}).get(ID_KEY) != write_id:
            if _manifest_changed(manifest_path, manifest["id"]):
                raise _Changed()
            raise ProfileError(f"{file_path} belongs to another profile than {manifest_path}")
        if result.column_names[: len(schema_names)] != list(schema_names):
            raise ProfileError(f"{file_path} is corrupt: columns {result.column_names}, expected {list(schema_names)}")
        if result.num_rows != entry["rows"]:
            raise ProfileError(f"{file_path} is corrupt: {result.num_rows} rows, {MANIFEST} says {entry['rows']}")
        return result

    cells = table(("cells", None), CELLS_SCHEMA.names)
    neurons = table(("neurons", None), ["neuron", "mass"])
    n_neurons = manifest["n_neurons"]
    if neurons.num_rows != n_neurons or not np.array_equal(
        _column(neurons, "neuron", np.int64, path), np.arange(n_neurons)
    ):
        raise ProfileError(f"{path} is corrupt: {NEURONS_FILE} does not have one row per neuron 0..{n_neurons - 1}")
    mass = _column(neurons, "mass", np.float64, path)
    if sum(k["cells"] for k in kinds) != cells.num_rows:
        raise ProfileError(
            f"{path} is corrupt: {cells.num_rows} cells, {MANIFEST} accounts for {sum(k['cells'] for k in kinds)}"
        )
    expected = [k["name"] for k in kinds]
    positions = []
    for chunk in cells.column("kind").chunks:
        if not pa.types.is_dictionary(chunk.type) or chunk.null_count:
            raise ProfileError(f"{path} is corrupt: the cells' kind column is not dictionary-encoded strings")
        lookup = np.array([expected.index(n) if n in expected else -1 for n in chunk.dictionary.to_pylist()] + [-1])
        positions.append(lookup[chunk.indices.to_numpy(zero_copy_only=False)])
    position = np.concatenate(positions) if positions else np.zeros(0, np.int64)
    if not np.array_equal(position, np.repeat(np.arange(len(kinds)), [k["cells"] for k in kinds])):
        raise ProfileError(f"{path} is corrupt: rows of the cells table are not grouped by kind as {MANIFEST} says")
    result = []
    start = 0
    for entry in kinds:
        part = cells.slice(start, entry["cells"])
        start += entry["cells"]
        vocabulary = table(("vocabulary", entry["name"]), VOCABULARY_SCHEMA.names)
        if vocabulary.num_rows != entry["features"] or not np.array_equal(
            _column(vocabulary, "feature", np.int64, path), np.arange(entry["features"])
        ):
            raise ProfileError(
                f"{path} is corrupt: the {entry['name']!r} vocabulary does not list ids 0..{entry['features'] - 1}"
            )
        name_column = vocabulary.column("name")
        if entry["names"]:
            if name_column.null_count:
                raise ProfileError(f"{path} is corrupt: the {entry['name']!r} vocabulary has null names")
            names = name_column.to_numpy(zero_copy_only=False).tolist()
        else:
            names = None
        result.append(_kind_data(entry["name"], part, _column(vocabulary, "frequency", np.int64, path), names, path))
    contexts = table(("contexts", None), CONTEXTS_SCHEMA.names) if ("contexts", None) in tables else None
    if contexts is not None:
        contexts = _conform(contexts, CONTEXTS_SCHEMA, path)
    if contexts is not None:
        _expect(manifest, manifest_path, {"contexts_k": int})
    contexts_k = manifest.get("contexts_k")
    # The derived columns are not used, but read (above) so that their checksums are verified.
    return ProfileData(
        n_neurons=n_neurons,
        mode=manifest["mode"],
        k=manifest.get("k"),
        tokens=manifest["tokens"],
        name=manifest.get("name"),
        metadata=manifest["metadata"],
        mass=mass,
        kinds=result,
        format=FORMAT_VERSION,
        contexts=contexts,
        contexts_k=contexts_k if contexts is not None else None,
    )


def _conform(table: pa.Table, schema: pa.Schema, path: str) -> pa.Table:
    """``table`` with exactly ``schema``'s columns and types (a newer txray may add columns)."""
    try:
        table = table.select(schema.names).cast(schema)
    except (pa.ArrowException, ValueError, KeyError) as err:
        raise ProfileError(f"{path} is corrupt: {err}") from None
    return table.replace_schema_metadata(None)


def _manifest_changed(manifest_path: str, write_id: str) -> bool:
    try:
        with open(manifest_path, "rb") as handle:
            return json.loads(handle.read()).get("id") != write_id
    except (OSError, ValueError, AttributeError):
        return True


def _kind_data(name: str, cells: pa.Table, frequencies: np.ndarray, names: list[str] | None, path: str) -> KindData:
    """One kind's part of a profile, from its rows of the cells table (both formats)."""
    return KindData(
        name=name,
        neuron=_column(cells, "neuron", np.int32, path),
        feature=_column(cells, "feature", np.int32, path),
        count=_column(cells, "count", np.int64, path),
        sum=_column(cells, "sum", np.float64, path),
        frequencies=frequencies,
        names=names,
    )


def _column(table: pa.Table, name: str, dtype: type, path: str) -> np.ndarray:
    column = table.column(name)
    if column.null_count:
        raise ProfileError(f"{path} is corrupt: column {name!r} has nulls")
    try:
        return column.to_numpy().astype(dtype, copy=False)
    except (pa.ArrowException, ValueError, TypeError) as err:
        raise ProfileError(f"{path} is corrupt: column {name!r}: {err}") from None


def _expect(entry: Mapping[str, Any], where: str, fields: Mapping[str, type]) -> None:
    for key, kind in fields.items():
        value = entry.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ProfileError(f"{where} is corrupt: {key!r} is {value!r}, expected {kind.__name__}")


def _read_format1(path: str) -> ProfileData:
    try:
        # The limits are pyarrow's defence against hostile footers; format 1 keeps the
        # vocabularies in its footer, so a large one needs them raised (issue 15).
        table = pq.read_table(path, thrift_string_size_limit=2**31 - 1, thrift_container_size_limit=2**31 - 1)
    except MemoryError:
        raise
    except (OSError, pa.ArrowException) as err:
        raise ProfileError(f"{path} is not a Parquet file: {err}") from None
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise ProfileError(f"{path} is a Parquet file but not a txray profile (no 'txray' schema metadata)")
    try:
        meta = json.loads(raw)
    except ValueError as err:
        raise ProfileError(f"{path} is corrupt: its metadata is not JSON: {err}") from None
    if not isinstance(meta, dict):
        raise ProfileError(f"{path} is corrupt: its metadata is not a JSON object")
    version = meta.get("format", 0)
    if isinstance(version, int) and version > 1:
        raise ProfileError(
            f"{path} was written by txray {meta.get('txray_version')} in profile format "
            f"{version} as one file; this txray reads formats 1 and {FORMAT_VERSION}: upgrade txray"
        )
    _expect(meta, path, {"n_neurons": int, "tokens": int, "kinds": list, "mass": list, "mode": str, "metadata": dict})
    try:
        mass = np.asarray(meta["mass"], dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as err:
        raise ProfileError(f"{path} is corrupt: mass: {err}") from None
    kinds, start = [], 0
    for entry in meta["kinds"]:
        if not isinstance(entry, dict):
            raise ProfileError(f"{path} is corrupt: a kind is not an object")
        _expect(entry, path, {"name": str, "rows": int, "frequencies": list})
        part = table.slice(start, entry["rows"])
        start += entry["rows"]
        if part.num_rows != entry["rows"] or (
            part.num_rows and set(part.column("kind").unique().to_pylist()) != {entry["name"]}
        ):
            raise ProfileError(f"{path} is corrupt: rows of kind {entry['name']!r} are out of place")
        names = entry.get("names")
        if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
            raise ProfileError(f"{path} is corrupt: the {entry['name']!r} vocabulary is not a list of strings")
        try:
            frequencies = np.asarray(entry["frequencies"], dtype=np.int64)
        except (TypeError, ValueError, OverflowError) as err:
            raise ProfileError(f"{path} is corrupt: {err}") from None
        kinds.append(_kind_data(entry["name"], part, frequencies, names, path))
    if start != table.num_rows:
        raise ProfileError(f"{path} is corrupt: {table.num_rows} rows, metadata accounts for {start}")
    return ProfileData(
        n_neurons=meta["n_neurons"],
        mode=meta["mode"],
        k=meta.get("k"),
        tokens=meta["tokens"],
        name=meta.get("name"),
        metadata=meta["metadata"],
        mass=mass,
        kinds=kinds,
        format=1,
    )


def validate(data: ProfileData, path: str | os.PathLike) -> None:
    """Raise :class:`ProfileError` naming ``path`` unless ``data`` is a consistent profile."""
    path = os.fspath(path)

    def fail(what: str) -> None:
        raise ProfileError(f"{path} is not a valid profile: {what}")

    if data.mode not in MODES:
        fail(f"unknown mode {data.mode!r} (known: {', '.join(MODES)})")
    if data.k is not None and (not isinstance(data.k, int) or isinstance(data.k, bool) or data.k < 1):
        fail(f"k is {data.k!r}")
    if data.mode == "topk" and data.k is None:
        fail("mode 'topk' without k")
    if data.n_neurons < 0 or data.tokens < 0:
        fail(f"{data.n_neurons} neurons, {data.tokens} tokens")
    if data.name is not None and not isinstance(data.name, str):
        fail(f"name {data.name!r}")
    if data.mass.shape != (data.n_neurons,):
        fail(f"{len(data.mass)} mass values for {data.n_neurons} neurons")
    seen = set()
    for kind in data.kinds:
        label = f"kind {kind.name!r}"
        if kind.name in seen:
            fail(f"{label} twice")
        seen.add(kind.name)
        n_features = len(kind.frequencies)
        if kind.names is not None and len(kind.names) != n_features:
            fail(f"{label}: {len(kind.names)} names for {n_features} frequencies")
        if n_features and kind.frequencies.min() < 0:
            fail(f"{label}: negative corpus frequencies")
        if not len(kind.neuron):
            continue
        if kind.neuron.min() < 0 or kind.neuron.max() >= data.n_neurons:
            fail(f"{label}: neuron ids outside 0..{data.n_neurons - 1}")
        if kind.feature.min() < 0 or kind.feature.max() >= n_features:
            fail(f"{label}: feature ids outside the vocabulary's 0..{n_features - 1}")
        if kind.count.min() < 0:
            fail(f"{label}: negative counts")
        key = kind.neuron.astype(np.int64) * max(n_features, 1) + kind.feature
        if len(key) > 1 and not bool(np.all(key[1:] > key[:-1])):
            fail(f"{label}: cells not sorted by neuron and feature (or repeated)")
    if data.contexts is not None:
        problem = contexts_problem(data.contexts, data.n_neurons, data.contexts_k)
        if problem:
            fail(f"contexts: {problem}")


def contexts_problem(contexts: pa.Table, n_neurons: int, k: int | None) -> str | None:
    """What is wrong with a table of :data:`CONTEXTS_SCHEMA`, or None: neurons in range, ranks
    1, 2, ... per neuron (at most ``k``) in (neuron, rank) order, activations not increasing
    with rank, finite."""
    have = [f"{f.name}: {f.type}" for f in contexts.schema]
    expected = [f"{f.name}: {f.type}" for f in CONTEXTS_SCHEMA]
    if have != expected:
        return f"columns [{', '.join(have)}], expected [{', '.join(expected)}]"
    if k is None or isinstance(k, bool) or k < 1:
        return f"contexts per neuron (k) is {k!r}"
    for name in ("neuron", "rank", "activation", "unit"):
        if contexts.column(name).null_count:
            return f"column {name!r} has nulls"
    if not contexts.num_rows:
        return None
    neuron = contexts.column("neuron").to_numpy()
    rank = contexts.column("rank").to_numpy()
    activation = contexts.column("activation").to_numpy()
    if neuron.min() < 0 or neuron.max() >= n_neurons:
        return f"neuron ids outside 0..{n_neurons - 1}"
    if not np.all(np.isfinite(activation)):
        return "activations that are not finite"
    starts = np.concatenate([[True], neuron[1:] != neuron[:-1]])
    first = np.flatnonzero(starts)
    ranks = np.arange(len(neuron)) - np.repeat(first, np.diff(np.append(first, len(neuron)))) + 1
    if np.any(np.diff(neuron) < 0) or not np.array_equal(rank, ranks):
        return "rows not sorted by neuron with ranks 1, 2, ... per neuron"
    if rank.max() > k:
        return f"a neuron has {rank.max()} contexts, more than k = {k}"
    same = ~starts[1:]
    if np.any(activation[1:][same] > activation[:-1][same]):
        return "a neuron's activations increase with rank"
    return None
