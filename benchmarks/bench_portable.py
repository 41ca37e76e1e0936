"""Time txray's recording (Recorder.update) in two or more builds side by side: a portable build against a native one.

What is measured
----------------
Recorder.update over bench_record.py's inputs (the same seeded Corpus:
T x 1500 float32 standard normal activations, Zipf token ids over 33,278
words and POS ids over 45 tags, in batches of --batch tokens), per mode:
max1 (the paper's setting) and topk with --k. One pass = a fresh recorder
(made untimed), then the update time summed over the batches; rec.profile()
is not timed (it does not depend on the build's instruction set).

Builds
------
--build NAME=DIR names a directory that holds a `txray` package with its
compiled `_native` module (an unpacked wheel; scripts/build_wheel.sh makes
them). Each build runs in its own worker process, which generates the inputs
once and then times passes on request; the driver interleaves them: in every
repeat each mode runs once per build, the order of builds rotating. Best of
--repeats per (build, mode). A worker checks that it imported txray from its
DIR (not from the source tree or an editable install) and reports the
instruction set its kernels chose (txray._native.simd()).

Floor: the driver measures the machine's read bandwidth (bench_record's
probes) before and after; floor = T * N * 4 bytes / the best read bandwidth.

Quiet: the CPU seconds other processes used during the run (from /proc/stat,
less this driver's and its workers' own) are reported; on the 2-core machine
anything far from 0 means noise.

Results go to benchmarks/results/bench_portable.json (--results): platform, CPU, versions, git commit, UTC date,
arguments, and every row with its seconds (each repeat's too) and the
process CPU seconds of the same updates (both threads; less sensitive to
other processes taking the CPU, though OpenMP threads spinning at a barrier
count too).

Ratios: 'ratio to' is best over best; 'paired median' is the median over
repeats of the two builds' times in the same repeat, 'paired CPU median'
the same for CPU seconds (steadier when other processes come and go).

--all-sets adds rows for each build's other instruction sets (a portable
build forced to AVX2 or baseline code with txray._native.set_simd).

Usage:  python benchmarks/bench_portable.py --build native=/tmp/txray-native \\
            --build portable=/tmp/txray-portable --size paper --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def busy_seconds() -> float | None:
    """CPU seconds all processes have used since boot (Linux), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


# ==========================================================================
# worker: one build, inputs generated once, passes timed on request


def worker(build_dir: str, size: str, batch: int, seed: int) -> None:
    # Import txray from build_dir only: drop the source tree and any editable
    # install's import hook, then check where it came from.
    build_dir = os.path.realpath(build_dir)
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()]
    sys.path.insert(0, build_dir)
    import txray
    from txray import _native

    where = os.path.realpath(_native.__file__)
    if not where.startswith(build_dir + os.sep):
        raise SystemExit(f"worker for {build_dir}: imported txray._native from {where}")
    sys.path.insert(1, HERE)
    import numpy as np
    import torch
    from _common import now
    from bench_record import FEATURE_SIZES, N_NEURONS, SIZES, THREADS, Corpus

    torch.set_num_threads(THREADS)
    txray.set_num_threads(THREADS)
    corpus = Corpus(SIZES[size], N_NEURONS, batch, seed)
    hello = {
        "native": where,
        # Builds older than the run-time choice have one instruction set and no simd() (a "before" row).
        "simd": _native.simd() if hasattr(_native, "simd") else "fixed",
        "simd_variants": _native.simd_variants() if hasattr(_native, "simd") else ["fixed"],
        "txray": getattr(txray, "__version__", "?"),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "threads": txray.get_num_threads(),
        "tokens": corpus.T,
        "bytes": corpus.nbytes,
    }
    print(json.dumps(hello), flush=True)
    for line in sys.stdin:
        mode, k, simd = (line.split() + ["", ""])[:3]
        if mode == "quit":
            break
        if hasattr(_native, "set_simd"):
            _native.set_simd(simd or hello["simd"])
        rec = txray.Recorder(
            n_neurons=N_NEURONS, features=dict(FEATURE_SIZES), mode=mode, k=int(k) if mode == "topk" else None
        )
        spent = cpu = 0.0
        for acts, feats in corpus.batches():
            t0, c0 = now(), time.process_time()
            rec.update(acts, feats)
            spent += now() - t0
            cpu += time.process_time() - c0
        cells = sum(rec.profile().table(kind).num_rows for kind in FEATURE_SIZES)  # untimed; a checksum
        print(json.dumps({"seconds": spent, "cpu_seconds": cpu, "tokens": rec.tokens, "cells": cells}), flush=True)
        del rec
    t = os.times()
    print(json.dumps({"cpu_seconds": t.user + t.system}), flush=True)


class Worker:
    def __init__(self, name: str, build_dir: str, args):
        self.name, self.dir = name, build_dir
        env = dict(os.environ)
        env.pop("TXRAY_SIMD", None)  # each build chooses for itself
        env.pop("PYTHONPATH", None)
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", build_dir]
            + ["--size", args.size, "--batch", str(args.batch), "--seed", str(args.seed)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.hello = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"worker {self.name} ({self.dir}) exited with {self.proc.wait()}")
        return json.loads(line)

    def run(self, mode: str, k: int, simd: str) -> dict:
        self.proc.stdin.write(f"{mode} {k} {simd}\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> float:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        cpu = self._read()["cpu_seconds"]
        self.proc.wait()
        return cpu


# ==========================================================================
# driver


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", action="append", default=[], metavar="NAME=DIR", help="a build to time (2 or more)")
    p.add_argument("--size", choices=["quick", "paper", "10x"], default="paper")
    p.add_argument("--modes", default="max1,topk", help="comma-separated: max1, topk, all")
    p.add_argument("--k", type=int, default=5, help="k of mode topk")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=100_000, help="tokens per update call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--all-sets",
        action="store_true",
        help="also time every other instruction set a build has (txray._native.set_simd), as rows of their own",
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    sys.path.insert(0, HERE)
    from _common import add_results_arguments

    add_results_arguments(p)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.size, args.batch, args.seed)
    builds = [b.partition("=")[::2] for b in args.build]
    if len(builds) < 2 or any(not name or not d for name, d in builds):
        p.error("give two or more --build NAME=DIR")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]

    sys.path.insert(0, HERE)
    import torch
    from _common import (
        best_read,
        cpu_model,
        fmt_seconds,
        measure_bandwidth,
        merge_bandwidth,
        render_table,
        write_results,
    )

    torch.set_num_threads(2)
    busy0, own0 = busy_seconds(), os.times()
    print(f"bench_portable: size {args.size}, modes {modes} (k={args.k}), best of {args.repeats}", flush=True)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cpus; python {platform.python_version()}", flush=True)
    bandwidth = measure_bandwidth(gib=1.0, repeats=10, threads=2)
    workers = []
    for name, d in builds:
        print(f"starting worker {name} ({d}): generating the inputs ...", flush=True)
        workers.append(Worker(name, d, args))
        print(f"  {name}: {json.dumps(workers[-1].hello)}", flush=True)
    # Entries: (worker, instruction set); a build's own choice first.
    entries = []
    for w in workers:
        sets = w.hello["simd_variants"] if args.all_sets else [w.hello["simd"]]
        entries += [(w, w.hello["simd"])] + [(w, s) for s in sets if s != w.hello["simd"]]
    passes = {(w.name, s, m): [] for w, s in entries for m in modes}
    cpu = {key: [] for key in passes}
    checks = {}
    for r in range(args.repeats):
        for m in modes:
            order = entries[r % len(entries) :] + entries[: r % len(entries)]
            for w, s in order:
                res = w.run(m, args.k, s)
                passes[(w.name, s, m)].append(res["seconds"])
                cpu[(w.name, s, m)].append(res["cpu_seconds"])
                checks.setdefault(m, set()).add((res["tokens"], res["cells"]))
                print(f"  repeat {r + 1}, {m}, {w.name} ({s}): {res['seconds']:.3f} s", flush=True)
    worker_cpu = sum(w.close() for w in workers)
    bandwidth = merge_bandwidth(bandwidth, measure_bandwidth(gib=1.0, repeats=10, threads=2))
    busy1, own1 = busy_seconds(), os.times()
    others = None
    if busy0 is not None and busy1 is not None:
        own = (own1.user + own1.system) - (own0.user + own0.system)
        others = max(0.0, busy1 - busy0 - own - worker_cpu)

    T, nbytes = workers[0].hello["tokens"], workers[0].hello["bytes"]
    bw = best_read(bandwidth)
    floor = nbytes / (bw.gbps * 1e9)
    base = workers[0].name
    base_simd = workers[0].hello["simd"]
    rows, records = [], []
    for m in modes:
        label = f"{m}{f' k={args.k}' if m == 'topk' else ''}"
        for w, s in entries:
            secs, cpus = passes[(w.name, s, m)], cpu[(w.name, s, m)]
            best = min(secs)
            ratio = best / min(passes[(base, base_simd, m)])
            # Per repeat, this entry's time over the base build's in the same
            # repeat (the two ran seconds apart): its median resists noise
            # that comes and goes better than the ratio of the two bests.
            paired = [a / b for a, b in zip(secs, passes[(base, base_simd, m)])]
            paired_cpu = [a / b for a, b in zip(cpus, cpu[(base, base_simd, m)])]
            chosen = s == w.hello["simd"]
            name = f"{w.name} ({s})" if chosen else f"  {w.name}, forced {s}"
            rows.append(
                [
                    label,
                    name,
                    fmt_seconds(best),
                    f"{nbytes / best / 1e9:.2f}",
                    f"{ratio:.3f}",
                    f"{statistics.median(paired):.3f}",
                    f"{statistics.median(paired_cpu):.3f}",
                    f"{best / floor:.2f}",
                    fmt_seconds(min(cpus)),
                    ", ".join(f"{x:.3f}" for x in secs),
                ]
            )
            records.append(
                {
                    "mode": m,
                    "k": args.k if m == "topk" else None,
                    "build": w.name,
                    "build_dir": w.dir,
                    "simd": s,
                    "simd_chosen_by_build": chosen,
                    "seconds": best,
                    "seconds_each_repeat": secs,
                    "cpu_seconds_each_repeat": cpus,
                    "gb_per_s": nbytes / best / 1e9,
                    f"ratio_to_{base}": ratio,
                    f"median_paired_ratio_to_{base}": statistics.median(paired),
                    f"median_paired_cpu_ratio_to_{base}": statistics.median(paired_cpu),
                    "ratio_to_floor": best / floor,
                }
            )
        rows.append([label, "floor", fmt_seconds(floor), f"{bw.gbps:.2f}", "-", "-", "-", "1.00", "-", bw.label])
    title = (
        f"Recorder.update, {T:,} tokens x 1,500 neurons float32 ({nbytes / 1e9:.2f} GB), batches of "
        f"{args.batch:,}, best of {args.repeats} interleaved; ratio = seconds / {base}'s"
    )
    headers = [
        "mode",
        "build (kernels)",
        "seconds",
        "GB/s read",
        f"ratio to {base}",
        "paired median",
        "paired CPU median",
        "x floor",
        "CPU s (best)",
        "each repeat (s)",
    ]
    print()
    print(render_table(headers, rows, title))
    agree = all(len(v) == 1 for v in checks.values())
    print(f"every build recorded the same number of tokens and cells per mode: {'yes' if agree else 'NO'}")
    if others is not None:
        print(f"other processes used {others:.1f} CPU s during the run (0 on an idle machine)")

    notes = [f"every build recorded the same number of tokens and cells per mode: {'yes' if agree else 'NO'}"]
    if others is not None:
        notes.append(f"other processes used {others:.1f} CPU s during the run (0 on an idle machine)")
    details = {
        "builds": {w.name: w.hello for w in workers},
        "inputs": {"tokens": T, "neurons": 1500, "bytes": nbytes, "batch": args.batch, "seed": args.seed},
        "floor": {"seconds": floor, "gb_per_s": bw.gbps, "probe": bw.label},
        "rows": records,
    }
    tables = [{"title": title, "headers": headers, "rows": rows}]
    write_results("bench_portable", args, tables, bandwidth=bandwidth, notes=notes, details=details)


if __name__ == "__main__":
    main()
