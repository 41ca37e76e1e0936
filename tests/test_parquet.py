"""Profiles survive a Parquet round trip, and a failed write loses nothing."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import txray


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
    back = txray.Profile.load(path)
    assert (back.name, back.mode, back.k, back.n_neurons, back.tokens, back.kinds) == (
        prof.name,
        prof.mode,
        prof.k,
        prof.n_neurons,
        prof.tokens,
        prof.kinds,
    )
    assert back.metadata == prof.metadata
    np.testing.assert_array_equal(back.mass(), prof.mass())  # JSON floats round-trip exactly
    for kind in prof.kinds:
        assert back.table(kind).equals(prof.table(kind))
        np.testing.assert_array_equal(back.frequencies(kind), prof.frequencies(kind))
        assert back.vocabulary(kind) == prof.vocabulary(kind)
    assert [f for f in os.listdir(tmp_path)] == ["p.parquet"]  # no temporary file left behind


def test_file_is_an_ordinary_table(tmp_path):
    prof = sample_profile()
    prof.save(tmp_path / "p.parquet")
    table = pq.read_table(tmp_path / "p.parquet")
    assert table.column_names == ["kind", "neuron", "feature", "feature_name", "count", "sum", "mean", "p"]
    pos = table.filter(pa.compute.equal(table.column("kind"), "pos"))
    assert pos.drop(["kind"]).equals(prof.table("pos"))
    meta = json.loads(table.schema.metadata[b"txray"])
    assert meta["mode"] == "max1" and meta["kinds"][1]["names"] == ["NN", "VB", "DT", "JJ"]


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "p.parquet"
    sample_profile(seed=1).save(path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", crash)
    with pytest.raises(OSError, match="disk full"):
        sample_profile(seed=2).save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["p.parquet"]


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no profile at"):
        txray.Profile.load(tmp_path / "missing.parquet")
    (tmp_path / "text.parquet").write_text("hello")
    with pytest.raises(ValueError, match="not a Parquet file"):
        txray.Profile.load(tmp_path / "text.parquet")
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "other.parquet")
    with pytest.raises(ValueError, match="not a txray profile"):
        txray.Profile.load(tmp_path / "other.parquet")
    prof = sample_profile()
    prof.save(tmp_path / "p.parquet")
    table = pq.read_table(tmp_path / "p.parquet")
    meta = json.loads(table.schema.metadata[b"txray"])
    meta["format"] = 99
    pq.write_table(table.replace_schema_metadata({b"txray": json.dumps(meta)}), tmp_path / "future.parquet")
    with pytest.raises(ValueError, match="upgrade txray"):
        txray.Profile.load(tmp_path / "future.parquet")
