"""Corpus readers: text, CSV, Parquet, iterables; limit_tokens; errors."""

from __future__ import annotations

import itertools
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from corpora_data import TWEETS, wiki_extracts

import txray
from txray.corpus import Numbering, split_words


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


# Hugging Face datasets: built here, offline; the tests skip without the package.


@pytest.fixture
def hf():
    return pytest.importorskip("datasets")


SENTENCES = {"sentence": ["the cat sat", "", "dogs bark at night", "a b"], "label": ["x", "y", "z", "x"]}


def test_dataset_and_iterable_dataset_stream_rows(hf):
    dataset = hf.Dataset.from_dict(SENTENCES)
    expected = [(["the", "cat", "sat"], "x"), (["dogs", "bark", "at", "night"], "z"), (["a", "b"], "x")]
    for source in (dataset, dataset.to_iterable_dataset()):
        corpus = txray.Corpus(source, text="sentence")
        assert corpus.reiterable and corpus.name == type(source).__name__
        assert [(e.words, e.record["label"]) for e in corpus.examples()] == expected
        assert [(e.words, e.record["label"]) for e in corpus.examples()] == expected  # read again
    assert txray.Corpus(dataset, text="sentence").size() == (4, "seq")
    assert [e.position for e in txray.Corpus(dataset, text="sentence").examples()] == [1, 3, 4]
    assert txray.Corpus(dataset.to_iterable_dataset(), text="sentence").size() is None
    # A dataset that lists its columns is checked before any reading.
    with pytest.raises(
        KeyError, match=r"dataset 'Dataset' has no column 'text'; its columns are \['sentence', 'label'\]"
    ):
        txray.Corpus(dataset)
    with pytest.raises(TypeError, match=r"not a DatasetDict of splits 'train', 'test': pass e.g. dataset\['train'\]"):
        txray.Corpus(hf.DatasetDict(train=dataset, test=dataset), text="sentence")


def test_iterable_dataset_is_never_read_ahead_whole(hf):
    made = []

    def rows():
        for i in range(100_000):
            made.append(i)
            yield {"text": f"word{i} next"}

    corpus = txray.Corpus(hf.IterableDataset.from_generator(rows))
    first = list(itertools.islice(corpus.examples(), 3))
    assert [e.words for e in first] == [["word0", "next"], ["word1", "next"], ["word2", "next"]]
    assert len(made) < 1_000  # what the stream had made by then: a read-ahead buffer at most, not the corpus


def test_saved_dataset_folder(hf, tmp_path):
    dataset = hf.Dataset.from_dict(SENTENCES)
    dataset.save_to_disk(tmp_path / "sst", max_shard_size="1KB")
    corpus = txray.Corpus(tmp_path / "sst", text="sentence")
    assert corpus.name == "sst" and corpus.label == "sst" and corpus.size() == (4, "seq")
    assert words_of(corpus) == [["the", "cat", "sat"], ["dogs", "bark", "at", "night"], ["a", "b"]]
    assert corpus._source.cache_files  # memory-mapped from its files, not loaded into memory
    with pytest.raises(KeyError, match=r"sst has no column 'text'; its columns are \['sentence', 'label'\]"):
        txray.Corpus(tmp_path / "sst")
    hf.DatasetDict(train=dataset, test=dataset).save_to_disk(tmp_path / "splits")
    with pytest.raises(ValueError, match=r"several splits \(test, train\); give the folder of one split, e.g. .*test"):
        txray.Corpus(tmp_path / "splits", text="sentence")
    (tmp_path / "plain").mkdir()
    with pytest.raises(FileNotFoundError, match="not one that Dataset.save_to_disk wrote"):
        txray.Corpus(tmp_path / "plain")


def test_record_model_on_a_dataset_equals_the_same_records_as_a_list(hf):
    torch = pytest.importorskip("torch")
    words = ["<unk>", "the", "cat", "sat", "dogs", "bark", "at", "night", "a", "b"]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(len(words), 6))
    tok = txray.VocabTokenizer(words)
    dataset = hf.Dataset.from_dict(SENTENCES)
    features = ["token", txray.Label("label")]
    want = txray.record_model(
        model, tok, txray.Corpus(SENTENCES_AS_RECORDS, text="sentence"), ["0"], features, progress=False
    )
    for source in (dataset, dataset.to_iterable_dataset()):
        got = txray.record_model(model, tok, txray.Corpus(source, text="sentence"), ["0"], features, progress=False)
        for kind in ("token", "label"):
            assert got["0"].table(kind).equals(want["0"].table(kind))
        assert got["0"].tokens == want["0"].tokens == 9


SENTENCES_AS_RECORDS = [dict(zip(SENTENCES, row)) for row in zip(*SENTENCES.values())]


def test_dataset_names_and_an_iterable_dataset_of_known_size(hf):
    info = hf.DatasetInfo(dataset_name="toy")
    dataset = hf.Dataset.from_dict({"text": ["a b", "", "c"]}, info=info, split="train")
    assert txray.Corpus(dataset).name == txray.Corpus(dataset).label == "toy-train"
    assert txray.Corpus(dataset, name="mine").label == "mine"
    # A stream whose info holds its split's size (as a hub dataset's does) has a total; others have none.
    stream = hf.IterableDataset.from_generator(lambda: iter([{"text": "a b"}, {"text": ""}, {"text": "c"}]))
    assert txray.Corpus(stream).size() is None
    stream.info.splits = hf.SplitDict({"train": hf.SplitInfo(name="train", num_examples=3)})
    corpus = txray.Corpus(stream)
    assert corpus.size() == (3, "seq") and [e.position for e in corpus.examples()] == [1, 3]


@pytest.mark.parametrize(
    ("name", "content"),
    [("ragged.csv", b"text,label\na b,x\nc\n"), ("broken.parquet", b"not a parquet file")],
)
def test_a_table_that_does_not_parse_is_an_error_naming_the_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: "):
        list(txray.Corpus(path).examples())


def test_words_of_a_record_and_positioned_records():
    corpus = txray.Corpus(["It's here.", ["two", "words"], {"text": None}, {"text": "", "x": 1}])
    assert [corpus.words_of(r) for _, r in corpus.positioned_records()] == [
        ["It's", "here", "."],
        ["two", "words"],
        [],
        [],
    ]
    assert [p for p, _ in corpus.positioned_records()] == [1, 2, 3, 4]  # records read so far
    with pytest.raises(KeyError, match="has no column 'text'"):
        corpus.words_of({"body": "x"})
    with pytest.raises(TypeError, match="must hold a text or a list of words, not int"):
        corpus.words_of({"text": 5})


def test_numbering_skips_records_without_words_and_cuts_at_limit_tokens():
    numbering = Numbering(limit_tokens=5)
    made = [numbering.example(p, {"text": ""}, w) for p, w in [(10, ["a", "b"]), (20, []), (30, ["c", "d", "e", "f"])]]
    assert made[1] is None and numbering.done
    first, last = made[0], made[2]
    assert (first.index, first.words, first.first_word, first.position) == (0, ["a", "b"], 0, 10)
    assert (last.index, last.words, last.first_word, last.position) == (1, ["c", "d", "e"], 2, 30)  # cut short
    assert numbering.example(40, {}, ["g"]) is None  # nothing after the limit
    with pytest.raises(ValueError, match="limit_tokens must be a positive number of words, not 0"):
        Numbering(0)
