"""Debian's Chromium for the page tests (tests/test_report.py's headless CLI; the Playwright tests of
tests/test_browser.py and tests/test_serve_browser.py share the ``chromium`` fixture of conftest.py)."""

from __future__ import annotations

import os

import pytest

CHROMIUM = "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"
)
# Offline and quiet: without these, Chromium waits on network services the machine lacks.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-unsafe-swiftshader",  # WebGL (Scattergl) on the CPU
    "--use-angle=swiftshader",
]
