"""Feature kinds, vocabularies, POS taggers (spaCy, flair) and the tag cache."""

from __future__ import annotations

import collections

import numpy as np
import pytest

import txray
from txray.corpus import Example
from txray.features import (
    VOCABULARY_CHUNK,
    Column,
    Label,
    Ngram,
    Token,
    Vocabulary,
    build_vocabularies,
    resolve_features,
)
from txray.taggers import SpacyTagger, tag_examples


def example(words, **record):
    return Example(0, words, record)


def test_vocabulary_min_count_unk_and_max_size():
    counts = collections.Counter("a a a b b c d d".split())
    vocab = Vocabulary.build(counts, min_count=2)
    assert vocab.names == ["<unk>", "a", "b", "d"]  # by frequency, ties alphabetically
    np.testing.assert_array_equal(vocab.ids(["a", "c", "zzz", "d"]), [1, 0, 0, 3])
    assert Vocabulary.build(counts, max_size=3).names == ["<unk>", "a", "b"]
    assert Vocabulary(["x", "y"]).names == ["x", "y", "<unk>"]  # given: <unk> appended
    with pytest.raises(ValueError, match="more than once"):
        Vocabulary(["x", "x"])
    with pytest.raises(ValueError, match="min_count"):
        Vocabulary.build(counts, min_count=0)


def test_token_vocabulary_built_in_a_streaming_pass():
    token, lowered = Token(min_count=2), Token(lower=True, kind="lower")
    examples = [example(["The", "cat"]), example(["the", "cat", "sat"])]
    build_vocabularies([token, lowered], iter(examples))
    assert token.names() == ["<unk>", "cat"]
    assert lowered.names() == ["<unk>", "cat", "the", "sat"]
    np.testing.assert_array_equal(token.ids(examples[1]), [0, 1, 0])


def test_vocabulary_counted_in_chunks_equals_counting_each_example():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(50)]
    examples = [example(list(rng.choice(words, size=rng.integers(0, 20)))) for _ in range(3 * VOCABULARY_CHUNK + 7)]
    token, bigram = Token(), Ngram(2)
    build_vocabularies([token, bigram], iter(examples))
    for feature in (token, bigram):
        counts = collections.Counter(s for e in examples for s in feature.strings(e))
        expected = sorted(counts, key=lambda s: (-counts[s], s))
        assert feature.names() == ["<unk>", *expected]


def test_ngrams_are_previous_words():
    words = ["the", "cat", "sat"]
    assert Ngram(2).strings(example(words)) == ["<s> the", "the cat", "cat sat"]
    assert Ngram(3).strings(example(words))[1] == "<s> the cat"
    assert Ngram(1).strings(example(words)) == words


def test_columns_per_sequence_and_per_word():
    ex = example(["a", "b"], label="pos", gold=["X", "Y"], bad=["X"])
    assert Label().strings(ex) == ["pos", "pos"]
    assert Column("gold").strings(ex) == ["X", "Y"]
    assert Label().special_string(ex, "[CLS]") == "pos"
    assert Column("gold").special_string(ex, "[CLS]") == "[CLS]"
    with pytest.raises(ValueError, match="1 values for 2 words"):
        Column("bad").strings(ex)
    with pytest.raises(KeyError, match="column 'topic'"):
        Column("topic").strings(ex)


def test_resolve_feature_names():
    kinds = [f.kind for f in resolve_features(["token", "label", "ngram3", "column:topic"])]
    assert kinds == ["token", "label", "ngram3", "topic"]
    with pytest.raises(ValueError, match="unknown feature 'lemma'"):
        resolve_features(["lemma"])
    with pytest.raises(ValueError, match="unique"):
        resolve_features(["token", Token()])


@pytest.fixture(scope="module")
def spacy_tagger():
    return SpacyTagger()


def test_spacy_penn_tags(spacy_tagger):
    tags = spacy_tagger.tag([["The", "cat", "sat", "on", "the", "mat", "."], []])
    assert tags == [["DT", "NN", "VBD", "IN", "DT", "NN", "."], []]
    assert {"NN", "VBD", "DT"} <= set(spacy_tagger.tags)


class CountingTagger:
    """Wraps a tagger and counts the sentences it is asked to tag."""

    def __init__(self, inner):
        self.inner, self.key, self.tags, self.calls = inner, inner.key, inner.tags, 0

    def tag(self, sentences):
        self.calls += len(sentences)
        return self.inner.tag(sentences)


def test_tag_cache_avoids_tagging_twice(spacy_tagger, tmp_path):
    sentences = [["Dogs", "bark", "."], ["I", "like", "green", "tea"]] * 3
    tagger = CountingTagger(spacy_tagger)

    def run():
        examples = [Example(i, list(s), {}) for i, s in enumerate(sentences)]
        return [e.tags["pos"] for e in tag_examples(examples, tagger, "pos", tmp_path, chunk=4)]

    first = run()
    assert tagger.calls == len(sentences)
    assert run() == first and tagger.calls == len(sentences)  # second model state: no tagging
    assert list((tmp_path / "tags").rglob("*.tmp")) == []  # only complete files


def test_pos_feature_in_record_model(spacy_tagger, tmp_path):
    torch = pytest.importorskip("torch")
    words = ["<pad>", "<unk>", "the", "cat", "sat", "."]
    model = torch.nn.Sequential(torch.nn.Embedding(len(words), 5))
    prof = txray.record_model(
        model,
        txray.VocabTokenizer(words),
        ["the cat sat .", "the cat ."],
        ["0"],
        features=["token", txray.Pos(spacy_tagger)],
        cache_dir=tmp_path,
        progress=False,
    )["0"]
    freq = dict(zip(prof.vocabulary("pos"), prof.frequencies("pos")))
    assert (freq["DT"], freq["NN"], freq["VBD"], freq["."]) == (2, 2, 1, 2)


def train_tiny_flair_tagger(path):
    """Train a flair SequenceTagger on a toy corpus (one-hot embeddings, no download) and save it."""
    import torch
    from flair.data import Corpus, Sentence
    from flair.datasets import FlairDatapointDataset
    from flair.embeddings import OneHotEmbeddings
    from flair.models import SequenceTagger

    data = [("the cat sat".split(), ["DT", "NN", "VBD"]), ("a dog ran".split(), ["DT", "NN", "VBD"])] * 4
    sentences = []
    for words, tags in data:
        sentence = Sentence(words)
        for token, tag in zip(sentence, tags):
            token.add_label("pos", tag)
        sentences.append(sentence)
    dataset = FlairDatapointDataset(sentences)
    corpus = Corpus(train=dataset, dev=dataset, test=dataset)
    torch.manual_seed(0)
    tagger = SequenceTagger(
        hidden_size=8,
        embeddings=OneHotEmbeddings.from_corpus(corpus, embedding_length=8),
        tag_dictionary=corpus.make_label_dictionary("pos", add_unk=False),
        tag_type="pos",
        use_crf=False,
        use_rnn=False,
        reproject_embeddings=False,
    )
    optimizer = torch.optim.Adam(tagger.parameters(), lr=0.1)
    for _ in range(30):
        for sentence in sentences:
            sentence.clear_embeddings()  # flair keeps them on the tokens between steps
        optimizer.zero_grad()
        loss = tagger.forward_loss(sentences)
        (loss[0] if isinstance(loss, tuple) else loss).backward()
        optimizer.step()
    tagger.save(path)


def test_flair_tagger_train_save_load(tmp_path):
    pytest.importorskip("flair")
    path = tmp_path / "tiny-pos.pt"
    train_tiny_flair_tagger(path)
    tagger = txray.FlairTagger(path)  # the hub code path: SequenceTagger.load(name_or_path)
    assert tagger.tag([["a", "cat", "sat"]]) == [["DT", "NN", "VBD"]]
    assert sorted(tagger.tags) == ["DT", "NN", "VBD"]
    pos = txray.Pos(f"flair:{path}")
    assert pos.names() == [*tagger.tags, "<unk>"]
    with pytest.raises(ValueError, match="unknown tagger"):
        txray.Pos("nltk")
