"""The README's code runs as written, and so do the docs' blocks marked runnable.

Every ```python block of README.md runs in order in one namespace, in a
temporary working directory. In docs/*.md, a block preceded by the line
``<!-- runnable -->`` runs the same way (one namespace per page).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^(<!-- runnable -->\n)?```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def python_blocks(path: Path, marked_only: bool) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return [m.group(2) for m in FENCE.finditer(text) if m.group(1) or not marked_only]


def run_blocks(blocks: list[str], name: str, cwd: Path, monkeypatch) -> dict:
    monkeypatch.chdir(cwd)
    namespace: dict = {"__name__": "__docs__"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{name} block {i + 1}", "exec"), namespace)  # noqa: S102
    return namespace


def test_readme_code_runs(tmp_path, monkeypatch, capsys):
    blocks = python_blocks(ROOT / "README.md", marked_only=False)
    assert len(blocks) >= 2, "the README's quick start has lost its code"
    ns = run_blocks(blocks, "README.md", tmp_path, monkeypatch)
    # The quick start's results are real: two stages of 256 neurons, compared and saved.
    summary = ns["txray"].summary(ns["cmp"])
    assert sum(summary[s] for s in ("shared", "avoided", "gained", "dead")) == 256
    assert (tmp_path / "epoch1.parquet").exists() and ns["near"].num_rows > 0
    real = ns["profiles"]
    assert real["wiki"].tokens > 500 and real["tweets"].tokens > 500
    assert real["wiki"].vocabulary("token") == real["tweets"].vocabulary("token")
    out = capsys.readouterr().out
    assert "'shared':" in out


RUNNABLE_PAGES = sorted(p.name for p in (ROOT / "docs").glob("*.md") if "<!-- runnable -->" in p.read_text())


def test_some_pages_have_runnable_blocks():
    assert {"getting-started.md", "profiles.md", "recording.md"} <= set(RUNNABLE_PAGES)


@pytest.mark.parametrize("page", RUNNABLE_PAGES)
def test_docs_runnable_blocks(page, tmp_path, monkeypatch):
    source = (ROOT / "docs" / page).read_text()
    if "import duckdb" in source:
        pytest.importorskip("duckdb")
    if "import polars" in source:
        pytest.importorskip("polars")
    blocks = python_blocks(ROOT / "docs" / page, marked_only=True)
    assert blocks
    run_blocks(blocks, page, tmp_path, monkeypatch)


def test_readme_is_short_and_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    for target in re.findall(r"\]\(((?:docs/)[^)#]+)", text):
        assert (ROOT / target).exists(), target
    assert "DESIGN.md" not in text


def test_no_code_points_at_a_missing_design_file():
    for folder in ("python", "cpp", "benchmarks", "tests", "docs"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in {".py", ".hpp", ".cpp", ".cu", ".md"} and path.name != "test_docs.py":
                assert "DESIGN.md" not in path.read_text(errors="replace"), path
