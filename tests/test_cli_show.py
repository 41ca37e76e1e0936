"""``txray show``: one neuron explained, the list of neurons, JSON output and errors."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import stages as st

import txray
from txray.cli import main
from txray.cli.show import mark_word, print_detail


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("show")
    paths = []
    for prof in st.recorded_stages(n_stages=2, contexts=5):
        path = root / (prof.name.replace(" ", "") + ".parquet")
        prof.save(path)
        paths.append(str(path))
    bare = st.recorded_stages(n_stages=1, seed=3)[0]
    bare.save(root / "bare.parquet")
    narrow = st.recorded_stages(n_stages=1, n_neurons=8)[0]
    narrow.save(root / "narrow.parquet")
    topk = txray.Profile(12, "topk", 2, {k: bare.cells(k) for k in bare.kinds}, bare.mass(), bare.tokens, "topk")
    topk.save(root / "topk.parquet")
    return {
        "a": paths[0],
        "b": paths[1],
        **{name: str(root / f"{name}.parquet") for name in ("bare", "narrow", "topk")},
    }


def run(capsys, *argv):
    code = main(["show", *(str(a) for a in argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def _load(*paths):
    return [txray.Profile.load(p) for p in paths]


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["show", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "txray show wiki.parquet --neuron 17" in text
    assert "(default: 10)" in text and "(default: text)" in text


def test_neuron_against(capsys, files):
    a, b = _load(files["a"], files["b"])
    neuron = int(np.argmax(a.mass()))
    code, out, err = run(capsys, files["a"], "--neuron", neuron, "--against", files["b"])
    assert code == 0 and err == ""
    [cmp] = [r for r in txray.compare(a, b).to_pylist() if r["neuron"] == neuron]
    assert f"neuron {neuron} of 'epoch 1', against 'epoch 2' (12 neurons)" in out
    lines = out.splitlines()
    [b_token] = [line for line in lines if line.startswith("epoch 2") and " token " in line]
    assert cmp["state"] in b_token
    if cmp["hellinger"] is not None:
        assert f"{cmp['hellinger']:.4f}" in b_token
    [a_token] = [line for line in lines if line.startswith("epoch 1") and " token " in line]
    assert "1 of 12" in a_token  # the most massive neuron of A
    assert f" {int(a.lengths('token')[neuron])} " in a_token
    # top features of both kinds with p and count
    top = txray.analysis.top_features(a, "token", 1, neurons=[neuron]).to_pylist()[0]
    assert "top token features (p, count)" in out and "top pos features (p, count)" in out
    assert re.search(rf"\b{top['feature_name']} +{top['p']:.4f} ", out)
    # contexts, the word marked in brackets (stdout is not a terminal here)
    contexts = a.neuron_contexts(neuron).to_pylist()
    assert f"top contexts in epoch 1 ({min(len(contexts), 10)} of {len(contexts)} recorded)" in out
    first = contexts[0]
    o = first["word_offset"]
    marked = first["text"][:o] + "[" + first["word"] + "]" + first["text"][o + len(first["word"]) :]
    assert marked in out
    assert "change epoch 1 -> epoch 2" in out


def test_neuron_json_is_neuron_detail(capsys, files):
    code, out, _ = run(capsys, files["a"], "--neuron", 4, "--against", files["b"], "--format", "json", "--top", 3)
    assert code == 0
    data = json.loads(out)
    detail = txray.neuron_detail(_load(files["a"], files["b"]), 4, top=3, contexts=10)
    assert data == {name: table.to_pylist() for name, table in detail.items()}


def test_neuron_alone_and_without_contexts(capsys, files):
    code, out, _ = run(capsys, files["bare"], "--neuron", 0, "--kind", "pos", "--top", 2)
    assert code == 0
    assert "top pos features" in out and "top token features" not in out
    assert "top contexts in epoch 1: not recorded in this profile" in out
    assert "change" not in out


def test_contexts_zero_shows_none(capsys, files):
    code, out, _ = run(capsys, files["a"], "--neuron", 1, "--contexts", 0)
    assert code == 0 and "(0 of " in out and "[" not in out.split("top contexts")[1]


def test_list_most_massive(capsys, files):
    a = _load(files["a"])[0]
    code, out, _ = run(capsys, files["a"], "--top", 3)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "the 3 most massive of 12 neurons of 'epoch 1', feature kind 'token'"
    order = np.argsort(-a.mass(), kind="stable")[:3]
    assert [int(line.split()[0]) for line in lines[2:]] == order.tolist()
    assert [int(line.split()[2]) for line in lines[2:]] == [1, 2, 3]  # the mass rank column


def test_list_most_changed(capsys, files):
    a, b = _load(files["a"], files["b"])
    code, out, _ = run(capsys, files["a"], "--against", files["b"], "--top", 4, "--by", "changed")
    assert code == 0
    cmp = txray.analysis.changed_neurons(txray.compare(a, b), k=4)
    most = [r["neuron"] for r in cmp.to_pylist() if r["group"] == "most"]
    lines = out.splitlines()
    assert "most changed" in lines[0]
    assert [int(line.split()[0]) for line in lines[2:]] == most
    assert all(line.split()[1] == "shared" for line in lines[2:])
    code, out, _ = run(capsys, files["a"], "--against", files["b"], "--top", 4, "--by", "changed", "--format", "json")
    data = json.loads(out)
    assert data["neurons"] == most and data["by"] == "changed"
    assert [r["neuron"] for r in data["rows"]] == [n for n in most for _ in range(2)]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--neuron", "12"], "--neuron 12 is out of range: {a} has 12 neurons (0..11)"),
        (["--neuron", "-1"], "--neuron -1 is out of range"),
        (["--neuron", "1", "--kind", "lemma"], "--kind lemma: {a} has no feature kind 'lemma'; it has token, pos"),
        (["--kind", "token,pos"], "the list of neurons uses one feature kind"),
        (["--by", "changed"], "--by changed needs --against"),
        (["--neuron", "1", "--by", "mass"], "--by orders the list of neurons"),
        (["--neuron", "1", "--against", "{narrow}"], "cannot show {a} against {narrow}: profiles"),
        (["--neuron", "1", "--against", "{topk}"], "cannot show {a} against {topk}: profile 'epoch 1' was recorded"),
        (["--neuron", "1", "--contexts", "-1"], "--contexts must be 0 or more"),
        (["--against", "{a}.missing"], "no profile at {a}.missing"),
    ],
)
def test_errors(capsys, files, argv, message):
    argv = [x.format(**files) for x in argv]
    code, out, err = run(capsys, files["a"], *argv)
    assert code == 2 and out == ""
    assert message.format(**files) in err and "Traceback" not in err


def test_bad_top_is_an_argparse_error(capsys, files):
    with pytest.raises(SystemExit) as exit_:
        main(["show", files["a"], "--top", "0"])
    assert exit_.value.code == 2


def test_word_marking():
    row = {"word": "cat", "text": "the cat sat", "word_offset": 4, "unit": 9}
    assert mark_word(row) == "the [cat] sat"
    assert mark_word(row, styled=True) == "the \033[1mcat\033[0m sat"
    assert mark_word({"word": "cat", "text": None, "word_offset": None, "unit": 9}) == "[cat]"
    assert mark_word({"word": None, "text": None, "word_offset": None, "unit": 9}) == "unit 9"
    # an escape sequence in the corpus is shown, not sent to the terminal
    hostile = {"word": "x\x1b[2J", "text": "a x\x1b[2J b", "word_offset": 2, "unit": 0}
    assert "\x1b" not in mark_word(hostile) and "\\x1b[2J" in mark_word(hostile)


def test_bold_on_a_terminal(files, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    profiles = _load(files["a"])
    detail = txray.neuron_detail(profiles, 2)
    out = Terminal()
    from txray.cli.show import _styled

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert _styled(out)
    print_detail(detail, profiles, 2, out, styled=_styled(out))
    assert "\033[1m" in out.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    assert not _styled(out)
