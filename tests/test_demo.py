"""``txray demo`` end to end at a tiny size: every artefact exists and is well-formed."""

from __future__ import annotations

import json

import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

pytest.importorskip("torch")
pytest.importorskip("spacy")
pytest.importorskip("plotly")

import txray  # noqa: E402
from txray.cli import main  # noqa: E402

TINY = [
    "--hidden",
    "16",
    "--embedding",
    "16",
    "--vocab",
    "300",
    "--epochs",
    "3",
    "--tokens",
    "1500",
    "--train-tokens",
    "3000",
    "--tweets",
    "300",
    "--quiet",
]
STAGES = ["wiki_epoch_1", "wiki_epoch_2", "wiki_epoch_3", "tweets_zero_shot", "tweets_supervised"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), "--cache", str(out / "cache"), *TINY]) == 0
    return out


def test_profiles_load(demo):
    for stage in STAGES:
        profile = txray.Profile.load(demo / "profiles" / f"{stage}.parquet")
        assert profile.n_neurons == 16
        assert set(profile.kinds) == {"token", "pos"}
        assert profile.tokens == 1500
        assert profile.name == stage.replace("_", " ").replace("zero shot", "zero-shot")


def test_summary_consistent(demo):
    summary = json.loads((demo / "summary.json").read_text())
    assert [c["question"] for c in summary["comparisons"]] == ["RQ1", "RQ1", "RQ2", "RQ3"]
    for c in summary["comparisons"]:
        assert c["shared"] + c["avoided"] + c["gained"] + c["dead"] == c["neurons"] == 16
        table = pq.read_table(
            demo
            / "comparisons"
            / f"{c['question'].lower()}_{c['a']}_vs_{c['b']}.parquet".replace(" ", "_").replace("-", "_")
        )
        assert table.num_rows == 16
        assert sum(s == "shared" for s in table.column("state").to_pylist()) == c["shared"]
    assert 0 <= summary["f1"]["train"] <= 1 and 0 <= summary["f1"]["test"] <= 1
    text = (demo / "summary.txt").read_text()
    for c in summary["comparisons"]:
        assert f"{c['a']} -> {c['b']}" in text
    assert f"F1 train {summary['f1']['train']:.3f}" in text


def test_tables(demo):
    pruning = pcsv.read_csv(demo / "table2_pruning.csv").to_pylist()
    assert [r["set"] for r in pruning][0] == "none (baseline)"
    assert {r["set"] for r in pruning[1:]} == {"avoided", "20 least massive", "20 most massive", "gained"}
    gained = pcsv.read_csv(demo / "table1_gained_neurons.csv")
    assert gained.column_names == ["neuron", "activation_mass", "mass_share", "length", "top_tokens"]
    summary = json.loads((demo / "summary.json").read_text())
    assert gained.num_rows == summary["gained"] == summary["comparisons"][-1]["gained"]


def test_reports(demo):
    for question in ("rq1", "rq2", "rq3"):
        page = (demo / f"report_{question}.html").read_text()
        assert "hellinger_length" in page and "mass_curve" in page
    index = (demo / "index.html").read_text()
    assert "report_rq1.html" in index and "Table 2" in index
    assert 'href="report_rq1.html#neurons"' in index  # each report's neuron browser
    assert len(list(demo.glob("plotly-*.min.js"))) == 1  # one plotly.js for the three reports


def test_second_run_uses_the_cache(demo, capsys):
    cached = sorted(p.name for p in (demo / "cache").rglob("*.pt"))
    assert main(["demo", "--out", str(demo), "--cache", str(demo / "cache"), *TINY]) == 0
    assert sorted(p.name for p in (demo / "cache").rglob("*.pt")) == cached
    assert "Table 2" in capsys.readouterr().out


def test_bad_size_is_a_usage_error(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--epochs", "2", "--quiet"]) == 2
    assert "epochs must be at least 3" in capsys.readouterr().err
