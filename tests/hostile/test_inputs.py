"""Hostile arguments to the Python API (issue 15, part 4): nothing is
silently converted; every refusal names the argument and changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

import txray

ACTS = np.eye(4, dtype=np.float32)


def _recorder():
    rec = txray.Recorder(4, {"t": 4})
    rec.update(ACTS, {"t": [0, 1, 2, 3]})
    return rec


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(n_neurons=4, features={"t": 10}, mode="topk", k=2.7), ValueError, "k must be a whole number, not 2.7"),
        (dict(n_neurons=4, features={"t": 7.9}), ValueError, "vocabulary size of feature 't' must be a whole number"),
        (dict(n_neurons=4.5, features={"t": 3}), ValueError, "n_neurons must be a whole number"),
        (dict(n_neurons=True, features={"t": 3}), TypeError, "n_neurons must be an integer"),
        (dict(n_neurons="4", features={"t": 3}), TypeError, "n_neurons must be an integer"),
        (dict(n_neurons=4, features={"t": "7"}), TypeError, "vocabulary size of feature 't' must be an integer"),
        (dict(n_neurons=4, features=["token"]), TypeError, r"mapping \{kind: vocabulary size\}, e.g. \{'token'"),
        (dict(n_neurons=4, features="token"), TypeError, "features must be a mapping"),
        (dict(n_neurons=4, features={1: 3}), TypeError, "feature kinds are names"),
        (dict(n_neurons=4, features={"t": 3}, dense_limit_bytes=2.5), ValueError, "dense_limit_bytes"),
        (dict(n_neurons=4, features={"t": 3}, mode="max1", k=1.5), ValueError, "k must be a whole number"),
    ],
)
def test_recorder_arguments_are_not_converted_silently(kwargs, error, message):
    with pytest.raises(error, match=message):
        txray.Recorder(**kwargs)


def test_integral_numbers_of_any_type_are_taken():
    rec = txray.Recorder(np.int32(4), {"t": np.int64(7), "u": 3.0}, mode="topk", k=np.uint8(2))
    assert (rec.n_neurons, rec.features, rec.k) == (4, {"t": 7, "u": 3}, 2)
    assert all(type(v) is int for v in (rec.n_neurons, rec.k, *rec.features.values()))


@pytest.mark.parametrize(
    "ids, shown",
    [
        (np.array([0, 1, 2, 2**64 - 1], dtype=np.uint64), "18446744073709551615"),
        (np.array([0, 1, 2, 2**63], dtype=np.uint64), "9223372036854775808"),
        ([0, 1, 2, 2**64 - 1], "18446744073709551615"),
        ([0, 1, 2, 2**70], "1180591620717411303424"),
        (np.array([0, 1, 2, 4], dtype=np.uint64), "4"),
    ],
)
def test_huge_ids_are_reported_with_their_true_value(ids, shown):
    rec = _recorder()
    with pytest.raises(ValueError, match=rf"feature 't' of token 3 is {shown}, outside its vocabulary \[0, 4\)"):
        rec.update(ACTS, {"t": ids})
    assert rec.tokens == 4  # nothing of the batch was recorded


def test_huge_ids_in_a_batch_of_sequences_name_the_position():
    rec = _recorder()
    ids = np.array([[0, 1], [2, 2**64 - 1]], dtype=np.uint64)
    with pytest.raises(ValueError, match=r"token 3 \(axis 0: 1, axis 1: 1\) is 18446744073709551615"):
        rec.update(ACTS.reshape(2, 2, 4), {"t": ids})


def test_uint64_ids_in_range_are_recorded():
    rec = txray.Recorder(4, {"t": 4})
    rec.update(ACTS, {"t": np.array([3, 2, 1, 0], dtype=np.uint64)})
    assert rec.profile().cells("t").feature.tolist() == [3, 2, 1, 0]


@pytest.mark.parametrize(
    "names, error, message",
    [
        ({"t": "abcd"}, TypeError, r"feature_names\['t'\] must be a list of strings, one per id, not str 'abcd'"),
        ({"t": b"abcd"}, TypeError, r"feature_names\['t'\] must be a list of strings"),
        ({"t": [1, 2, 3, 4]}, TypeError, r"feature_names\['t'\]\[0\] is int 1; names must be strings"),
        ({"t": 4}, TypeError, r"feature_names\['t'\] must be a list"),
        (["a", "b", "c", "d"], TypeError, "feature_names must be a mapping"),
        ({"t": ["a", "b"]}, ValueError, "2 names for 4 feature ids"),
        ({"u": ["a"]}, ValueError, r"kinds \['u'\]"),
    ],
)
def test_feature_names_must_be_lists_of_strings(names, error, message):
    rec = _recorder()
    with pytest.raises(error, match=message):
        rec.profile(feature_names=names)
    assert rec.profile(feature_names={"t": np.array(list("abcd"))}).vocabulary("t") == list("abcd")
    assert rec.profile(feature_names={"t": tuple("abcd")}).vocabulary("t") == list("abcd")
