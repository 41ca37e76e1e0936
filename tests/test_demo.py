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
    "--val-tokens",
    "1000",
    "--seeds",
    "2",
    "--controls",
    "10",
    "--bootstrap",
    "200",
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
    for label in ("RQ1 epoch 1 -> late", "RQ1 last two epochs", "RQ2 zero-shot", "RQ3 supervised"):
        assert label in text
    assert f"F1 train {summary['f1_summary']['train']['mean']:.3f}" in text


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


def test_models_for_the_server(demo):
    from txray.demo.models import read_models

    models = read_models(demo)
    assert [p.name for p in models.stages] == [f"{s}.parquet" for s in STAGES]
    assert models.load_lm().decoder.out_features == len(models.vocab)  # the state dict fits the vocabulary
    assert models.load_classifier().encoder.rnn.hidden_size == 16
    assert pcsv.read_csv(models.labelled).column_names == ["text", "label"]
    pytest.importorskip("fastapi")
    from txray.serve.run import open_server

    server = open_server([demo])
    assert [m.n_neurons for m in server.models] == [16, 16] and server.study.n_neurons == 16
    assert server.labelled == "models/tweets_test.csv"


def test_second_run_uses_the_cache(demo, capsys):
    cached = sorted(p.name for p in (demo / "cache").rglob("*.pt"))
    assert main(["demo", "--out", str(demo), "--cache", str(demo / "cache"), *TINY]) == 0
    assert sorted(p.name for p in (demo / "cache").rglob("*.pt")) == cached
    assert "Table 2" in capsys.readouterr().out


def test_bad_size_is_a_usage_error(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--epochs", "2", "--quiet"]) == 2
    assert "epochs must be at least 3" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path), "--seeds", "2", "--lm-seeds", "3", "--quiet"]) == 2
    assert "lm_seeds (3) cannot exceed seeds (2)" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path), "--paper", "--preset", "medium", "--quiet"]) == 2
    assert "--paper and --preset medium" in capsys.readouterr().err


def test_claims_table_comes_from_the_run(demo):
    from txray.demo.claims import paper_claims
    from txray.demo.result import Replicate
    from txray.demo.stats import VERDICTS

    summary = json.loads((demo / "summary.json").read_text())
    replicates = summary["replicates"]
    assert [r["seed"] for r in replicates] == [0, 1]
    claims = summary["claims"]
    assert [c["id"] for c in claims] == [c.id for c in paper_claims(20)]
    for row, claim in zip(claims, paper_claims(20)):
        assert row["verdict"] in VERDICTS
        assert set(row) >= {"claim", "statistic", "mean", "sd", "low", "high", "paper", "n", "values"}
        values = [claim.value(Replicate(**r)) for r in replicates]
        assert row["values"] == pytest.approx([v for v in values if v is not None])
        if row["n"] == 2:
            assert row["low"] <= row["mean"] <= row["high"]
            assert row["mean"] == pytest.approx(sum(row["values"]) / 2)
    # The statistics read the replicates' counts, which are the comparison files' counts.
    gained = next(c for c in claims if c["id"] == "RQ3-gained")
    assert gained["values"] == pytest.approx([r["counts"]["rq3"]["gained"] / 16 for r in replicates])
    first = summary["comparisons"][-1]
    assert replicates[0]["counts"]["rq3"]["gained"] == first["gained"]
    # Each pruning row has its random sets of the same size and a bootstrap interval.
    for row in replicates[0]["pruning"]:
        assert len(row["control_test"]) == (10 if row["neurons"] else 0)
        assert row["test_low"] <= row["change_test"] <= row["test_high"]
    page, text = (demo / "index.html").read_text(), (demo / "summary.txt").read_text()
    for row in claims:
        assert row["id"] in page and row["id"] in text
    assert "verdict" in page and "Ratios of shared neurons" in text


def test_readout_prunes_like_the_full_model():
    """Pruning cached last states (the study's controls) gives the F1 of pruning the LSTM itself."""
    import torch

    from txray.demo.classifier import Batches, SentimentClassifier, f1, last_states
    from txray.demo.data import Tweet
    from txray.demo.lm import LAYER, Encoder
    from txray.demo.pruning import Evaluation

    torch.manual_seed(0)
    vocab = ["<pad>", "<unk>", "<eos>", *[f"w{i}" for i in range(40)]]
    rng = torch.Generator().manual_seed(1)
    tweets = [
        Tweet([f"w{int(i)}" for i in torch.randint(0, 45, (int(n),), generator=rng)], int(label))
        for n, label in zip(torch.randint(1, 12, (80,), generator=rng), torch.randint(0, 2, (80,), generator=rng))
    ]
    data = Batches(tweets, vocab)
    model = SentimentClassifier(Encoder(len(vocab), 8, 12)).eval()
    with torch.no_grad():  # a head that predicts both classes and leans on every neuron
        model.head.weight.mul_(20)
        model.head.bias.sub_(float(model(*next(data.batches(80))[:2]).median()))
    evaluation = Evaluation(model, {"test": last_states(model, data)}, {"test": data.labels.numpy()})
    sets = {"a": [0, 3, 5], "b": list(range(6)), "c": [11]}
    full = txray.pruning_table(model, LAYER, sets, lambda m: {"test": f1(m, data)})
    fast = txray.pruning_table(evaluation.readout, LAYER, sets, evaluation.f1)
    assert full.column("metric_test").to_pylist() == pytest.approx(fast.column("metric_test").to_pylist())
    assert len(set(full.column("metric_test").to_pylist())) > 1  # the sets do change the predictions


def test_verdicts():
    from txray.demo.stats import describe, verdict

    def v(values, paper, direction=+1, null=0.0):
        return verdict(describe(values), null, paper, direction)

    assert v([0.50, 0.52, 0.48], 0.5) == "reproduced"
    assert v([0.05, 0.06, 0.04], 0.5) == "direction only"
    assert v([0.05, 0.06, 0.04], None) == "reproduced"
    assert v([-0.1, 0.1, 0.05], 0.5) == "within noise"
    assert v([-0.5, -0.52, -0.48], 0.5) == "contradicted"
    assert v([-0.5, -0.52, -0.48], -0.5, direction=-1) == "reproduced"
    assert v([-0.5, 0.4, 0.1], -0.5, direction=-1) == "within noise"
    assert v([0.5, 0.52, 0.48], -0.5, direction=-1) == "contradicted"
    assert v([-0.05, -0.06, -0.04], -0.5, direction=-1) == "direction only"
    assert v([0.3], 0.3) == "within noise"  # one replicate: no interval
    assert v([0.15, 0.16, 0.14], 0.9, null=0.1) == "direction only"  # effects are measured from the null


def test_lm_stops_at_the_plateau(tmp_path):
    from txray.demo.config import DemoConfig
    from txray.demo.data import DemoData, lm_vocabulary
    from txray.demo.lm import train_lm

    words = [f"w{i % 37}" for i in range(3000)]
    data = DemoData([words[:2400]], [words[2400:]], [], [], [])
    config = DemoConfig(
        out=tmp_path, hidden=8, embedding=8, vocab=50, epochs=8, plateau=0.9, batch_size=8, progress=False
    )
    run = train_lm(config, data, lm_vocabulary(data.wiki, 50), seed=0)
    assert run.stopped == "plateau" and run.epochs == 3  # no epoch improves validation perplexity by 90 %
    assert sorted(run.snapshots) == [1, 2, 3] and all(p.is_file() for p in run.snapshots.values())
    assert len(run.val_perplexity) == len(run.seconds) == 3
    again = train_lm(config, data, lm_vocabulary(data.wiki, 50), seed=0)  # from the cache
    assert again.val_perplexity == run.val_perplexity and again.snapshots == run.snapshots


def test_docs_render_the_run(demo):
    """The docs' study page is generated from a run's summary.json (docs/hooks.py), as the demo prints it."""
    import importlib.util
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("docs_hooks_for_demo_test", root / "docs" / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    results = demo / "docs-results"
    results.mkdir(exist_ok=True)
    shutil.copy(demo / "summary.json", results / "tiny.json")
    text = hooks.render_demo("tiny", str(results))
    summary = json.loads((demo / "summary.json").read_text())
    for row in summary["claims"]:
        assert f"| {row['id']} |" in text and row["verdict"] in text
    assert f"{summary['run']['seconds']:.0f} s" in text
    assert "No results yet" in hooks.render_demo("missing", str(results))
    page = (root / "docs" / "demo.md").read_text()
    for preset in ("medium", "default"):
        assert f"<!-- txray-demo: {preset} -->" in page
