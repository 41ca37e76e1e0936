"""``txray serve`` in a real browser: Playwright driving Debian's Chromium against a running server.

Each view loads, a neuron click shows its detail (loaded from the server), a manipulation changes the shown
output, the ablation view computes its table, and no console error happens on the way.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install playwright)")

import servers  # noqa: E402
import stages as st  # noqa: E402
from chromium import needs_chromium  # noqa: E402

from txray.serve.run import Background, open_server  # noqa: E402

pytestmark = needs_chromium
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    """A server of a small demo folder on a free port of 127.0.0.1, in a thread."""
    running = Background(open_server([servers.demo_output(tmp_path_factory.mktemp("serve-page"))]))
    yield running.url
    running.close()


def new_page(chromium):
    """A page that collects console errors and uncaught exceptions in ``page.errors``."""
    page = chromium.new_page(viewport={"width": 1300, "height": 1100})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    return page


@pytest.fixture(scope="module")
def page(chromium):
    page = new_page(chromium)
    yield page
    page.close()


@pytest.fixture(scope="module")
def artefacts() -> Path:
    folder = Path(os.environ.get("TXRAY_TEST_ARTEFACTS") or ROOT / "build" / "test-artefacts" / "serve")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_views_in_chromium(page, url, artefacts):
    page.goto(url + "#neurons")
    page.wait_for_selector("body[data-ready=true]", state="attached", timeout=60_000)
    assert page.locator(".txb-row").count() > 0
    page.screenshot(path=artefacts / "analysis.png")

    # A neuron click shows its detail, fetched from /api/neuron/N, and it can be selected.
    first = page.locator(".txb-row").first.get_attribute("data-neuron")
    page.click(f".txb-row[data-neuron='{first}']")
    page.wait_for_selector(".txb-neuron:not([hidden]) .txb-stage")
    assert page.text_content(".txb-neuron h2") == f"Neuron {first}"
    assert page.locator(".txb-neuron .txb-ctx li").count() > 0  # its contexts came with it
    page.click("#txs-select-this")
    assert page.locator(f".txs-chip[data-neuron='{first}']").count() == 1

    # Activations of the selected neurons over a typed text.
    page.fill("#txs-add", "0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11")
    page.dispatch_event("#txs-add", "change")
    assert page.locator(".txs-chip").count() == 12
    page.fill("#act-text", "w1 w2 w3 w4")
    page.click("#act-run")
    page.wait_for_selector("#act-map table")
    assert page.locator("#act-map tr").count() == 12
    assert page.locator("#act-map tr").first.locator(".txs-word").count() == 4
    page.screenshot(path=artefacts / "neuron_and_activations.png", full_page=True)

    # Manipulation: all neurons set to 5 changes the next-word distribution shown.
    page.goto(url + "#manipulate")
    page.wait_for_selector("#view-manipulate:not([hidden])")
    page.select_option("#man-model", "demo language model")
    page.fill("#man-text", "w1 w2 w3")
    for row in page.locator("#man-edits input[data-field=value]").all():
        row.fill("5")
        row.dispatch_event("change")
    page.click("#man-run")
    page.wait_for_selector("body[data-manipulated='1']", state="attached")
    before = page.text_content("#man-result [data-side=before] tbody")
    after = page.text_content("#man-result [data-side=after] tbody")
    assert before and after and before != after
    assert "distance 0 " not in page.text_content("#man-distance")
    page.screenshot(path=artefacts / "manipulation.png", full_page=True)

    # A bad request shows the server's message in the view, and the page goes on.
    page.fill("#man-text", "   ")
    page.click("#man-run")
    page.wait_for_selector("#man-error:not([hidden])")
    assert "type some words" in page.text_content("#man-error")

    # Ablation: the pruning table of the classifier, with progress, then its figure.
    page.goto(url + "#ablation")
    page.wait_for_selector("#abl-file option", state="attached")
    page.fill("#abl-k", "3")
    page.click("#abl-run")
    page.wait_for_selector("#abl-result .txs-table", timeout=60_000)
    sets = page.eval_on_selector_all("#abl-result .txs-table tr td:first-child", "cs => cs.map(c => c.textContent)")
    assert sets[:5] == ["none (baseline)", "avoided", "3 least massive", "3 most massive", "gained"]
    assert sets[5].startswith("selected (")
    assert page.locator("[data-figure=pruning] .txs-axis").count() == len(sets) - 1
    page.screenshot(path=artefacts / "ablation.png", full_page=True)

    assert page.evaluate("window.txrayErrors") == []
    # The failed request above is the server's 400 answer, reported by Chromium as a failed resource.
    assert [e for e in page.errors if "status of 400" not in e] == []


def test_profiles_alone(chromium, tmp_path):
    """Without a model the analysis view works and the other views say what they need."""
    from txray.serve.app import Server
    from txray.serve.folders import Folders
    from txray.serve.study import Study

    running = Background(Server(Study(st.recorded_stages(n_stages=2, contexts=3)), Folders([tmp_path])))
    try:
        page = new_page(chromium)
        page.goto(running.url + "#neuron=3")
        page.wait_for_selector(".txb-neuron:not([hidden]) .txb-stage")
        assert page.locator("#txs-text-panel").is_hidden()
        page.goto(running.url + "#manipulate")
        page.wait_for_selector("#man-none", state="visible")  # the view shows once the hash is routed
        assert page.locator("#man-form").is_hidden()
        page.goto(running.url + "#ablation")
        page.wait_for_selector("#abl-none", state="visible")
        page.goto(running.url + "#neurons")
        page.wait_for_selector(".txb-list-view:not([hidden]) .txb-row")
        assert page.evaluate("window.txrayErrors") == [] and page.errors == []
        page.close()
    finally:
        running.close()
