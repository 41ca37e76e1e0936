"""Helpers shared by the txray subcommands: reading profiles, writing tables."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from ..profile import Profile

TABLE_SUFFIXES = (".parquet", ".csv")


class UsageError(Exception):
    """A problem with the user's input: printed without a traceback, exit code 2."""


def load_profile(path: str) -> Profile:
    """Load a profile; what can't be loaded is a UsageError (exit 2) naming the file.

    An invalid profile raises :class:`txray.ProfileError`, a ValueError that
    names the file (exit 2 too)."""
    try:
        return Profile.load(path)
    except MemoryError:
        raise UsageError(f"{path} is too large to load into this machine's memory") from None
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise UsageError(f"no profile at {path}") from None
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror or err}") from None


def load_profiles(paths: Sequence[str], kind: str | None = None) -> list[Profile]:
    """Load profile files; with ``kind``, each must have that feature kind."""
    profiles = [load_profile(path) for path in paths]
    for path, profile in zip(paths, profiles):
        if profile.name is None:
            profile.name = Path(path).stem  # label figures and tables by file name
        if kind is not None and kind not in profile.kinds:
            raise UsageError(f"{path} has no feature kind {kind!r}; it has {', '.join(profile.kinds)} (use --kind)")
    return profiles


def check_output(path: str | None) -> None:
    """Fail before any work when the output's format is unknown or its folder is missing."""
    if path is None:
        return
    if Path(path).suffix.lower() not in TABLE_SUFFIXES:
        raise UsageError(f"cannot write {path}: the output must end in {' or '.join(TABLE_SUFFIXES)}")
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise UsageError(f"cannot write {path}: folder {parent} does not exist")


def write_table(table: pa.Table, path: str) -> None:
    """Write a table as Parquet or CSV (by suffix), to a temporary name and then renamed."""
    check_output(path)
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        if target.suffix.lower() == ".csv":
            import pyarrow.csv as pcsv

            pcsv.write_csv(table, tmp)
        else:
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        import argparse

        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return value
