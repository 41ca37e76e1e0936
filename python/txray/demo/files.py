"""Writing files safely: to a temporary name in the same folder, then renamed."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed to ``path``, else removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(value: Any, path: str | os.PathLike) -> None:
    """Write ``value`` as indented JSON."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(value, indent=1), encoding="utf-8")


def write_text(text: str, path: str | os.PathLike) -> None:
    """Write a UTF-8 text file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_table(table: Any, path: str | os.PathLike) -> None:
    """Write a pyarrow table as Parquet or CSV, by the suffix."""
    with atomic_path(path) as tmp:
        if Path(path).suffix.lower() == ".csv":
            import pyarrow.csv as pcsv

            pcsv.write_csv(table, tmp)
        else:
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
