"""Corpus readers: text, CSV, Parquet, iterables; limit_tokens; errors."""

from __future__ import annotations

import itertools

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from corpora_data import TWEETS, wiki_extracts

import txray
from txray.corpus import split_words


def words_of(corpus, **kw):
    return [e.words for e in corpus.examples(**kw)]


def test_split_words():
    assert split_words("It's well-known, isn't it?") == ["It's", "well-known", ",", "isn't", "it", "?"]


def test_text_file_one_sequence_a_line(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("the cat sat\n\n  \nthe dog , ran\n", encoding="utf-8")
    corpus = txray.Corpus(path, split=txray.split_whitespace)
    assert words_of(corpus) == [["the", "cat", "sat"], ["the", "dog", ",", "ran"]]
    assert words_of(corpus) == words_of(corpus)  # files are re-readable
    assert corpus.name == "c.txt" and corpus.reiterable


def test_real_csv_columns_stream():
    corpus = txray.Corpus(TWEETS)
    first = list(itertools.islice(corpus.examples(), 3))
    assert first[0].record["sentiment"] == "negative"
    assert first[0].words[:4] == ["I", "just", "don't", "trust"]
    # The file holds stray non-UTF-8 bytes: decoded leniently, every row read.
    assert sum(1 for _ in corpus.records()) > 30000


def test_parquet_and_tsv(tmp_path):
    table = pa.table({"sentence": ["a b", "c d e"], "label": ["x", "y"]})
    pq.write_table(table, tmp_path / "c.parquet")
    corpus = txray.Corpus(tmp_path / "c.parquet", text="sentence")
    assert [(e.words, e.record["label"]) for e in corpus.examples()] == [(["a", "b"], "x"), (["c", "d", "e"], "y")]
    (tmp_path / "c.tsv").write_text("text\tlabel\nhello world\tz\n", encoding="utf-8")
    assert words_of(txray.Corpus(tmp_path / "c.tsv")) == [["hello", "world"]]
    with pytest.raises(KeyError, match="no column 'text'.*sentence"):
        list(txray.Corpus(tmp_path / "c.parquet").examples())


def test_iterables_of_strings_lists_and_dicts():
    assert words_of(txray.Corpus(["a b", ["c", "d"], {"text": "e"}])) == [["a", "b"], ["c", "d"], ["e"]]
    records = wiki_extracts(3)
    corpus = txray.Corpus(records)
    assert [e.record["topic"] for e in corpus.examples()] == [r["topic"] for r in records]
    with pytest.raises(TypeError, match="yielded a int"):
        list(txray.Corpus([1]).examples())
    with pytest.raises(TypeError, match="a path or an iterable"):
        txray.Corpus(42)


def test_one_shot_iterator_is_read_once():
    corpus = txray.Corpus(iter(["a b", "c"]))
    assert not corpus.reiterable
    assert len(words_of(corpus)) == 2
    with pytest.raises(ValueError, match="already read"):
        words_of(corpus)


def test_limit_tokens_cuts_the_last_sequence():
    corpus = txray.Corpus(["a b c", "d e f", "g h"])
    assert words_of(corpus, limit_tokens=5) == [["a", "b", "c"], ["d", "e"]]
    assert words_of(corpus, limit_tokens=3) == [["a", "b", "c"]]
    with pytest.raises(ValueError, match="limit_tokens"):
        words_of(corpus, limit_tokens=0)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="corpus file not found"):
        txray.Corpus("/nonexistent/corpus.txt")


def test_record_model_limit_tokens_and_one_shot_errors():
    torch = pytest.importorskip("torch")
    words = ["<unk>"] + [chr(97 + i) for i in range(8)]
    model = torch.nn.Sequential(torch.nn.Embedding(len(words), 3))
    tok = txray.VocabTokenizer(words)
    prof = txray.record_model(model, tok, ["a b c", "d e f", "g h"], ["0"], limit_tokens=5, progress=False)["0"]
    assert prof.tokens == 5 and prof.metadata["limit_tokens"] == 5
    with pytest.raises(ValueError, match="read only once"):
        txray.record_model(model, tok, iter(["a b"]), ["0"], progress=False)
    # With a given vocabulary no first pass is needed: a stream works.
    streamed = txray.record_model(
        model, tok, iter(["a b"]), ["0"], features=[txray.Token(vocabulary=words)], progress=False
    )["0"]
    assert streamed.tokens == 2
