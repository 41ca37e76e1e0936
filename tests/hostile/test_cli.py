"""Hostile command lines (issue 15, part 4): every problem with the user's
input exits with code 2 and a message naming the argument or file, before
any work is done, and nothing is written.

The record cases pass a model path that does not exist: the error they get
proves that the check came before the model was loaded."""

from __future__ import annotations

import os

import pytest

from txray.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "wiki.txt"
    path.write_text("the cat sat on the mat\nit was well-known\n", encoding="utf-8")
    return path


def record(capsys, tmp_path, corpus, *extra, out=None):
    model = tmp_path / "no" / "model"  # loading it would fail with "model directory not found"
    return run(capsys, "record", model, corpus, "--layer", "mlp", "--out", out or tmp_path / "out", *extra)


def test_record_refuses_a_file_at_out_before_any_work(capsys, tmp_path, corpus):
    existing = tmp_path / "profiles"
    existing.write_text("not a folder")
    code, _, err = record(capsys, tmp_path, corpus, out=existing)
    assert code == 2 and err.startswith("txray record: error: --out")
    assert "is a file" in err and "model" not in err
    assert existing.read_text() == "not a folder"


def test_record_refuses_an_out_below_a_file(capsys, tmp_path, corpus):
    (tmp_path / "f").write_text("x")
    code, _, err = record(capsys, tmp_path, corpus, out=tmp_path / "f" / "sub")
    assert code == 2 and "cannot be made" in err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes to read-only folders")
def test_record_refuses_a_read_only_out_before_any_work(capsys, tmp_path, corpus):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        for out in (locked, locked / "new"):
            code, _, err = record(capsys, tmp_path, corpus, out=out)
            assert code == 2 and "not writable" in err and "model" not in err
    finally:
        locked.chmod(0o755)


def test_record_label_on_a_text_corpus(capsys, tmp_path, corpus):
    code, _, err = record(capsys, tmp_path, corpus, "--feature", "label")
    assert code == 2 and "Traceback" not in err
    assert "--feature label reads column 'label'" in err and str(corpus) in err and "text file" in err
    code, _, err = record(capsys, tmp_path, corpus, "--feature", "column:topic")
    assert code == 2 and "column 'topic'" in err


def test_record_label_names_the_missing_column_of_a_table(capsys, tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("text,sentiment\nhello there,pos\n", encoding="utf-8")
    code, _, err = record(capsys, tmp_path, table, "--feature", "label")
    assert code == 2 and "'sentiment'" in err and "--label" in err


def test_column_error_is_a_key_error_and_a_value_error(corpus):
    import txray

    feature = txray.features.Label()
    example = next(txray.Corpus(corpus).examples())
    with pytest.raises(KeyError) as info:
        feature.strings(example)
    assert isinstance(info.value, ValueError) and str(info.value).startswith("feature 'label' reads column")


def test_record_device_cuda_without_cuda(capsys, tmp_path, corpus):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = record(capsys, tmp_path, corpus, "--device", "cuda")
    assert code == 2 and "--device cuda" in err and "--device cpu" in err and "model" not in err


@pytest.mark.parametrize(
    "tagger, message",
    [
        ("flair:/no/such/tagger.pt", "flair tagger model file not found: /no/such/tagger.pt"),
        ("flair:./models/pos", "file not found"),
        ("nltk", "unknown tagger 'nltk'"),
    ],
)
def test_record_bad_tagger(capsys, tmp_path, corpus, tagger, message):
    code, _, err = record(capsys, tmp_path, corpus, "--feature", "pos", "--tagger", tagger)
    assert code == 2 and f"--tagger {tagger}" in err and message in err
    assert "repo" not in err.lower() and "model directory" not in err


def test_flair_tagger_path_is_checked_before_flair_loads():
    from txray.taggers import FlairTagger

    with pytest.raises(FileNotFoundError, match="flair tagger model file not found"):
        FlairTagger("/no/such/tagger.pt")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["compare", "A.parquet", "B.parquet", "-o", "{dir}"], "is a directory"),
        (["nearest", "A.parquet", "B.parquet", "-o", "{dir}"], "is a directory"),
        (["nearest", "A.parquet", "B.parquet", "--match", "{dir}"], "is a directory"),
        (["compare", "A.parquet", "B.parquet", "-o", "{missing}/t.csv"], "does not exist"),
        (["report", "A.parquet", "-o", "{dir}"], "is a directory"),
        (["report", "A.parquet", "-o", "r.html", "--png", "{file}"], "--png"),
        (["prune", "nocolon", "--layer", "1", "--profile", "A.parquet", "-o", "{dir}"], "is a directory"),
        (["demo", "--out", "{file}"], "--out"),
    ],
)
def test_outputs_are_checked_before_any_work(capsys, tmp_path, argv, message):
    pytest.importorskip("plotly")
    folder = tmp_path / "out.parquet"
    folder.mkdir()
    (tmp_path / "afile").write_text("x")
    if argv[-1] == "{dir}" and argv[0] == "report":
        folder = tmp_path / "out.html"
        folder.mkdir()
    names = {"dir": folder, "missing": tmp_path / "nope", "file": tmp_path / "afile"}
    argv = [a.format(**names) for a in argv]
    argv = [str(tmp_path / a) if a.endswith((".parquet", ".html")) and "/" not in a else a for a in argv]
    code, _, err = run(capsys, *argv)
    assert code == 2 and err.startswith(f"txray {argv[0]}: error:") and message in err
    assert "A.parquet" not in err  # the profiles (which do not exist) were not read yet
    assert (tmp_path / "afile").read_text() == "x" and folder.is_dir()


@pytest.mark.parametrize(
    "out, message",
    [("{plain}", "not a txray profile"), ("{missing}/m.parquet", "does not exist")],
)
def test_merge_checks_its_output_before_reading_parts(capsys, tmp_path, out, message):
    plain = tmp_path / "plain.parquet"  # a folder that is not a profile: a save would refuse it at the end
    plain.mkdir()
    (plain / "keep.txt").write_text("x")
    out = out.format(plain=plain, missing=tmp_path / "nope")
    parts = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    for part in parts:
        part.mkdir()  # exist, so that only the output check can fail first
    code, _, err = run(capsys, "merge", *parts, "-o", out)
    assert code == 2 and err.startswith("txray merge: error:") and message in err
    assert (plain / "keep.txt").read_text() == "x"


def _a_profile(path):
    import numpy as np

    import txray

    cells = txray.KindCells(
        np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0), np.zeros(0), np.ones(2), ["a", "b"]
    )
    txray.Profile(3, "max1", None, {"token": cells}, np.zeros(3), 1, "p").save(path)


def test_record_refuses_an_out_inside_a_profile(capsys, tmp_path, corpus):
    """The next save of the outer profile would replace its folder and delete what was written in it."""
    _a_profile(tmp_path / "p.parquet")
    code, _, err = record(capsys, tmp_path, corpus, out=tmp_path / "p.parquet" / "more")
    assert code == 2 and "inside the profile" in err and "model" not in err
    code, _, err = record(capsys, tmp_path, corpus, out=tmp_path / "p.parquet")
    assert code == 2 and "is a profile" in err
    assert sorted(os.listdir(tmp_path / "p.parquet")) == sorted(
        ["cells.parquet", "_neurons.parquet", "_vocabulary-token.parquet", "_profile.json"]
    )


def test_table_output_inside_a_profile_is_refused(capsys, tmp_path):
    _a_profile(tmp_path / "a.parquet")
    code, _, err = run(
        capsys, "compare", tmp_path / "a.parquet", tmp_path / "a.parquet", "--out", tmp_path / "a.parquet" / "c.csv"
    )
    assert code == 2 and "inside the profile" in err
    assert not (tmp_path / "a.parquet" / "c.csv").exists()
