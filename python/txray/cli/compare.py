"""``txray compare``: neuron-by-neuron comparison of two profiles of the same layer."""

from __future__ import annotations

import argparse
import json

from ..compare import compare, summary
from ..profile import union_vocabulary
from ._common import LABELS_HELP, check_output, load_profiles, write_table

EXAMPLE = """example:
  txray compare epoch1.parquet epoch48.parquet --kind token -o cmp.parquet

Prints the shared / avoided / gained / dead counts and the mean and median
Hellinger distance; -o writes one row per neuron (Parquet or CSV). Profiles
of different corpora are lined up by feature name (their vocabularies differ).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare two profiles of the same layer, neuron by neuron",
        description=__doc__.splitlines()[0].replace("``", ""),
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("a", metavar="A.parquet", help="profile of stage A (before)")
    parser.add_argument("b", metavar="B.parquet", help="profile of stage B (after)")
    parser.add_argument("--labels", metavar="A,B", help=LABELS_HELP)
    parser.add_argument("--kind", default="token", help="feature kind to compare (default: token)")
    parser.add_argument(
        "-o", "--output", metavar="FILE", help="write the per-neuron table (.parquet or .csv; replaced if it exists)"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_output(args.output)
    a, b = load_profiles([args.a, args.b], args.kind, args.labels)
    table = compare(a, b, args.kind)
    info = summary(table)
    if args.json:
        print(json.dumps({**info, "kind": args.kind, "a": a.name, "b": b.name}))
    else:
        print(f"{a.name} -> {b.name}: {info['neurons']} neurons, feature kind {args.kind!r}")
        va, vb = a.vocabulary(args.kind), b.vocabulary(args.kind)
        if va is not None and vb is not None and va != vb:
            union = len(union_vocabulary([va, vb]))
            print(f"vocabularies lined up by name: {len(va):,} and {len(vb):,} features, {union:,} in all")
        print("  ".join(f"{state} {info[state]}" for state in ("shared", "avoided", "gained", "dead")))
        if info["mean_hellinger"] is not None:
            mean, median = info["mean_hellinger"], info["median_hellinger"]
            print(f"Hellinger of shared neurons: mean {mean:.4f}, median {median:.4f}")
    if args.output:
        write_table(table, args.output)
        print(f"wrote {args.output}")
    return 0
