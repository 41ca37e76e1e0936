"""The HTML report: content, offline self-containment, PNG export, and drawing in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("plotly")

import stages as st  # noqa: E402

import txray  # noqa: E402
from txray import report  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"
)
# Headless, offline, and quiet: without these, Chromium waits on network services the machine lacks.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-unsafe-swiftshader",  # WebGL (Scattergl) on the CPU
    "--use-angle=swiftshader",
    "--hide-scrollbars",
    "--enable-logging=stderr",
]


@pytest.fixture(scope="module")
def small():
    return st.recorded_stages()


@pytest.fixture(scope="module")
def small_report(small, tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "report.html"
    result = txray.write_report(small, path, token_pos=st.token_pos(20), k=3)
    return result, path.read_text(encoding="utf-8")


def neuron_sets(page: str) -> list:
    raw = re.search(r"<script type='application/json' id='neuron-data'>(.*?)</script>", page, re.S).group(1)
    return json.loads(raw)


def test_report_holds_every_figure_and_is_offline(small_report, small):
    result, page = small_report
    assert result.figures == list(report.FIGURES)
    for name in report.FIGURES:
        assert f'id="fig-{name}"' in page
    assert not re.search(r"<script[^>]+src=", page)  # nothing loaded from elsewhere: plotly.js is inline
    assert len(page) > 3_000_000  # plotly.js itself
    summary = txray.summary(txray.compare(small[0], small[1]))
    assert f"<td>{summary['shared']}</td>" in page and "mean Hellinger" in page


def test_neuron_table_data(small_report, small):
    _, page = small_report
    sets = neuron_sets(page)
    assert [s["label"] for s in sets] == ["epoch 1 → epoch 2", "epoch 2 → epoch 3"]
    rows = sets[0]["rows"]
    assert len(rows) == small[0].n_neurons
    cmp = txray.compare(small[0], small[1]).to_pylist()
    assert [r[1] for r in rows] == [c["state"] for c in cmp]


def test_report_of_different_models(tmp_path):
    a = st.recorded_stages(n_stages=1, n_neurons=12)[0]
    b = st.recorded_stages(n_stages=1, n_neurons=30, seed=3)[0]
    b.name = "wider"
    result = txray.write_report([a, b], tmp_path / "r.html", pos_kind="pos")
    assert result.figures == ["feature_mass", "mass_curve", "nearest"]
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "mean nearest Hellinger" in page
    assert [s["label"] for s in neuron_sets(page)] == ["epoch 1", "wider"]


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


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile_dir = tmp_path / f"chromium-profile-{len(list(tmp_path.iterdir()))}"
    cmd = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", "--virtual-time-budget=20000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def drawn_figures(dom: str) -> list[str]:
    """Figure divs that plotly.js turned into plots (it adds js-plotly-plot and an SVG)."""
    return re.findall(r'id="fig-([a-z_]+)" class="plotly-graph-div js-plotly-plot"', dom)


@needs_chromium
def test_report_draws_in_headless_chromium(small_report, tmp_path):
    result, _ = small_report
    url = result.html.resolve().as_uri()
    dom = chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-js-errors="0"' in dom.stdout  # the page's error hook ran and caught nothing
    assert "Uncaught" not in dom.stderr
    assert drawn_figures(dom.stdout) == list(report.FIGURES)
    assert dom.stdout.count('class="main-svg"') >= len(report.FIGURES)
    table = re.search(r'<table id="neuron-table">.*?</table>', dom.stdout, re.S).group(0)
    assert table.count("<tr>") == 12 + 1  # every neuron, and the header
    assert "12 of 12 neurons" in dom.stdout

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
    txray.write_report(profiles, path)
    dom = chromium(tmp_path, "--dump-dom", path.resolve().as_uri())
    assert 'data-js-errors="0"' in dom.stdout
    assert drawn_figures(dom.stdout) == list(report.FIGURES)
    assert "gl-canvas" in dom.stdout  # the large scatters went through WebGL
    assert "500 of 10000 neurons" not in dom.stdout and "of 10000 neurons (first 500 shown)" in dom.stdout
