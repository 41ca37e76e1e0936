"""Profiles survive a round trip through profile format 2, format 1 files still load, and a failed write loses
nothing. The hostile cases (corrupt bytes, killed writers, invalid tables) are in tests/hostile/test_files.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import txray
from txray import parquet

DATA = Path(__file__).parent / "data"


def sample_profile(mode="max1", k=None, seed=0, names=True):
    rng = np.random.default_rng(seed)
    rec = txray.Recorder(9, {"token": 11, "pos": 4}, mode=mode, k=k)
    rec.update(
        rng.standard_normal((80, 9)).astype(np.float32),
        {"token": rng.integers(0, 11, 80), "pos": rng.integers(0, 4, 80)},
    )
    vocab = {"token": [f"w{i}" for i in range(11)], "pos": ["NN", "VB", "DT", "JJ"]} if names else None
    return rec.profile(name=f"{mode}-{seed}", feature_names=vocab, metadata={"model": "lstm", "layer": 0})


@pytest.mark.parametrize("mode,k,names", [("max1", None, True), ("topk", 3, False), ("all", None, True)])
def test_round_trip(tmp_path, mode, k, names):
    prof = sample_profile(mode, k, names=names)
    path = tmp_path / "p.parquet"
    prof.save(path)
    assert_same_profile(txray.Profile.load(path), prof)
    assert [f for f in os.listdir(tmp_path)] == ["p.parquet"]  # no temporary file left behind


def test_failed_write_keeps_the_old_profile(tmp_path, monkeypatch):
    path = tmp_path / "p.parquet"
    old = sample_profile(seed=1)
    old.save(path)
    real = pq.write_table
    calls = []

    def crash(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(pq, "write_table", crash)
    with pytest.raises(OSError, match="disk full"):
        sample_profile(seed=2).save(path)
    assert len(calls) >= 3  # the small tables are written in another thread: one more may start
    assert_same_profile(txray.Profile.load(path), old)
    assert os.listdir(tmp_path) == ["p.parquet"]


def test_interrupted_replacement_puts_the_old_profile_back(tmp_path, monkeypatch):
    path = tmp_path / "p.parquet"
    old = sample_profile(seed=1)
    old.save(path)

    def interrupted(source, target):
        raise KeyboardInterrupt

    monkeypatch.setattr(parquet, "_rename_new", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sample_profile(seed=2).save(path)
    monkeypatch.undo()
    assert_same_profile(txray.Profile.load(path), old)
    assert os.listdir(tmp_path) == ["p.parquet"]


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no profile at"):
        txray.Profile.load(tmp_path / "missing.parquet")
    (tmp_path / "text.parquet").write_text("hello")
    with pytest.raises(txray.ProfileError, match="text.parquet is not a Parquet file"):
        txray.Profile.load(tmp_path / "text.parquet")
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "other.parquet")
    with pytest.raises(ValueError, match="other.parquet is a Parquet file but not a txray profile"):
        txray.Profile.load(tmp_path / "other.parquet")
    (tmp_path / "folder").mkdir()
    with pytest.raises(txray.ProfileError, match="folder is a folder but not a txray profile"):
        txray.Profile.load(tmp_path / "folder")
    with pytest.raises(txray.ProfileError, match="folder is a folder that is not a txray profile: not replacing"):
        sample_profile().save(tmp_path / "folder")
    sample_profile().save(tmp_path / "p.parquet")
    manifest = json.loads((tmp_path / "p.parquet" / "_profile.json").read_text())
    manifest["format"] = 3
    manifest["checksum"] = parquet._checksum(manifest)
    (tmp_path / "p.parquet" / "_profile.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="p.parquet was written by txray .* in profile format 3.*upgrade txray"):
        txray.Profile.load(tmp_path / "p.parquet")


def assert_same_profile(back, prof):
    assert (back.name, back.mode, back.k, back.n_neurons, back.tokens, back.kinds, back.metadata) == (
        prof.name,
        prof.mode,
        prof.k,
        prof.n_neurons,
        prof.tokens,
        prof.kinds,
        prof.metadata,
    )
    np.testing.assert_array_equal(back.mass(), prof.mass())
    for kind in prof.kinds:
        assert back.table(kind).equals(prof.table(kind))
        np.testing.assert_array_equal(back.frequencies(kind), prof.frequencies(kind))
        assert back.vocabulary(kind) == prof.vocabulary(kind)


def test_layout_and_tables_are_ordinary_parquet(tmp_path):
    prof = sample_profile()
    path = tmp_path / "p.parquet"
    prof.save(path)
    assert path.is_dir()
    assert sorted(os.listdir(path)) == [
        "_contexts.parquet",  # a recorder keeps the top contexts by default
        "_neurons.parquet",
        "_profile.json",
        "_vocabulary-pos.parquet",
        "_vocabulary-token.parquet",
        "cells.parquet",
    ]
    cells = pq.read_table(path / "cells.parquet")
    assert cells.schema.remove_metadata().equals(parquet.CELLS_SCHEMA)
    assert parquet.CELLS_SCHEMA.remove(0).equals(txray.TABLE_SCHEMA)
    pos = cells.filter(pa.compute.equal(cells.column("kind"), "pos"))
    assert pos.drop(["kind"]).equals(prof.table("pos"))
    # Read as a Parquet dataset (pyarrow, pandas), the folder is its cells, as a format 1 file was.
    assert pq.read_table(path).drop(["kind"]).equals(cells.drop(["kind"]))
    assert pd.read_parquet(path).shape == (cells.num_rows, 8)
    neurons = pq.read_table(path / "_neurons.parquet")
    assert neurons.column_names == ["neuron", "mass", "length_token", "length_pos", "preferred_token", "preferred_pos"]
    assert neurons.column("neuron").to_pylist() == list(range(prof.n_neurons))
    np.testing.assert_array_equal(neurons.column("mass").to_numpy(), prof.mass())
    np.testing.assert_array_equal(neurons.column("length_pos").to_numpy(), prof.lengths("pos"))
    np.testing.assert_array_equal(neurons.column("preferred_token").to_numpy(), prof.preferred("token"))
    vocabulary = pq.read_table(path / "_vocabulary-pos.parquet")
    assert vocabulary.to_pydict() == {
        "feature": [0, 1, 2, 3],
        "name": ["NN", "VB", "DT", "JJ"],
        "frequency": prof.frequencies("pos").tolist(),
    }
    for file in os.listdir(path):
        if file.endswith(".parquet"):
            meta = pq.ParquetFile(path / file).metadata
            assert meta.num_rows == pq.read_table(path / file).num_rows
    manifest = json.loads((path / "_profile.json").read_text())
    assert (manifest["format"], manifest["mode"], manifest["k"], manifest["n_neurons"]) == (2, "max1", 1, 9)
    assert manifest["metadata"] == {"model": "lstm", "layer": 0}
    assert [t["file"] for t in manifest["tables"]] == [
        "cells.parquet",
        "_neurons.parquet",
        "_vocabulary-token.parquet",
        "_vocabulary-pos.parquet",
        "_contexts.parquet",
    ]
    assert [t["required"] for t in manifest["tables"]] == [True, True, True, True, False]


def test_footers_and_manifest_stay_small_whatever_the_vocabulary(tmp_path):
    """Nothing of the vocabulary's size is in a footer or the manifest (format 1 put it all in the footer)."""
    sizes = {}
    for n_names in (100, 300_000):
        rec = txray.Recorder(4, {"ngram": n_names})
        rng = np.random.default_rng(0)
        rec.update(rng.standard_normal((500, 4)).astype(np.float32), {"ngram": rng.integers(0, n_names, 500)})
        names = [f"a-long-ngram-name-of-forty-one-chars-{i:07d}" for i in range(n_names)]
        path = tmp_path / f"v{n_names}.parquet"
        rec.profile(feature_names={"ngram": names}).save(path)
        sizes[n_names] = {
            file: pq.ParquetFile(path / file).metadata.serialized_size
            for file in os.listdir(path)
            if file.endswith(".parquet")
        }
        sizes[n_names]["_profile.json"] = (path / "_profile.json").stat().st_size
        assert txray.Profile.load(path).vocabulary("ngram") == names
    for file, size in sizes[300_000].items():
        assert size < 16_384, (file, size)
        assert size < 2 * sizes[100][file] + 1024, (file, size, sizes[100][file])


def test_format1_files_still_load():
    """tests/data/format1.parquet was written by txray 0.1 (format 1) from sample_profile()."""
    prof = sample_profile()
    back = txray.Profile.load(DATA / "format1.parquet")
    assert_same_profile(back, prof)


def test_format1_writer_round_trip(tmp_path):
    prof = sample_profile("topk", 3, names=False)
    parquet.write_format1(prof._data(), tmp_path / "old.parquet")
    assert (tmp_path / "old.parquet").is_file()
    assert_same_profile(txray.Profile.load(tmp_path / "old.parquet"), prof)
    # Saving over a format 1 file replaces it with a format 2 folder.
    prof.save(tmp_path / "old.parquet")
    assert (tmp_path / "old.parquet").is_dir() and os.listdir(tmp_path) == ["old.parquet"]
    assert_same_profile(txray.Profile.load(tmp_path / "old.parquet"), prof)


def test_kind_names_that_are_not_file_names(tmp_path):
    rng = np.random.default_rng(3)
    kinds = {"token": 5, "POS/tag": 3, "Token": 4, "ngram 2": 6}
    rec = txray.Recorder(5, kinds)
    rec.update(rng.standard_normal((40, 5)).astype(np.float32), {k: rng.integers(0, n, 40) for k, n in kinds.items()})
    prof = rec.profile(feature_names={k: [f"{k}:{i}" for i in range(n)] for k, n in kinds.items()})
    prof.save(tmp_path / "p")
    files = sorted(f for f in os.listdir(tmp_path / "p") if f.startswith("_vocabulary"))
    assert files == ["_vocabulary.0.parquet", "_vocabulary.1.parquet", "_vocabulary.2.parquet", "_vocabulary.3.parquet"]
    assert_same_profile(txray.Profile.load(tmp_path / "p"), prof)


def test_large_layer_round_trip(tmp_path):
    """A 10,000-neuron layer (the 5M-name vocabulary is in benchmarks/bench_profile_io.py)."""
    rng = np.random.default_rng(1)
    rec = txray.Recorder(10_000, {"token": 2_000, "pos": 45}, mode="topk", k=4)
    for _ in range(4):
        rec.update(
            rng.standard_normal((2_000, 10_000)).astype(np.float32),
            {"token": rng.integers(0, 2_000, 2_000), "pos": rng.integers(0, 45, 2_000)},
        )
    prof = rec.profile(name="wide", feature_names={"pos": [f"T{i}" for i in range(45)]})
    prof.save(tmp_path / "wide.parquet")
    back = txray.Profile.load(tmp_path / "wide.parquet")
    assert_same_profile(back, prof)
    assert back.n_neurons == 10_000 and len(back.cells("token").neuron) > 20_000


def test_no_kinds_and_no_cells(tmp_path):
    prof = txray.Profile(3, "all", None, {}, np.zeros(3), 0, name="empty")
    prof.save(tmp_path / "e.parquet")
    assert_same_profile(txray.Profile.load(tmp_path / "e.parquet"), prof)
    cells = txray.KindCells(
        *(np.zeros(0, dt) for dt in (np.int32, np.int32, np.int64, np.float64)), np.zeros(2, np.int64)
    )
    prof = txray.Profile(3, "max1", 1, {"token": cells}, np.zeros(3), 0)
    prof.save(tmp_path / "z.parquet")
    assert_same_profile(txray.Profile.load(tmp_path / "z.parquet"), prof)


def test_duckdb_queries_each_table(tmp_path, monkeypatch):
    """The queries of docs/profile-format.md."""
    duckdb = pytest.importorskip("duckdb")
    prof = sample_profile()
    prof.save(tmp_path / "epoch1.parquet")
    con = duckdb.connect()
    monkeypatch.chdir(tmp_path)
    rows = con.sql(
        "SELECT neuron, mass, length_token FROM 'epoch1.parquet/_neurons.parquet' ORDER BY neuron"
    ).fetchall()
    assert [r[0] for r in rows] == list(range(9))
    assert [r[1] for r in rows] == prof.mass().tolist()
    assert [r[2] for r in rows] == prof.lengths("token").tolist()
    top = con.sql(
        "SELECT neuron, feature_name, p FROM 'epoch1.parquet/cells.parquet' WHERE kind = 'pos' "
        "ORDER BY p DESC, neuron LIMIT 3"
    ).fetchall()
    table = prof.table("pos").to_pandas().sort_values(["p", "neuron"], ascending=[False, True])
    assert [r[0] for r in top] == table["neuron"].tolist()[:3]
    joined = con.sql(
        "SELECT v.name, v.frequency, count(c.neuron) AS neurons "
        "FROM 'epoch1.parquet/_vocabulary-pos.parquet' v "
        "LEFT JOIN 'epoch1.parquet/cells.parquet' c ON c.kind = 'pos' AND c.feature = v.feature "
        "GROUP BY ALL ORDER BY v.name"
    ).fetchall()
    assert [r[0] for r in joined] == sorted(["NN", "VB", "DT", "JJ"])
    meta = con.sql("SELECT mode, n_neurons, tokens FROM 'epoch1.parquet/_profile.json'").fetchall()
    assert meta == [("max1", 9, prof.tokens)]
