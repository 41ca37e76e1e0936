"""The study: pretraining (RQ1), zero-shot transfer (RQ2), supervision (RQ3) and pruning (Table 2),
repeated over seeds, with the paper's claims tested over the replicates.

The LMs are trained once per LM seed and shared; each replicate records its
own text sample, fine-tunes with its own seed and prunes with its own random
control sets. Every number comes from txray's public API: ``record_model``,
``compare``, ``summary``, ``analysis``, ``pruning_sets``, ``prune``,
``pruning_table`` and ``write_report``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import resource
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .. import analysis
from ..compare import compare, summary
from ..corpus import Corpus
from ..features import Feature, Pos, Token
from ..profile import Profile
from ..prune import pruning_sets
from ..report import write_report
from ..taggers import SpacyTagger
from .claims import claims_table
from .classifier import Batches, classifier_path, f1, fine_tune, last_states
from .config import DemoConfig
from .data import feature_words, lm_vocabulary, load_data, sample
from .files import write_json, write_table, write_text
from .lm import LAYER, LMRun, load_lm, log, train_lm
from .models import write_models
from .pruning import Evaluation, pruning_with_controls
from .result import COMPARISONS, Comparison, Replicate, StudyResult
from .summary import index_html, result_summary, summary_text

MAX_WINDOW = 256  # words per recorded window (longer articles continue in a new window)
GAINED_TOP = 8  # features listed per gained neuron (Table 1)


def run_study(config: DemoConfig) -> StudyResult:
    """Run the whole study over ``config.seeds`` replicates, write every artefact under ``config.out``."""
    started = time.perf_counter()
    data = load_data(config)
    vocab = lm_vocabulary(data.wiki, config.vocab)
    seeds = config.replicate_seeds()
    tweets = [t.words for t in data.train]
    samples = {s: (sample(data.wiki, config.tokens, s), sample(tweets, config.tokens, s)) for s in seeds}
    token = Token(vocabulary=feature_words(text for pair in samples.values() for text in pair))
    lms = {s: train_lm(config, data, vocab, s) for s in sorted({config.lm_seed(r) for r in range(config.seeds)})}
    batches = {"train": Batches(data.train, vocab), "val": Batches(data.val, vocab), "test": Batches(data.test, vocab)}

    replicates: list[Replicate] = []
    first: dict[str, Any] = {}
    for r, seed in enumerate(seeds):
        # POS features for the first replicate only: its profiles make the reports; the claims need tokens.
        features: list[Feature] = [token, Pos(SpacyTagger())] if r == 0 else [token]
        replicate, artefacts = _replicate(
            config, vocab, lms[config.lm_seed(r)], samples[seed], batches, features, seed, r
        )
        replicates.append(replicate)
        if r == 0:
            first = artefacts
    claims = claims_table(replicates, config.prune_k)
    lm = [dataclasses.asdict(run) | {"snapshots": sorted(run.snapshots)} for run in lms.values()]
    result = StudyResult(
        config,
        lm,
        first["stages"],
        first["comparisons"],
        replicates[0].f1,
        first["pruning"],
        first["gained"],
        replicates,
        claims,
        {},
        0.0,
        "",
    )
    result.seconds = time.perf_counter() - started
    result.run = run_conditions(config, result.seconds)
    result.files = _write(
        result,
        lambda profiles: write_models(config, vocab, first["language_model"], first["classifier"], profiles, data.test),
    )
    result.summary = summary_text(result)
    write_text(result.summary, result.files["summary_txt"])
    return result


def _replicate(
    config: DemoConfig,
    vocab: list[str],
    lm: LMRun,
    samples: tuple[list[list[str]], list[list[str]]],
    batches: dict[str, Batches],
    features: list[Feature],
    seed: int,
    index: int,
) -> tuple[Replicate, dict[str, Any]]:
    """One replicate: record the LM's snapshots and the classifier on this seed's text sample,
    fine-tune with this seed, compare, prune with controls."""
    started = time.perf_counter()
    recorder = _Recording(config, vocab, features)
    wiki, tweets = samples
    stages = {
        f"wiki epoch {e}": recorder.record(load_lm(config, len(vocab), p), wiki, "wiki", f"wiki epoch {e}")
        for e, p in sorted(lm.snapshots.items())
    }
    last = lm.snapshots[max(lm.snapshots)]
    stages["tweets zero-shot"] = recorder.record(
        load_lm(config, len(vocab), last), tweets, "tweets", "tweets zero-shot"
    )
    classifier, supervision = fine_tune(
        config, load_lm(config, len(vocab), last).encoder, batches["train"], batches["val"], seed, last
    )
    stages["tweets supervised"] = recorder.record(classifier, tweets, "tweets", "tweets supervised")
    with _torch_threads_kept():
        comparisons = _comparisons(list(stages.values()))

    evaluation = Evaluation(
        classifier,
        {split: last_states(classifier, b) for split, b in batches.items() if split != "val"},
        {split: b.labels.numpy() for split, b in batches.items() if split != "val"},
    )
    zero_shot, supervised = stages["tweets zero-shot"], stages["tweets supervised"]
    with _torch_threads_kept():
        sets = pruning_sets(compare(zero_shot, supervised), supervised, k=config.prune_k)
    pruning, rows = pruning_with_controls(
        evaluation, sets, supervised, config.hidden, config.controls, config.bootstrap, seed
    )
    f1s = {split: f1(classifier, b) for split, b in batches.items()}
    replicate = Replicate(
        seed=seed,
        lm_seed=lm.seed,
        neurons=config.hidden,
        lm_epochs=lm.epochs,
        counts={key: c.counts for key, c in zip(COMPARISONS, comparisons)},
        f1=f1s,
        supervision=dataclasses.asdict(supervision),
        pruning=rows,
        seconds=time.perf_counter() - started,
    )
    log(
        config,
        f"replicate {index + 1}/{config.seeds} (seed {seed}, LM seed {lm.seed}): "
        f"test F1 {f1s['test']:.3f}, {replicate.seconds:.1f} s",
    )
    artefacts = {
        "stages": stages,
        "comparisons": comparisons,
        "pruning": pruning,
        "gained": gained_neurons(comparisons[-1].table, supervised),
        "language_model": last,
        "classifier": classifier_path(config, last, seed),
    }
    return replicate, artefacts


@contextlib.contextmanager
def _torch_threads_kept() -> Iterator[None]:
    """Keep PyTorch's thread count across ``txray.compare``: numba's OpenMP layer, starting there,
    sets the process's OpenMP thread count to all cores, which would override ``OMP_NUM_THREADS``
    (and change the rounding) for the training that follows."""
    import torch

    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _Recording:
    """Records a model's ``encoder.rnn`` on the first ``tokens`` words of a corpus."""

    def __init__(self, config: DemoConfig, vocab: list[str], features: list[Feature]) -> None:
        from ..word_tokenizers import VocabTokenizer

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


def _comparisons(stages: Sequence[Profile]) -> list[Comparison]:
    """The paper's four comparisons: epoch 1 vs the second to last, the last two epochs,
    Wikipedia vs tweets (zero-shot), zero-shot vs supervised."""
    questions = ("RQ1", "RQ1", "RQ2", "RQ3")
    return [_compare(q, a, b) for q, a, b in zip(questions, stages[:-1], stages[1:])]


def _compare(question: str, a: Profile, b: Profile) -> Comparison:
    table = analysis.neuron_overview(a, b, "token")
    counts = summary(table)
    shared = np.asarray(table.column("state").to_pylist()) == "shared"
    for kind in [k for k in ("token", "pos") if k in a.kinds and k in b.kinds]:
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


def _write(result: StudyResult, models: Callable[[list[Path]], dict[str, Path]]) -> dict[str, Path]:
    """Profiles, comparison tables, Table 1 and 2, the reports, the summary JSON; ``models(profile files)``
    writes where the models are (for ``txray serve``)."""
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
    files.update(models([files[f"profile:{name}"] for name in result.stages]))
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
        last = result.replicates[0].lm_epochs
        title = title.format(last - 1, last)
        write_report([result.stages[n] for n in stage_names], path, title=f"txray demo, {question}: {title}")
        files[f"report:{question}"] = path
    return files


def run_conditions(config: DemoConfig, seconds: float) -> dict[str, Any]:
    """How long the run took and where: date, machine, threads, versions."""
    import platform

    import torch

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,  # the same work on idle cores: wall time near this / threads
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": config.resolved_device(),
    }


def _summary_json(result: StudyResult) -> dict[str, Any]:
    """Everything measured: settings, LMs, the claims and aggregates, every replicate, the first one's tables."""
    return result_summary(result) | {
        "replicates": [dataclasses.asdict(r) for r in result.replicates],
        "comparisons": [{"question": c.question, "a": c.a, "b": c.b, **c.counts} for c in result.comparisons],
        "f1": result.f1,
        "pruning": result.pruning.to_pylist(),
        "gained": result.gained.num_rows,
    }
