"""The contexts table of a profile: its schema, top_contexts, save/load and the exact merge."""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pytest

import txray
from txray import parquet


def _profile(contexts=None, k=None, n_neurons=4, tokens=10, name="p", mass=None):
    cells = txray.KindCells(
        neuron=np.array([0, 1], np.int32),
        feature=np.array([0, 1], np.int32),
        count=np.array([3, 1], np.int64),
        sum=np.array([3.0, 2.0]),
        frequencies=np.array([5, 5], np.int64),
        names=["a", "b"],
    )
    m = np.arange(n_neurons, dtype=float) + tokens if mass is None else mass
    return txray.Profile(n_neurons, "max1", None, {"token": cells}, m, tokens, name, contexts=contexts, contexts_k=k)


def _brute_force(neuron, activation, unit, k):
    rows = []
    for n in sorted(set(neuron.tolist())):
        idx = [i for i in range(len(neuron)) if neuron[i] == n]
        idx.sort(key=lambda i: (-activation[i], unit[i], i))
        rows += [(n, r + 1, activation[i], unit[i]) for r, i in enumerate(idx[:k])]
    return rows


@pytest.mark.parametrize("k", [1, 2, 5, 50])
def test_top_contexts_matches_brute_force(k):
    rng = np.random.default_rng(k)
    n = 300
    neuron = rng.integers(0, 7, n)
    activation = rng.integers(0, 5, n).astype(float)  # many ties
    unit = rng.permutation(n)
    table = txray.top_contexts({"neuron": neuron, "activation": activation, "unit": unit}, k)
    assert table.schema.equals(txray.CONTEXTS_SCHEMA)
    got = list(zip(*(table.column(c).to_pylist() for c in ("neuron", "rank", "activation", "unit"))))
    assert got == _brute_force(neuron, activation, unit, k)
    assert table.column("text").null_count == table.num_rows


def test_top_contexts_keeps_text_columns():
    table = txray.top_contexts(
        {
            "neuron": [1, 1, 0],
            "activation": [0.5, 2.0, 1.0],
            "unit": [7, 3, 9],
            "document": [0, 0, 1],
            "word": ["x", "y", "z"],
            "text": ["a x b", "y c", "z"],
            "word_offset": [2, 0, 0],
        },
        k=1,
    )
    assert table.to_pylist() == [
        {
            "neuron": 0,
            "rank": 1,
            "activation": 1.0,
            "unit": 9,
            "document": 1,
            "word": "z",
            "text": "z",
            "word_offset": 0,
        },
        {
            "neuron": 1,
            "rank": 1,
            "activation": 2.0,
            "unit": 3,
            "document": 0,
            "word": "y",
            "text": "y c",
            "word_offset": 0,
        },
    ]


@pytest.mark.parametrize(
    ("columns", "k", "message"),
    [
        ({"neuron": [0], "activation": [1.0]}, 1, "no 'unit' column"),
        ({"neuron": [0], "activation": [1.0], "unit": [0]}, 0, "positive integer"),
    ],
)
def test_top_contexts_refuses_bad_input(columns, k, message):
    with pytest.raises(ValueError, match=message):
        txray.top_contexts(columns, k)


def test_profile_without_contexts():
    p = _profile()
    assert p.contexts is None and p.contexts_k is None and p.neuron_contexts(1) is None


def test_profile_refuses_invalid_contexts():
    good = txray.top_contexts({"neuron": [0, 0], "activation": [2.0, 1.0], "unit": [0, 1]}, 2)
    with pytest.raises(ValueError, match="more than k = 1"):
        _profile(good, k=1)
    with pytest.raises(ValueError, match=r"neuron ids outside 0\.\.3"):
        _profile(txray.top_contexts({"neuron": [9], "activation": [1.0], "unit": [0]}, 1), k=1)
    with pytest.raises(ValueError, match="increase with rank"):
        swapped = good.set_column(2, "activation", pa.array([1.0, 2.0]))
        _profile(swapped, k=2)
    with pytest.raises(ValueError, match="without contexts"):
        _profile(None, k=3)


def test_neuron_contexts_and_round_trip(tmp_path):
    table = txray.top_contexts(
        {"neuron": [2, 2, 0, 3], "activation": [1.0, 3.0, 0.5, 0.1], "unit": [1, 2, 3, 4], "word": list("abcd")}, 3
    )
    p = _profile(table, k=3)
    assert p.neuron_contexts(2).column("unit").to_pylist() == [2, 1]
    assert p.neuron_contexts(1).num_rows == 0
    with pytest.raises(IndexError):
        p.neuron_contexts(4)
    p.save(tmp_path / "p.parquet")
    assert (tmp_path / "p.parquet" / parquet.CONTEXTS_FILE).is_file()
    back = txray.Profile.load(tmp_path / "p.parquet")
    assert back.contexts.equals(p.contexts) and back.contexts_k == 3
    assert back.digest() == p.digest() != _profile().digest()
    # Any Parquet reader reads the table.
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "p.parquet" / parquet.CONTEXTS_FILE).num_rows == 4


def test_profile_saved_without_contexts_lists_no_table(tmp_path):
    _profile().save(tmp_path / "p.parquet")
    assert not (tmp_path / "p.parquet" / parquet.CONTEXTS_FILE).exists()
    assert txray.Profile.load(tmp_path / "p.parquet").contexts is None


def test_corrupt_contexts_table_is_named(tmp_path):
    import json

    table = txray.top_contexts({"neuron": [0, 1], "activation": [1.0, 2.0], "unit": [0, 1]}, 2)
    _profile(table, k=2).save(tmp_path / "p.parquet")
    path = tmp_path / "p.parquet" / parquet.CONTEXTS_FILE
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(txray.ProfileError, match="_contexts.parquet"):
        txray.Profile.load(tmp_path / "p.parquet")
    # An older txray skips the optional table: the manifest says it is not required.
    manifest = json.loads((tmp_path / "p.parquet" / parquet.MANIFEST).read_text())
    assert [t["required"] for t in manifest["tables"] if t["table"] == "contexts"] == [False]


def test_merge_keeps_the_global_top_k_exactly():
    rng = np.random.default_rng(0)
    n = 400
    neuron = rng.integers(0, 4, n)
    activation = np.round(rng.normal(size=n), 1)
    unit = np.arange(n)
    whole = txray.top_contexts({"neuron": neuron, "activation": activation, "unit": unit}, 5)
    parts = []
    for i, part in enumerate(np.array_split(np.arange(n), 3)):
        table = txray.top_contexts({"neuron": neuron[part], "activation": activation[part], "unit": unit[part]}, 5)
        parts.append(_profile(table, k=5, tokens=10 + i))
    merged = txray.merge_profiles(parts)
    assert merged.contexts.equals(whole) and merged.contexts_k == 5
    # Different k: the smallest one, still exact.
    parts[0] = _profile(txray.top_contexts(parts[0].contexts, 2), k=2, tokens=10)
    merged = txray.merge_profiles(parts)
    assert merged.contexts_k == 2
    assert merged.contexts.equals(txray.top_contexts(whole, 2))


def test_merge_with_a_part_without_contexts_warns():
    table = txray.top_contexts({"neuron": [0], "activation": [1.0], "unit": [0]}, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        merged = txray.merge_profiles([_profile(table, k=1), _profile(tokens=11)])
    assert merged.contexts is None
    assert any("no top contexts" in str(w.message) for w in caught)


def test_align_keeps_contexts():
    table = txray.top_contexts({"neuron": [0], "activation": [1.0], "unit": [0]}, 1)
    a = _profile(table, k=1)
    cells = txray.KindCells(
        np.array([0], np.int32), np.array([0], np.int32), np.array([1]), np.array([1.0]), np.array([1]), ["zz"]
    )
    b = txray.Profile(4, "max1", None, {"token": cells}, np.ones(4), 1, "b")
    aligned, _ = txray.align([a, b])
    assert aligned is not a and aligned.contexts.equals(table) and aligned.contexts_k == 1


def test_corrupt_contexts_k_is_named(tmp_path):
    import json

    table = txray.top_contexts({"neuron": [0], "activation": [1.0], "unit": [0]}, 1)
    path = tmp_path / "p.parquet"
    _profile(table, k=1).save(path)
    manifest = json.loads((path / parquet.MANIFEST).read_text())
    manifest["contexts_k"] = "x"
    manifest["checksum"] = parquet._checksum(manifest)
    (path / parquet.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(txray.ProfileError, match="'contexts_k' is 'x', expected int"):
        txray.Profile.load(path)
