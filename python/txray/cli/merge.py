"""``txray merge``: combine profiles recorded on parts of a corpus into one."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..profile import Profile, check_compatible, duplicate_key, merge_profiles, missing_shards
from ._common import UsageError, check_profile_output, load_profile

MERGE_GROUP = 16
"""Parts read and merged at a time: memory holds one group and the running merge."""

EXAMPLE = """\
example:
  txray merge profiles/encoder.layer.0.intermediate.part-*-of-8.parquet \\
      -o profiles/encoder.layer.0.intermediate.parquet

  The parts come from `txray record ... --shard I/N` (a cluster array job) or any
  profiles of the same model and layer recorded the same way on disjoint text.
  Counts add up exactly and sums in float64: the result is the profile one run
  over all the text gives. Parts with different vocabularies (other corpora)
  are merged on the union of their feature names. Parts of different models,
  layers or modes are an error; so is a shard given twice, and so is the same
  profile given twice (compared by content, whatever the file names) unless
  --allow-duplicates. A missing shard is reported (the merged profile's
  metadata lists the shards it holds).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "merge",
        help="combine profiles recorded on parts of a corpus into one",
        description="Combine profiles recorded on disjoint parts of a corpus (shards) into the profile "
        "of the whole corpus.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("parts", nargs="+", metavar="PART", help="profile files (.parquet)")
    parser.add_argument("-o", "--out", required=True, metavar="FILE", help="the merged profile (.parquet)")
    parser.add_argument("--name", help="name of the merged profile (default: the first part's)")
    parser.add_argument(
        "--allow-duplicates",
        action="store_true",
        help="merge a part that holds the same data as another (its tokens count twice)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..distributed import save_profiles

    out = Path(args.out)
    if out.suffix.lower() != ".parquet":
        raise UsageError(f"cannot write {out}: the merged profile must end in .parquet")
    check_profile_output(out)
    if out.resolve() in {Path(p).resolve() for p in args.parts}:
        raise UsageError(f"the output {out} is one of the parts; write the merge to a new file")
    merged = merge_files(args.parts, args.name, args.allow_duplicates)
    save_profiles({out: merged})
    missing = missing_shards(merged)
    if missing:
        print(
            f"txray merge: warning: shards {missing} of {merged.metadata['shards'][0][1]} are missing", file=sys.stderr
        )
    print(f"{out}\t{merged.name}\t{len(args.parts)} parts\t{merged.n_neurons} neurons\t{merged.tokens} tokens")
    return 0


def merge_files(paths: Sequence[str], name: str | None = None, allow_duplicates: bool = False) -> Profile:
    """Load and merge profile files, :data:`MERGE_GROUP` at a time."""
    for path in paths:
        if not Path(path).exists():  # a profile is a folder (format 2) or a file (format 1)
            raise UsageError(f"part not found: {path}")
    merged: Profile | None = None
    seen: dict[str, str] = {}  # duplicate key -> the first file that has it, across groups
    for start in range(0, len(paths), MERGE_GROUP):
        group = paths[start : start + MERGE_GROUP]
        profiles = [load_profile(path) for path in group]
        reference = merged or profiles[0]
        for path, profile in zip(group, profiles):
            try:
                check_compatible(reference, profile, same_recording=True)
            except ValueError as err:
                raise UsageError(f"cannot merge {path} with {paths[0]}: {err}") from None
            key = None if allow_duplicates else duplicate_key(profile)
            if key in seen:
                raise UsageError(
                    f"{path} holds the same data as {seen[key]}: merging it would count its {profile.tokens} "
                    "tokens twice (--allow-duplicates merges it anyway)"
                )
            if key is not None:
                seen[key] = path
        # Checked above, across groups; a group holds no duplicate the merge need look for.
        merged = merge_profiles(([merged] if merged is not None else []) + profiles, name=name, allow_duplicates=True)
    assert merged is not None  # paths is not empty: argparse asks for one part or more
    return merged
