"""``txray record``: record a Hugging Face model's layers over a corpus."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import UsageError, check_record_args, non_negative_int, worker_count

if TYPE_CHECKING:
    from txray.capture import Layer
    from txray.corpus import Corpus, Shard
    from txray.distributed import Context
    from txray.features import Feature
    from txray.profile import Profile

EXAMPLE = """\
example:
  txray record sentence-transformers/all-MiniLM-L6-v2 wiki.txt --layer mlp \\
      --feature token --feature pos --limit-tokens 400000 --out profiles/minilm

  Writes one profile per layer, e.g. profiles/minilm/encoder.layer.0.intermediate.parquet,
  named CORPUS:LAYER (wiki:encoder.layer.0.intermediate) unless --name says otherwise.
  MODEL is a local model folder or a Hugging Face Hub name (org/name), as from_pretrained takes it;
  with HF_HUB_OFFLINE=1 a hub name must be in the local cache.
  CORPUS is a text file (one sequence a line), a .csv/.tsv/.parquet file, or a folder a Hugging Face
  dataset was saved to (Dataset.save_to_disk); --text-column names the column of the last three.

  On 8 GPUs (every rank records its shard; rank 0 merges and writes):
  torchrun --nproc_per_node=8 -m txray record MODEL wiki.txt --layer mlp --device cuda --out DIR

  As independent jobs (then: txray merge DIR/LAYER.part-*-of-8.parquet -o DIR/LAYER.parquet):
  txray record MODEL wiki.txt --layer mlp --shard $TASK_ID/8 --out DIR
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "record",
        help="record what each neuron of a model's layers prefers over a corpus",
        description="Record what each neuron of a Hugging Face model's layers prefers over a corpus; "
        "one profile (Parquet) per layer.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model", metavar="MODEL", help="a Hugging Face model folder, or a hub name (org/name) for from_pretrained"
    )
    parser.add_argument(
        "corpus",
        metavar="CORPUS",
        help="a text, CSV, TSV or Parquet file, or a saved Hugging Face dataset folder (save_to_disk)",
    )
    parser.add_argument(
        "--layer",
        action="append",
        required=True,
        metavar="NAME",
        help="module to record (repeatable); 'mlp' = every MLP layer, e.g. encoder.layer.0.intermediate",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="directory for the profiles (made if missing; checked before any work); "
        "profiles already there for the same layers are replaced",
    )
    parser.add_argument(
        "--feature",
        action="append",
        metavar="KIND",
        help="token (default), pos, label, ngramN, column:NAME (repeatable)",
    )
    parser.add_argument(
        "--tagger",
        default="spacy",
        help="POS tagger for --feature pos: spacy, spacy:MODEL, flair:NAME_OR_PATH (default: spacy)",
    )
    parser.add_argument(
        "--text-column",
        "--text",
        dest="text",
        default="text",
        metavar="COLUMN",
        help="the column holding each sequence's text (or its list of words) in a CSV, TSV or Parquet file "
        "or a dataset (default: %(default)s)",
    )
    parser.add_argument(
        "--label", default="label", metavar="COLUMN", help="label column for --feature label (default: label)"
    )
    parser.add_argument(
        "--mode",
        default="max1",
        choices=("max1", "topk", "all"),
        help="which neurons record a token: max1 the most active one, topk the K most active, all every neuron "
        "(default: max1)",
    )
    parser.add_argument("--k", type=int, help="winners per token with --mode topk (required there)")
    parser.add_argument(
        "--pooling",
        default="mean",
        choices=("first", "last", "mean", "max"),
        help="how a word's sub-word pieces become one activation row (default: mean)",
    )
    parser.add_argument("--min-count", type=int, default=1, help="rarer words become <unk> (token, ngram) (default: 1)")
    parser.add_argument(
        "--limit-tokens", type=int, metavar="N", help="record only the first N words (default: the whole corpus)"
    )
    parser.add_argument(
        "--max-tokens", type=int, default=4096, help="padded positions per forward pass (default: 4096)"
    )
    parser.add_argument(
        "--workers",
        type=worker_count,
        default=0,
        metavar="N",
        help="worker processes that split, tokenize and cut windows ahead of the model (default: 0, a thread of this process)",
    )
    parser.add_argument("--include-special", action="store_true", help="also record [CLS], [SEP], ...")
    parser.add_argument(
        "--device",
        default="cpu",
        help="torch device for the model; under torchrun 'cuda' is cuda:LOCAL_RANK (NCCL), 'cpu' uses gloo "
        "(default: cpu)",
    )
    parser.add_argument(
        "--shard",
        metavar="I/N",
        help="record only shard I of N (sequences i with i %% N == I); writes "
        "DIR/<layer>.part-I-of-N.parquet for txray merge",
    )
    parser.add_argument(
        "--name",
        metavar="NAME",
        help="the profiles' name in tables, figures and reports; may hold {corpus} and {layer} "
        "(default '{corpus}:{layer}'); with several layers and no {layer}, ':LAYER' is appended",
    )
    parser.add_argument(
        "--vocab-from",
        metavar="PROFILE",
        help="record with the vocabularies of this profile (same ids for the same words; words it lacks "
        "become <unk>; overrides --min-count). Not needed for comparing corpora: txray compare lines "
        "vocabularies up by name",
    )
    parser.add_argument(
        "--contexts",
        type=non_negative_int,
        default=20,
        metavar="K",
        help="top activating contexts kept per neuron: its K highest activations with the word, its line "
        "and the words around it (default: %(default)s; 0: none)",
    )
    parser.add_argument(
        "--context-window",
        type=non_negative_int,
        default=8,
        metavar="W",
        help="words of a context's text on either side of its word (default: %(default)s)",
    )
    parser.add_argument("--cache-dir", help="POS tag cache (default ~/.cache/txray)")
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bars (vocabulary, tagging and recording passes)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from txray import distributed
    from txray.corpus import Shard

    corpus = _open_corpus(args)
    check_record_args(args)
    check_model(args.model)
    vocab_from = _vocab_source(args)
    try:
        shard = Shard.parse(args.shard) if args.shard else None
    except ValueError as err:
        raise UsageError(f"--shard: {err}") from None
    if not distributed.launched():
        return _record(args, corpus, args.device, shard, None, vocab_from)
    if shard is not None:
        raise UsageError("--shard is for independent jobs; under torchrun every rank takes its shard itself")
    context = distributed.init(args.device)
    try:
        return _record(args, corpus, context.device, None, context, vocab_from)
    finally:
        distributed.shutdown()


def _open_corpus(args: argparse.Namespace) -> Corpus:
    """The CORPUS file or saved dataset folder, opened (not read) before any work."""
    from txray.corpus import Corpus

    if not Path(args.corpus).exists():
        raise UsageError(f"corpus file not found: {args.corpus}")
    try:
        return Corpus(args.corpus, text=args.text)
    except ImportError as err:
        raise UsageError(str(err)) from None


def _vocab_source(args: argparse.Namespace) -> Profile | None:
    """The --vocab-from profile, read and checked before the model is loaded."""
    if args.vocab_from is None:
        return None
    from txray.features import Vocabulary

    from ._common import load_profile

    profile = load_profile(args.vocab_from)
    # Every feature that would build its vocabulary from the corpus must find one of its kind
    # there (pos has its tagger's tagset).
    kinds = [kind[7:] if kind.startswith("column:") else kind for kind in args.feature or ["token"] if kind != "pos"]
    try:
        for kind in kinds:
            Vocabulary.from_profile(profile, kind)
    except ValueError as err:
        raise UsageError(f"--vocab-from {args.vocab_from}: {err}") from None
    return profile


def _record(
    args: argparse.Namespace,
    corpus: Corpus,
    device: str,
    shard: Shard | None,
    context: Context | None,
    vocab_from: Profile | None,
) -> int:
    """Record and write the profiles: one process, one ``--shard``, or one torchrun rank."""
    import txray
    from txray import distributed
    from txray.options import RecordOptions
    from txray.profile import save_profiles

    model, tokenizer = load_model(args.model, device)
    layers: list[str | Layer] = []
    for name in args.layer:
        layers.extend(txray.mlp_layers(model) if name == "mlp" else [name])
    options = RecordOptions(
        features=tuple(_features(args)),
        mode=args.mode,
        k=args.k,
        pooling=args.pooling,
        include_special=args.include_special,
        limit_tokens=args.limit_tokens,
        max_tokens=args.max_tokens,
        workers=args.workers,
        cache_dir=args.cache_dir,
        progress=not args.quiet,
        name=args.model,
        shard=shard,
        vocab_from=vocab_from,
        profile_name=args.name,
        contexts=args.contexts,
        context_window=args.context_window,
    )
    profiles: dict[str, Profile] | None
    if context is not None:
        profiles = distributed.record_model(model, tokenizer, corpus, layers, options=options)
        if not context.is_main:
            return 0
    else:
        profiles = txray.record_model(model, tokenizer, corpus, layers, options=options)
    if not profiles:
        print(f"shard {args.shard} of {args.corpus} has no sequences: nothing written")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = f".part-{shard.index}-of-{shard.count}" if shard is not None else ""
    paths = {out / f"{_file_name(layer)}{suffix}.parquet": profile for layer, profile in profiles.items()}
    save_profiles(paths)
    for path, profile in paths.items():
        print(f"{path}\t{profile.name}\t{profile.n_neurons} neurons\t{profile.tokens} tokens")
    return 0


def _features(args: argparse.Namespace) -> list[Feature]:
    """The --feature options as feature objects."""
    from txray.features import Column, Label, Ngram, Pos, Token

    features: list[Feature] = []
    for kind in args.feature or ["token"]:
        if kind == "token":
            features.append(Token(min_count=args.min_count))
        elif kind == "pos":
            features.append(Pos(args.tagger))
        elif kind == "label":
            features.append(Label(args.label))
        elif re.fullmatch(r"ngram\d+", kind):
            features.append(Ngram(int(kind[5:]), min_count=args.min_count))
        elif kind.startswith("column:") and kind[7:]:
            features.append(Column(kind[7:]))
        else:
            raise UsageError(f"unknown --feature {kind!r}; use token, pos, label, ngramN or column:NAME")
    return features


def check_model(name: str) -> None:
    """Fail before any work when MODEL can be neither loaded from a folder nor
    looked up on the hub: a path that does not exist, a name that is no hub
    name, or (offline) a hub name that is not in the local cache."""
    import importlib.util

    if importlib.util.find_spec("transformers") is None:
        raise UsageError("txray record needs transformers: pip install 'txray[capture]'")
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"MODEL {name} is a file; give a model folder (with config.json) or a hub name")
        return
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        raise UsageError(f"model directory not found: {name} (and it is not a hub name such as org/name)") from None
    if constants.HF_HUB_OFFLINE and not isinstance(try_to_load_from_cache(name, "config.json"), str):
        raise UsageError(
            f"model {name!r} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}), and "
            "HF_HUB_OFFLINE=1 forbids downloading it: download it once with a network "
            f"(huggingface-cli download {name}), or give the path of a model folder"
        )


def load_model(name: str, device: str, tokenizer: str | None = None, model_class: str = "AutoModel") -> tuple[Any, Any]:
    """The model (on ``device``) and its fast tokenizer; ``name`` (and ``tokenizer``, default ``name``) go to
    ``from_pretrained`` as given. ``model_class``: the transformers Auto class (``txray serve`` picks one with
    the model's head)."""
    import transformers
    from huggingface_hub import constants

    try:
        words = transformers.AutoTokenizer.from_pretrained(tokenizer or name, use_fast=True)
        model = getattr(transformers, model_class).from_pretrained(name).to(device)
    except OSError as err:
        where = " (HF_HUB_OFFLINE=1: only the local cache was searched)" if constants.HF_HUB_OFFLINE else ""
        raise UsageError(f"cannot load model {name!r}{where}: {err}") from None
    return model, words


def _file_name(layer: str) -> str:
    return re.sub(r"[^\w.\-]", "_", layer)
