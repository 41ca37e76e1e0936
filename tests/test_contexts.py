"""Top activating contexts: the engine's streaming top k against the NumPy
reference (reference.contexts), merges, ties, and their text in record_model.

Activations are compared exactly: the engine keeps each candidate's float32
value, and the reference reads the same float32 values in float64."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pytest
import reference
import torch
from hypothesis import given
from hypothesis import strategies as st

import txray
from txray.contexts import ContextTexts, entered_units, live_units, unit_numbers, word_window

SIZES = {"token": 5}
MODES = [("max1", None), ("topk", 1), ("topk", 3), ("all", None)]


def batch(rng, tokens, neurons, ties=False, dtype=np.float32):
    if ties:  # small integers: many exact ties
        acts = rng.integers(-2, 3, size=(tokens, neurons)).astype(dtype)
    else:
        acts = rng.standard_normal((tokens, neurons)).astype(dtype)
    return acts, {"token": rng.integers(0, SIZES["token"], tokens)}


def rows_of(table) -> list[tuple[int, int, float, int]]:
    columns = [table.column(name).to_pylist() for name in ("neuron", "rank", "activation", "unit")]
    return list(zip(*columns))


def engine_rows(recorder: txray.Recorder) -> list[tuple[int, int, float, int]]:
    return rows_of(recorder.profile().contexts)


@given(
    seed=st.integers(0, 2**32 - 1),
    tokens=st.integers(1, 40),
    neurons=st.integers(1, 9),
    mode_k=st.sampled_from(MODES),
    n_contexts=st.integers(1, 6),
    ties=st.booleans(),
    masked=st.booleans(),
    numbered=st.booleans(),
    cuts=st.lists(st.integers(0, 40), max_size=3),
)
def test_contexts_match_reference(seed, tokens, neurons, mode_k, n_contexts, ties, masked, numbered, cuts):
    mode, k = mode_k
    k = min(k, neurons) if k else k
    rng = np.random.default_rng(seed)
    acts, feats = batch(rng, tokens, neurons, ties)
    mask = rng.random(tokens) < 0.8 if masked else None
    # Explicit units: shuffled and sparse, some negative (never a context).
    units = rng.permutation(3 * tokens)[:tokens] - tokens // 4 if numbered else None
    rec = txray.Recorder(neurons, SIZES, mode=mode, k=k, contexts=n_contexts)
    bounds = [0, *sorted(min(c, tokens) for c in cuts), tokens]
    for lo, hi in zip(bounds[:-1], bounds[1:]):  # several updates: the default units count on
        rec.update(
            acts[lo:hi],
            {"token": feats["token"][lo:hi]},
            None if mask is None else mask[lo:hi],
            units=None if units is None else units[lo:hi],
        )
    expected = reference.contexts(acts, n_contexts, mode, k, mask, units)
    if rec.tokens == 0:
        return
    assert engine_rows(rec) == expected


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("mode,k", MODES)
def test_half_precision_and_strided_activations(dtype, mode, k):
    rng = np.random.default_rng(3)
    wide = torch.from_numpy(rng.standard_normal((50, 16)).astype(np.float32)).to(getattr(torch, dtype))
    acts = wide[:, ::2]  # every other neuron: a strided view
    feats = {"token": rng.integers(0, 5, 50)}
    rec = txray.Recorder(8, SIZES, mode=mode, k=k, contexts=4)
    rec.update(acts, feats)
    assert engine_rows(rec) == reference.contexts(acts.float().numpy(), 4, mode, k)


@pytest.mark.parametrize("mode,k", MODES)
def test_merged_parts_equal_the_whole(mode, k):
    rng = np.random.default_rng(7)
    acts, feats = batch(rng, 300, 6, ties=True)  # ties decided by unit across the parts
    units = np.arange(300) * 3 + 11
    whole = txray.Recorder(6, SIZES, mode=mode, k=k, contexts=5)
    whole.update(acts, feats, units=units)
    parts = []
    for rows in np.array_split(rng.permutation(300), 4):  # parts of interleaved tokens
        part = txray.Recorder(6, SIZES, mode=mode, k=k, contexts=5)
        part.update(acts[rows], {"token": feats["token"][rows]}, units=units[rows])
        parts.append(part)
    merged = parts[0].merge(parts[1]).merge(parts[2]).merge(parts[3])
    assert engine_rows(merged) == engine_rows(whole) == reference.contexts(acts, 5, mode, k, units=units)


def test_ties_go_to_the_lower_unit():
    rec = txray.Recorder(2, SIZES, mode="all", contexts=3)
    acts = np.ones((6, 2), np.float32)
    acts[4, 1] = 2.0
    rec.update(acts, {"token": np.zeros(6, np.int64)}, units=[50, 40, 30, 20, 10, 60])
    assert engine_rows(rec) == [
        (0, 1, 1.0, 10),
        (0, 2, 1.0, 20),
        (0, 3, 1.0, 30),
        (1, 1, 2.0, 10),
        (1, 2, 1.0, 20),
        (1, 3, 1.0, 30),
    ]


def test_fewer_candidates_than_k_and_neurons_without_any():
    rec = txray.Recorder(3, SIZES, contexts=10)
    acts = np.array([[5, 0, 0], [4, 0, 0], [0, 3, 0]], np.float32)  # neuron 2 never wins
    rec.update(acts, {"token": [0, 1, 2]}, mask=[True, False, True])  # the masked row has no unit
    assert engine_rows(rec) == [(0, 1, 5.0, 0), (1, 1, 3.0, 1)]
    assert rec.profile().contexts_k == 10


def test_contexts_off():
    rec = txray.Recorder(3, SIZES, contexts=0)
    rec.update(np.eye(3, dtype=np.float32), {"token": [0, 1, 2]}, units=[1, 2, 3])
    profile = rec.profile()
    assert profile.contexts is None and profile.contexts_k is None
    assert rec.context_units() is None


def test_default_keeps_twenty_and_text_columns_are_null():
    rng = np.random.default_rng(0)
    acts, feats = batch(rng, 100, 2)
    rec = txray.Recorder(2, SIZES, mode="all")
    rec.update(acts, feats)
    table = rec.profile().contexts
    assert rec.contexts == txray.recorder.DEFAULT_CONTEXTS == 20 and table.num_rows == 40
    assert table.schema.equals(txray.CONTEXTS_SCHEMA)
    for name in ("document", "word", "text", "word_offset"):
        assert table.column(name).null_count == 40
    units = rec.context_units()
    assert units.dtype == np.int64 and list(units) == sorted(set(table.column("unit").to_pylist()))


@pytest.mark.parametrize("mode,k", [("max1", None), ("topk", 2), ("all", None)])
def test_large_batches_on_every_thread_match_numpy(mode, k):
    """Batches past the engine's parallel thresholds: the contexts task beside the
    cell adds (max1, topk), and each thread's share of the neurons (all)."""
    rng = np.random.default_rng(5)
    tokens, neurons = (70_000, 8) if mode != "all" else (3_000, 1_500)
    acts = rng.standard_normal((tokens, neurons)).astype(np.float32)
    acts[::97] = 1.5  # exact ties among many tokens
    units = rng.permutation(tokens)
    rec = txray.Recorder(neurons, SIZES, mode=mode, k=k, contexts=7)
    before = txray.get_num_threads()
    txray.set_num_threads(2)
    try:
        rec.update(acts, {"token": np.zeros(tokens, np.int64)}, units=units)
    finally:
        txray.set_num_threads(before)
    # Vectorised reference: every candidate, sorted by (neuron, -activation, unit).
    if mode == "all":
        neuron, token = np.divmod(np.arange(tokens * neurons), tokens)
    else:
        order = np.argsort(-acts, axis=1, kind="stable")[:, : k or 1]
        token = np.repeat(np.arange(tokens), order.shape[1])
        neuron = order.reshape(-1)
    value = acts[token, neuron].astype(np.float64)
    pick = np.lexsort((units[token], -value, neuron))
    neuron, value, unit = neuron[pick], value[pick], units[token][pick]
    rank = np.arange(len(pick)) - np.searchsorted(neuron, neuron) + 1
    keep = rank <= 7
    expected = list(zip(neuron[keep].tolist(), rank[keep].tolist(), value[keep].tolist(), unit[keep].tolist()))
    assert engine_rows(rec) == expected


def test_threads_sharing_a_recorder_give_the_serial_contexts():
    rng = np.random.default_rng(2)
    acts, feats = batch(rng, 4_000, 6, ties=True)
    units = np.arange(4_000)
    shared = txray.Recorder(6, SIZES, mode="topk", k=2, contexts=9)

    def work(part):
        for rows in np.array_split(part, 10):
            shared.update(acts[rows], {"token": feats["token"][rows]}, units=units[rows])

    threads = [threading.Thread(target=work, args=(p,)) for p in np.array_split(np.arange(4_000), 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert engine_rows(shared) == reference.contexts(acts, 9, "topk", 2, units=units)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"contexts": -1}, ValueError, "contexts must be an integer of at least 0"),
        ({"contexts": 2.5}, ValueError, "contexts must be a whole number"),
        ({"contexts": "5"}, TypeError, "contexts must be an integer"),
        ({"contexts": 2**31}, ValueError, "contexts must be at most"),
        ({"contexts": 3, "device": "cuda"}, ValueError, "CUDA recorder does not keep top activating contexts"),
    ],
)
def test_bad_contexts_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        txray.Recorder(3, SIZES, **kwargs)


def test_bad_units_are_refused_and_nothing_is_recorded():
    rec = txray.Recorder(3, SIZES, contexts=2)
    acts, ids = np.eye(3, dtype=np.float32), {"token": [0, 1, 2]}
    with pytest.raises(ValueError, match=r"units has shape \(2,\); the activations need \(3,\)"):
        rec.update(acts, ids, units=[1, 2])
    with pytest.raises(TypeError, match="units must be integers, got dtype float64"):
        rec.update(acts, ids, units=[1.5, 2, 3])
    with pytest.raises(ValueError, match="units must fit in int64"):
        rec.update(acts, ids, units=np.array([1, 2, 2**64 - 1], np.uint64))
    assert rec.tokens == 0
    rec.update(acts.reshape(1, 3, 3), {"token": [[0, 1, 2]]}, units=[[7, 8, 9]])  # leading shape as the acts
    assert engine_rows(rec) == [(0, 1, 1.0, 7), (1, 1, 1.0, 8), (2, 1, 1.0, 9)]


def test_merge_needs_the_same_number_of_contexts():
    a, b = txray.Recorder(3, SIZES, contexts=2), txray.Recorder(3, SIZES, contexts=3)
    with pytest.raises(ValueError, match="contexts=2.*contexts=3"):
        a.merge(b)


def test_word_window():
    words = "a bb ccc dddd e".split()
    assert word_window(words, 2, 1) == ("bb ccc dddd", 3)
    assert word_window(words, 0, 2) == ("a bb ccc", 0)
    assert word_window(words, 4, 8) == ("a bb ccc dddd e", 14)
    assert word_window(words, 3, 0) == ("dddd", 0)
    for at in range(len(words)):
        text, offset = word_window(words, at, 2)
        assert text[offset : offset + len(words[at])] == words[at]
    with pytest.raises(ValueError, match="context_window must be 0 or more"):
        ContextTexts(-1)


# -- record_model: units are corpus words, with their text ---------------------

WORDS = ["<pad>", "<unk>", "<s>"] + [f"w{i}" for i in range(12)]


class Embedder(torch.nn.Module):
    """A word-level model whose layer "embed" gives each word a fixed row: the
    expected contexts follow from the corpus alone."""

    def __init__(self, neurons: int = 5) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.embed = torch.nn.Embedding(len(WORDS), neurons)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed(ids)


def small_corpus() -> list[str]:
    rng = np.random.default_rng(4)
    return [" ".join(rng.choice(WORDS[3:], size=int(rng.integers(1, 30)))) for _ in range(25)]


def expected_contexts(model, corpus, n_contexts, mode, k, window, limit=None):
    """The contexts by brute force: every word of the corpus, in order, is a unit."""
    words, documents, positions = [], [], []
    for d, line in enumerate(corpus):
        for i, w in enumerate(line.split()):
            words.append(w)
            documents.append(d)
            positions.append(i)
    words = words[:limit]
    ids = torch.tensor([WORDS.index(w) for w in words])
    rows = model.embed.weight.detach()[ids].numpy()
    out = []
    for neuron, rank, activation, unit in reference.contexts(rows, n_contexts, mode, k):
        document, at = documents[unit], positions[unit]
        line = corpus[document].split()[: None if limit is None else limit - unit + at]
        text, offset = word_window(line, at, window)
        out.append((neuron, rank, activation, unit, document, words[unit], text, offset))
    return out


def table_rows(table) -> list[tuple]:
    return list(zip(*[table.column(name).to_pylist() for name in txray.CONTEXTS_SCHEMA.names]))


@pytest.mark.parametrize("mode,k", [("max1", None), ("topk", 2), ("all", None)])
def test_record_model_gives_each_context_its_word_and_window(mode, k):
    model, corpus = Embedder(), small_corpus()
    tok = txray.VocabTokenizer(WORDS, max_length=7)  # sequences split into model windows: text is not
    profile = txray.record_model(
        model, tok, corpus, ["embed"], mode=mode, k=k, contexts=6, context_window=3, max_tokens=20, progress=False
    )["embed"]
    assert profile.contexts_k == 6
    assert table_rows(profile.contexts) == expected_contexts(model, corpus, 6, mode, k, window=3)


def test_record_model_limit_and_options():
    model, corpus = Embedder(), small_corpus()
    tok = txray.VocabTokenizer(WORDS)
    options = txray.RecordOptions(contexts=3, progress=False, limit_tokens=100)
    assert txray.RecordOptions().contexts == 20 and txray.RecordOptions().context_window == 8
    profile = txray.record_model(model, tok, corpus, ["embed"], options=options)["embed"]
    assert table_rows(profile.contexts) == expected_contexts(model, corpus, 3, "max1", None, window=8, limit=100)
    off = txray.record_model(model, tok, corpus, ["embed"], options=options.replace(contexts=0))["embed"]
    assert off.contexts is None and off.contexts_k is None


def test_shards_merge_into_the_contexts_of_the_whole():
    model, corpus = Embedder(), small_corpus()
    tok = txray.VocabTokenizer(WORDS)

    def record(**settings):
        return txray.record_model(model, tok, corpus, ["embed"], contexts=4, progress=False, **settings)["embed"]

    whole = record()
    parts = [record(shard=(i, 3)) for i in range(3)]
    merged = txray.merge_profiles(parts)
    assert table_rows(merged.contexts) == table_rows(whole.contexts)
    assert {row[3] for row in table_rows(parts[1].contexts)} <= set(range(whole.tokens))


def test_special_tokens_are_recorded_but_are_never_contexts():
    model, corpus = Embedder(), small_corpus()
    tok = txray.VocabTokenizer(WORDS)
    tok.prefix = [WORDS.index("<s>")]
    with torch.no_grad():
        model.embed.weight[WORDS.index("<s>")] = 100.0  # it would win every neuron's top contexts
    profile = txray.record_model(
        model, tok, corpus, ["embed"], mode="all", contexts=4, include_special=True, progress=False
    )["embed"]
    words = sum(len(line.split()) for line in corpus)
    assert profile.tokens == words + len(corpus)
    assert "<s>" not in profile.contexts.column("word").to_pylist()
    assert table_rows(profile.contexts) == expected_contexts(model, corpus, 4, "all", None, window=8)


def test_texts_held_stay_bounded_by_the_live_contexts(monkeypatch):
    """Texts of units no neuron keeps any more are dropped as the run goes."""
    sizes = []
    keep = ContextTexts.keep

    def watched(self, batch, units, entered, live):
        keep(self, batch, units, entered, live)
        sizes.append((len(self), len(live()), len(units)))

    monkeypatch.setattr(ContextTexts, "keep", watched)
    model, tok = Embedder(), txray.VocabTokenizer(WORDS)
    corpus = small_corpus() * 20  # 500 sequences, about 7,000 words
    txray.record_model(model, tok, corpus, ["embed"], mode="all", contexts=2, max_tokens=64, progress=False)
    assert len(sizes) > 100
    assert all(live <= 5 * 2 for _, live, _ in sizes)  # 5 neurons x 2 contexts
    assert all(held <= 2 * 5 * 2 + batch for held, _, batch in sizes)  # twice that, and a batch


def test_context_units_of_the_latest_update():
    rec = txray.Recorder(2, SIZES, mode="all", contexts=2)
    ids = {"token": [0, 0]}
    rec.update(np.array([[1, 5], [2, 6]], np.float32), ids, units=[10, 11])
    assert list(rec.context_units(latest=True)) == [10, 11]
    rec.update(np.array([[3, 0], [0, 0]], np.float32), ids, units=[20, 21])  # 20 enters neuron 0 only
    assert list(rec.context_units(latest=True)) == [20]
    assert list(rec.context_units()) == [10, 11, 20]  # neuron 0 keeps 20, 11; neuron 1 keeps 11, 10
    rec.update(np.zeros((1, 2), np.float32), {"token": [0]}, units=[30])  # nothing enters
    assert list(rec.context_units(latest=True)) == []


def test_a_hugging_face_dataset_gives_the_same_contexts_as_its_texts():
    datasets = pytest.importorskip("datasets")
    model, corpus = Embedder(), small_corpus()
    tok = txray.VocabTokenizer(WORDS)
    from_list = txray.record_model(model, tok, corpus, ["embed"], contexts=3, progress=False)["embed"]
    dataset = datasets.Dataset.from_dict({"text": corpus})
    from_dataset = txray.record_model(model, tok, dataset, ["embed"], contexts=3, progress=False)["embed"]
    assert table_rows(from_dataset.contexts) == table_rows(from_list.contexts)


# -- the texts of a batch's units, and the units that entered with it ---------


def model_batches(corpus: list[str], tok, max_tokens: int):
    """record_model's batches of ``corpus`` (tokens only), and its examples."""
    from txray.features import Token, build_vocabularies
    from txray.producer import windows_of_examples
    from txray.word_tokenizers import as_word_tokenizer
    from txray.words import batches, make_batch

    text = txray.Corpus(corpus)
    token = Token()
    build_vocabularies([token], text.examples())
    word_tok = as_word_tokenizer(tok)
    windows = windows_of_examples(text.examples(), [token], word_tok, None)
    return [make_batch(group, word_tok) for group in batches(windows, max_tokens)], list(text.examples())


def contexts_of_units(units: list[int]) -> pa.Table:
    """A contexts table of one neuron whose rows are ``units``, texts not filled."""
    n = len(units)
    columns = {"neuron": [0] * n, "rank": list(range(1, n + 1)), "activation": [1.0] * n, "unit": units}
    columns |= {name: [None] * n for name in ("document", "word", "text", "word_offset")}
    return pa.Table.from_pydict(columns, schema=txray.CONTEXTS_SCHEMA)


@pytest.mark.parametrize("window", [0, 1, 3, 8])
def test_kept_texts_are_the_word_windows_of_their_units(window):
    """Every held unit gets its document, word, and word_window's text and offset
    (windows cut across model windows and batches); a unit not held gets nulls."""
    rng = np.random.default_rng(window)
    corpus = small_corpus() + ["é ü " * 12]  # characters beyond ASCII: offsets count characters
    batches_, examples = model_batches(corpus, txray.VocabTokenizer(WORDS + ["é", "ü"], max_length=7), 20)
    where = {e.first_word + i: (e, i) for e in examples for i in range(len(e.words))}
    texts, live = ContextTexts(window), []

    def live_units_now():
        return np.array(sorted(live), dtype=np.int64)

    for b in batches_:
        units = unit_numbers(b)
        words = units[units >= 0]
        entered = np.sort(rng.choice(words, size=len(words) // 2, replace=False))
        live += [u for u in entered.tolist() if u % 3]  # the others leave every top k at once
        texts.keep(b, units, entered, live_units_now)
    assert len(texts) < sum(b.n_units for b in batches_)  # dropped some
    missing = max(where) + 1
    filled = texts.fill(contexts_of_units(live + [missing]), 20)
    expected = []
    for unit in live:
        example, at = where[unit]
        expected.append((example.index, example.words[at], *word_window(example.words, at, window)))
    expected.append((None, None, None, None))
    got = list(zip(*[filled.column(name).to_pylist() for name in ("document", "word", "text", "word_offset")]))
    assert got == expected
    assert filled.schema == txray.CONTEXTS_SCHEMA


def test_texts_of_nothing_kept_are_null():
    filled = ContextTexts().fill(contexts_of_units([3, 1]), 20)
    assert filled.column("text").to_pylist() == [None, None]
    assert filled.column("unit").to_pylist() == [3, 1]


@pytest.mark.parametrize("mode,k", MODES)
def test_entered_units_are_the_latest_context_units_of_all_recorders(mode, k):
    rng = np.random.default_rng(7)
    recorders = [txray.Recorder(6, SIZES, mode=mode, k=k, contexts=3) for _ in range(3)]
    recorders.append(txray.Recorder(6, SIZES, mode=mode, k=k, contexts=0))  # keeps none: skipped
    first = 0
    for _ in range(12):
        n = int(rng.integers(1, 30))
        units = first + rng.permutation(n).astype(np.int64)  # a batch's units, in any order
        units[rng.random(n) < 0.2] = -1  # special tokens
        first += n
        for r in recorders:
            acts, ids = batch(rng, n, 6, ties=True)
            r.update(acts, ids, units=units)
        expected = live_units(recorders, latest=True)
        assert entered_units(recorders, units).tolist() == expected.tolist()


def test_entered_units_after_a_merge_falls_back_to_the_full_scan():
    a, b = txray.Recorder(2, SIZES, mode="all", contexts=2), txray.Recorder(2, SIZES, mode="all", contexts=2)
    ids = {"token": [0, 0]}
    b.update(np.array([[9, 9], [8, 8]], np.float32), ids, units=[100, 101])
    a.update(np.array([[1, 1], [2, 2]], np.float32), ids, units=[0, 1])
    a.merge(b)  # 100 and 101 enter a's contexts now, outside the batch's units
    units = np.array([0, 1], dtype=np.int64)
    assert entered_units([a], units).tolist() == live_units([a], latest=True).tolist()


def test_mark_context_units_checks_its_arguments():
    rec = txray.Recorder(2, SIZES, mode="all", contexts=2)
    rec.update(np.array([[1, 5], [2, 6]], np.float32), {"token": [0, 0]}, units=[10, 11])
    mark = np.zeros(4, dtype=np.uint8)
    assert rec.mark_context_units(9, mark) == 0 and mark.tolist() == [0, 1, 1, 0]
    mark = np.zeros(1, dtype=np.uint8)
    assert rec.mark_context_units(10, mark) == 2 and mark.tolist() == [1]  # both neurons hold 11: outside
    for bad in (np.zeros(4, dtype=np.int64), np.zeros((2, 2), dtype=np.uint8), np.zeros(8, dtype=np.uint8)[::2]):
        with pytest.raises(ValueError, match="mark must be a writable contiguous 1-D uint8 array"):
            rec.mark_context_units(0, bad)
    with pytest.raises(ValueError, match="keeps no contexts"):
        txray.Recorder(2, SIZES, contexts=0).mark_context_units(0, mark)


@pytest.mark.parametrize("mode,k", MODES)
def test_the_engine_table_is_already_ranked_as_top_contexts_ranks(mode, k):
    """Recorder.profile() takes the engine's table as it is, without ranking it again."""
    rng = np.random.default_rng(11)
    rec = txray.Recorder(7, SIZES, mode=mode, k=k, contexts=4)
    for _ in range(5):
        rec.update(*batch(rng, 40, 7, ties=True))
    table = rec.profile().contexts
    assert table.schema == txray.CONTEXTS_SCHEMA
    assert table.equals(txray.top_contexts(table, 4))
