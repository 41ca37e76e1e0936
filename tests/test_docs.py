"""The README's code runs as written, and so do the docs' blocks marked runnable.

Every ```python block of README.md runs in order in one namespace, in a
temporary working directory. In docs/*.md, a block preceded by the line
``<!-- runnable -->`` runs the same way (one namespace per page).
"""

from __future__ import annotations

import re
import sys
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


def _load(path: Path, name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_benchmark_results_files_and_the_performance_page(tmp_path, monkeypatch):
    import argparse
    import json

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    common = _load(ROOT / "benchmarks" / "_common.py", "bench_common_for_test")
    args = argparse.Namespace(size="quick", note="a test run", results=None)
    bandwidth = [common.Bandwidth("probe", 12.5, "read")]
    table = {"title": "t", "headers": ["method", "seconds"], "rows": [["txray | fast", 0.1], ["numpy", 0.2]]}
    path = common.write_results("bench_x", args, [table], bandwidth=bandwidth, path=str(tmp_path / "bench_x.json"))
    run = json.loads(Path(path).read_text())
    for key in ("date_utc", "commit", "dirty", "arguments", "machine", "versions", "tables", "bandwidth_measured"):
        assert key in run, key
    assert run["machine"]["logical_cores"] and run["versions"]["python"]
    assert run["arguments"] == {"size": "quick", "note": "a test run"} and run["tables"] == [table]

    hooks = _load(ROOT / "docs" / "hooks.py", "docs_hooks_for_test")
    page = hooks.on_page_markdown("x\n<!-- txray-results: bench_x -->\ny", None, None, None)
    assert "<!--" not in page and "No results yet" in page  # benchmarks/results/ has no bench_x.json
    text = hooks.render("bench_x", str(tmp_path))
    assert "| txray \\| fast | 0.1 |" in text and "a test run" in text and "12.5" in text
    assert "No results yet" in hooks.render("bench_missing", str(tmp_path))


def test_every_benchmark_writes_its_results():
    for script in (ROOT / "benchmarks").glob("bench_*.py"):
        assert "write_results(" in script.read_text(), script.name
    performance = (ROOT / "docs" / "performance.md").read_text()
    for script in (ROOT / "benchmarks").glob("bench_*.py"):
        assert f"<!-- txray-results: {script.stem} -->" in performance, script.stem
