"""Helpers shared by the txray subcommands: reading profiles, writing tables."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from ..parquet import MANIFEST
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


def load_profiles(paths: Sequence[str], kind: str | None = None, labels: str | None = None) -> list[Profile]:
    """Load profile files; with ``kind``, each must have that feature kind; ``labels``
    (``--labels A,B,...``) renames them."""
    profiles = [load_profile(path) for path in paths]
    apply_labels(profiles, labels, paths)
    for path, profile in zip(paths, profiles):
        if profile.name is None:
            profile.name = Path(path).stem  # label figures and tables by file name
        if kind is not None and kind not in profile.kinds:
            raise UsageError(f"{path} has no feature kind {kind!r}; it has {', '.join(profile.kinds)} (use --kind)")
    return profiles


def apply_labels(profiles: Sequence[Profile], labels: str | None, paths: Sequence[str]) -> None:
    """Rename the profiles by ``--labels A,B,...`` (one label per profile, in order)."""
    if labels is None:
        return
    names = [label.strip() for label in labels.split(",")]
    if len(names) != len(profiles):
        raise UsageError(f"--labels gives {len(names)} label(s) for {len(profiles)} profiles ({', '.join(paths)})")
    if not all(names):
        raise UsageError(f"--labels {labels!r} has an empty label")
    for profile, name in zip(profiles, names):
        profile.name = name


LABELS_HELP = "names for the profiles, comma-separated, in order (default: the names they were recorded with)"


def check_output(path: str | None, suffixes: Sequence[str] = TABLE_SUFFIXES) -> None:
    """Fail before any work when the output's format is unknown or it cannot
    be written: a directory, a missing or read-only folder. An existing file
    is replaced (atomically, once the work is done)."""
    if path is None:
        return
    if Path(path).suffix.lower() not in suffixes:
        raise UsageError(f"cannot write {path}: the output must end in {' or '.join(suffixes)}")
    check_writable_file(path)


def check_writable_file(path: str | os.PathLike) -> None:
    """Fail when ``path`` cannot be written as a file: it is a directory, or
    its folder is missing or not writable."""
    if Path(path).is_dir():
        raise UsageError(f"cannot write {path}: it is a directory; name a file in it instead")
    _check_parent(path)


def _check_parent(path: str | os.PathLike) -> None:
    """Fail when the folder that would hold ``path`` is missing or not writable, or is inside a profile."""
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise UsageError(f"cannot write {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {path}: folder {parent} is not writable")
    _check_not_in_profile(path, f"cannot write {path}")


def _check_not_in_profile(path: str | os.PathLike, what: str) -> None:
    """Fail when ``path`` lies inside a profile folder: the next save of that profile replaces
    the whole folder, and what was written there would be lost."""
    for folder in Path(path).resolve().parents:
        if (folder / MANIFEST).is_file():
            raise UsageError(
                f"{what}: it is inside the profile {folder}, whose next save would delete it; choose a path outside it"
            )


def check_profile_output(path: str | os.PathLike) -> None:
    """Fail when a profile cannot be saved at ``path``: its folder is missing
    or not writable, or ``path`` is a folder that is not a profile (a profile
    is itself a folder, which a save replaces)."""
    from .. import parquet

    _check_parent(path)
    try:
        parquet.check_replaceable(path)
    except parquet.ProfileError as err:
        raise UsageError(f"cannot write {path}: {err}") from None


def check_output_dir(path: str | os.PathLike, option: str = "--out") -> None:
    """Fail when ``path`` cannot be used as an output folder: it is a file,
    or it (or, when missing, its nearest existing parent, where it will be
    made) is not a writable folder."""
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise UsageError(f"{option} {path} is a file; it must be a folder (a new or an existing one)")
    existing = target.resolve()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{option} {path}: {existing} is a file, so the folder cannot be made")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "folder" if existing == target.resolve() else f"folder {existing}, where it would be made,"
        raise UsageError(f"{option} {path}: {where} is not writable")
    if (target.resolve() / MANIFEST).is_file():
        raise UsageError(f"{option} {path} is a profile, not a folder for outputs; name another folder")
    _check_not_in_profile(target, f"{option} {path}")


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


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        import argparse

        raise argparse.ArgumentTypeError(f"must be a non-negative integer, not {text!r}")
    return value


def worker_count(text: str) -> int:
    """argparse type: a number of worker processes (an integer >= 0, at most 4 per core)."""
    import argparse

    from ..workers import too_many_workers

    value = non_negative_int(text)
    reason = too_many_workers(value)
    if reason is not None:
        raise argparse.ArgumentTypeError(f"{value} {reason}")
    return value


def check_record_args(args: argparse.Namespace) -> None:
    """What ``txray record`` can check before loading a model: the output
    folder, the device, the columns that --feature reads, the --tagger."""
    check_output_dir(args.out, "--out")
    device = str(args.device)
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: torch sees no CUDA device here; record with --device cpu")
    features = args.feature or ["token"]
    columns = {"label": args.label} if "label" in features else {}
    columns.update({kind: kind[7:] for kind in features if kind.startswith("column:") and kind[7:]})
    if columns:
        from ..corpus import Corpus

        corpus = Corpus(args.corpus, text=args.text)
        first = next(iter(corpus.records()), None)
        for kind, column in columns.items():
            if first is not None and column not in first:
                hint = (
                    "a text file has one column, the text: use a CSV, TSV or Parquet corpus"
                    if list(first) == [args.text]
                    and Path(args.corpus).is_file()
                    and Path(args.corpus).suffix.lower() not in (".csv", ".tsv", ".parquet", ".pq")
                    else "name the column with --label"
                    if kind == "label"
                    else "check the column name"
                )
                raise UsageError(
                    f"--feature {kind} reads column {column!r}, which {args.corpus} does not have "
                    f"(it has {', '.join(map(repr, first))}); {hint}"
                )
    if "pos" in features:
        from ..taggers import check_tagger_spec

        try:
            check_tagger_spec(args.tagger)
        except (ValueError, FileNotFoundError) as err:
            raise UsageError(f"--tagger {args.tagger}: {err}") from None
