"""``txray show``: one neuron explained (state, Hellinger, mass, top features and contexts), or a list of neurons."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import numpy as np
import pyarrow as pa

from ..compare import check_modes
from ..neurons import neuron_detail, neuron_table
from ..profile import Profile, check_compatible
from ._common import LABELS_HELP, UsageError, load_profiles, positive_int

EXAMPLE = """examples:
  txray show wiki.parquet --neuron 17 --against tweets.parquet
  txray show wiki.parquet --against tweets.parquet --top 20 --by changed
  txray show wiki.parquet --neuron 17 --kind token --top 5 --format json

With --neuron: the neuron's state and Hellinger distance against the other
profile, its activation mass and mass rank, its length, its top features of
each kind (p and count) and its top activating contexts, the word marked
[like this] (bold on a terminal). Without --neuron: a table of the --top N
most massive neurons of PROFILE (--by changed: the N shared neurons whose
distributions moved most against --against, by Hellinger distance).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "show",
        help="explain one neuron (features, contexts, change), or list the most massive or changed ones",
        description=__doc__.splitlines()[0].replace("``", ""),
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("profile", metavar="PROFILE.parquet", help="the profile (stage A)")
    parser.add_argument(
        "--against", metavar="PROFILE2.parquet", help="a profile of the same layer to compare with (stage B)"
    )
    parser.add_argument("--neuron", metavar="N", type=int, help="the neuron to explain (default: list neurons)")
    parser.add_argument(
        "--kind",
        action="append",
        metavar="KIND",
        help="feature kind(s) shown; repeat or comma-separate (default: every kind both profiles have; "
        "for the list: token, else the profile's first kind)",
    )
    parser.add_argument(
        "--top",
        type=positive_int,
        default=10,
        help="with --neuron: features shown per kind; without: neurons listed (default: 10)",
    )
    parser.add_argument(
        "--by",
        choices=("mass", "changed"),
        help="order of the list: mass (most massive in PROFILE first) or changed (largest Hellinger "
        "against --against first) (default: mass)",
    )
    parser.add_argument(
        "--contexts", type=int, default=10, metavar="N", help="contexts shown per profile with --neuron (default: 10)"
    )
    parser.add_argument("--labels", metavar="A,B", help=LABELS_HELP)
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="text for people, json for programs (default: text)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.contexts < 0:
        raise UsageError(f"--contexts must be 0 or more, not {args.contexts}")
    if args.by is not None and args.neuron is not None:
        raise UsageError("--by orders the list of neurons; it does not apply with --neuron")
    by = args.by or "mass"
    if by == "changed" and args.against is None:
        raise UsageError("--by changed needs --against PROFILE2: changed is measured against another profile")
    paths = [args.profile] + ([args.against] if args.against else [])
    profiles = load_profiles(paths, labels=args.labels)
    kinds = _kinds(args.kind, profiles, paths, listing=args.neuron is None)
    if len(profiles) == 2:
        try:
            check_compatible(profiles[0], profiles[1], kinds, same_neurons=True)
            check_modes(profiles[0], profiles[1])
        except ValueError as err:
            raise UsageError(f"cannot show {paths[0]} against {paths[1]}: {err}") from None
    out = sys.stdout
    if args.neuron is not None:
        n = profiles[0].n_neurons
        if not 0 <= args.neuron < n:
            raise UsageError(f"--neuron {args.neuron} is out of range: {paths[0]} has {n} neurons (0..{n - 1})")
        detail = neuron_detail(profiles, args.neuron, kinds, args.top, contexts=args.contexts)
        if args.format == "json":
            _print_json({name: table.to_pylist() for name, table in detail.items()}, out)
        else:
            print_detail(detail, profiles, args.neuron, out, _styled(out))
        return 0
    order, table = listing(profiles, kinds[0], args.top, by)
    if args.format == "json":
        rows = table.to_pylist()
        position = {int(neuron): i for i, neuron in enumerate(order)}
        rows.sort(key=lambda r: (position[r["neuron"]], r["stage_index"]))
        _print_json({"kind": kinds[0], "by": by, "neurons": [int(x) for x in order], "rows": rows}, out)
    else:
        print_listing(order, table, profiles, kinds[0], by, out)
    return 0


def _kinds(given: list[str] | None, profiles: Sequence[Profile], paths: Sequence[str], listing: bool) -> list[str]:
    """The --kind values (each checked against every profile), or the defaults."""
    if given:
        kinds = list(dict.fromkeys(k.strip() for text in given for k in text.split(",") if k.strip()))
        if not kinds:
            raise UsageError("--kind is empty: name a feature kind, e.g. --kind token")
        if listing and len(kinds) > 1:
            raise UsageError(f"the list of neurons uses one feature kind; --kind gives {', '.join(kinds)}")
        for kind in kinds:
            for path, p in zip(paths, profiles):
                if kind not in p.kinds:
                    raise UsageError(f"--kind {kind}: {path} has no feature kind {kind!r}; it has {', '.join(p.kinds)}")
        return kinds
    common = [k for k in profiles[0].kinds if all(k in p.kinds for p in profiles[1:])]
    if not common:
        raise UsageError(
            f"{paths[0]} and {paths[1]} have no feature kind in common "
            f"({', '.join(profiles[0].kinds)} vs {', '.join(profiles[1].kinds)})"
        )
    if listing:
        return ["token" if "token" in common else common[0]]
    return common


def listing(profiles: Sequence[Profile], kind: str, top: int, by: str) -> tuple[np.ndarray, pa.Table]:
    """The ``top`` neurons by ``by`` (their ids, in order) and their rows of :func:`txray.neuron_table`."""
    table = neuron_table(profiles, kind)
    n = profiles[0].n_neurons
    if by == "mass":
        first = table.slice(0, n)
        order = np.argsort(first.column("mass_rank").to_numpy(), kind="stable")[:top]
    else:
        last = table.slice(n, n)
        h = last.column("hellinger").to_numpy(zero_copy_only=False).astype(np.float64)
        shared = np.flatnonzero(~np.isnan(h))
        order = shared[np.lexsort((shared, -h[shared]))][:top]
    return order, table.filter(pa.array(np.isin(table.column("neuron").to_numpy(), order)))


# -- text output -----------------------------------------------------------------------------


def _styled(out: TextIO) -> bool:
    """Bold marks on a terminal (unless NO_COLOR is set); [brackets] otherwise."""
    return out.isatty() and not os.environ.get("NO_COLOR")


def _clean(text: Any) -> str:
    """Text from a corpus, safe for a terminal: control characters (an escape sequence in the
    corpus would restyle the terminal) are shown escaped, line breaks and tabs as spaces."""
    if text is None:
        return "-"
    text = str(text)
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else " " if c in "\t\n\r" else c.encode("unicode_escape").decode("ascii") for c in text
    )


def mark_word(row: dict[str, Any], styled: bool = False) -> str:
    """The context's text with its word marked: ``[word]``, or bold when ``styled``.

    A row without text shows the word alone (marked); one without a word, its unit."""
    word, text, offset = row.get("word"), row.get("text"), row.get("word_offset")

    def mark(w: str) -> str:
        return f"\033[1m{_clean(w)}\033[0m" if styled else f"[{_clean(w)}]"

    if text is not None and word is not None and offset is not None and text[offset : offset + len(word)] == word:
        return _clean(text[:offset]) + mark(word) + _clean(text[offset + len(word) :])
    if word is not None:
        return mark(word)
    return f"unit {row['unit']}"


def _format_table(head: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> list[str]:
    """Lines of a table aligned in columns; columns in ``right`` are right-aligned (numbers)."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(parts).rstrip()

    return [line(head)] + [line(r) for r in rows]


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _mass(value: float) -> str:
    return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def print_detail(
    detail: dict[str, pa.Table], profiles: Sequence[Profile], neuron: int, out: TextIO, styled: bool = False
) -> None:
    """Write :func:`txray.neuron_detail`'s tables as text."""
    summary = detail["summary"].to_pylist()
    stages = list(dict.fromkeys(r["stage"] for r in summary))
    kinds = list(dict.fromkeys(r["kind"] for r in summary))
    against = f", against {stages[1]!r}" if len(stages) > 1 else ""
    print(f"neuron {neuron} of {stages[0]!r}{against} ({profiles[0].n_neurons} neurons)", file=out)
    print(file=out)
    rows = [
        [
            _clean(r["stage"]),
            r["kind"],
            r["state"],
            _number(r["hellinger"]),
            str(r["length"]),
            _mass(r["mass"]),
            _share(r["mass_share"]),
            f"{r['mass_rank']} of {r['neurons']}",
            "-" if r["contexts"] is None else str(r["contexts"]),
        ]
        for r in summary
    ]
    head = ["stage", "kind", "state", "Hellinger", "length", "mass", "share", "mass rank", "contexts"]
    for line in _format_table(head, rows, right=(3, 4, 5, 6, 7, 8)):
        print(line, file=out)
    if len(stages) > 1:
        print(
            "state and Hellinger: against the stage before (shared = preferred in both, avoided = before only, "
            "gained = after only, dead = neither)",
            file=out,
        )

    features = detail["features"].to_pylist()
    for kind in kinds:
        print(file=out)
        print(f"top {kind} features (p, count)", file=out)
        per_stage = [[r for r in features if r["kind"] == kind and r["stage"] == s] for s in stages]
        depth = max((len(x) for x in per_stage), default=0)
        if depth == 0:
            print("  none: the neuron prefers no feature of this kind", file=out)
            continue
        head = ["rank"]
        for s in stages:
            head += [_clean(s), "p", "count"]
        table_rows = []
        for i in range(depth):
            row = [str(i + 1)]
            for stage_rows in per_stage:
                if i < len(stage_rows):
                    r = stage_rows[i]
                    name = r["feature_name"] if r["feature_name"] is not None else str(r["feature"])
                    row += [_clean(name), f"{r['p']:.4f}", str(r["count"])]
                else:
                    row += ["", "", ""]
            table_rows.append(row)
        right = [0] + [3 * j + k for j in range(len(stages)) for k in (2, 3)]
        for line in _format_table(head, table_rows, right=right):
            print("  " + line, file=out)

    _print_change(detail, kinds, out)

    contexts = detail["contexts"].to_pylist()
    recorded = {r["stage"]: r["contexts"] for r in summary}
    for s in stages:
        print(file=out)
        rows_of_stage = [r for r in contexts if r["stage"] == s]
        if recorded[s] is None:
            print(f"top contexts in {_clean(s)}: not recorded in this profile", file=out)
            continue
        print(f"top contexts in {_clean(s)} ({len(rows_of_stage)} of {recorded[s]} recorded)", file=out)
        if not rows_of_stage:
            print("  none: the neuron recorded no token", file=out)
            continue
        table_rows = [
            [
                str(r["rank"]),
                f"{r['activation']:.4g}",
                "-" if r["document"] is None else str(r["document"]),
                mark_word(r, styled),
            ]
            for r in rows_of_stage
        ]
        for line in _format_table(["rank", "activation", "document", "context"], table_rows, right=(0, 1, 2)):
            print("  " + line, file=out)


def _print_change(detail: dict[str, pa.Table], kinds: Sequence[str], out: TextIO) -> None:
    """Features gained and lost between consecutive stages, with how many in all."""
    change = detail["change"].to_pylist()
    pairs = {(r["kind"], r["stage_a_index"], r["stage_b_index"]): r for r in detail["pairs"].to_pylist()}
    steps = sorted(
        {
            (r["stage_a_index"], r["stage_a"], r["stage_b"])
            for r in detail["pairs"].to_pylist()
            if r["stage_b_index"] == r["stage_a_index"] + 1
        }
    )
    for step, a, b in steps:
        print(file=out)
        print(f"change {_clean(a)} -> {_clean(b)}", file=out)
        for kind in kinds:
            pair = pairs[(kind, step, step + 1)]
            totals = {
                "gained": pair["length_b"] - pair["shared_length"],
                "lost": pair["length_a"] - pair["shared_length"],
            }
            for what in ("gained", "lost"):
                rows = [r for r in change if r["kind"] == kind and r["step"] == step and r["change"] == what]
                p = "p_b" if what == "gained" else "p_a"
                shown = ", ".join(
                    f"{_clean(r['feature_name'] if r['feature_name'] is not None else r['feature'])} {r[p]:.4f}"
                    for r in rows
                )
                more = f" (and {totals[what] - len(rows)} more)" if totals[what] > len(rows) else ""
                print(f"  {kind} {what} {totals[what]}: {shown or '-'}{more}", file=out)


def print_listing(
    order: np.ndarray, table: pa.Table, profiles: Sequence[Profile], kind: str, by: str, out: TextIO
) -> None:
    """Write the list of neurons: one line each, the stages side by side."""
    rows = {(r["stage_index"], r["neuron"]): r for r in table.to_pylist()}
    labels = list(dict.fromkeys(r["stage"] for r in table.to_pylist())) or [profiles[0].name or ""]
    n = profiles[0].n_neurons
    what = "most massive" if by == "mass" else "most changed (Hellinger, shared neurons)"
    print(f"the {len(order)} {what} of {n} neurons of {labels[0]!r}, feature kind {kind!r}", file=out)
    if by == "changed" and len(order) == 0:
        print("no neuron is preferred in both profiles: none has a Hellinger distance", file=out)
        return
    two = len(profiles) > 1
    head = ["neuron"]
    if two:
        head += ["state", "Hellinger"]
    for s in labels:
        suffix = f" {s}" if two else ""
        head += [f"mass{suffix}", f"rank{suffix}", f"length{suffix}", f"top{suffix}"]
    lines = []
    for neuron in order.tolist():
        row = [str(neuron)]
        if two:
            b = rows[(1, neuron)]
            row += [b["state"], _number(b["hellinger"])]
        for index in range(len(labels)):
            r = rows[(index, neuron)]
            top = (
                "-"
                if r["top_feature"] is None
                else f"{_clean(r['top_feature_name'] or r['top_feature'])} {r['top_p']:.2f}"
            )
            row += [_mass(r["mass"]), str(r["mass_rank"]), str(r["length"]), top]
        lines.append(row)
    right = {0, 2} if two else {0}
    offset = 3 if two else 1
    right |= {offset + 4 * j + k for j in range(len(labels)) for k in (0, 1, 2)}
    for line in _format_table([_clean(h) for h in head], lines, right=sorted(right)):
        print(line, file=out)


def _print_json(value: Any, out: TextIO) -> None:
    json.dump(value, out, indent=2, allow_nan=False)
    out.write("\n")
