"""python/txray/_native.pyi says what the extension has: every name, and every parameter by name.

pybind11 functions have no inspectable signature, so mypy's stubtest cannot
check their parameters; their docstrings start with it, and this test reads it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from txray import _native

STUB = Path(_native.__file__).with_name("_native.pyi")
if not STUB.exists():  # an editable install keeps the built extension apart from the sources
    STUB = Path(__file__).resolve().parents[1] / "python" / "txray" / "_native.pyi"
CUDA_ONLY = {"DeviceRecorder", "DeviceError", "cuda_pointer_device", "cuda_order_after"}


def stub_tree() -> ast.Module:
    return ast.parse(STUB.read_text(encoding="utf-8"))


def stub_functions() -> dict[str, ast.FunctionDef]:
    """'name' and 'Class.name' -> the stub's def (properties excluded)."""
    found: dict[str, ast.FunctionDef] = {}
    for node in stub_tree().body:
        if isinstance(node, ast.FunctionDef):
            found[node.name] = node
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and not item.decorator_list:
                    found[f"{node.name}.{item.name}"] = item
    return found


def runtime_parameters(function: object) -> list[str]:
    """Parameter names from a pybind11 docstring's first line: 'name(self: T, a: int, b: str) -> R'."""
    first = (function.__doc__ or "").splitlines()[0]
    inside = re.fullmatch(r"\w+\((.*)\) -> .*", first)
    assert inside, f"no signature in the docstring: {first!r}"
    names, depth, current = [], 0, ""
    for char in inside[1] + ",":
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        if char == "," and depth == 0:
            if current.strip():
                names.append(current.split(":")[0].strip())
            current = ""
        else:
            current += char
    return [name for name in names if name != "self"]


def test_the_stub_names_every_public_name_of_the_extension():
    stub_names = {
        target.id if isinstance(target, ast.Name) else target.target.id
        for node in stub_tree().body
        for target in ([node] if isinstance(node, ast.AnnAssign) else [])
    } | {node.name for node in stub_tree().body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    runtime = {name for name in dir(_native) if not name.startswith("_")}
    assert runtime <= stub_names, f"not in the stub: {sorted(runtime - stub_names)}"
    expected_missing = set() if _native.has_cuda else CUDA_ONLY
    assert stub_names - runtime == expected_missing


@pytest.mark.parametrize("qualified", sorted(stub_functions()))
def test_stub_parameters_match_the_extension(qualified):
    owner, _, name = qualified.rpartition(".")
    if (owner or name) in CUDA_ONLY and not _native.has_cuda:
        pytest.skip("a CUDA-only name, and this build has no CUDA kernels")
    function = getattr(getattr(_native, owner), name) if owner else getattr(_native, name)
    node = stub_functions()[qualified]
    params = [a.arg for a in node.args.posonlyargs + node.args.args if a.arg != "self"]
    assert params == runtime_parameters(function)


def test_stub_properties_exist():
    for node in stub_tree().body:
        if isinstance(node, ast.ClassDef) and (node.name not in CUDA_ONLY or _native.has_cuda):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.decorator_list:
                    assert isinstance(getattr(getattr(_native, node.name), item.name), property), item.name
