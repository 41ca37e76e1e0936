"""Shared helpers for the txray benchmark scripts: timing, bandwidth, tables.

Nothing here imports txray; the helpers only need NumPy (and PyTorch, when it
is installed, for a multi-threaded read-bandwidth probe).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

GB = 1e9  # bandwidths are reported in decimal GB/s (10^9 bytes per second)


def now() -> float:
    """Monotonic wall clock in seconds (perf_counter)."""
    return time.perf_counter()


def prefaulted_zeros(shape, dtype) -> np.ndarray:
    """np.zeros whose pages are already touched.

    np.zeros maps lazily-zeroed pages, so the first timed writes would pay the
    page faults; baselines allocate their accumulators with this helper outside
    the timed region, so that their timings measure the recording work only.
    """
    out = np.empty(shape, dtype)
    out.fill(0)
    return out


class OtherLoad:
    """CPU seconds that other processes used while this one ran (Linux /proc/stat).

    A benchmark on a shared 2-core machine is only as good as its quiet: the
    scripts print this after each table so that a noisy run can be recognised.
    """

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        hz = os.sysconf("SC_CLK_TCK")
        busy = sum(fields[:8]) - fields[3] - fields[4]  # all but idle and iowait, steal included
        t = os.times()  # this process and its joined children (worker processes) are not "others"
        return now(), busy / hz, t.user + t.system + t.children_user + t.children_system

    def report(self) -> str:
        end = self._sample()
        if self.start is None or end is None:
            return "load of other processes: unknown"
        wall = end[0] - self.start[0]
        others = max(0.0, (end[1] - self.start[1]) - (end[2] - self.start[2]))
        cpus = os.cpu_count() or 1
        return (
            f"other processes used {others:.1f} CPU-s over these {wall:.0f} s "
            f"({100 * others / (wall * cpus):.0f}% of {cpus} cpus; near 0 means the timings are clean)"
        )


# --------------------------------------------------------------------------
# memory bandwidth


@dataclass
class Bandwidth:
    label: str  # how it was measured
    gbps: float  # best of the repeats, GB/s
    counts: str  # which bytes the number counts ("read" or "read+written")


def _best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = now()
        fn()
        best = min(best, now() - t0)
    return best


def measure_bandwidth(
    gib: float = 1.0, repeats: int = 5, threads: int = 2, row_len: int = 1500, stream_read=None
) -> list[Bandwidth]:
    """Measure this machine's memory bandwidth several ways (best of `repeats`).

    A `gib` GiB float32 buffer (far larger than any cache) is
      - copied with np.copyto into a second buffer (bytes read + written / s),
      - summed by NumPy on one thread, and on `threads` threads over halves,
      - reduced with np.max on `threads` threads over halves,
      - summed by torch.sum with torch's `threads` intra-op threads, whole and
        per row (`sum(1)` over rows of `row_len` values, as activations come),
      - read by `stream_read(rows)` when given (a benchmark passes the code's own
        streaming read, e.g. txray's `_native.stream_read`, on all its threads).
    The pure reads are what a recording pass does with its activations, so the
    largest read number is the one to build the floor from.
    """
    n = int(gib * 2**30) // 4
    src = prefaulted_zeros(n, np.float32)
    src += 1.0
    dst = prefaulted_zeros(n, np.float32)
    nbytes = src.nbytes
    results = []

    t = _best_time(lambda: np.copyto(dst, src), repeats)
    results.append(Bandwidth(f"np.copyto of a {gib:g} GiB float32 buffer", 2 * nbytes / t / GB, "read+written"))
    dst = None  # free the copy's target before the next reads

    t = _best_time(lambda: src.sum(), repeats)
    results.append(Bandwidth(f"numpy a.sum(), 1 thread, {gib:g} GiB float32", nbytes / t / GB, "read"))

    parts = np.array_split(src, threads)
    with ThreadPoolExecutor(threads) as pool:
        t_sum = _best_time(lambda: list(pool.map(np.sum, parts)), repeats)
        t_max = _best_time(lambda: list(pool.map(np.max, parts)), repeats)
    results.append(
        Bandwidth(f"numpy a.sum() on {threads} threads (halves), {gib:g} GiB float32", nbytes / t_sum / GB, "read")
    )
    t = t_max
    results.append(
        Bandwidth(f"numpy a.max() on {threads} threads (halves), {gib:g} GiB float32", nbytes / t / GB, "read")
    )
    try:
        import torch
    except ImportError:
        return results
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    ts = torch.from_numpy(src)
    t = _best_time(lambda: ts.sum(), repeats)
    results.append(Bandwidth(f"torch.sum, {threads} threads, {gib:g} GiB float32", nbytes / t / GB, "read"))
    rows = ts[: n // row_len * row_len].view(-1, row_len)
    t = _best_time(lambda: rows.sum(1), repeats)
    results.append(
        Bandwidth(
            f"torch .sum(1) over rows of {row_len}, {threads} threads, {gib:g} GiB float32", rows_gb(rows) / t, "read"
        )
    )
    torch.set_num_threads(old)
    if stream_read is not None:
        rows_np = rows.numpy()
        t = _best_time(lambda: stream_read(rows_np), repeats)
        label = getattr(stream_read, "label", "stream_read")
        results.append(Bandwidth(f"{label}, rows of {row_len}, {gib:g} GiB float32", rows_gb(rows_np) / t, "read"))
    return results


def rows_gb(rows) -> float:
    """GB (1e9 bytes) of a float32 2-D array."""
    return rows.shape[0] * rows.shape[1] * 4 / GB


def merge_bandwidth(old: list[Bandwidth], new: list[Bandwidth]) -> list[Bandwidth]:
    """Per probe, the better of two measurements (bandwidth is re-measured during a run,
    so that a moment of contention on a shared machine does not set the floor)."""
    best = {b.label: b for b in old}
    for b in new:
        if b.label not in best or b.gbps > best[b.label].gbps:
            best[b.label] = b
    return list(best.values())


def best_read(bandwidths: list[Bandwidth]) -> Bandwidth:
    """The largest pure-read bandwidth measured."""
    return max((b for b in bandwidths if b.counts == "read"), key=lambda b: b.gbps)


# --------------------------------------------------------------------------
# plain-text tables


def render_table(headers: list[str], rows: list[list[str]], title: str | None = None) -> str:
    """Columns separated by ' | ', first column left-aligned, the rest right-aligned."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]

    def line(cells):
        out = []
        for i, (c, w) in enumerate(zip(cells, widths)):
            out.append(str(c).ljust(w) if i == 0 else str(c).rjust(w))
        return " | ".join(out).rstrip()

    lines = [title] if title else []
    lines.append(line(headers))
    lines.append("-+-".join("-" * w for w in widths))
    lines.extend(line(r) for r in rows)
    return "\n".join(lines)


def fmt_seconds(s: float) -> str:
    if s >= 100:
        return f"{s:.0f}"
    if s >= 10:
        return f"{s:.1f}"
    if s >= 0.1:
        return f"{s:.3f}"
    return f"{s:.4f}"


def fmt_rate(x: float) -> str:
    """Compact rate: 1.23e6 -> '1.23M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def fmt_ratio(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


# --------------------------------------------------------------------------
# results files: every benchmark writes benchmarks/results/<benchmark>.json

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def add_results_arguments(parser) -> None:
    """The options every benchmark has for its results file."""
    parser.add_argument(
        "--note",
        default="",
        help="conditions of this run, stored in the results file (e.g. 'shared machine, other jobs running')",
    )
    parser.add_argument(
        "--results",
        default=None,
        help="where to write the results JSON (default benchmarks/results/<benchmark>.json; 'none' writes nothing)",
    )


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def _memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _git(*args: str) -> str | None:
    import subprocess

    try:
        out = subprocess.run(
            ["git", *args], cwd=os.path.dirname(os.path.abspath(__file__)), capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _versions() -> dict[str, str]:
    """Python and the versions of the libraries this process has imported (none is imported here)."""
    import platform
    import sys

    versions = {"python": platform.python_version()}
    for name in ("numpy", "txray", "torch", "scipy", "numba", "pyarrow", "pandas", "transformers", "spacy"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = str(getattr(module, "__version__", "?"))
    return versions


def write_results(
    benchmark: str,
    args,
    tables: list[dict],
    *,
    bandwidth: list[Bandwidth] | None = None,
    notes: list[str] | None = None,
    path: str | None = None,
    details: dict | None = None,
) -> str | None:
    """Write one benchmark run as JSON: machine, versions, commit, date, arguments and every row.

    ``tables`` is a list of ``{"title": str, "headers": [str], "rows": [[str | number]]}``, the
    tables the script printed, row for row. ``args`` is the argparse namespace (``note`` and
    ``results`` come from :func:`add_results_arguments`). The file is
    ``benchmarks/results/<benchmark>.json`` unless ``--results`` says otherwise: one current run per
    benchmark, its history is in git. ``details`` (JSON-serialisable) is stored as it is, for data
    beyond the printed tables (e.g. every repeat's time). Returns the path written, or None for
    ``--results none``.
    """
    import json
    import platform
    from datetime import datetime, timezone

    arguments = {k: v for k, v in vars(args).items() if k not in ("results",)}
    path = path or getattr(args, "results", None) or os.path.join(RESULTS_DIR, f"{benchmark}.json")
    if path == "none":
        return None
    status = _git("status", "--porcelain", "--untracked-files=no")
    result = {
        "benchmark": benchmark,
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": _git("rev-parse", "HEAD"),
        "dirty": None if status is None else bool(status),
        "arguments": arguments,
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpu": cpu_model(),
            "logical_cores": os.cpu_count(),
            "memory_bytes": _memory_bytes(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "bandwidth_measured": [
            {"label": b.label, "gb_per_s": round(b.gbps, 3), "counts": b.counts} for b in (bandwidth or [])
        ],
        "versions": _versions(),
        "tables": tables,
        "notes": list(notes or []),
    }
    if details is not None:
        result["details"] = details
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.partial-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    print(f"results written to {path}")
    return path
