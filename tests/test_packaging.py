"""Packaging: the extras leave torch's version to the user, and the sdist
holds what a build needs and nothing of a developer's tree. (Building the
wheel takes minutes: scripts/build_wheel.sh does that, not the tests.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tracked(*paths):
    try:
        out = subprocess.run(["git", "ls-files", *paths], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return set(out.stdout.split())


def test_extras_take_a_range_of_torch_versions():
    if sys.version_info < (3, 11):
        pytest.skip("tomllib is Python 3.11+")
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    pins = [(name, req) for name, reqs in extras.items() for req in reqs if req.replace(" ", "").startswith("torch")]
    assert pins, "no extra depends on torch"
    for name, req in pins:  # '==' would make pip replace a user's CUDA torch
        assert "==" not in req and ">=" in req, f"extra {name!r}: {req!r}"


def test_sdist_holds_the_sources_and_no_build_outputs(tmp_path):
    # The sdist of a copy of the checkout's files (walking the checkout itself
    # would walk its .venv too: half a minute), with a developer's outputs
    # added, which must stay out.
    build = pytest.importorskip("scikit_build_core.build")
    files = tracked()
    tree = tmp_path / "tree"
    for f in files:
        if os.path.isfile(os.path.join(ROOT, f)):
            (tree / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.join(ROOT, f), tree / f)
    outputs = [".venv/lib/site.py", "build/cp311/_native.so", "dist/txray.whl", "site/index.html", "python/txray/x.so"]
    for f in outputs:
        (tree / f).parent.mkdir(parents=True, exist_ok=True)
        (tree / f).write_text("")
    cwd = os.getcwd()
    os.chdir(tree)
    try:
        name = build.build_sdist(str(tmp_path))
    finally:
        os.chdir(cwd)
    with tarfile.open(tmp_path / name) as tar:
        members = {m.split("/", 1)[1] for m in tar.getnames() if "/" in m}
    needed = {
        f for f in files if f.startswith(("cpp/", "python/")) or f in ("CMakeLists.txt", "pyproject.toml", "README.md")
    }
    missing = needed - members
    assert not missing, f"not in the sdist: {sorted(missing)}"
    assert {"cpp/kernels.cpp", "cpp/select.hpp", "cpp/cuda/device_recorder.cu", "python/txray/__init__.py"} <= members
    for m in members:
        top = m.split("/", 1)[0]
        assert top not in {".venv", "build", "dist", "site", "demo-output", ".txray-cache"}, m
        assert not m.endswith((".so", ".pyd", ".o")) and "__pycache__" not in m, m
