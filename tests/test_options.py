"""RecordOptions: one object for how record_model records, the same as keyword arguments."""

from __future__ import annotations

import dataclasses

import pytest

import txray
from txray.options import RecordOptions

torch = pytest.importorskip("torch")

WORDS = ["<unk>", "a", "b", "c", "d", "e"]
TEXTS = ["a b c", "d e a", "b b c d"]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(len(WORDS), 4), torch.nn.Linear(4, 6))
    return model, txray.VocabTokenizer(WORDS)


def test_options_object_and_keywords_record_the_same(tiny):
    model, tok = tiny
    options = RecordOptions(features=["token", "ngram2"], mode="topk", k=2, limit_tokens=8, progress=False)
    assert options.features == ("token", "ngram2")  # a list is kept as a tuple: the options stay frozen
    by_object = txray.record_model(model, tok, TEXTS, ["1"], options=options)["1"]
    by_keywords = txray.record_model(
        model, tok, TEXTS, ["1"], ["token", "ngram2"], mode="topk", k=2, limit_tokens=8, progress=False
    )["1"]
    assert by_object.digest() == by_keywords.digest() and by_object.tokens == 8
    assert (by_object.mode, by_object.k, by_object.kinds) == ("topk", 2, ("token", "ngram2"))
    # A keyword overrides the options object's field; the object is not changed.
    everything = txray.record_model(model, tok, TEXTS, ["1"], options=options, limit_tokens=None)["1"]
    assert everything.tokens == 10 and options.limit_tokens == 8


def test_defaults_are_record_models():
    assert RecordOptions().features == ("token",) and RecordOptions().mode == "max1"
    assert RecordOptions(features="pos").features == ("pos",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        RecordOptions().mode = "all"  # type: ignore[misc]


def test_unknown_or_repeated_settings_are_named(tiny):
    model, tok = tiny
    with pytest.raises(TypeError, match=r"unknown recording option\(s\) \['limit_token'\]"):
        txray.record_model(model, tok, TEXTS, ["1"], limit_token=3)
    with pytest.raises(TypeError, match="features given twice"):
        RecordOptions.resolve(None, ["token"], {"features": ["pos"]})
    assert RecordOptions.resolve(RecordOptions(mode="all"), None, {"k": None}).mode == "all"


def test_distributed_record_model_takes_its_shards_itself():
    from txray import distributed

    with pytest.raises(ValueError, match="one shard per rank"):
        distributed.record_model(None, None, TEXTS, ["1"], options=RecordOptions(shard=(0, 2)))


@pytest.mark.parametrize(("given", "kept"), [([0, 2], (0, 2)), ((1, 3), (1, 3)), ("2/3", (2, 3)), (None, None)])
def test_a_shard_is_a_pair_a_string_or_a_shard(given, kept):
    assert RecordOptions(shard=given).shard == kept


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ([0, 2, 3], "shard must be \\(index, count\\), 'INDEX/COUNT' or a txray.corpus.Shard, not \\[0, 2, 3\\]"),
        (1.5, "shard must be .* not 1.5"),
        (("a", 2), "a shard is INDEX/COUNT in whole numbers, not 'a'/2"),
        ((2, 2), "0 <= INDEX < COUNT, not 2/2"),
        ("2 of 3", "a shard is written INDEX/COUNT"),
    ],
)
def test_a_bad_shard_is_refused_before_any_work(given, message):
    with pytest.raises(ValueError, match=message):
        RecordOptions(shard=given)


def test_each_run_gets_a_fresh_shard():
    from txray.corpus import Shard

    opts = RecordOptions(shard="1/3")
    first, second = opts.fresh_shard(), opts.fresh_shard()
    assert (first.index, first.count) == (1, 3) and first is not second and first.seen == 0
    used = Shard(0, 2)
    used.seen = 5  # counted by an earlier run
    fresh = RecordOptions(shard=used).fresh_shard()
    assert (fresh.index, fresh.count, fresh.seen) == (0, 2, 0) and fresh is not used
    assert RecordOptions().fresh_shard() is None
