"""``txray report``: one self-contained HTML report of two or more profiles."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import (
    LABELS_HELP,
    UsageError,
    check_output_dir,
    check_writable_file,
    load_profiles,
    positive_int,
)

EXAMPLE = """example:
  txray report epoch1.parquet epoch48.parquet epoch49.parquet -o report.html --png figures/

The profiles are stages in the order given. The report (an HTML file that
works offline, also from file://) holds the summary table, every figure that
applies and the neuron browser: every neuron, sortable and filterable, with a
page per neuron (report.html#neuron=17). plotly.js is written once beside the
reports of a folder (--inline-plotly puts it in the page instead). --png also
writes each figure as PNG (needs
kaleido and a Chromium: Debian's chromium, or BROWSER_PATH). --token-pos
reads a two-column file (token<TAB>tag per line) to group tokens by their
part of speech in the neuron figures.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write an HTML report with every figure",
        description=__doc__.splitlines()[0].replace("``", ""),
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("profiles", nargs="+", metavar="PROFILE.parquet", help="profiles, in stage order")
    parser.add_argument(
        "-o", "--output", required=True, metavar="FILE.html", help="the report to write (replaced if it exists)"
    )
    parser.add_argument("--kind", default="token", help="feature kind compared (default: token)")
    parser.add_argument("--pos-kind", default="pos", help="POS feature kind, 'none' to leave POS out (default: pos)")
    parser.add_argument(
        "-k", type=positive_int, default=5, help="neurons in the most/least changed figures (default: 5)"
    )
    parser.add_argument("--top", type=positive_int, default=10, help="features shown per neuron (default: 10)")
    parser.add_argument("--title", help="the report's title")
    parser.add_argument("--labels", metavar="A,B,...", help=LABELS_HELP)
    parser.add_argument("--png", metavar="DIR", help="also write each figure as DIR/NAME.png")
    parser.add_argument("--token-pos", metavar="FILE", help="token<TAB>POS tag per line, to group tokens by tag")
    parser.add_argument(
        "--contexts",
        type=positive_int,
        metavar="N",
        help="top activating contexts per neuron and stage, when the profiles hold them (default: 5)",
    )
    parser.add_argument(
        "--inline-plotly",
        action="store_true",
        help="put plotly.js in the page (a 5 MB file on its own) instead of one shared file in its folder",
    )
    parser.set_defaults(func=run)


def read_token_pos(path: str) -> dict[str, str]:
    """token -> tag from a file of ``token<TAB>tag`` lines."""
    mapping = {}
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            line = line.rstrip("\n")
            if not line:
                continue
            parts = line.split("\t")
            if len(parts) != 2:
                raise UsageError(f"{path}:{number}: expected 'token<TAB>tag', got {line!r}")
            mapping[parts[0]] = parts[1]
    return mapping


def run(args: argparse.Namespace) -> int:
    try:
        import plotly  # noqa: F401

        from ..browser import REPORT_CONTEXTS
        from ..report import write_report
    except ImportError:
        raise UsageError("the report needs plotly: pip install 'txray[report]'") from None
    if Path(args.output).suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"the report is HTML: name the output FILE.html, not {args.output}")
    check_writable_file(args.output)
    if args.png is not None:
        check_output_dir(args.png, "--png")
    token_pos = read_token_pos(args.token_pos) if args.token_pos else None
    profiles = load_profiles(args.profiles, args.kind, args.labels)
    pos_kind = None if args.pos_kind.lower() == "none" else args.pos_kind
    result = write_report(
        profiles,
        args.output,
        args.kind,
        pos_kind,
        args.k,
        args.top,
        args.title,
        token_pos,
        args.png,
        plotly_js="inline" if args.inline_plotly else "folder",
        contexts=REPORT_CONTEXTS if args.contexts is None else args.contexts,
    )
    print(f"wrote {result.html} ({len(result.figures)} figures: {', '.join(result.figures)})")
    if result.plotly_js is not None:
        print(f"the page loads {result.plotly_js} (shared by the reports of its folder)")
    if args.png is not None:
        if result.png_skipped:
            print(f"no PNG written: {result.png_skipped}")
        else:
            print(f"wrote {len(result.png)} PNG files to {args.png}")
    return 0
