"""``txray serve``: the analysis, manipulation and ablation views of profiles (and a live model) in the browser."""

from __future__ import annotations

import argparse
import importlib.util

from ._common import UsageError

EXAMPLE = """examples:
  txray serve demo-output/                      # the demo's study, its LSTM LM and classifier loaded
  txray serve profiles/minilm/encoder.layer.5.intermediate.parquet \\
      --model sentence-transformers/all-MiniLM-L6-v2 --layer encoder.layer.5.intermediate

PROFILES are profile files, folders of them, or a txray demo output folder.
Opens a local server (127.0.0.1 unless --host says otherwise) and prints its
URL. Requests may only name files inside the folders given here (the
profiles' folders and --data). Needs txray[serve] (FastAPI, uvicorn).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="browse neurons, manipulate and prune them in a local web application",
        description=__doc__.splitlines()[0].replace("``", ""),
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "profiles", nargs="+", metavar="PROFILES", help="profile files or folders, or a demo output folder"
    )
    parser.add_argument("--kind", default="token", help="the feature kind the table compares (default: token)")
    parser.add_argument(
        "--model", metavar="PATH", help="a Hugging Face model folder or hub name (as txray record takes)"
    )
    parser.add_argument("--layer", metavar="NAME", help="the model's layer the profiles describe (with --model)")
    parser.add_argument("--tokenizer", metavar="PATH", help="the tokenizer, when not the model's own")
    parser.add_argument("--device", default="cpu", help="torch device for the model (default: cpu)")
    parser.add_argument(
        "--data", action="append", default=[], metavar="DIR", help="a folder of labelled files for the ablation view"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8765, help="port (default: %(default)s; 0: any free port)")
    parser.add_argument("--title", help="the page's title")
    parser.add_argument("--quiet", action="store_true", help="no request log")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for module, extra in (("fastapi", "serve"), ("uvicorn", "serve"), ("jinja2", "report")):
        if importlib.util.find_spec(module) is None:
            raise UsageError(f"txray serve needs {module}: pip install 'txray[{extra}]'")
    if (args.model is None) != (args.layer is None):
        raise UsageError("--model and --layer go together: the layer whose neurons the profiles describe")
    if args.tokenizer and not args.model:
        raise UsageError("--tokenizer needs --model")
    if not 0 <= args.port < 65536:
        raise UsageError(f"--port {args.port}: a port is 0 to 65535")
    for folder in args.data:
        from pathlib import Path

        if not Path(folder).is_dir():
            raise UsageError(f"--data {folder} is not a folder")
    from ..serve.run import bind, open_server, serve, url_of

    models = []
    if args.model:
        from ..serve.hf import load_hf

        models.append(load_hf(args.model, args.layer, args.tokenizer, args.device))
    server = open_server(args.profiles, args.kind, models, args.data, args.title)
    if models and models[0].n_neurons != server.study.n_neurons:
        raise UsageError(
            f"--layer {args.layer} has {models[0].n_neurons} neurons, the profiles {server.study.n_neurons}: "
            "give the layer the profiles were recorded from"
        )
    try:
        sock = bind(args.host, args.port)
    except OSError as err:
        raise UsageError(str(err)) from None
    print(f"txray serve: {url_of(sock)}  (Ctrl-C stops it)", flush=True)
    serve(server, sock, args.quiet)
    return 0
