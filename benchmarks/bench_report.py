"""How fast a paper-sized HTML report opens in headless Chromium, phase by phase.

    python benchmarks/bench_report.py              # 1,500 neurons x 3 stages, 5 repeats (a few minutes)
    python benchmarks/bench_report.py --quick      # 300 neurons, 2 repeats

Writes a report of ``--neurons`` neurons in 3 stages (random profiles with 20
contexts per neuron, as ``tests/stages.py`` makes them) twice: with the
plotly.js bundle txray chooses (the cartesian one when every figure is
cartesian) and with the full bundle. Each is opened ``--repeats`` times in
Debian's Chromium through Playwright, the two interleaved, three ways:

* ``overview``: ``report.html``, the figures' page;
* ``table``: ``report.html#neurons``, the neuron browser's table;
* ``neuron``: ``report.html#neuron=N``, one neuron's page.

The phases are the page's own clock (the Performance API, milliseconds since
navigation started, browser launch excluded): the HTML read
(``domInteractive``), the neuron browser ready (its data decoded, the table
or neuron drawn: the page is usable), plotly.js loaded, the first figure
drawn, every figure drawn. For the overview it also reads a Chromium trace:
how long plotly.js took to compile (on a background thread) and to run its
top level (on the main thread). The table shows the median of the repeats.
Results go to benchmarks/results/bench_report.json.

Needs: pip install -e ".[report,test]" (plotly, Jinja2, playwright) and
Debian's chromium at /usr/bin/chromium (or BROWSER_PATH).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # stages.py: the random profiles of the tests
import stages as st  # noqa: E402
from _common import OtherLoad, add_results_arguments, render_table, write_results  # noqa: E402

import txray  # noqa: E402
from txray import report  # noqa: E402

FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
FLAGS += ["--disable-component-update", "--disable-sync", "--enable-unsafe-swiftshader", "--use-angle=swiftshader"]
PHASES = [
    # (key in the page's marks, what)
    ("domInteractive", "HTML read"),
    ("ready", "browser ready (usable)"),
    ("plotly", "plotly.js loaded"),
    ("firstFigure", "first figure drawn"),
    ("figures", "every figure drawn"),
]
MARKS_JS = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const out = {domInteractive: nav.domInteractive};
  for (const m of performance.getEntriesByType('mark')) {
    const key = {'txray:ready': 'ready', 'txray:plotly': 'plotly', 'txray:first-figure': 'firstFigure',
                 'txray:figures': 'figures'}[m.name];
    if (key && !(key in out)) out[key] = m.startTime;
  }
  return out;
}"""


def paper_profiles(neurons: int) -> list[txray.Profile]:
    return [
        st.with_random_contexts(
            st.synthetic_profile(n_neurons=neurons, vocab=2000, cells=40 * neurons, seed=i, name=f"epoch {i + 1}"),
            k=20,
            seed=i,
        )
        for i in range(3)
    ]


def plotly_times(trace_path: Path) -> dict[str, float]:
    """Milliseconds plotly.js spent compiling (background) and running its top level (main thread)."""
    events = json.loads(trace_path.read_text())
    events = events["traceEvents"] if isinstance(events, dict) else events
    out = {"plotly compile": 0.0, "plotly run": 0.0}
    for e in events:
        url = str(e.get("args", {}).get("data", {}).get("url", "")) if isinstance(e.get("args"), dict) else ""
        if e.get("ph") != "X" or "plotly" not in url.rsplit("/", 1)[-1]:
            continue
        if e["name"] == "v8.parseOnBackground":
            out["plotly compile"] += e["dur"] / 1000
        elif e["name"] == "EvaluateScript":
            out["plotly run"] += e["dur"] / 1000
    return out


def open_page(browser, url: str, wait: str, trace: Path | None = None) -> dict[str, float]:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    if trace:
        browser.start_tracing(page=page, path=str(trace), categories=["devtools.timeline", "v8"])
    page.goto(url)
    page.wait_for_selector(wait, state="attached", timeout=180_000)
    marks = page.evaluate(MARKS_JS)
    if trace:
        browser.stop_tracing()
        marks.update(plotly_times(trace))
    page.close()
    if errors:
        raise RuntimeError(f"{url}: script errors {errors}")
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--neurons", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="300 neurons, 2 repeats")
    add_results_arguments(parser)
    args = parser.parse_args()
    if args.quick:
        args.neurons, args.repeats = 300, 2
    from playwright.sync_api import sync_playwright

    load = OtherLoad()
    folder = Path(tempfile.mkdtemp(prefix="bench-report-"))
    t0, c0 = time.perf_counter(), time.process_time()
    profiles = paper_profiles(args.neurons)
    build = (time.perf_counter() - t0, time.process_time() - c0)
    pages, writes, sizes = {}, {}, {}
    for bundle in ("chosen", "full"):
        (folder / bundle).mkdir()
        path = folder / bundle / "report.html"
        t0, c0 = time.perf_counter(), time.process_time()
        if bundle == "full":
            with mock.patch.object(report, "plotly_bundle", lambda figures: "full"):
                result = txray.write_report(profiles, path)
        else:
            result = txray.write_report(profiles, path)
        writes[bundle] = (time.perf_counter() - t0, time.process_time() - c0)
        pages[bundle] = path
        sizes[bundle] = (path.stat().st_size, result.plotly_js.name, result.plotly_js.stat().st_size)
    print(
        f"profiles built in {build[0]:.1f} s ({build[1]:.1f} CPU-s); report written in "
        + ", ".join(f"{b}: {w[0]:.1f} s ({w[1]:.1f} CPU-s)" for b, w in writes.items())
    )
    for bundle, (html_size, js_name, js_size) in sizes.items():
        print(f"{bundle}: report.html {html_size / 1e6:.2f} MB, {js_name} {js_size / 1e6:.2f} MB")

    views = {
        "overview": ("", "body[data-figures-drawn=true]"),
        "table": ("#neurons", "body[data-ready=true]"),
        "neuron": (f"#neuron={args.neurons // 2}", ".txb-neuron:not([hidden]) .txb-stage"),
    }
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    with sync_playwright() as pw:
        t0 = time.perf_counter()
        browser = pw.chromium.launch(executable_path=os.environ.get("BROWSER_PATH", "/usr/bin/chromium"), args=FLAGS)
        launch = time.perf_counter() - t0
        for rep in range(args.repeats):
            for bundle, path in pages.items():  # interleaved: both see the same load
                for view, (fragment, wait) in views.items():
                    trace = folder / "trace.json" if view == "overview" else None
                    marks = open_page(browser, path.as_uri() + fragment, wait, trace)
                    runs.setdefault((bundle, view), []).append(marks)
            print(f"repeat {rep + 1}/{args.repeats} done")
        browser.close()

    keys = PHASES + [("plotly compile", "plotly.js compile (background)"), ("plotly run", "plotly.js top level (main)")]
    headers = ["report", "view"] + [what for _, what in keys]
    rows = []
    for (bundle, view), marks in runs.items():
        row: list[str | float | None] = [f"{bundle} ({sizes[bundle][1]})", view]
        for key, _ in keys:
            values = [m[key] for m in marks if key in m]
            row.append(round(statistics.median(values)) if values else None)
        rows.append(row)
    title = f"{args.neurons:,} neurons x 3 stages: median ms since navigation start over {args.repeats} repeats"
    print(render_table(headers, [[("–" if v is None else str(v)) for v in r] for r in rows], title=title))
    print(f"browser launch (not counted above): {launch:.2f} s")
    conditions = load.report()
    print(conditions)
    write_results(
        "bench_report",
        args,
        [{"title": title, "headers": headers, "rows": rows}],
        notes=[conditions, f"browser launch {launch:.2f} s"],
        details={
            "build_seconds": build,
            "write_seconds": writes,
            "sizes_bytes": {b: {"html": s[0], "plotly_js": s[1], "plotly_js_bytes": s[2]} for b, s in sizes.items()},
            "runs": {f"{b}/{v}": m for (b, v), m in runs.items()},
        },
    )


if __name__ == "__main__":
    main()
