"""Where txray's CPU recording spends its time, step by step, against the memory floor.

What is measured
----------------
bench_record.py's inputs (the same seeded Corpus: T x 1500 float32 standard
normal activations, Zipf token ids over 33,278 words and POS ids over 45 tags,
batches of --batch tokens), passed through probes that each do a part of
Recorder.update's work, or all of it:

  floor             _native.stream_read: the argmax's loop with only a sum
  torch sum(1)      the same read in PyTorch (2 threads)
  select k=1 / k=5  _native.select_winners: every row's winners, nothing recorded
  max1 / topk k=5 / all   Recorder.update on a fresh recorder (contexts=20, the
                    default), and variants: contexts=0; tables grown (one
                    recorder kept over the passes, contexts=0); dense tables
                    (dense_limit_bytes large enough that no table is hashed:
                    made, zeroed by the OS on first touch, before the pass)
  torch index_add_  mode all's sums in PyTorch: index_add_ of the float64
                    activations into an (F, N) float64 table per kind, plus
                    bincount (bench_record.py's baseline)

Within a pass every probe sees every batch, interleaved batch by batch (the
order rotates per batch); a probe's time is the sum over the batches, its
best of --repeats passes is reported, with the process CPU seconds of that
pass (both threads; steadier than wall time when other processes take the
cores, though OpenMP threads spinning at a barrier count too). Ratios are to
the floor row's best; the derived lines subtract one probe from another to
give each step's cost (selection = select - floor, adds = update - select).

Usage:  python benchmarks/bench_floor.py --size paper --repeats 3
        (--build DIR: time the txray in DIR instead, e.g. a pip --target install of another commit)
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import OtherLoad, add_results_arguments, fmt_ratio, fmt_seconds, now, render_table, write_results  # noqa: E402
from bench_record import FEATURE_SIZES, N_NEURONS, SIZES, THREADS, Corpus  # noqa: E402

txray = _native = None  # imported by main(), from --build when given


def import_txray(build_dir: str | None) -> None:
    """Import txray (from build_dir only, when given: an unpacked wheel or a pip --target directory)."""
    global txray, _native
    if build_dir:
        build_dir = os.path.realpath(build_dir)
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()]
        sys.path.insert(0, build_dir)
    import txray as module
    from txray import _native as native

    if build_dir and not os.path.realpath(native.__file__).startswith(build_dir + os.sep):
        raise SystemExit(f"--build {build_dir}: imported txray._native from {native.__file__}")
    txray, _native = module, native


DENSE_EVERYTHING = 1 << 40  # dense_limit_bytes under which every table is dense


class Probe:
    """One timed step: start() untimed before each pass, step(acts, feats) timed per batch."""

    aside = False

    def __init__(self, name: str):
        self.name = name

    def start(self):
        pass

    def step(self, acts, feats):
        raise NotImplementedError


class StreamRead(Probe):
    def step(self, acts, feats):
        _native.stream_read(acts)


class TorchSum(Probe):
    def step(self, acts, feats):
        torch.from_numpy(acts).sum(1)


class Select(Probe):
    def __init__(self, name: str, k: int):
        super().__init__(name)
        self.k = k

    def step(self, acts, feats):
        _native.select_winners(acts, "float32", self.k)


def select_probe(name: str, k: int) -> list[Probe]:
    """The selection probe, when this build has _native.select_winners."""
    return [Select(name, k)] if hasattr(_native, "select_winners") else []


class Update(Probe):
    """Recorder.update; fresh recorder per pass unless `keep` (tables grown)."""

    def __init__(self, name: str, keep: bool = False, **kwargs):
        super().__init__(name)
        self.kwargs, self.keep, self.rec = kwargs, keep, None

    def start(self):
        if self.rec is None or not self.keep:
            self.rec = None
            gc.collect()
            self.rec = txray.Recorder(n_neurons=N_NEURONS, features=dict(FEATURE_SIZES), **self.kwargs)

    def step(self, acts, feats):
        self.rec.update(acts, feats)


class TorchIndexAdd(Probe):
    def start(self):
        self.S = None
        gc.collect()
        self.C = {k: torch.zeros(F, dtype=torch.int64) for k, F in FEATURE_SIZES.items()}
        self.S = {k: torch.zeros((F, N_NEURONS), dtype=torch.float64) for k, F in FEATURE_SIZES.items()}

    def step(self, acts, feats):
        x = torch.from_numpy(acts).double()
        for k, f in feats.items():
            ft = torch.from_numpy(f)
            self.S[k].index_add_(0, ft, x)
            self.C[k] += torch.bincount(ft, minlength=FEATURE_SIZES[k])


def probes_for(groups: list[str]) -> list[Probe]:
    out: list[Probe] = [StreamRead("floor: _native.stream_read"), TorchSum("torch sum(1)")]
    if "max1" in groups:
        out += [
            *select_probe("select k=1 alone (_native.select_winners)", 1),
            Update("max1 update (fresh, contexts=20)", mode="max1"),
            Update("max1 update (fresh, contexts=0)", mode="max1", contexts=0),
            Update("max1 update (tables grown, contexts=0)", keep=True, mode="max1", contexts=0),
            Update(
                "max1 update (dense tables, contexts=0)", mode="max1", contexts=0, dense_limit_bytes=DENSE_EVERYTHING
            ),
        ]
    if "topk" in groups:
        out += [
            *select_probe("select k=5 alone (_native.select_winners)", 5),
            Update("topk k=5 update (fresh, contexts=20)", mode="topk", k=5),
            Update("topk k=5 update (fresh, contexts=0)", mode="topk", k=5, contexts=0),
        ]
    if "all" in groups:
        out += [
            Update("all update (fresh, contexts=20)", mode="all"),
            Update("all update (fresh, contexts=0)", mode="all", contexts=0),
            TorchIndexAdd("torch index_add_ (F, N) float64 + bincount"),
        ]
    return out


def time_probes(probes: list[Probe], corpus: Corpus, repeats: int) -> dict[str, tuple[float, float]]:
    """Best (wall seconds, CPU seconds of that pass) per probe."""
    best = {p.name: (float("inf"), 0.0) for p in probes}
    for rep in range(repeats):
        for p in probes:
            p.start()
        wall = {p.name: 0.0 for p in probes}
        cpu = {p.name: 0.0 for p in probes}
        for b, (acts, feats) in enumerate(corpus.batches()):
            r = b % len(probes)
            for p in probes[r:] + probes[:r]:
                c0, t0 = time.process_time(), now()
                p.step(acts, feats)
                wall[p.name] += now() - t0
                cpu[p.name] += time.process_time() - c0
        for p in probes:
            if wall[p.name] < best[p.name][0]:
                best[p.name] = (wall[p.name], cpu[p.name])
        print(f"  pass {rep + 1}/{repeats} done", flush=True)
    return best


def derived(best: dict[str, tuple[float, float]]) -> list[str]:
    """Each step's cost, as one probe less another (wall and CPU seconds)."""
    pairs = [
        ("max1 selection past the read", "select k=1 alone (_native.select_winners)", "floor: _native.stream_read"),
        (
            "max1 adds, tables grown",
            "max1 update (tables grown, contexts=0)",
            "select k=1 alone (_native.select_winners)",
        ),
        ("max1 adds, fresh tables", "max1 update (fresh, contexts=0)", "select k=1 alone (_native.select_winners)"),
        ("max1 table growth", "max1 update (fresh, contexts=0)", "max1 update (tables grown, contexts=0)"),
        ("max1 contexts", "max1 update (fresh, contexts=20)", "max1 update (fresh, contexts=0)"),
        ("topk selection past the read", "select k=5 alone (_native.select_winners)", "floor: _native.stream_read"),
        ("topk adds", "topk k=5 update (fresh, contexts=0)", "select k=5 alone (_native.select_winners)"),
        ("all past the read", "all update (fresh, contexts=0)", "floor: _native.stream_read"),
        ("all contexts", "all update (fresh, contexts=20)", "all update (fresh, contexts=0)"),
    ]
    lines = []
    for label, a, b in pairs:
        if a in best and b in best:
            wall, cpu = best[a][0] - best[b][0], best[a][1] - best[b][1]
            lines.append(f"{label}: {fmt_seconds(wall)} s, CPU {fmt_seconds(cpu)} s  ({a} - {b})")
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=list(SIZES), default="paper")
    p.add_argument("--groups", default="max1,topk,all", help="comma-separated: max1, topk, all")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=100_000, help="tokens per update call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--build", default=None, help="import txray from this directory (e.g. another build)")
    add_results_arguments(p)
    args = p.parse_args(argv)
    import_txray(args.build)
    torch.set_num_threads(THREADS)
    _native.set_num_threads(THREADS)
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    corpus = Corpus(SIZES[args.size], N_NEURONS, args.batch, args.seed)
    if not corpus.in_memory:
        raise SystemExit("bench_floor times in-memory inputs only (--size quick or paper)")
    probes = probes_for(groups)
    print(
        f"bench_floor: {corpus.T:,} x {N_NEURONS} float32, batches of {corpus.batch:,}; "
        f"txray from {os.path.dirname(txray.__file__)}, kernels {_native.simd()}"
    )
    load = OtherLoad()
    best = time_probes(probes, corpus, args.repeats)
    floor, floor_cpu = best[probes[0].name]
    rows = [
        [
            p.name,
            fmt_seconds(best[p.name][0]),
            fmt_seconds(best[p.name][1]),
            f"{corpus.nbytes / best[p.name][0] / 1e9:.1f}",
            fmt_ratio(best[p.name][0] / floor),
            fmt_ratio(best[p.name][1] / floor_cpu),
        ]
        for p in probes
    ]
    headers = ["probe", "seconds", "CPU seconds", "GB/s read", "x floor", "CPU x floor"]
    title = (
        f"{corpus.T:,} tokens x {N_NEURONS:,} float32 ({corpus.nbytes / 1e9:.2f} GB), best of {args.repeats}; "
        f"x floor = seconds / the floor row's (CPU: the same in CPU seconds)"
    )
    print()
    print(render_table(headers, rows, title))
    notes = derived(best)
    print("\n".join(notes))
    print(load.report())
    write_results(
        "bench_floor",
        args,
        [{"title": title, "headers": headers, "rows": rows, "notes": [*notes, load.report()]}],
    )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
