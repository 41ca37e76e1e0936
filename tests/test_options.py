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
