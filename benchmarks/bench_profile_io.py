"""Save and load times of profiles: format 1 (one Parquet file) against format 2 (a folder of tables).

    python benchmarks/bench_profile_io.py            # all cases (about 2 minutes on 2 cores)
    python benchmarks/bench_profile_io.py --quick    # smaller sizes, a few seconds

Cases:

* ``paper``: the paper's LSTM layer, made with a Recorder on random data:
  1,500 neurons, token vocabulary 33,278 (Zipf-distributed ids) + POS 45,
  ``--tokens`` (400,000) tokens recorded in mode max1. Formats 1 and 2.
* ``5M names``: a vocabulary of 5,000,000 names of 41 characters (n-grams,
  URLs), 64 neurons with 1,000,000 cells. Format 2 only: format 1 keeps the
  vocabulary in the Parquet footer, which pyarrow refuses to read back with
  its default limits above about 2M such names (issue 15).
* ``10k neurons``: a 10,000-neuron layer with a 33,278-token vocabulary and
  200 cells per neuron (2,000,000 cells). Formats 1 and 2.
* ``2M names format 1`` (only when named in ``--cases``): a format 1 file
  whose footer pyarrow refuses with its default limits (226 MiB); txray
  raises the limits for format 1 files, so such a file, saved by txray 0.1
  and unreadable there, loads.

Each operation runs ``--repeats`` times, the formats interleaved; the table
shows the best wall time, the best CPU time of the process (less disturbed
by other processes on a shared machine), and the largest peak resident
memory the operation added (Linux VmHWM after it, reset before it, minus the
resident memory before it). Loaded profiles are checked
against the saved one. Results go to benchmarks/results/bench_profile_io.json.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time

import numpy as np

import txray
from txray import parquet

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import OtherLoad, add_results_arguments, now, render_table, write_results  # noqa: E402

MIB = 1 << 20


def paper_profile(tokens: int, seed: int = 0) -> txray.Profile:
    rng = np.random.default_rng(seed)
    vocab, tags, neurons = 33_278, 45, 1_500
    rec = txray.Recorder(neurons, {"token": vocab, "pos": tags}, mode="max1")
    batch = 20_000
    for start in range(0, tokens, batch):
        n = min(batch, tokens - start)
        ids = np.minimum(rng.zipf(1.1, n) - 1, vocab - 1)
        rec.update(
            rng.standard_normal((n, neurons), dtype=np.float32),
            {"token": ids, "pos": rng.integers(0, tags, n)},
        )
    names = {"token": [f"tok{i}" for i in range(vocab)], "pos": [f"TAG{i}" for i in range(tags)]}
    return rec.profile(name="paper", feature_names=names, metadata={"model": "lstm", "layer": 0})


def synthetic_profile(n_neurons: int, n_features: int, cells_per_neuron: int, names: bool, seed: int = 0):
    """A profile made from random cells directly (no recording): sorted unique (neuron, feature)."""
    rng = np.random.default_rng(seed)
    neuron = np.repeat(np.arange(n_neurons, dtype=np.int32), cells_per_neuron)
    feature = np.sort(rng.integers(0, n_features, (n_neurons, cells_per_neuron), dtype=np.int64), axis=1).ravel()
    key = np.unique(neuron.astype(np.int64) * n_features + feature)
    neuron, feature = (key // n_features).astype(np.int32), (key % n_features).astype(np.int32)
    count = rng.integers(1, 50, len(key)).astype(np.int64)
    total = count * rng.random(len(key))
    frequencies = rng.integers(0, 1_000, n_features).astype(np.int64)
    vocabulary = [f"an-ngram-or-url-of-41-characters-{i:08d}" for i in range(n_features)] if names else None
    cells = txray.KindCells(neuron, feature, count, total, frequencies, vocabulary)
    return txray.Profile(n_neurons, "all", None, {"ngram" if names else "token": cells}, rng.random(n_neurons), 10**6)


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def measure(fn):
    """One call: wall seconds, CPU seconds of this process (all its threads; less disturbed than the wall
    clock by other processes on a shared machine), the peak resident memory it added (MiB), the result."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident size
        before = rss_kib("VmRSS")
    except OSError:
        before = None
    cpu, start = time.process_time(), now()
    result = fn()
    wall, cpu = now() - start, time.process_time() - cpu
    peak = (rss_kib("VmHWM") - before) / 1024 if before is not None else float("nan")
    return wall, cpu, peak, result


def size_mib(path: str) -> float:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)) / MIB
    return os.path.getsize(path) / MIB


def same(a: txray.Profile, b: txray.Profile) -> bool:
    if (a.n_neurons, a.mode, a.k, a.tokens, a.kinds, a.metadata) != (
        b.n_neurons,
        b.mode,
        b.k,
        b.tokens,
        b.kinds,
        b.metadata,
    ):
        return False
    for kind in a.kinds:
        x, y = a.cells(kind), b.cells(kind)
        if x.names != y.names or not all(
            np.array_equal(getattr(x, f), getattr(y, f)) for f in ("neuron", "feature", "count", "sum", "frequencies")
        ):
            return False
    return np.array_equal(a.mass(), b.mass())


def run_case(name: str, profile: txray.Profile, formats, repeats: int, folder: str) -> list[dict]:
    """Save and load in each format, the formats interleaved within each repeat (a load spike on a
    shared machine then hits both)."""
    cells = sum(len(profile.cells(k).neuron) for k in profile.kinds)
    names = sum(profile.vocab_size(k) for k in profile.kinds)
    paths = {fmt: os.path.join(folder, f"{name.replace(' ', '_')}-f{fmt}.parquet") for fmt in formats}
    saves = {
        1: lambda: parquet.write_format1(profile._data(), paths[1]),
        2: lambda: profile.save(paths[2]),
    }
    best = {(fmt, op): (float("inf"), float("inf"), 0.0) for fmt in formats for op in ("save", "load")}
    for _ in range(repeats):
        for fmt in formats:
            for op, fn in (("save", saves[fmt]), ("load", lambda fmt=fmt: txray.Profile.load(paths[fmt]))):
                wall, cpu, peak, result = measure(fn)
                old = best[fmt, op]
                best[fmt, op] = (min(old[0], wall), min(old[1], cpu), max(old[2], peak))
                if op == "load" and not same(result, profile):
                    raise SystemExit(f"{name}, format {fmt}: the loaded profile differs from the saved one")
    rows = []
    for fmt in formats:
        (save_s, save_cpu, save_peak), (load_s, load_cpu, load_peak) = best[fmt, "save"], best[fmt, "load"]
        rows.append(
            {
                "case": name,
                "format": fmt,
                "neurons": profile.n_neurons,
                "vocabulary": names,
                "cells": cells,
                "size_mib": round(size_mib(paths[fmt]), 2),
                "save_s": round(save_s, 4),
                "load_s": round(load_s, 4),
                "save_cpu_s": round(save_cpu, 4),
                "load_cpu_s": round(load_cpu, 4),
                "save_peak_mib": round(save_peak, 1),
                "load_peak_mib": round(load_peak, 1),
                "round_trip_s": round(save_s + load_s, 4),
            }
        )
        print(
            f"  {name}, format {fmt}: save {save_s:.3f} s ({save_cpu:.3f} CPU-s), "
            f"load {load_s:.3f} s ({load_cpu:.3f} CPU-s), "
            f"peak +{save_peak:.0f}/+{load_peak:.0f} MiB",
            flush=True,
        )
        parquet.remove(paths[fmt])
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a smoke test of the script")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each operation (best is shown)")
    parser.add_argument("--tokens", type=int, default=400_000, help="tokens recorded for the paper-sized profile")
    parser.add_argument("--cases", default="paper,5M names,10k neurons", help="comma-separated cases to run")
    add_results_arguments(parser)
    args = parser.parse_args(argv)
    scale = 20 if args.quick else 1
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    load = OtherLoad()
    rows: list[dict] = []
    folder = tempfile.mkdtemp(prefix="txray-bench-io-", dir=os.environ.get("TXRAY_BENCH_DIR"))
    try:
        for case in cases:
            print(f"{case}: making the profile ...", flush=True)
            if case == "paper":
                profile, formats = paper_profile(args.tokens // scale), (1, 2)
            elif case == "5M names":
                profile, formats = synthetic_profile(64, 5_000_000 // scale, 1_000_000 // 64 // scale, True), (2,)
            elif case == "2M names format 1":
                profile, formats = synthetic_profile(64, 2_000_000 // scale, 2_000 // scale, True), (1,)
            elif case == "10k neurons":
                profile, formats = synthetic_profile(10_000 // scale, 33_278, 200, False), (1, 2)
            else:
                raise SystemExit(f"unknown case {case!r}")
            rows += run_case(
                case,
                profile,
                formats,
                min(args.repeats, 2) if "M names" in case and not args.quick else args.repeats,
                folder,
            )
            del profile
            gc.collect()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    headers = [
        "case",
        "format",
        "neurons",
        "vocabulary",
        "cells",
        "MiB on disk",
        "save",
        "load",
        "save CPU",
        "load CPU",
        "peak save",
        "peak load",
    ]
    table = [
        [
            r["case"],
            str(r["format"]),
            f"{r['neurons']:,}",
            f"{r['vocabulary']:,}",
            f"{r['cells']:,}",
            f"{r['size_mib']:.1f}",
            f"{r['save_s']:.3f} s",
            f"{r['load_s']:.3f} s",
            f"{r['save_cpu_s']:.3f} s",
            f"{r['load_cpu_s']:.3f} s",
            f"+{r['save_peak_mib']:.0f} MiB",
            f"+{r['load_peak_mib']:.0f} MiB",
        ]
        for r in rows
    ]
    print(render_table(headers, table, title=f"profile save/load, best of {args.repeats}"))
    print(load.report())
    title = f"profile save/load, best of {args.repeats}"
    write_results(
        "bench_profile_io", args, [{"title": title, "headers": headers, "rows": table}], notes=[load.report()]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
