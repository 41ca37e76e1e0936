"""What bounds mode all's CPU update: its steps apart and the bare costs under them.

Builds bench_all_bound.cpp against the engine's sources in cpp/ (the flags of
the package's native build: -O3 -march=native, OpenMP) and runs it on
bench_record.py's paper setting (400,000 x 1,500 float32, Zipf token ids over
33,278 and POS ids over 45, batches of 100,000, 2 threads). Each probe's time
is the CPU seconds of both threads over all the tokens, best of --repeats,
and its ratio to the floor's (the stream read of _native.stream_read), so
that the ratios hold on a machine shared with other work. See
docs/performance.md, "What bounds mode all".

Usage:  python benchmarks/bench_all_bound.py [--tokens 400000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import OtherLoad, add_results_arguments, fmt_ratio, fmt_seconds, render_table, write_results  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SOURCES = ["recorder.cpp", "cells.cpp", "contexts.cpp", "kernels.cpp"]


class ProbeLoad(OtherLoad):
    """OtherLoad that counts the probe program (a child process) as this benchmark's own CPU time."""

    @staticmethod
    def _sample():
        sample = OtherLoad._sample()
        if sample is None:
            return None
        t = os.times()
        return sample[0], sample[1], sample[2] + t.children_user + t.children_system


def build(out: str) -> None:
    """Compile the probe program into `out` (SystemExit without a C++ compiler)."""
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")
    if not cxx:
        raise SystemExit("bench_all_bound needs a C++ compiler (g++ or clang++, or set CXX)")
    cpp = os.path.join(ROOT, "cpp")
    cmd = [cxx, "-O3", "-march=native", "-fopenmp", "-std=c++17", "-DTXRAY_NATIVE_ARCH=1", "-w", f"-I{cpp}"]
    cmd += [os.path.join(HERE, "bench_all_bound.cpp"), *(os.path.join(cpp, s) for s in SOURCES), "-o", out]
    print("building the probes (cpp/ and benchmarks/bench_all_bound.cpp)...", flush=True)
    subprocess.run(cmd, check=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=400_000)
    p.add_argument("--repeats", type=int, default=3)
    add_results_arguments(p)
    args = p.parse_args(argv)
    if args.tokens < 1 or args.repeats < 1:
        raise SystemExit("--tokens and --repeats must be at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "bench_all_bound")
        build(exe)
        load = ProbeLoad()
        env = dict(os.environ, OMP_WAIT_POLICY="passive")  # threads waiting at a barrier add no CPU time
        run = subprocess.run(
            [exe, str(args.tokens), str(args.repeats)], env=env, capture_output=True, text=True, check=True
        )
    header, *lines = run.stdout.strip().splitlines()
    probes = [line.split("\t") for line in lines]
    floor = float(probes[0][1])
    headers = ["probe", "CPU seconds", "x floor", "what it measures"]
    rows = [[name, fmt_seconds(float(cpu)), fmt_ratio(float(cpu) / floor), what] for name, cpu, what in probes]
    title = f"{header}; CPU seconds of both threads, x floor = over the floor row's"
    print()
    print(render_table(headers, rows, title))
    print(load.report())
    write_results(
        "bench_all_bound", args, [{"title": title, "headers": headers, "rows": rows, "notes": [load.report()]}]
    )


if __name__ == "__main__":
    main()
