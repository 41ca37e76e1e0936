"""Windows, batches and pooling on synthetic inputs, against hand computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from txray.corpus import Example
from txray.words import batches, make_batch, pool, windows


class PieceTokenizer:
    """A WordTokenizer whose words have a chosen number of pieces, with [CLS]/[SEP]."""

    name = "pieces"
    pad_id = 0
    prefix = [1]
    suffix = [2]

    def __init__(self, sizes, max_length=None):
        self.sizes = sizes
        self.max_length = max_length

    def pieces(self, sentences):
        return [[[10 + i] * self.sizes[w] for i, w in enumerate(s)] for s in sentences]

    def token_names(self, ids):
        return [{1: "[CLS]", 2: "[SEP]"}[i] for i in ids]


def make_windows(words, sizes, max_length, feature=None):
    tok = PieceTokenizer(sizes, max_length)
    example = Example(0, words, {})
    ids = {"token": np.arange(len(words)) if feature is None else feature}
    return tok, list(windows(example, tok.pieces([words])[0], tok, ids))


def test_windows_hold_whole_words_each_once():
    words = [f"w{i}" for i in range(12)]
    sizes = {w: 1 + i % 3 for i, w in enumerate(words)}  # 1, 2 or 3 pieces
    tok, ws = make_windows(words, sizes, max_length=8)
    assert all(w.length <= 8 for w in ws)
    covered = [i for w in ws for i in range(w.start, w.stop)]
    assert covered == list(range(12))
    for w in ws:
        assert w.input_ids[0] == 1 and w.input_ids[-1] == 2
        owners = [o for o in w.word_of_piece if o >= 0]
        assert owners == [i for i in range(w.start, w.stop) for _ in range(sizes[words[i]])]


def test_overlong_word_keeps_first_pieces_and_empty_word_is_skipped():
    words = ["a", "huge", "gone", "b"]
    tok, ws = make_windows(words, {"a": 1, "huge": 10, "gone": 0, "b": 1}, max_length=5)
    assert [(w.start, w.stop) for w in ws] == [(0, 1), (1, 3), (3, 4)]
    assert ws[1].word_of_piece.tolist() == [-1, 1, 1, 1, -1]


def test_batches_respect_the_token_budget():
    tok, ws = make_windows([f"w{i}" for i in range(40)], {f"w{i}": 1 + i % 4 for i in range(40)}, max_length=9)
    groups = list(batches(ws, max_tokens=20))
    assert sorted(id(w) for g in groups for w in g) == sorted(id(w) for w in ws)
    assert all(len(g) * max(w.length for w in g) <= 20 for g in groups)
    with pytest.raises(ValueError, match="max_tokens"):
        list(batches(ws, max_tokens=0))


@pytest.mark.parametrize("mode", ["first", "last", "mean", "max"])
def test_pooling_against_hand_computation(mode):
    words = ["a", "b", "c", "d", "e"]
    sizes = {"a": 2, "b": 1, "c": 3, "d": 1, "e": 2}
    tok, ws = make_windows(words, sizes, max_length=6, feature=np.array([5, 6, 7, 8, 9]))
    batch = make_batch(ws, tok)
    acts = torch.randn(*batch.input_ids.shape, 4, generator=torch.Generator().manual_seed(1))
    got = pool(acts, batch, mode).numpy()
    expected, feats = [], []
    for row, window in enumerate(ws):
        owner = np.array(window.word_of_piece)
        for word in range(window.start, window.stop):
            rows = acts[row, : window.length][owner == word].numpy()
            expected.append({"first": rows[0], "last": rows[-1], "mean": rows.mean(0), "max": rows.max(0)}[mode])
            feats.append(5 + word)
    np.testing.assert_allclose(got, np.array(expected), rtol=1e-6)
    np.testing.assert_array_equal(batch.features["token"], feats)
    # Padding positions are never units.
    assert (batch.unit.reshape(batch.input_ids.shape)[batch.attention_mask == 0] == -1).all()


def test_special_tokens_are_units_only_when_asked():
    tok, ws = make_windows(["a", "b"], {"a": 2, "b": 1}, max_length=None)
    ws[0].special_features = {"token": {1: 100, 2: 101}}
    plain, special = make_batch(ws, tok), make_batch(ws, tok, include_special=True)
    assert plain.n_units == 2 and special.n_units == 4
    np.testing.assert_array_equal(special.features["token"], [100, 0, 1, 101])
    acts = torch.arange(5.0).reshape(1, 5, 1)
    np.testing.assert_allclose(pool(acts, special, "mean").numpy().ravel(), [0, 1.5, 3, 4])
