"""NeuroX activation files (hdf5 and json, written here in NeuroX's layout) into txray."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import reference

import txray

SENTENCES = [["the", "cat", "sat"], ["a", "dog"], ["the", "cat", "sat"]]  # a repeated sentence


def make_acts(seed=0, layers=2, neurons=5):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((layers, len(s), neurons)).astype(np.float32) for s in SENTENCES]


def write_hdf5(path, acts):
    """As neurox.data.writer.HDF5ActivationsWriter does."""
    index = {}
    with h5py.File(path, "w") as f:
        for i, (words, a) in enumerate(zip(SENTENCES, acts)):
            f.create_dataset(str(i), a.shape, dtype="float32", data=a)
            key, n = " ".join(words), 1
            while key in index:
                n += 1
                key = f"{' '.join(words)} (Occurrence {n})"
            index[key] = str(i)
        f.create_dataset("sentence_to_index", (1,), dtype=h5py.special_dtype(vlen=str))[0] = json.dumps(index)


def write_json(path, acts):
    """As neurox.data.writer.JSONActivationsWriter does (values rounded to 8 places)."""
    with open(path, "w") as f:
        for i, (words, a) in enumerate(zip(SENTENCES, acts)):
            features = [
                {
                    "token": w,
                    "layers": [
                        {"index": i, "values": [round(float(x), 8) for x in a[i, j]]} for i in range(a.shape[0])
                    ],
                }
                for j, w in enumerate(words)
            ]
            f.write(json.dumps({"linex_index": i, "features": features}) + "\n")


@pytest.mark.parametrize("fmt", ["hdf5", "json"])
def test_neurox_files_record_like_the_reference(tmp_path, fmt):
    acts = make_acts()
    path = tmp_path / f"acts.{fmt}"
    (write_hdf5 if fmt == "hdf5" else write_json)(path, acts)
    read = list(txray.read_neurox(path))
    assert [w for w, _ in read] == SENTENCES
    np.testing.assert_allclose(read[1][1], acts[1], atol=1e-7)
    profiles = txray.record_neurox(path, mode="all")
    assert sorted(profiles) == [0, 1]
    for layer, prof in profiles.items():
        vocab = prof.vocabulary("token")
        ids = np.array([vocab.index(w) for s in SENTENCES for w in s])
        rows = np.concatenate([a[layer] for a in acts])
        count, total, *_ = reference.record(rows, {"token": ids}, {"token": len(vocab)}, mode="all")
        got_count, got_sum = reference.dense_from_table(prof.table("token"), 5, len(vocab))
        np.testing.assert_array_equal(got_count, count["token"])
        np.testing.assert_allclose(got_sum, total["token"], rtol=1e-6, atol=1e-6)
        assert prof.metadata["layer"] == layer and prof.metadata["source"] == "neurox"


def test_neurox_labels_file_and_layer_choice(tmp_path):
    path = tmp_path / "acts-layer1.hdf5"  # a decomposed file: one layer
    write_hdf5(path, make_acts(layers=1))
    labels = tmp_path / "labels.txt"
    labels.write_text("DT NN VBD\nDT NN\nDT NN VBD\n")
    prof = txray.record_neurox(path, features=["token", "ngram2"], labels=labels, layers=[0])[0]
    freq = dict(zip(prof.vocabulary("label"), prof.frequencies("label")))
    assert (freq["DT"], freq["NN"], freq["VBD"]) == (3, 3, 2)
    assert "the cat" in prof.vocabulary("ngram2")
    with pytest.raises(ValueError, match="no layer 3"):
        txray.record_neurox(path, layers=[3])
    labels.write_text("DT NN VBD\n")
    with pytest.raises(ValueError, match="fewer lines"):
        txray.record_neurox(path, labels=labels)


def test_neurox_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        txray.record_neurox(tmp_path / "missing.hdf5")
    with h5py.File(tmp_path / "other.hdf5", "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(ValueError, match="not a NeuroX activation file"):
        list(txray.read_neurox(tmp_path / "other.hdf5"))
    (tmp_path / "a.pt").write_text("")
    with pytest.raises(ValueError, match=".hdf5 or .json"):
        txray.read_neurox(tmp_path / "a.pt")
