"""The HTML report: content, offline self-containment, PNG export, and drawing in headless Chromium."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("plotly")

import stages as st  # noqa: E402
from chromium import CHROMIUM, FLAGS, needs_chromium  # noqa: E402

import txray  # noqa: E402
from txray import browser, report  # noqa: E402

CHROMIUM_FLAGS = ["--headless", *FLAGS, "--hide-scrollbars", "--enable-logging=stderr"]


@pytest.fixture(scope="module")
def small():
    return st.recorded_stages()


@pytest.fixture(scope="module")
def small_report(small, tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "report.html"
    result = txray.write_report(small, path, token_pos=st.token_pos(20), k=3)
    return result, path.read_text(encoding="utf-8")


def test_report_holds_every_figure_and_loads_plotly_from_its_folder(small_report, small):
    result, page = small_report
    assert result.figures == list(report.FIGURES)
    for name in result.figures:
        assert f'id="fig-{name}"' in page
    # No script is loaded from elsewhere: the page loads the shared plotly.js beside it when a figure shows.
    assert not re.search(r"<script[^>]+src=", page)
    # Every figure is cartesian: the page loads plotly.js's cartesian bundle (a third of the full one).
    bundle = report.plotly_bundle(report.report_figures(small, token_pos=st.token_pos(20), k=3))
    assert bundle == "cartesian", "plotly was upgraded? put its plotly.js-cartesian-dist-min in templates/vendor/"
    name = report.plotly_js_name("cartesian")
    assert name.startswith("plotly-cartesian-") and f'"{name}"' in page and f'data-plotly-src="{name}"' in page
    assert result.plotly_js == result.html.parent / name and 1e6 < result.plotly_js.stat().st_size < 2e6
    assert len(page.encode()) < 1_000_000
    summary = txray.summary(txray.compare(small[0], small[1]))
    assert f"<td>{summary['shared']}</td>" in page and "mean Hellinger" in page


def test_reports_of_a_folder_share_one_plotly_js(tmp_path, small):
    first = txray.write_report(small[:2], tmp_path / "a.html")
    stamp = first.plotly_js.stat().st_mtime_ns
    second = txray.write_report(small[1:], tmp_path / "b.html")
    assert second.plotly_js == first.plotly_js and first.plotly_js.stat().st_mtime_ns == stamp  # not written again
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["a.html", "b.html", report.plotly_js_name("cartesian")]
    )
    inline = txray.write_report(small[:2], tmp_path / "inline" / "c.html", plotly_js="inline")
    page = inline.html.read_text(encoding="utf-8")
    assert inline.plotly_js is None and "data-plotly-src=" not in page and "plotly.js (cartesian" in page
    assert len(page) > 1_400_000
    with pytest.raises(ValueError, match="plotly_js"):
        txray.write_report(small[:2], tmp_path / "d.html", plotly_js="cdn")


def test_webgl_figures_get_the_full_plotly_js(tmp_path):
    """A figure outside the cartesian bundle (WebGL scatter of 10,000 neurons) needs the full plotly.js."""
    large = [st.synthetic_profile(seed=i) for i in range(2)]
    figures = report.report_figures(large)
    assert "scattergl" in {t.type for f in figures.values() for t in f.data}
    assert report.plotly_bundle(figures) == "full"
    result = txray.write_report(large, tmp_path / "big.html")
    assert result.plotly_js.name == report.plotly_js_name("full") and result.plotly_js.stat().st_size > 3e6


def test_paper_sized_report_is_small(tmp_path):
    """1,500 neurons x 3 stages, with contexts: under 2 MB besides the shared plotly.js."""
    profiles = [
        st.synthetic_profile(n_neurons=1500, vocab=2000, cells=60_000, seed=i, name=f"epoch {i + 1}") for i in range(3)
    ]
    profiles = [st.with_random_contexts(p, k=20, seed=i) for i, p in enumerate(profiles)]
    result = txray.write_report(profiles, tmp_path / "paper.html")
    size = result.html.stat().st_size
    print(f"report of 1,500 neurons x 3 stages with contexts: {size / 1e6:.2f} MB")
    assert size < 2_000_000


def test_neuron_browser_data(small_report, small):
    _, page = small_report
    doc = browser.read_document(page)
    assert doc["format"] == browser.FORMAT and doc["stages"] == ["epoch 1", "epoch 2", "epoch 3"]
    table = txray.neuron_table(small, "token")
    assert doc["table"]["state"] == table.column("state").to_pylist()
    assert doc["table"]["neuron"] == table.column("neuron").to_pylist()
    assert len(doc["neurons"]) == small[0].n_neurons
    detail = txray.neuron_detail(small, 4, ["token", "pos"], top=10)["features"].to_pylist()
    for kind in ("token", "pos"):
        for s in range(3):
            mine = [r for r in detail if r["kind"] == kind and r["stage_index"] == s]
            assert [f[0] for f in doc["neurons"][4]["features"][kind][s]] == [r["feature_name"] for r in mine]
            assert [f[2] for f in doc["neurons"][4]["features"][kind][s]] == [r["count"] for r in mine]
    assert doc["neurons"][4]["contexts"] is None  # these profiles hold none


def test_report_of_different_models(tmp_path):
    a = st.recorded_stages(n_stages=1, n_neurons=12)[0]
    b = st.recorded_stages(n_stages=1, n_neurons=30, seed=3)[0]
    b.name = "wider"
    result = txray.write_report([a, b], tmp_path / "r.html", pos_kind="pos")
    assert result.figures == ["feature_mass", "mass_curve", "nearest"]
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "mean nearest Hellinger" in page
    doc = browser.read_document(page)
    assert doc["stages"] == ["epoch 1", "wider"] and not doc["same_layer"] and doc["widths"] == [12, 30]


def test_report_of_one_profile_and_errors(tmp_path, small):
    result = txray.write_report(small[:1], tmp_path / "one.html")
    assert result.figures == ["feature_mass", "mass_curve"]
    with pytest.raises(ValueError, match="no feature kind 'label'"):
        txray.write_report(small, tmp_path / "x.html", kind="label")
    assert not (tmp_path / "x.html").exists()
    with pytest.raises(ValueError, match="at least one profile"):
        txray.write_report([], tmp_path / "x.html")


def test_png_skipped_without_browser(tmp_path, small, monkeypatch):
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-such-chrome"))
    with pytest.warns(RuntimeWarning, match="Chromium"):
        result = txray.write_report(small[:2], tmp_path / "r.html", png_dir=tmp_path / "png")
    assert result.png == [] and "Chrom" in result.png_skipped
    assert (tmp_path / "r.html").exists()


@needs_chromium
def test_png_export(tmp_path, small, monkeypatch):
    pytest.importorskip("kaleido")
    monkeypatch.setenv("BROWSER_PATH", CHROMIUM)
    figures = report.report_figures(small[:2])
    written = report.export_png({n: figures[n] for n in ("hellinger_length", "most_changed")}, tmp_path)
    assert [p.name for p in written] == ["hellinger_length.png", "most_changed.png"]
    for p in written:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_png_export_raises_what_kaleido_returns(tmp_path, small, monkeypatch):
    # kaleido returns render errors (a figure over its time limit) instead of raising them: the CI
    # once failed on a missing file where it should have said why.
    kaleido = pytest.importorskip("kaleido")
    monkeypatch.setattr(report, "png_unavailable", lambda: None)
    monkeypatch.setattr(report, "find_browser", lambda: "/nonexistent/chromium")
    monkeypatch.setattr(kaleido, "write_fig_from_object_sync", lambda specs, kopts: (TimeoutError("figure 1"),))
    figures = report.report_figures(small[:2])
    with pytest.raises(RuntimeError, match="kaleido did not write hellinger_length.*TimeoutError"):
        report.export_png({"hellinger_length": figures["hellinger_length"]}, tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile_dir = tmp_path / f"chromium-profile-{len(list(tmp_path.iterdir()))}"
    cmd = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", "--virtual-time-budget=20000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def drawn_figures(dom: str) -> list[str]:
    """Figure divs that plotly.js turned into plots (it adds js-plotly-plot and an SVG)."""
    return re.findall(r'id="fig-([a-z_]+)" class="plotly-graph-div js-plotly-plot"', dom)


@needs_chromium
def test_report_draws_in_headless_chromium(small_report, tmp_path):
    """The smoke test without Playwright: Chromium's own --dump-dom (tests/test_browser.py drives the page)."""
    result, _ = small_report
    url = result.html.resolve().as_uri()
    dom = chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-js-errors="0"' in dom.stdout  # the page's error hook ran and caught nothing
    assert 'data-ready="true"' in dom.stdout and 'data-figures-drawn="true"' in dom.stdout
    assert "Uncaught" not in dom.stderr
    assert drawn_figures(dom.stdout) == result.figures
    assert dom.stdout.count('class="main-svg"') >= len(result.figures)

    shot = tmp_path / "report.png"
    run = chromium(tmp_path, "--window-size=1400,2400", f"--screenshot={shot}", url)
    assert run.returncode == 0 and shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 50_000
    keep = os.environ.get("TXRAY_KEEP_SCREENSHOT")  # set it to a path to look at the page yourself
    if keep:
        Path(keep).write_bytes(shot.read_bytes())


@needs_chromium
def test_report_with_10000_neurons_draws_webgl(tmp_path):
    profiles = [st.synthetic_profile(seed=i, name=f"c{i}") for i in range(3)]
    path = tmp_path / "big.html"
    result = txray.write_report(profiles, path)
    dom = chromium(tmp_path, "--dump-dom", path.resolve().as_uri())
    assert 'data-js-errors="0"' in dom.stdout and 'data-ready="true"' in dom.stdout
    assert drawn_figures(dom.stdout) == result.figures
    assert "gl-canvas" in dom.stdout  # the large scatters went through WebGL
    dom = chromium(tmp_path, "--dump-dom", path.resolve().as_uri() + "#neurons")
    assert "of 10,000 neurons" in dom.stdout
    assert dom.stdout.count('class="txb-grid txb-row"') < 200  # a virtual list: only the rows in view


def test_report_with_kind_pos_has_one_length_shift_figure(tmp_path, small):
    result = txray.write_report(small, tmp_path / "pos.html", kind="pos")
    assert result.figures.count("length_shift") == 1 and "length_shift_pos" not in result.figures
    page = result.html.read_text(encoding="utf-8")
    assert "Length shift: part-of-speech tags" in page and "Length shift: tokens" not in page


def test_mojibake_and_blank_tokens_are_shown_as_escapes(small):
    p = small[0]
    cells = p.cells("token")
    names = ["\ufffd" if i % 2 else " " for i in range(p.vocab_size("token"))]
    odd = txray.Profile(
        p.n_neurons,
        p.mode,
        p.k,
        {"token": txray.KindCells(cells.neuron, cells.feature, cells.count, cells.sum, cells.frequencies, names)},
        p.mass(),
        p.tokens,
        name="odd",
    )
    doc = browser.browser_document([odd])
    labels = set(doc["table"]["top_feature"]) | {f[0] for n in doc["neurons"] for f in n["features"]["token"][0]}
    assert labels <= {"\\ufffd", "␣", None} and "\\ufffd" in labels
