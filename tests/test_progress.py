"""Progress bars: a total and an ETA for files and sized sources, and bars for the
vocabulary and tagging passes; how far the reader got (Example.position)."""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import txray

torch = pytest.importorskip("torch")
WORDS = ["<unk>"] + [chr(97 + i) for i in range(8)]


class FakeTagger:
    """A tagger that tags every word X (what is shown is the bar, not the tags)."""

    key = "fake-tagger"
    tags = ["X", "Y"]

    def tag(self, sentences):
        return [["X"] * len(words) for words in sentences]


def model_and_tokenizer():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Embedding(len(WORDS), 3)), txray.VocabTokenizer(WORDS)


def bar_states(err: str) -> dict[str, list[str]]:
    """Every state each bar showed, by its name."""
    states: dict[str, list[str]] = {}
    for line in re.split(r"[\r\n]", err):
        match = re.match(r"(?:\x1b\[A)*(txray [a-z ]+):(.*)", line.strip())
        if match:
            states.setdefault(match[1], []).append(match[2])
    return states


def final_bars(err: str) -> dict[str, str]:
    """The last state each bar showed, by its name."""
    return {name: shown[-1] for name, shown in bar_states(err).items()}


def test_positions_count_bytes_of_text_and_csv_files_and_records_otherwise(tmp_path):
    text = tmp_path / "c.txt"
    text.write_bytes("a b c\n\nd é f\r\ng h\n".encode())
    corpus = txray.Corpus(text)
    assert corpus.size() == (text.stat().st_size, "B")
    positions = [e.position for e in corpus.examples()]
    assert positions == sorted(positions) and positions[-1] == text.stat().st_size
    assert [e.words for e in corpus.examples()] == [["a", "b", "c"], ["d", "é", "f"], ["g", "h"]]
    csv = tmp_path / "c.csv"
    csv.write_text("text,label\na b,x\nc,y\n", encoding="utf-8")
    assert [e.position for e in txray.Corpus(csv).examples()][-1] == csv.stat().st_size
    pq.write_table(pa.table({"text": ["a", "", "b c"]}), tmp_path / "c.parquet")
    parquet = txray.Corpus(tmp_path / "c.parquet")
    assert parquet.size() == (3, "seq") and [e.position for e in parquet.examples()] == [1, 3]
    assert txray.Corpus(["a", "b"]).size() == (2, "seq")
    assert txray.Corpus(iter(["a", "b"])).size() is None


def test_record_shows_the_file_size_as_total_and_bars_for_vocabulary_and_tags(tmp_path, capsys):
    model, tok = model_and_tokenizer()
    path = tmp_path / "c.txt"
    path.write_text("a b c\nd e f\n\ng h\n" * 10, encoding="utf-8")
    size = path.stat().st_size  # 170 bytes: shown whole
    cache = tmp_path / "tags"
    features = ["token", txray.Pos(FakeTagger())]
    txray.record_model(model, tok, txray.Corpus(path), ["0"], features, cache_dir=cache)
    bars = final_bars(capsys.readouterr().err)
    assert set(bars) == {"txray vocabulary", "txray tag pos", "txray record"}
    for name in bars:
        assert re.match(rf"\s*100%.*\| {size}/{size} \[", bars[name]), bars[name]
        assert "80 words" in bars[name]
    assert "chunks: 1 tagged, 0 from cache" in bars["txray tag pos"]
    # The second stage of the same corpus: its tags come from the cache, and the bar says so.
    txray.record_model(model, tok, txray.Corpus(path), ["0"], features, cache_dir=cache)
    assert "chunks: 0 tagged, 1 from cache" in final_bars(capsys.readouterr().err)["txray tag pos"]


def test_bar_totals_words_with_limit_tokens_and_has_none_for_a_stream(capsys):
    model, tok = model_and_tokenizer()
    corpus = ["a b c", "d e f", "g h"] * 5
    txray.record_model(model, tok, corpus, ["0"], limit_tokens=20)
    bars = final_bars(capsys.readouterr().err)
    assert set(bars) == {"txray vocabulary", "txray record"}
    assert all(re.match(r"\s*100%.*\| 20\.0/20\.0 \[", bar) for bar in bars.values()), bars  # tqdm's 3 digits
    # A list is sized: its records are the total; a generator is not: a count and a rate, no total.
    txray.record_model(model, tok, corpus, ["0"])
    assert re.match(r"\s*100%.*\| 15\.0/15\.0 \[", final_bars(capsys.readouterr().err)["txray record"])
    txray.record_model(model, tok, iter(corpus), ["0"], features=[txray.Token(vocabulary=WORDS)])
    shown = bar_states(capsys.readouterr().err)["txray record"]
    assert re.match(r"\s*0\.00word \[00:00, \?word/s\]", shown[0]), shown  # no total while it runs
    assert re.match(r"\s*100%.*\| 40\.0/40\.0 \[", shown[-1]), shown  # complete once the stream ended


def test_shard_bar_follows_the_whole_stream(capsys):
    model, tok = model_and_tokenizer()
    corpus = ["a b c", "d e f", "g h"] * 5
    txray.record_model(model, tok, corpus, ["0"], features=[txray.Token(vocabulary=WORDS)], shard=(1, 2))
    # Shard 1 of 2 has 7 sequences (19 words), the last at record 14 of 15; the bar shows the whole stream.
    assert re.match(r"\s*100%.*\| 15\.0/15\.0 \[.*, 19 words\]", final_bars(capsys.readouterr().err)["txray record"])


def test_no_bar_when_progress_is_off(capsys):
    model, tok = model_and_tokenizer()
    txray.record_model(model, tok, ["a b", "c"], ["0"], [txray.Pos(FakeTagger())], progress=False, cache_dir=False)
    assert capsys.readouterr().err == ""


def test_record_bar_follows_the_words_recorded_not_those_read_ahead(capsys):
    from txray.progress import Progress

    corpus = txray.Corpus(["a b c", "d e", "f g h i"] * 2)
    with Progress(corpus) as progress:
        bar = progress.bar("txray record")
        taken = list(bar.read(corpus.examples()))  # a pool read ahead: nothing is recorded yet
        assert len(taken) == 6 and bar.count == 0
        bar.done(4)  # the first sequence and part of the second: the bar is at the end of the first
        assert bar.count == 1 and bar.words == 4
        bar.done(1 + 4 + 3)
        assert bar.count == 4
        bar.done(6)
        assert bar.count == 6 and bar.words == 18
    assert "txray record" in capsys.readouterr().err
