"""Merges that would give a wrong profile without a word: the same data twice, a kind that one part lacks."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import txray
from txray import merge_profiles
from txray.cli import main
from txray.cli import merge as merge_command

SIZES = {"token": 5, "pos": 3}


def record(seed: int, kinds=SIZES, name: str = "part", metadata=None) -> txray.Profile:
    rng = np.random.default_rng(seed)
    recorder = txray.Recorder(4, kinds)
    recorder.update(
        rng.normal(size=(200, 4)).astype(np.float32), {k: rng.integers(0, n, 200) for k, n in kinds.items()}
    )
    return recorder.profile(name=name, metadata={"layer": "x", **(metadata or {})})


def snapshot(profile: txray.Profile) -> tuple:
    return profile.digest(), profile.name, dict(profile.metadata), profile.kinds


def test_the_same_profile_twice_is_refused_by_content():
    a = record(0, name="a")
    copy = record(0, name="another name", metadata={"corpus": "elsewhere"})  # same statistics, other labels
    before = snapshot(a), snapshot(copy)
    for parts in ([a, a], [a, copy], [record(1), a, copy]):
        with pytest.raises(ValueError, match=r"holds the same data as part \d .*count its 200 tokens twice"):
            merge_profiles(parts)
    with pytest.raises(ValueError, match="same data"):
        a.merge(copy)
    assert (snapshot(a), snapshot(copy)) == before  # refusing changed nothing
    doubled = merge_profiles([a, copy], allow_duplicates=True)
    assert doubled.tokens == 400
    assert doubled.frequencies("token").sum() == 2 * a.frequencies("token").sum()
    assert a.merge(a, allow_duplicates=True).digest() == doubled.digest()


def test_different_data_and_different_shards_merge():
    a, b = record(0), record(1)
    assert merge_profiles([a, b]).tokens == 400
    # Two shards of one split may hold the same text, so the same statistics: still two parts.
    first, second = record(0, metadata={"shards": [[0, 2]]}), record(0, metadata={"shards": [[1, 2]]})
    merged = merge_profiles([first, second])
    assert merged.tokens == 400 and "shards" not in merged.metadata
    with pytest.raises(ValueError, match="shard 0/2 is in more than one part"):
        merge_profiles([first, first], allow_duplicates=True)


def test_same_activations_with_other_features_are_different_data():
    acts = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    parts = []
    for shift in (0, 1):
        recorder = txray.Recorder(4, {"token": 5})
        recorder.update(acts, {"token": (np.arange(50) + shift) % 5})
        parts.append(recorder.profile())
    assert np.array_equal(parts[0].mass(), parts[1].mass()) and parts[0].digest() != parts[1].digest()
    assert merge_profiles(parts).tokens == 100


def test_a_kind_that_only_one_side_has_is_refused():
    both = record(0, name="both")
    token_only = record(1, kinds={"token": 5}, name="token only")
    before = snapshot(both), snapshot(token_only)
    with pytest.raises(
        ValueError, match=r"profile 'both' has feature kind\(s\) \['pos'\] that profile 'token only' lacks"
    ):
        token_only.merge(both)  # used to drop 'pos' without a word
    with pytest.raises(ValueError, match=r"\['pos'\] that profile 'token only' lacks"):
        both.merge(token_only)
    with pytest.raises(ValueError, match=r"cannot merge part 1 into part 0: .*\['pos'\]"):
        merge_profiles([token_only, both])
    assert (snapshot(both), snapshot(token_only)) == before


def test_merge_keeps_kind_order_of_the_first_part():
    a = record(0)
    swapped = record(1, kinds={"pos": 3, "token": 5})
    assert merge_profiles([a, swapped]).kinds == ("token", "pos")


@pytest.mark.parametrize("group", [1, merge_command.MERGE_GROUP])
def test_cli_refuses_the_same_file_or_a_copy(tmp_path, capsys, monkeypatch, group):
    monkeypatch.setattr(merge_command, "MERGE_GROUP", group)  # duplicates in one group or across groups
    record(0).save(tmp_path / "a.parquet")
    record(1).save(tmp_path / "b.parquet")
    shutil.copytree(tmp_path / "a.parquet", tmp_path / "copy.parquet")  # a profile is a folder
    out = tmp_path / "merged.parquet"
    for parts in (["a", "a"], ["a", "b", "copy"]):
        paths = [str(tmp_path / f"{p}.parquet") for p in parts]
        assert main(["merge", *paths, "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"{paths[-1]} holds the same data as {paths[0]}" in err and "--allow-duplicates" in err
        assert not out.exists()
    assert (
        main(["merge", str(tmp_path / "a.parquet"), str(tmp_path / "a.parquet"), "-o", str(out), "--allow-duplicates"])
        == 0
    )
    assert txray.Profile.load(out).tokens == 400


def test_cli_refuses_a_part_missing_a_kind(tmp_path, capsys):
    record(0).save(tmp_path / "both.parquet")
    record(1, kinds={"token": 5}).save(tmp_path / "token.parquet")
    out = tmp_path / "merged.parquet"
    assert main(["merge", str(tmp_path / "token.parquet"), str(tmp_path / "both.parquet"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"cannot merge {tmp_path / 'both.parquet'} with {tmp_path / 'token.parquet'}" in err and "'pos'" in err
    assert not out.exists()
