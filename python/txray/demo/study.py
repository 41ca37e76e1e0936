"""The study: pretraining (RQ1), zero-shot transfer (RQ2), supervision (RQ3) and pruning (Table 2).

Every number comes from txray's public API: ``record_model``, ``compare``,
``summary``, ``analysis``, ``pruning_sets``, ``pruning_table`` and
``write_report``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .. import analysis
from ..compare import compare, summary
from ..corpus import Corpus
from ..features import Feature, Pos, Token
from ..profile import Profile
from ..prune import pruning_sets, pruning_table
from ..report import write_report
from ..taggers import SpacyTagger
from .classifier import Batches, f1, fine_tune
from .config import DemoConfig
from .data import DemoData, feature_words, lm_vocabulary, load_data
from .files import write_json, write_table, write_text
from .lm import LAYER, load_lm, train_lm
from .result import Comparison, StudyResult
from .summary import index_html, summary_text

MAX_WINDOW = 256  # words per recorded window (longer articles continue in a new window)
GAINED_TOP = 8  # features listed per gained neuron (Table 1)


def run_study(config: DemoConfig) -> StudyResult:
    """Run the whole study, write every artefact under ``config.out`` and print the summary."""
    started = time.perf_counter()
    data = load_data(config)
    vocab = lm_vocabulary(data.wiki, config.vocab)
    snapshots, perplexity = train_lm(config, data.wiki, vocab)
    features = [Token(vocabulary=feature_words(data.wiki, data.train, config.tokens)), Pos(SpacyTagger())]
    recorder = _Recording(config, vocab, features)

    stages = {
        f"wiki epoch {e}": recorder.record(load_lm(config, len(vocab), p), data.wiki, "wiki", f"wiki epoch {e}")
        for e, p in snapshots.items()
    }
    pretrained = load_lm(config, len(vocab), snapshots[config.epochs])
    stages["tweets zero-shot"] = recorder.record(pretrained, _words(data), "tweets", "tweets zero-shot")
    train, test = Batches(data.train, vocab), Batches(data.test, vocab)
    classifier = fine_tune(config, pretrained.encoder, train)
    stages["tweets supervised"] = recorder.record(classifier, _words(data), "tweets", "tweets supervised")

    comparisons = _comparisons(list(stages.values()))
    evaluate = lambda model: {"train": f1(model, train), "test": f1(model, test)}  # noqa: E731
    zero_shot, supervised = stages["tweets zero-shot"], stages["tweets supervised"]
    sets = pruning_sets(compare(zero_shot, supervised), supervised, k=config.prune_k)
    pruning = pruning_table(classifier, LAYER, sets, evaluate, profile=supervised)
    gained = gained_neurons(comparisons[-1].table, supervised)
    result = StudyResult(config, perplexity, stages, comparisons, _baseline(pruning), pruning, gained, {}, 0.0, "")
    result.files = _write(result)
    result.seconds = time.perf_counter() - started
    result.summary = summary_text(result)
    write_text(result.summary, result.files["summary_txt"])
    return result


class _Recording:
    """Records a model's ``encoder.rnn`` on the first ``tokens`` words of a corpus."""

    def __init__(self, config: DemoConfig, vocab: list[str], features: list[Feature]) -> None:
        from ..words import VocabTokenizer

        self.config = config
        self.tokenizer = VocabTokenizer(vocab, pad_id=0, max_length=MAX_WINDOW, name="demo-lm-vocab")
        self.features = features

    def record(self, model: Any, words: list[list[str]], corpus: str, stage: str) -> Profile:
        from ..pipeline import record_model

        device = self.config.resolved_device()
        profiles = record_model(
            model,
            self.tokenizer,
            Corpus(words, name=corpus),
            layers=[LAYER],
            features=self.features,
            limit_tokens=self.config.tokens,
            forward=lambda m, b: m.encoder(b.input_ids.to(device)),
            cache_dir=self.config.cache_dir,
            progress=self.config.progress,
            name=f"demo {type(model).__name__}",
        )
        profile = profiles[LAYER]
        profile.name = stage
        return profile


def _words(data: DemoData) -> list[list[str]]:
    return [t.words for t in data.train]


def _comparisons(stages: Sequence[Profile]) -> list[Comparison]:
    """The paper's four comparisons: epoch 1 vs the second to last, the last two epochs,
    Wikipedia vs tweets (zero-shot), zero-shot vs supervised."""
    questions = ("RQ1", "RQ1", "RQ2", "RQ3")
    return [_compare(q, a, b) for q, a, b in zip(questions, stages[:-1], stages[1:])]


def _compare(question: str, a: Profile, b: Profile) -> Comparison:
    table = analysis.neuron_overview(a, b, "token")
    counts = summary(table)
    shared = np.asarray(table.column("state").to_pylist()) == "shared"
    for kind in ("token", "pos"):
        for side, profile in (("a", a), ("b", b)):
            lengths = profile.lengths(kind)[shared]
            counts[f"mean_{kind}_length_{side}"] = float(lengths.mean()) if len(lengths) else None
    return Comparison(question, str(a.name), str(b.name), table, counts)


def gained_neurons(comparison: pa.Table, profile: Profile, top: int = GAINED_TOP) -> pa.Table:
    """Table 1: the neurons gained by supervision, most massive first, with their top tokens."""
    gained = np.flatnonzero(np.asarray(comparison.column("state").to_pylist()) == "gained")
    mass = profile.mass()
    share = mass / mass.sum() if mass.sum() > 0 else np.zeros_like(mass)
    order = gained[np.lexsort((gained, -mass[gained]))]
    tops = analysis.top_features(profile, "token", top=top, neurons=order.tolist()).to_pylist()
    names: dict[int, list[str]] = {int(n): [] for n in order}
    for row in tops:
        names[row["neuron"]].append(row["feature_name"])
    lengths = profile.lengths("token")
    return pa.table(
        {
            "neuron": pa.array(order, pa.int32()),
            "activation_mass": pa.array(mass[order]),
            "mass_share": pa.array(share[order]),
            "length": pa.array(lengths[order].astype(np.int64)),
            "top_tokens": pa.array([", ".join(names[int(n)]) for n in order], pa.string()),
        }
    )


def _baseline(pruning: pa.Table) -> dict[str, float]:
    row = pruning.slice(0, 1).to_pylist()[0]
    return {"train": row["metric_train"], "test": row["metric_test"]}


def _write(result: StudyResult) -> dict[str, Path]:
    """Profiles, comparison tables, Table 1 and 2, the reports, the summary JSON."""
    out = Path(result.config.out)
    files: dict[str, Path] = {}
    for name, profile in result.stages.items():
        path = out / "profiles" / f"{name.replace(' ', '_').replace('-', '_')}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        profile.save(path)
        files[f"profile:{name}"] = path
    for c in result.comparisons:
        files[f"comparison:{c.slug}"] = out / "comparisons" / f"{c.slug}.parquet"
        write_table(c.table, files[f"comparison:{c.slug}"])
    files["table1"] = out / "table1_gained_neurons.csv"
    write_table(result.gained, files["table1"])
    files["table2"] = out / "table2_pruning.csv"
    write_table(result.pruning, files["table2"])
    files.update(_reports(result, out))
    files["summary_json"] = out / "summary.json"
    files["summary_txt"] = out / "summary.txt"
    write_json(_summary_json(result), files["summary_json"])
    files["index"] = out / "index.html"
    write_text(index_html(result, {k: v.relative_to(out).as_posix() for k, v in files.items()}), files["index"])
    return files


def _reports(result: StudyResult, out: Path) -> dict[str, Path]:
    """One HTML report per research question (stages in the paper's order)."""
    names = list(result.stages)
    groups = {
        "RQ1": ("Pretraining: epochs 1, {}, {} on Wikipedia", names[:3]),
        "RQ2": ("Zero-shot: the pretrained LSTM on Wikipedia and on tweets", names[2:4]),
        "RQ3": ("Supervision: tweets before and after fine-tuning", names[3:5]),
    }
    files = {}
    for question, (title, stage_names) in groups.items():
        path = out / f"report_{question.lower()}.html"
        title = title.format(result.config.epochs - 1, result.config.epochs)
        write_report([result.stages[n] for n in stage_names], path, title=f"txray demo, {question}: {title}")
        files[f"report:{question}"] = path
    return files


def _summary_json(result: StudyResult) -> dict[str, Any]:
    return {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(result.config).items()},
        "lm_perplexity": result.perplexity,
        "comparisons": [{"question": c.question, "a": c.a, "b": c.b, **c.counts} for c in result.comparisons],
        "f1": result.f1,
        "pruning": result.pruning.to_pylist(),
        "gained": result.gained.num_rows,
    }
