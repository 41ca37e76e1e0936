"""Screenshots of ``txray serve`` for the docs: docs/images/serve_analysis.png, serve_manipulation.png and
serve_ablation.png.

Serves a ``txray demo`` output folder (on a free port of 127.0.0.1), opens the
most massive neuron of the last stage with its contexts and the heat map of
the three most massive neurons over a tweet, sets neurons to a value in the
manipulation view (the eight neurons the classifier's head weighs most, each
flipped: scaled by -1), and computes the pruning table (with those eight as
the selected set) in the ablation view, in
Debian's Chromium through Playwright. Run from the repository root:

    HF_HUB_OFFLINE=1 python docs/images/make_serve_screenshots.py DEMO_OUTPUT

Needs: pip install -e ".[serve,test]" (playwright) and Debian's chromium.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
TEXT = "i love this new phone , the camera is great but the battery is terrible"


def screenshots(folder: Path, out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    from txray.serve.run import Background, open_server

    server = open_server([folder])
    last = server.study.profiles[-1]
    top = [int(n) for n in (-last.mass()).argsort(kind="stable")[:3]]
    running = Background(server)
    flags = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
    written = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=os.environ.get("BROWSER_PATH", CHROMIUM), args=flags)
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.goto(running.url + f"#neuron={top[0]}")
            page.wait_for_selector(".txb-neuron:not([hidden]) .txb-stage")
            page.fill("#txs-add", ", ".join(map(str, top)))
            page.dispatch_event("#txs-add", "change")
            page.select_option("#act-model", "demo classifier")
            page.fill("#act-text", TEXT)
            page.click("#act-run")
            page.wait_for_selector("#act-map table")
            written.append(out / "serve_analysis.png")
            page.screenshot(path=written[-1])

            # The manipulation: the eight neurons the classifier's head weighs most, each flipped (scaled by -1).
            head = server.models[1].model.head.weight[0].detach()
            strongest = [int(n) for n in head.abs().argsort(descending=True)[:8]]
            page.click("#txs-clear")
            page.fill("#txs-add", ", ".join(map(str, strongest)))
            page.dispatch_event("#txs-add", "change")
            page.goto(running.url + "#manipulate")
            page.select_option("#man-model", "demo classifier")
            page.fill("#man-text", TEXT)
            for mode in page.locator("#man-edits select[data-field=mode]").all():
                mode.select_option("scale")
            for value in page.locator("#man-edits input[data-field=value]").all():
                value.fill("-1")
                value.dispatch_event("change")
            page.click("#man-run")
            page.wait_for_selector("#man-result [data-side=after]")
            written.append(out / "serve_manipulation.png")
            page.screenshot(path=written[-1], clip={"x": 0, "y": 0, "width": 1300, "height": 680})

            page.goto(running.url + "#ablation")
            page.wait_for_selector("#abl-file option", state="attached")
            page.click("#abl-run")
            page.wait_for_selector("#abl-result .txs-table", timeout=600_000)
            written.append(out / "serve_ablation.png")
            page.screenshot(path=written[-1], full_page=True)
            browser.close()
    finally:
        running.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("demo", help="a txray demo output folder")
    parser.add_argument("--out", default=str(HERE), help="where the PNGs go (default: docs/images)")
    args = parser.parse_args()
    for path in screenshots(Path(args.demo), Path(args.out)):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
