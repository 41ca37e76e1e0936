"""The compare / nearest / report / prune subcommands through txray.cli.main, errors included."""

from __future__ import annotations

import json
import textwrap

import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
import stages as st

import txray
from txray.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("profiles")
    paths = []
    for prof in st.recorded_stages():
        path = root / (prof.name.replace(" ", "") + ".parquet")
        prof.save(path)
        paths.append(str(path))
    wide = st.recorded_stages(n_stages=1, n_neurons=30, seed=5)[0]
    wide.save(root / "wide.parquet")
    return {"stages": paths, "wide": str(root / "wide.parquet"), "root": root}


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("command", ["compare", "nearest", "report", "prune"])
def test_help_shows_an_example(capsys, command):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "example:" in text and f"txray {command} " in text


def test_compare(capsys, files, tmp_path):
    a, b = files["stages"][:2]
    code, out, _ = run(capsys, "compare", a, b, "--kind", "token", "-o", tmp_path / "cmp.parquet")
    assert code == 0
    expected = txray.compare(txray.Profile.load(a), txray.Profile.load(b), "token")
    info = txray.summary(expected)
    assert f"shared {info['shared']}" in out and f"mean {info['mean_hellinger']:.4f}" in out
    assert pq.read_table(tmp_path / "cmp.parquet").select(expected.column_names).equals(expected)
    code, out, _ = run(capsys, "compare", a, b, "--json", "-o", tmp_path / "cmp.csv")
    assert code == 0 and json.loads(out.splitlines()[0])["shared"] == info["shared"]
    assert pcsv.read_csv(tmp_path / "cmp.csv").num_rows == expected.num_rows


@pytest.mark.parametrize(
    "argv, message",
    [
        (["compare", "missing.parquet", "{a}"], "no profile at missing.parquet"),
        (["compare", "{a}", "{b}", "--kind", "label"], "has no feature kind 'label'"),
        (["compare", "{a}", "{b}", "-o", "cmp.txt"], "must end in .parquet or .csv"),
        (["compare", "{a}", "{b}", "-o", "/no/such/dir/c.parquet"], "does not exist"),
        (["compare", "{a}", "{wide}"], "use txray.nearest"),
    ],
)
def test_compare_errors(capsys, files, argv, message):
    fill = {"a": files["stages"][0], "b": files["stages"][1], "wide": files["wide"]}
    code, _, err = run(capsys, *[x.format(**fill) for x in argv])
    assert code == 2 and err.startswith("txray compare: error:") and message in err


def test_nearest(capsys, files, tmp_path):
    a, wide = files["stages"][0], files["wide"]
    code, out, _ = run(
        capsys, "nearest", a, wide, "-k", "3", "-o", tmp_path / "n.parquet", "--match", tmp_path / "m.csv"
    )
    assert code == 0 and "have a nearest neuron" in out and "matched pairs" in out
    table = pq.read_table(tmp_path / "n.parquet")
    expected = txray.nearest(txray.Profile.load(a), txray.Profile.load(wide), "token", k=3)
    assert table.equals(expected)
    assert pcsv.read_csv(tmp_path / "m.csv").num_rows == 12
    with pytest.raises(SystemExit) as exit_:
        main(["nearest", a, wide, "-k", "0"])
    assert exit_.value.code == 2
    assert "positive integer" in capsys.readouterr().err


def report_plotly_js() -> str:
    from txray.report import plotly_js_name

    return plotly_js_name("cartesian")  # small reports: every figure is cartesian


def test_report(capsys, files, tmp_path, monkeypatch):
    pytest.importorskip("plotly")
    tags = tmp_path / "tags.tsv"
    tags.write_text("".join(f"{t}\t{p}\n" for t, p in st.token_pos(20).items()))
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-chrome"))  # PNG export must be skipped, not fail
    with pytest.warns(RuntimeWarning):
        code, out, _ = run(
            capsys,
            "report",
            *files["stages"],
            "-o",
            tmp_path / "r.html",
            "-k",
            "2",
            "--token-pos",
            tags,
            "--png",
            tmp_path / "png",
            "--title",
            "Three epochs",
        )
    assert code == 0 and "9 figures" in out and "no PNG written" in out
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<title>Three epochs</title>" in page
    assert "<td>epoch 1</td>" in page
    assert "shared by the reports of its folder" in out and (tmp_path / report_plotly_js()).exists()

    code, out, _ = run(capsys, "report", *files["stages"][:2], "-o", tmp_path / "inline.html", "--inline-plotly")
    assert code == 0 and "shared by" not in out
    assert "data-plotly-src=" not in (tmp_path / "inline.html").read_text(encoding="utf-8")
    with pytest.raises(SystemExit) as exit_:
        main(["report", *map(str, files["stages"][:2]), "-o", str(tmp_path / "r2.html"), "--contexts", "0"])
    assert exit_.value.code == 2 and "--contexts" in capsys.readouterr().err

    code, _, err = run(capsys, "report", *files["stages"], "-o", tmp_path / "r.pdf")
    assert code == 2 and "FILE.html" in err
    tags.write_text("just-one-column\n")
    code, _, err = run(capsys, "report", files["stages"][0], "-o", tmp_path / "r.html", "--token-pos", tags)
    assert code == 2 and "tags.tsv:1" in err


ENTRY = """
import torch

def load():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 12), torch.nn.Tanh(), torch.nn.Linear(12, 2))
    x = torch.randn(20, 4, generator=torch.Generator().manual_seed(1))

    def evaluate(m):
        with torch.no_grad():
            out = m(x)
        return {"train": float(out[:10].abs().mean()), "test": float(out[10:].abs().mean())}

    return model, evaluate

def broken():
    return 42
"""


def test_prune(capsys, files, tmp_path):
    pytest.importorskip("torch")
    entry = tmp_path / "task.py"
    entry.write_text(textwrap.dedent(ENTRY))
    after, before = files["stages"][1], files["stages"][0]
    code, out, _ = run(
        capsys,
        "prune",
        f"{entry}:load",
        "--layer",
        "1",
        "--profile",
        after,
        "--before",
        before,
        "-k",
        "2",
        "--set",
        "mine=0,3",
        "-o",
        tmp_path / "t.csv",
    )
    assert code == 0
    table = pcsv.read_csv(tmp_path / "t.csv")
    assert table.column("set").to_pylist() == [
        "none (baseline)",
        "avoided",
        "2 least massive",
        "2 most massive",
        "gained",
        "mine",
    ]
    assert "mass removed" in out and "change train" in out
    code, out, _ = run(capsys, "prune", f"{entry}:load", "--layer", "1", "--profile", after)
    assert code == 0 and "2 least massive" not in out and "20 most massive" in out


@pytest.mark.parametrize(
    "entry, extra, message",
    [
        ("nocolon", [], "must look like 'module:function'"),
        ("{task}:missing", [], "has no function 'missing'"),
        ("{task}:broken", [], "must return (model, evaluate)"),
        ("no_such_module_xyz:load", [], "cannot import 'no_such_module_xyz'"),
        ("{task}:load", ["--set", "mine"], "--set must look like NAME=3,17,42"),
        ("{task}:load", ["--layer", "nope"], "no layer 'nope'"),
    ],
)
def test_prune_errors(capsys, files, tmp_path, entry, extra, message):
    pytest.importorskip("torch")
    task = tmp_path / "task.py"
    task.write_text(textwrap.dedent(ENTRY))
    argv = ["prune", entry.format(task=task), "--layer", "1", "--profile", files["stages"][1], *extra]
    code, _, err = run(capsys, *argv)
    assert code == 2 and err.startswith("txray prune: error:") and message in err


def test_prune_needs_layer(capsys, files):
    with pytest.raises(SystemExit) as exit_:
        main(["prune", "x:y", "--profile", files["stages"][0]])
    assert exit_.value.code == 2 and "--layer" in capsys.readouterr().err
