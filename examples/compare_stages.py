"""Compare two or more profiles of one layer: states, Hellinger, nearest neurons, the report.

    python examples/compare_stages.py profiles/lstm/epoch1.parquet profiles/lstm/epoch3.parquet --out analysis

The profiles must be of the same layer with the same vocabulary (e.g. the
epochs written by examples/lstm_stages.py). Writes the comparison table, the
nearest neurons and an HTML report (needs ".[report]") into --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pyarrow.parquet as pq

import txray
from txray import analysis


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profiles", nargs="+", help="two or more profiles, in stage order")
    parser.add_argument("--kind", default="token")
    parser.add_argument("--out", default="analysis")
    parser.add_argument("--no-report", action="store_true", help="skip the HTML report (no plotly needed)")
    args = parser.parse_args(argv)
    stages = [txray.Profile.load(p) for p in args.profiles]
    a, b = stages[0], stages[-1]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    table = txray.compare(a, b, kind=args.kind)  # one row per neuron: state, lengths, Hellinger, mass
    pq.write_table(table, out / "compare.parquet")
    summary = txray.summary(table)
    print(f"{a.name} -> {b.name}: " + ", ".join(f"{k} {v}" for k, v in summary.items() if k != "neurons"))

    changed = analysis.changed_neurons(table, k=3).to_pylist()  # the most and least changed shared neurons
    for row in changed:
        print(f"{row['group']} changed #{row['rank']}: neuron {row['neuron']}, H = {row['hellinger']:.3f}")

    near = txray.nearest(a, b, kind=args.kind, k=3)  # also works across models of different widths
    pq.write_table(near, out / "nearest.parquet")
    pairs = txray.match(a, b, kind=args.kind)  # one-to-one matching
    print(f"nearest: {near.num_rows} rows; matched pairs: {pairs.num_rows}")

    if not args.no_report:
        pos = "pos" if all("pos" in s.kinds for s in stages) else None
        result = txray.write_report(stages, out / "report.html", kind=args.kind, pos_kind=pos)
        print(f"report: {out / 'report.html'} with figures {', '.join(result.figures)}")


if __name__ == "__main__":
    main()
