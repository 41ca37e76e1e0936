"""``txray nearest``: the nearest neurons of B for every neuron of A (any two layers or models)."""

from __future__ import annotations

import argparse

import numpy as np

from ..compare import match, nearest
from ._common import LABELS_HELP, check_output, load_profiles, positive_int, write_table

EXAMPLE = """example:
  txray nearest lstm.parquet minilm.parquet -k 5 -o nearest.parquet --match pairs.parquet

For every preferred neuron of A, its k nearest preferred neurons of B by
Hellinger distance (columns neuron_a, rank, neuron_b, hellinger). The two
profiles may come from different models with different widths and from
different corpora (vocabularies are lined up by feature name). --match also
writes a one-to-one matching.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "nearest",
        help="nearest neurons between two profiles (e.g. of two different models)",
        description=__doc__.splitlines()[0].replace("``", ""),
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("a", metavar="A.parquet", help="profile whose neurons are looked up")
    parser.add_argument("b", metavar="B.parquet", help="profile searched for the nearest neurons")
    parser.add_argument("--labels", metavar="A,B", help=LABELS_HELP)
    parser.add_argument("--kind", default="token", help="feature kind (default: token)")
    parser.add_argument("-k", type=positive_int, default=10, help="neighbours per neuron (default: 10)")
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write the k nearest per neuron (.parquet or .csv; replaced if it exists)",
    )
    parser.add_argument(
        "--match", metavar="FILE", help="also write a one-to-one matching (.parquet or .csv; replaced if it exists)"
    )
    parser.add_argument(
        "--method", choices=("auto", "exact", "greedy"), default="auto", help="matching method (default: auto)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_output(args.output)
    check_output(args.match)
    a, b = load_profiles([args.a, args.b], args.kind, args.labels)
    table = nearest(a, b, args.kind, k=args.k)
    first = table.filter(np.asarray(table.column("rank").to_numpy()) == 0)
    dist = first.column("hellinger").to_numpy()
    print(f"{a.name} ({a.n_neurons} neurons) -> {b.name} ({b.n_neurons} neurons), feature kind {args.kind!r}")
    if len(dist):
        print(
            f"{len(dist)} neurons of A have a nearest neuron in B: Hellinger mean {dist.mean():.4f}, "
            f"median {np.median(dist):.4f}, min {dist.min():.4f}"
        )
    else:
        print("no neuron is preferred in both profiles: nothing to pair")
    if args.output:
        write_table(table, args.output)
        print(f"wrote {args.output}")
    if args.match:
        pairs = match(a, b, args.kind, method=args.method)
        write_table(pairs, args.match)
        mean = pairs.column("hellinger").to_numpy().mean() if pairs.num_rows else float("nan")
        print(f"wrote {args.match}: {pairs.num_rows} matched pairs, mean Hellinger {mean:.4f}")
    return 0
