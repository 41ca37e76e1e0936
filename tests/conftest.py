import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import chromium as chromium_path  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=60, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def pytest_terminal_summary(terminalreporter, config):
    """Where the browser tests left their screenshots, and how long pages took (measured, not asserted)."""
    folder = getattr(config, "txray_artefacts", None)
    if folder is not None:
        terminalreporter.write_line(f"browser test screenshots: {folder}")
    for what, seconds in getattr(config, "txray_timings", []):
        terminalreporter.write_line(f"browser timing: {what}: {seconds:.2f} s")


@pytest.fixture(scope="module")
def chromium():
    """One headless Chromium per test module, driven by Playwright (the Playwright page tests)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install playwright)")
    with sync_api.sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=chromium_path.CHROMIUM, args=chromium_path.FLAGS, headless=True)
        yield instance
        instance.close()
