"""The report's pages in a real browser: Playwright driving Debian's Chromium (nothing downloaded).

Each test saves screenshots of the views it opens under one folder (printed at the end of
the run; ``TXRAY_TEST_ARTEFACTS`` chooses it) and records how long the page took to load
(printed, never asserted: the machines are shared).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("plotly")
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install playwright)")

import stages as st  # noqa: E402
from chromium import needs_chromium  # noqa: E402

import txray  # noqa: E402
from txray import browser as txb  # noqa: E402
from txray import report  # noqa: E402

pytestmark = needs_chromium
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def artefacts(request) -> Path:
    folder = Path(os.environ.get("TXRAY_TEST_ARTEFACTS") or ROOT / "build" / "test-artefacts" / "browser")
    folder.mkdir(parents=True, exist_ok=True)
    request.config.txray_artefacts = folder  # printed by conftest.pytest_terminal_summary
    return folder


def note_time(request, what: str, seconds: float) -> None:
    request.config.txray_timings = getattr(request.config, "txray_timings", []) + [(what, seconds)]


class Page:
    """A Playwright page that collects console errors and uncaught exceptions."""

    def __init__(self, chromium, width: int = 1400, height: int = 900):
        self.page = chromium.new_page(viewport={"width": width, "height": height})
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self, url: str) -> float:
        start = time.perf_counter()
        self.page.goto(url)
        self.page.wait_for_selector("body[data-ready=true]", state="attached", timeout=60_000)
        return time.perf_counter() - start

    def rows(self) -> list[int]:
        return [int(n) for n in self.page.eval_on_selector_all(".txb-row", "rs => rs.map(r => r.dataset.neuron)")]

    def column(self, index: int) -> list[str]:
        return self.page.eval_on_selector_all(".txb-row", f"rs => rs.map(r => r.children[{index}].textContent)")

    def count(self) -> str:
        return self.page.text_content(".txb-count")

    def close(self) -> None:
        assert self.errors == [], self.errors  # no JS error, no failed load
        self.page.close()


@pytest.fixture(scope="module")
def with_contexts():
    return st.recorded_stages(n_neurons=40, vocab=30, tokens=800, contexts=6)


@pytest.fixture(scope="module")
def small_report(with_contexts, tmp_path_factory):
    path = tmp_path_factory.mktemp("browser") / "report.html"
    txray.write_report(with_contexts, path, token_pos=st.token_pos(30), k=3)
    return path


def test_table_sorts_filters_and_opens_a_neuron_by_click(chromium, small_report, with_contexts, artefacts, request):
    table = txray.neuron_table(with_contexts, "token").to_pandas()
    last = table[table.stage_index == len(with_contexts) - 1]
    page = Page(chromium, height=1800)  # tall enough for all 40 rows of the virtual list
    note_time(request, "40-neuron report, table", page.open(small_report.as_uri() + "#neurons"))
    live = last[~last.state.isin(txb.HIDDEN_STATES)]
    # Dead neurons hidden, most massive first.
    assert page.count() == f"{len(live)} of {len(last)} neurons"
    assert page.rows() == live.sort_values(["mass", "neuron"], ascending=[False, True]).neuron.tolist()
    page.page.screenshot(path=artefacts / "table.png")
    for width in (1400, 1024):  # the table fits the window: no scrolling sideways (it overflowed once)
        page.page.set_viewport_size({"width": width, "height": 1800})
        page.page.wait_for_timeout(100)
        sizes = page.page.evaluate(
            "() => { const l = document.querySelector('.txb-list');"
            " return [document.documentElement.scrollWidth, innerWidth, l.scrollWidth, l.clientWidth]; }"
        )
        assert sizes[0] <= sizes[1] and sizes[2] <= sizes[3], (width, sizes)

    page.page.click(".txb-head [data-key=hellinger]")
    h = live.sort_values(["hellinger", "neuron"], ascending=[False, True], na_position="last")
    assert page.rows() == h.neuron.tolist()
    page.page.click(".txb-head [data-key=hellinger]")  # again: ascending, missing values still last
    assert (
        page.rows()[: h.hellinger.notna().sum()]
        == h.dropna(subset=["hellinger"]).sort_values(["hellinger", "neuron"], ascending=[True, True]).neuron.tolist()
    )

    # Only the states this stage has are offered (here no dead neuron).
    offered = page.page.eval_on_selector_all(
        ".txb-states label:not([hidden]) input", "bs => bs.map(b => b.dataset.state)"
    )
    assert set(offered) == set(last.state)
    shown = last
    page.page.fill("input[data-key=length][data-bound=min]", "3")
    assert sorted(page.rows()) == sorted(shown[shown.length >= 3].neuron.tolist())
    page.page.fill("input[data-key=length][data-bound=min]", "")
    feature = live.top_feature_name.iloc[0]
    page.page.fill("input[data-control=search]", feature)
    assert sorted(page.rows()) == sorted(shown[shown.top_feature_name.str.contains(feature)].neuron.tolist())
    page.page.screenshot(path=artefacts / "table_filtered.png")

    target = page.rows()[0]
    page.page.click(f".txb-row[data-neuron='{target}']")
    page.page.wait_for_selector(".txb-neuron:not([hidden]) h2")
    assert page.page.evaluate("location.hash") == f"#neuron={target}"
    assert page.page.text_content(".txb-neuron h2") == f"Neuron {target}"
    assert page.page.locator(".txb-stage").count() == len(with_contexts)
    page.page.screenshot(path=artefacts / "neuron_by_click.png", full_page=True)
    page.page.click("[data-action=back]")
    page.page.wait_for_selector(".txb-list-view:not([hidden])")
    page.close()


def test_neuron_page_by_fragment_shows_features_contexts_and_change(
    chromium, small_report, with_contexts, artefacts, request
):
    table = txray.neuron_table(with_contexts, "token").to_pandas()
    # The busiest neuron of the last stage, so that it has contexts in every stage.
    neuron = int(table[table.stage_index == 2].sort_values("mass", ascending=False).neuron.iloc[0])
    details = txray.neuron_detail(with_contexts, neuron, ["token", "pos"], top=10)
    page = Page(chromium)
    note_time(request, "40-neuron report, neuron page", page.open(small_report.as_uri() + f"#neuron={neuron}"))
    page.page.wait_for_selector(".txb-neuron:not([hidden]) .txb-stage")
    assert page.page.text_content(".txb-neuron h2") == f"Neuron {neuron}"
    cards = page.page.locator(".txb-stage")
    assert cards.count() == 3
    features = details["features"].to_pandas()
    for s in range(3):
        card = cards.nth(s)
        expected = features[(features.stage_index == s) & (features.kind == "token")]
        labels = card.locator(".txb-bars").first.locator("td.txb-label").all_text_contents()
        assert labels == expected.feature_name.tolist()
        mine = table[(table.stage_index == s) & (table.neuron == neuron)].iloc[0]
        assert f"{int(mine.mass_rank)}" in card.locator(".txb-facts").text_content()
        # The contexts: the word highlighted, darker for a higher activation.
        words = card.locator(".txb-ctx mark").all_text_contents()
        recorded = with_contexts[s].neuron_contexts(neuron).to_pandas().head(report.browser.REPORT_CONTEXTS)
        assert words == recorded.word.tolist()
        shades = card.locator(".txb-ctx mark").evaluate_all("ms => ms.map(m => getComputedStyle(m).backgroundColor)")
        alphas = [float(c.rstrip(")").split(",")[-1]) if c.startswith("rgba") else 1.0 for c in shades]
        assert alphas == sorted(alphas, reverse=True) and alphas[0] > alphas[-1]
    change = details["change"].to_pandas()
    gained = change[(change.kind == "token") & (change.step == 0) & (change.change == "gained")].feature_name.tolist()
    first_step = page.page.locator(".txb-change li").first
    assert first_step.locator(".txb-gain").all_text_contents() == gained
    page.page.screenshot(path=artefacts / "neuron_by_fragment.png", full_page=True)
    # Keys step through the table's order.
    page.page.keyboard.press("ArrowRight")
    page.page.wait_for_function(f"location.hash !== '#neuron={neuron}'")
    page.page.goto(small_report.as_uri() + "#neuron=400")  # out of range: said so, no error
    page.page.wait_for_selector(".txb-empty")
    assert "the layer has 40 neurons" in page.page.text_content(".txb-empty")
    page.close()


def test_profiles_without_contexts_show_distributions_alone(chromium, tmp_path, artefacts):
    path = tmp_path / "plain.html"
    txray.write_report(st.recorded_stages(), path)
    page = Page(chromium)
    page.open(path.as_uri() + "#neuron=3")
    page.page.wait_for_selector(".txb-neuron:not([hidden]) .txb-stage")
    assert page.page.locator(".txb-ctx").count() == 0
    assert "hold no contexts" in page.page.text_content(".txb-neuron")
    assert page.page.locator(".txb-bars").count() == 3 * 2  # tokens and POS per stage
    page.page.screenshot(path=artefacts / "neuron_without_contexts.png", full_page=True)
    page.close()


OVERLAP_JS = """
figure => {
  // Title and tick texts of one figure; a pair whose boxes cross by more than 1 px collides.
  // Axis titles are g.g-xtitle, g.g-y2title, ...; tick labels g.xtick, g.y2tick, ... (one per axis).
  const selector = '.gtitle, g[class^="g-x"][class$="title"] text, g[class^="g-y"][class$="title"] text, '
    + '.annotation-text, g[class$="tick"] text, g[class$="tick2"] text, .legendtext';
  const boxes = [...figure.querySelectorAll(selector)]
    .map(t => ({t: t.textContent, r: t.getBoundingClientRect()}))
    .filter(b => b.r.width > 0 && b.t.trim());
  const hits = [];
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const a = boxes[i].r, b = boxes[j].r;
    const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
    const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
    if (w > 1 && h > 1) hits.push(boxes[i].t + ' / ' + boxes[j].t);
  }
  return hits;
}
"""


def test_overview_figures_draw_and_no_text_collides(chromium, small_report, artefacts, request):
    page = Page(chromium)
    start = time.perf_counter()
    page.open(small_report.as_uri())
    page.page.wait_for_selector("body[data-figures-drawn=true]", state="attached", timeout=60_000)
    note_time(request, "40-neuron report, overview with every figure drawn", time.perf_counter() - start)
    names = page.page.eval_on_selector_all(".plotly-graph-div.js-plotly-plot", "ds => ds.map(d => d.id)")
    assert names == [f"fig-{n}" for n in report.FIGURES if n != "length_shift_pos" or True][: len(names)]
    assert len(names) >= 8
    for name in names:
        hits = page.page.eval_on_selector(f"#{name}", OVERLAP_JS)
        assert hits == [], f"{name}: {hits[:5]}"
    page.page.screenshot(path=artefacts / "overview.png", full_page=True)
    # A click on a neuron's dot opens it in the browser.
    page.page.evaluate(
        "() => { const d = document.getElementById('fig-hellinger_length');"
        " d.emit('plotly_click', {points: [{data: d.data[0], customdata: d.data[0].customdata[0]}]}); }"
    )
    page.page.wait_for_selector(".txb-neuron:not([hidden]) h2")
    assert page.page.evaluate("location.hash").startswith("#neuron=")
    page.close()


def test_10000_neurons_stay_usable(chromium, tmp_path, artefacts, request):
    profiles = [st.synthetic_profile(seed=i, name=f"checkpoint {i}") for i in range(3)]
    path = tmp_path / "big.html"
    started = time.perf_counter()
    txray.write_report(profiles, path)
    note_time(request, "10,000 neurons x 3 stages: writing the report", time.perf_counter() - started)
    page = Page(chromium)
    note_time(request, "10,000-neuron report, table", page.open(path.as_uri() + "#neurons"))
    table = txray.neuron_table(profiles, "token").to_pandas()
    last = table[table.stage_index == 2]
    dead = int((last.state == "dead").sum())
    assert dead > 0 and page.count() == f"{10_000 - dead:,} of 10,000 neurons"  # dead neurons hidden
    page.page.check("input[data-state=dead]")
    assert page.count() == "10,000 of 10,000 neurons"
    page.page.uncheck("input[data-state=dead]")
    rendered = page.page.locator(".txb-row").count()
    assert 10 < rendered < 120  # a virtual list: only the rows in view (and a margin) are in the page
    page.page.eval_on_selector(".txb-list", "l => l.scrollTop = l.scrollHeight")
    page.page.wait_for_timeout(200)
    visible = page.rows()
    live = last[~last.state.isin(txb.HIDDEN_STATES)]
    tail = live.sort_values(["mass", "neuron"], ascending=[False, True]).neuron.tolist()
    assert visible[-1] == tail[-1]
    start = time.perf_counter()
    page.page.click(".txb-head [data-key=length]")
    page.page.fill("input[data-control=search]", "w1")
    note_time(request, "10,000-neuron report, sort and filter", time.perf_counter() - start)
    assert page.rows() and all("w1" in t for t in page.column(8))  # the top feature column
    lengths = [int(t.replace(",", "")) for t in page.column(3)]  # the length column: longest first
    assert lengths == sorted(lengths, reverse=True) and lengths[0] > lengths[-1]
    page.page.screenshot(path=artefacts / "table_10000.png")
    clicked = page.rows()[1]
    page.page.click(f".txb-row[data-neuron='{clicked}']")
    page.page.wait_for_selector(".txb-neuron:not([hidden]) h2")
    assert page.page.text_content(".txb-neuron h2") == f"Neuron {clicked}"
    assert page.page.evaluate("location.hash") == f"#neuron={clicked}"
    page.page.goto(path.as_uri() + "#neuron=9999")
    page.page.wait_for_selector(".txb-neuron:not([hidden]) h2")
    assert page.page.text_content(".txb-neuron h2") == "Neuron 9999"
    page.close()


def test_report_of_different_models_lists_each_profile(chromium, tmp_path):
    a = st.recorded_stages(n_stages=1, n_neurons=12)[0]
    b = st.recorded_stages(n_stages=1, n_neurons=30, seed=3)[0]
    b.name = "wider"
    path = tmp_path / "two.html"
    txray.write_report([a, b], path)
    page = Page(chromium)
    page.open(path.as_uri() + "#neurons")
    assert page.count().endswith("of 30 neurons")  # the last profile first
    page.page.select_option("select[data-control=stage]", "0")
    assert page.count().endswith("of 12 neurons")
    page.page.click(".txb-row >> nth=0")
    page.page.wait_for_selector(".txb-neuron:not([hidden]) .txb-stage")
    assert page.page.locator(".txb-stage").count() == 1
    page.close()


def test_neuron_ids_in_the_table_are_every_neuron(with_contexts):
    """The document holds every neuron of every stage, hidden or not (no browser needed)."""
    doc = txb.browser_document(with_contexts)
    assert len(doc["table"]["neuron"]) == 3 * 40 and len(doc["neurons"]) == 40
    assert np.all(np.diff(doc["table"]["stage"]) >= 0)


def test_paper_sized_report_load_times(chromium, tmp_path, artefacts, request):
    """1,500 neurons x 3 stages with contexts: the times the page itself measures (printed, not asserted)."""
    profiles = [
        st.with_random_contexts(
            st.synthetic_profile(n_neurons=1500, vocab=2000, cells=60_000, seed=i, name=f"epoch {i + 1}"), k=20, seed=i
        )
        for i in range(3)
    ]
    path = tmp_path / "paper.html"
    txray.write_report(profiles, path)
    page = Page(chromium)
    page.open(path.as_uri())
    page.page.wait_for_selector("body[data-figures-drawn=true]", state="attached", timeout=120_000)
    marks = page.page.evaluate("() => ({...document.body.dataset})")
    for key, what in (
        ("readyMs", "browser ready"),
        ("firstFigureMs", "first figure drawn"),
        ("figuresMs", "every figure drawn"),
    ):
        note_time(request, f"1,500 x 3 report (page's own clock): {what}", int(marks[key]) / 1000)
    page.page.screenshot(path=artefacts / "overview_1500.png")
    page.page.goto(path.as_uri() + "#neuron=700")
    page.page.wait_for_selector(".txb-neuron:not([hidden]) .txb-ctx mark")
    page.close()


def demo_like_output(folder: Path) -> dict:
    """The demo's output folder (profiles, comparisons, tables, three reports, summary, index page) written by
    the demo's own writer from small recorded stages instead of trained models; returns summary.json."""
    import json

    import pyarrow as pa

    pytest.importorskip("torch")  # txray.demo.study imports the demo's models
    from txray.demo import study
    from txray.demo.claims import claims_table
    from txray.demo.config import DemoConfig
    from txray.demo.result import COMPARISONS, Replicate, StudyResult

    names = ["wiki epoch 1", "wiki epoch 2", "wiki epoch 3", "tweets zero-shot", "tweets supervised"]
    silent = {0: [0, 1, 2, 3], 1: [0, 1], 2: [0], 3: [0, 5, 6], 4: [1, 7, 8, 9, 10]}  # avoided and gained ones
    profiles = st.recorded_stages(n_stages=5, n_neurons=24, vocab=30, tokens=600, contexts=4, silent=silent)
    stages = {}
    for name, profile in zip(names, profiles):
        profile.name = name
        stages[name] = profile
    comparisons = study._comparisons(list(stages.values()))
    config = DemoConfig(out=folder, hidden=24, seeds=1, lm_seeds=1, prune_k=3)

    def pruning(i: int) -> dict:
        row = {"neurons": 3, "mass_removed": 0.1 * i, "test_low": -0.05, "test_high": 0.01}
        for split in ("train", "val", "test"):
            row |= {f"change_{split}": -0.01 * i, f"control_{split}": [0.0], f"control_mean_{split}": 0.0}
            row[f"excess_{split}"] = -0.01 * i
        return row

    sets = ["avoided", "3 least massive", "3 most massive", "gained"]
    replicate = Replicate(
        seed=0,
        lm_seed=0,
        neurons=24,
        lm_epochs=3,
        counts={key: c.counts for key, c in zip(COMPARISONS, comparisons)},
        f1={"train": 0.7, "val": 0.65, "test": 0.6},
        supervision={},
        pruning=[{"set": s, **pruning(i)} for i, s in enumerate(sets)],
        seconds=1.0,
    )
    run = dict(seconds=1.0, cpu_seconds=1.0, device="cpu", torch_threads=1, cpu_count=2, date_utc="2026-01-01 00:00")
    lm = [dict(seed=0, train_perplexity=[90.0, 80.0, 75.0], val_perplexity=[95.0, 85.0, 84.0], stopped="epochs")]
    lm[0]["seconds"] = [1.0, 1.0, 1.0]
    result = StudyResult(
        config=config,
        lm=lm,
        stages=stages,
        comparisons=comparisons,
        f1=replicate.f1,
        pruning=pa.table({"set": sets}),
        gained=study.gained_neurons(comparisons[-1].table, stages["tweets supervised"]),
        replicates=[replicate],
        claims=claims_table([replicate], 3),
        files={},
        seconds=1.0,
        summary="",
        run=run,
    )
    result.files = study._write(result, lambda profiles: {})  # no models: the browser needs none
    result.summary = study.summary_text(result)
    study.write_text(result.summary, result.files["summary_txt"])  # as the demo does once the files are written
    return json.loads((folder / "summary.json").read_text())


def test_browser_on_the_demos_output(chromium, tmp_path, artefacts):
    """The index page and the three reports of a demo-like folder open without a script error, and the
    index states each research question's finding with the run's numbers."""
    summary = demo_like_output(tmp_path)
    assert len(list(tmp_path.glob("plotly-*.min.js"))) == 1  # one plotly.js for the three reports
    page = Page(chromium)
    page.page.goto((tmp_path / "index.html").as_uri())
    items = {q: page.page.text_content(f"li[data-question={q}]") for q in ("RQ1", "RQ2", "RQ3")}
    counts = summary["counts"]
    for q, key in (("RQ1", "rq1_early"), ("RQ1", "rq1_late"), ("RQ2", "rq2"), ("RQ3", "rq3")):
        shared = counts[key]["shared"]["mean"]
        assert f"{shared:,.1f} of 24 neurons ({100 * shared / 24:.0f} %)" in items[q]
        assert f"{counts[key]['mean_hellinger']['mean']:.3f}" in items[q]
    ratio = counts["rq3"]["shared"]["mean"] / counts["rq2"]["shared"]["mean"]
    assert f"{ratio:.2f} times as many as zero-shot" in items["RQ3"]
    assert f"gains {counts['rq3']['gained']['mean']:.1f}" in items["RQ3"]
    page.page.screenshot(path=artefacts / "demo_index.png", full_page=True)
    links = page.page.eval_on_selector_all("a[href]", "as => as.map(a => a.getAttribute('href'))")
    missing = [link for link in links if not (tmp_path / link.split("#")[0]).exists()]
    assert links and missing == []  # every artefact linked is there
    page.close()
    for question in ("rq1", "rq2", "rq3"):
        report_page = Page(chromium)
        report_page.open((tmp_path / f"report_{question}.html").as_uri())
        report_page.page.wait_for_selector("body[data-figures-drawn=true]", state="attached", timeout=60_000)
        report_page.page.click("a[data-view=neurons]")
        report_page.page.click(".txb-row >> nth=0")
        report_page.page.wait_for_selector(".txb-neuron:not([hidden]) .txb-ctx mark")
        report_page.page.screenshot(path=artefacts / f"demo_{question}_neuron.png", full_page=True)
        report_page.close()
