"""``txray prune``: zero neuron sets of a model's layer and report the metric change (the paper's Table 2)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from ._common import UsageError, check_output, load_profiles, positive_int, write_table

EXAMPLE = """example:
  txray prune mytask.py:load --layer encoder.rnn --profile supervised.parquet \\
      --before zero_shot.parquet -k 20 -o pruning.csv

ENTRY is 'module:function' (an importable module) or 'path/to/file.py:function';
the function takes no arguments and returns (model, evaluate), where
evaluate(model) returns the metric per split, e.g. {"train": 0.81, "test": 0.79}:

  def load():
      model = torch.load("supervised.pt", weights_only=False).eval()
      return model, lambda m: {"train": f1(m, train), "test": f1(m, test)}

Neuron sets: the k least and k most massive preferred neurons of --profile
(the pruned model's profile); with --before (the profile before training),
also the avoided and gained neurons of before -> profile; and any
--set NAME=3,17,42. Prints the table: share of activation mass removed and
relative metric change per split.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prune",
        help="prune neuron sets and measure the metric change",
        description=__doc__.splitlines()[0].replace("``", ""),
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "entry", metavar="ENTRY", help="'module:function' or 'file.py:function' returning (model, evaluate)"
    )
    parser.add_argument("--layer", required=True, help="dotted name of the layer to prune, e.g. encoder.rnn")
    parser.add_argument("--profile", required=True, metavar="FILE", help="profile of the model being pruned")
    parser.add_argument("--before", metavar="FILE", help="profile before training, for the avoided and gained sets")
    parser.add_argument("--kind", default="token", help="feature kind deciding preferred neurons (default: token)")
    parser.add_argument(
        "-k", type=positive_int, default=20, help="neurons in the least/most massive sets (default: 20)"
    )
    parser.add_argument("--set", action="append", default=[], metavar="NAME=IDS", help="a named set, e.g. mine=3,17,42")
    parser.add_argument(
        "-o", "--output", metavar="FILE", help="write the table (.parquet or .csv; replaced if it exists)"
    )
    parser.set_defaults(func=run)


def load_entry(entry: str) -> Callable[[], Any]:
    """The function named by 'module:function' or 'file.py:function'."""
    target, sep, name = entry.rpartition(":")
    if not sep or not target or not name:
        raise UsageError(f"ENTRY must look like 'module:function' or 'file.py:function', not {entry!r}")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise UsageError(f"no Python file {target}")
        spec = importlib.util.spec_from_file_location(f"txray_prune_entry_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise UsageError(f"cannot import {target}: not a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as err:
            raise UsageError(f"cannot import {target!r}: {err}") from None
    func = getattr(module, name, None)
    if not callable(func):
        raise UsageError(f"{target} has no function {name!r}")
    return func


def parse_set(text: str) -> tuple[str, list[int]]:
    name, sep, ids = text.partition("=")
    try:
        neurons = [int(i) for i in ids.split(",") if i.strip()]
    except ValueError:
        neurons = []
    if not sep or not name or not neurons:
        raise UsageError(f"--set must look like NAME=3,17,42, not {text!r}")
    return name, neurons


def _format(table: pa.Table) -> str:
    """The table as aligned text, percentages like the paper's Table 2."""

    def cell(column: str, value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if column == "mass_removed" or column.startswith("change_"):
            return f"{100 * value:+.2f}%" if column.startswith("change_") else f"{100 * value:.3f}%"
        if isinstance(value, float):
            return f"{value:.4f}"
        return str(value)

    head = [c.replace("mass_removed", "mass removed").replace("_", " ") for c in table.column_names]
    rows = [[cell(c, v) for c, v in zip(table.column_names, row.values())] for row in table.to_pylist()]
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(line, widths)) for line in [head, *rows])


def run(args: argparse.Namespace) -> int:
    from ..compare import compare
    from ..prune import massive, pruning_sets, pruning_table

    check_output(args.output)
    custom = dict(parse_set(s) for s in args.set)
    paths = [args.profile] + ([args.before] if args.before else [])
    profiles = load_profiles(paths, args.kind)
    after = profiles[0]
    if args.before:
        sets = pruning_sets(compare(profiles[1], after, args.kind), after, args.k, args.kind)
    else:
        sets = {
            f"{args.k} least massive": massive(after, args.k, largest=False, kind=args.kind),
            f"{args.k} most massive": massive(after, args.k, largest=True, kind=args.kind),
        }
    sets.update(custom)
    loaded = load_entry(args.entry)()
    if not (isinstance(loaded, tuple) and len(loaded) == 2 and callable(loaded[1])):
        raise UsageError(f"{args.entry} must return (model, evaluate), got {type(loaded).__name__}")
    model, evaluate = loaded
    table = pruning_table(model, args.layer, sets, evaluate, profile=after)
    print(_format(table))
    if args.output:
        write_table(table, args.output)
        print(f"wrote {args.output}")
    return 0
