"""Time txray's Hellinger kernels against the original TX-Ray approach, NumPy and SciPy.

    python benchmarks/bench_hellinger.py            # the paper's setting (1 to 2 minutes)
    python benchmarks/bench_hellinger.py --quick    # smaller sizes, a few seconds

The data imitate the paper's LSTM: 1,500 neurons, a vocabulary of 33,278
token features drawn from a Zipf(1.1) law, about a fifth of the neurons empty
(unpreferred) and heavy-tailed row lengths from 1 to 3,000 features. A second
stage of the same neurons keeps part of each support and adds new features.

Each section prints a table ``method | time | ratio to txray``: the median of
``--repeats`` runs after a warm-up call; ratio > 1 means txray is faster.
The 10,000 x 10,000 section runs each method in a subprocess so that its peak
resident memory (VmHWM) can be read in isolation.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numba
import numpy as np
import scipy.sparse as sp

from txray.hellinger import hellinger_matrix, hellinger_paired, hellinger_topk, match

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import add_results_arguments, render_table, write_results  # noqa: E402

VOCABULARY = 33_278
ZIPF_EXPONENT = 1.1
EMPTY_SHARE = 0.2  # neurons that never win: unpreferred
MAX_ROW_LENGTH = 3_000
ORIGINAL_TIME_BUDGET_S = 60.0  # run the original on every neuron only if it fits in this
SCIPY_MEMORY_LIMIT_GIB = 16  # address-space limit for the SciPy subprocess on the 24 GiB machine
NEIGHBOUR_ATOL = 1e-6  # sqrt(1 - BC) near 0 differs by ~1e-8 between summation orders


# ---------------------------------------------------------------------------
# Synthetic profiles
# ---------------------------------------------------------------------------


def zipf_probabilities(n_features, exponent=ZIPF_EXPONENT):
    weights = np.arange(1, n_features + 1, dtype=float) ** -exponent
    return weights / weights.sum()


def random_row(rng, length, feature_p):
    """`length` distinct Zipf-drawn features with log-normal weights, normalised."""
    features = np.sort(rng.choice(len(feature_p), size=length, replace=False, p=feature_p))
    weights = rng.lognormal(0.0, 1.0, length)
    return features, weights / weights.sum()


def rows_to_csr(rows):
    lengths = [len(features) for features, _ in rows]
    indptr = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    indices = np.concatenate([features for features, _ in rows]).astype(np.int64)
    data = np.concatenate([probs for _, probs in rows]).astype(np.float64)
    return indptr, indices, data


def csr_rows(csr):
    indptr, indices, data = csr
    return [(indices[s:e], data[s:e]) for s, e in zip(indptr[:-1], indptr[1:])]


def first_stage(rng, n_neurons, feature_p):
    """Median row length 30, log-normal tail clipped at MAX_ROW_LENGTH; a fifth empty."""
    lengths = np.clip(np.round(rng.lognormal(np.log(30), 1.5, n_neurons)), 1, MAX_ROW_LENGTH).astype(int)
    lengths[rng.random(n_neurons) < EMPTY_SHARE] = 0
    empty = (np.zeros(0, np.int64), np.zeros(0))
    return rows_to_csr([random_row(rng, n, feature_p) if n else empty for n in lengths])


def later_stage(rng, stage, feature_p):
    """The same neurons later: 10% of preferred ones lose all preference, 30% of empty ones gain
    some; the others keep ~60% of their features, add new ones and get new weights."""
    rows = []
    for features, _ in csr_rows(stage):
        if len(features) == 0:
            gained = rng.random() < 0.3
            length = int(np.clip(np.round(rng.lognormal(np.log(30), 1.5)), 1, MAX_ROW_LENGTH))
            rows.append(random_row(rng, length, feature_p) if gained else (features, np.zeros(0)))
        elif rng.random() < 0.1:
            rows.append((np.zeros(0, np.int64), np.zeros(0)))
        else:
            kept = features[rng.random(len(features)) < 0.6]
            length = int(np.clip(np.round(len(features) * rng.lognormal(0, 0.5)), 1, MAX_ROW_LENGTH))
            new, _ = random_row(rng, length, feature_p)
            support = np.union1d(kept, new)
            weights = rng.lognormal(0.0, 1.0, len(support))
            rows.append((support, weights / weights.sum()))
    return rows_to_csr(rows)


def two_stages(seed, n_neurons):
    rng = np.random.default_rng(seed)
    feature_p = zipf_probabilities(VOCABULARY)
    a = first_stage(rng, n_neurons, feature_p)
    return a, later_stage(rng, a, feature_p)


def to_scipy(csr):
    indptr, indices, data = csr
    return sp.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, VOCABULARY))


def nonempty(csr):
    return np.diff(csr[0]) > 0


# ---------------------------------------------------------------------------
# Baselines
# ---------------------------------------------------------------------------


def original_neuron_hellinger(p, q):
    """One neuron's Hellinger as the original TX-Ray code computes it (re-implemented).

    p, q: dicts feature -> probability. Like the original, it pads both dicts
    in place with zeros over the union of their keys, copies them into dicts
    ordered by sorted key, and divides the distance by the union length
    ("average Hellinger"). Returns (average distance, union length).
    """
    for feature in set(p) | set(q):
        if feature not in p:
            p[feature] = 0
        if feature not in q:
            q[feature] = 0
    keys = sorted(p)
    p_sorted = {feature: p[feature] for feature in keys}
    q_sorted = {feature: q[feature] for feature in keys}
    distance = np.sqrt(np.sum((np.sqrt(list(p_sorted.values())) - np.sqrt(list(q_sorted.values()))) ** 2))
    distance = distance / np.sqrt(2)
    return distance / len(p_sorted), len(p_sorted)


def original_paired(a, b, neurons):
    """The original's per-neuron loop: a dict per neuron and stage, then the distance."""
    result = {}
    for n in neurons:
        p = dict(zip(a[1][a[0][n] : a[0][n + 1]].tolist(), a[2][a[0][n] : a[0][n + 1]].tolist()))
        q = dict(zip(b[1][b[0][n] : b[0][n + 1]].tolist(), b[2][b[0][n] : b[0][n + 1]].tolist()))
        result[n] = original_neuron_hellinger(p, q)
    return result


def dense(csr):
    out = np.zeros((len(csr[0]) - 1, VOCABULARY))
    out[np.repeat(np.arange(len(out)), np.diff(csr[0])), csr[1]] = csr[2]
    return out


def numpy_paired(P, Q):
    """(1/sqrt 2) ||sqrt p - sqrt q|| on dense rows; NaN where a row is empty."""
    distance = np.sqrt(((np.sqrt(P) - np.sqrt(Q)) ** 2).sum(axis=1) / 2)
    distance[~(P.any(axis=1) & Q.any(axis=1))] = np.nan
    return distance


def bc_to_hellinger(bc):
    return np.sqrt(np.maximum(0.0, 1.0 - bc))


def scipy_paired(P, Q):
    """sqrt(1 - BC) with BC from SciPy's sparse elementwise product."""
    distance = bc_to_hellinger(np.asarray(P.sqrt().multiply(Q.sqrt()).sum(axis=1)).ravel())
    distance[(P.getnnz(axis=1) == 0) | (Q.getnnz(axis=1) == 0)] = np.nan
    return distance


def select_topk(distance, a_nonempty, b_nonempty, k):
    """Per row, the k smallest distances over non-empty B rows (argpartition, then sort the k)."""
    distance[:, ~b_nonempty] = np.inf
    candidates = np.argpartition(distance, k - 1, axis=1)[:, :k]
    order = np.argsort(np.take_along_axis(distance, candidates, axis=1), axis=1, kind="stable")
    neighbors = np.take_along_axis(candidates, order, axis=1)
    distances = np.take_along_axis(distance, neighbors, axis=1)
    neighbors[~a_nonempty] = -1
    distances[~a_nonempty] = np.nan
    return neighbors, distances


def scipy_topk(P, Q, k):
    """sqrt(P) @ sqrt(Q).T as a sparse product, densified, then top-k selection."""
    distance = bc_to_hellinger((P.sqrt() @ Q.sqrt().T).toarray())
    return select_topk(distance, P.getnnz(axis=1) > 0, Q.getnnz(axis=1) > 0, k)


def numpy_topk(P, Q, k):
    """Dense sqrt(P) @ sqrt(Q).T (BLAS), then top-k selection."""
    distance = bc_to_hellinger(np.sqrt(P) @ np.sqrt(Q).T)
    return select_topk(distance, P.any(axis=1), Q.any(axis=1), k)


def same_neighbours(txray, other, atol=NEIGHBOUR_ATOL):
    """Same k distances per row and the same neighbours, up to the order of tied distances.

    Neighbours strictly closer than the row's k-th distance must be the same
    set; those at the k-th distance may be any of the tied rows.
    """
    (t_ids, t_dist), (o_ids, o_dist) = txray, other
    if not np.array_equal(t_ids < 0, o_ids < 0) or not np.allclose(t_dist, o_dist, rtol=0, atol=atol, equal_nan=True):
        return False
    for ids_t, ids_o, dist in zip(t_ids, o_ids, t_dist):
        below_kth = dist < np.nanmax(dist, initial=-np.inf) - atol
        if set(ids_t[below_kth]) != set(ids_o[below_kth]):
            return False
    return True


# ---------------------------------------------------------------------------
# Timing and tables
# ---------------------------------------------------------------------------


def median_time(fn, repeats):
    """Median wall time of `repeats` calls (after the caller's warm-up) and the last result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def format_seconds(seconds):
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def print_table(title, rows, extra_columns=()):
    """rows: (method, seconds or None, *extra cells); the first row is txray."""
    reference = rows[0][1]
    cells = [
        [method, format_seconds(seconds), "-" if seconds is None else f"{seconds / reference:.1f}x", *extra]
        for method, seconds, *extra in rows
    ]
    headers = ["method", "time", "ratio to txray", *extra_columns]
    print("\n" + render_table(headers, cells, title))
    TABLES.append({"title": title, "headers": [*headers, "seconds"], "rows": [[*c, r[1]] for c, r in zip(cells, rows)]})


TABLES: list[dict] = []  # every table printed, for the results file
NOTES: list[str] = []  # every other line of results printed


def say(text):
    print(text)
    NOTES.append(text.strip())


# ---------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------


def bench_paired(a, b, repeats):
    n = len(a[0]) - 1
    hellinger_paired(*a, *b)
    t_txray, (distance, union, _) = median_time(lambda: hellinger_paired(*a, *b), repeats)

    # The original only visits neurons preferred in both stages. It is slow:
    # estimate on 100 of them, then run all if that fits the time budget.
    shared = np.flatnonzero(nonempty(a) & nonempty(b))
    sample = shared[:100]
    t_sample, _ = median_time(lambda: original_paired(a, b, sample), 1)
    estimate = t_sample * len(shared) / len(sample)
    if estimate <= ORIGINAL_TIME_BUDGET_S:
        t_original, original = median_time(lambda: original_paired(a, b, shared), repeats if estimate < 5 else 1)
        original_label = f"original TX-Ray (dicts per neuron; all its {len(shared)} shared neurons)"
    else:
        t_original, original = estimate, original_paired(a, b, sample)
        original_label = f"original TX-Ray (dicts per neuron; {len(sample)} neurons, extrapolated to {len(shared)})"

    P, Q = dense(a), dense(b)
    numpy_paired(P, Q)
    t_numpy, numpy_distance = median_time(lambda: numpy_paired(P, Q), repeats)
    sP, sQ = to_scipy(a), to_scipy(b)
    scipy_paired(sP, sQ)
    t_scipy, scipy_distance = median_time(lambda: scipy_paired(sP, sQ), repeats)

    print_table(
        f"Same-index Hellinger, {n} neurons (target: txray under 50 ms)",
        [
            ("txray hellinger_paired (distance + union + shared length)", t_txray),
            (original_label, t_original),
            ("NumPy dense rows (densifying not timed)", t_numpy),
            ("SciPy sparse sqrt(P).multiply(sqrt(Q))", t_scipy),
        ],
    )
    visited = list(original)
    original_undivided = np.array([original[n][0] * original[n][1] for n in visited])
    say(f"max |txray - NumPy dense|: {np.nanmax(np.abs(distance - numpy_distance)):.1e}")
    say(f"max |txray - SciPy sparse|: {np.nanmax(np.abs(distance - scipy_distance)):.1e}")
    say(
        "original's average Hellinger x union length == txray distance on shared neurons: "
        + ("yes" if np.allclose(original_undivided, distance[visited], rtol=0, atol=1e-12) else "no")
        + f"; union lengths equal: {'yes' if all(original[n][1] == union[n] for n in visited) else 'no'}"
    )


def bench_all_pairs(a, b, k, repeats):
    n_a, n_b = len(a[0]) - 1, len(b[0]) - 1
    hellinger_topk(*a, *b, VOCABULARY, k)
    t_txray, txray = median_time(lambda: hellinger_topk(*a, *b, VOCABULARY, k), repeats)
    sP, sQ = to_scipy(a), to_scipy(b)
    scipy_topk(sP, sQ, k)
    t_scipy, scipy_result = median_time(lambda: scipy_topk(sP, sQ, k), repeats)
    rows = [
        (f"txray hellinger_topk (k={k})", t_txray),
        ("SciPy sparse sqrt(P) @ sqrt(Q).T + argpartition", t_scipy),
    ]
    agreement = [f"agree (txray vs SciPy sparse): {'yes' if same_neighbours(txray, scipy_result) else 'no'}"]

    dense_bytes = 2 * (n_a + n_b) * VOCABULARY * 8  # P, Q and their square roots
    if dense_bytes < available_memory_bytes() / 2:
        P, Q = dense(a), dense(b)
        numpy_topk(P, Q, k)
        t_numpy, numpy_result = median_time(lambda: numpy_topk(P, Q, k), repeats)
        rows.append(("NumPy dense sqrt(P) @ sqrt(Q).T (BLAS) + argpartition", t_numpy))
        agreement.append(f"agree (txray vs NumPy dense): {'yes' if same_neighbours(txray, numpy_result) else 'no'}")
    else:
        rows.append((f"NumPy dense: skipped, needs ~{dense_bytes / 2**30:.1f} GiB", None))
    print_table(f"All-pairs Hellinger {n_a} x {n_b}, k={k} nearest (target: txray >= 3x faster than SciPy)", rows)
    say("\n".join(agreement))


def bench_large(n, k, repeats, workdir):
    a, b = two_stages(seed=1, n_neurons=n)
    data_path = os.path.join(workdir, "large.npz")
    np.savez(data_path, a_indptr=a[0], a_indices=a[1], a_data=a[2], b_indptr=b[0], b_indices=b[1], b_data=b[2])
    say(f"\n({n} x {n}: {len(a[1]):,} + {len(b[1]):,} non-zeros, {nonempty(a).sum()} x {nonempty(b).sum()} non-empty)")

    runs = {}
    for method in ("txray", "scipy"):
        runs[method] = run_child(method, data_path, k, repeats, workdir)
    rows = []
    for method, label in (("txray", f"txray hellinger_topk (k={k})"), ("scipy", "SciPy sparse + argpartition")):
        run = runs[method]
        if "error" in run:
            rows.append((f"{label}: skipped, {run['error']}", None, "-", "-"))
        else:
            rows.append((label, run["seconds"], f"{run['peak_mib']:.0f} MiB", f"{run['growth_mib']:.0f} MiB"))
    print_table(
        f"All-pairs Hellinger {n} x {n}, k={k} nearest (target: txray peak memory within 1 GiB)",
        rows,
        extra_columns=("peak RSS (whole process)", "growth over RSS before the call"),
    )
    if "error" not in runs["scipy"]:
        agree = same_neighbours(load_result(runs["txray"]["result"]), load_result(runs["scipy"]["result"]))
        say(f"agree (txray vs SciPy sparse): {'yes' if agree else 'no'}")


def available_memory_bytes():
    with open("/proc/meminfo") as meminfo:
        fields = dict(line.split(":", 1) for line in meminfo)
    return int(fields["MemAvailable"].split()[0]) * 1024


def report_compile_time(workdir):
    """First calls in a fresh process with an empty numba cache: the real compile time."""
    env = dict(os.environ, NUMBA_CACHE_DIR=os.path.join(workdir, "numba-cache"))
    command = [sys.executable, os.path.abspath(__file__), "--child", "compile"]
    seconds = json.loads(subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout)
    say("numba compile time (fresh cache, first call): " + ", ".join(f"{f} {s:.1f} s" for f, s in seconds.items()))


# ---------------------------------------------------------------------------
# Subprocesses
# ---------------------------------------------------------------------------


def run_child(method, data_path, k, repeats, workdir):
    command = [sys.executable, os.path.abspath(__file__), "--child", method, "--data", data_path]
    command += ["--k", str(k), "--repeats", str(repeats), "--workdir", workdir]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        last_line = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit status {completed.returncode}: {last_line}"}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def load_result(path):
    result = np.load(path)
    return result["neighbors"], result["distances"]


def memory_mib(field):
    """VmRSS (resident now) or VmHWM (peak resident) of this process, in MiB.

    VmHWM rather than ru_maxrss: Linux carries the parent's resident size at
    fork into a child's ru_maxrss, while VmHWM starts afresh at exec.
    """
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return int(fields[field].split()[0]) / 1024  # kB


def child_compile():
    tiny = (np.array([0, 2, 2, 3]), np.array([0, 2, 1]), np.array([0.25, 0.75, 1.0]))
    seconds = {}
    for name, call in (
        ("hellinger_paired", lambda: hellinger_paired(*tiny, *tiny)),
        ("hellinger_topk", lambda: hellinger_topk(*tiny, *tiny, 3, 2)),
        ("hellinger_matrix", lambda: hellinger_matrix(*tiny, *tiny, 3)),
        ("match", lambda: match(*tiny, *tiny, 3, method="greedy")),
    ):
        seconds[name], _ = median_time(call, 1)
    print(json.dumps(seconds))


def child_topk(method, args):
    """Time one method on the saved data; print its time and memory as JSON."""
    saved = np.load(args.data)
    a = (saved["a_indptr"], saved["a_indices"], saved["a_data"])
    b = (saved["b_indptr"], saved["b_indices"], saved["b_data"])
    if method == "txray":
        tiny = (np.array([0, 1]), np.array([0]), np.array([1.0]))
        hellinger_topk(*tiny, *tiny, 1, 1)  # compile (or load from cache) outside the timing
        run = lambda: hellinger_topk(*a, *b, VOCABULARY, args.k)  # noqa: E731
    else:
        limit = SCIPY_MEMORY_LIMIT_GIB * 2**30
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        P, Q = to_scipy(a), to_scipy(b)
        run = lambda: scipy_topk(P, Q, args.k)  # noqa: E731
    before = memory_mib("VmRSS")
    seconds, (neighbors, distances) = median_time(run, args.repeats)
    peak = memory_mib("VmHWM")
    result_path = os.path.join(args.workdir, f"{method}-result.npz")
    np.savez(result_path, neighbors=neighbors, distances=distances)
    print(json.dumps({"seconds": seconds, "peak_mib": peak, "growth_mib": peak - before, "result": result_path}))


# ---------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (300 and 2,000 neurons), 3 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per method (default 7, quick 3)")
    parser.add_argument("--k", type=int, default=10, help="neighbours per neuron in the all-pairs sections")
    parser.add_argument("--threads", type=int, default=None, help="numba threads (default: numba's, one per core)")
    add_results_arguments(parser)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "compile":
        return child_compile()
    if args.child:
        return child_topk(args.child, args)

    if args.threads:
        numba.set_num_threads(args.threads)
        os.environ["NUMBA_NUM_THREADS"] = str(args.threads)  # for the subprocesses
    repeats = args.repeats or (3 if args.quick else 7)
    n_small, n_large = (300, 2_000) if args.quick else (1_500, 10_000)
    with tempfile.TemporaryDirectory() as workdir:
        a, b = two_stages(seed=0, n_neurons=n_small)
        hellinger_topk(*a, *b, VOCABULARY, args.k)  # warm-up: compile (or load) and start the threads
        say(
            f"numba {numba.__version__}: {numba.get_num_threads()} threads, threading layer "
            f"{numba.threading_layer()}; load average {os.getloadavg()[0]:.2f}"
        )
        report_compile_time(workdir)
        say(
            f"{n_small} neurons, {VOCABULARY:,} features: {nonempty(a).sum()} / {nonempty(b).sum()} non-empty, "
            f"row lengths up to {np.diff(a[0]).max()} (mean {np.diff(a[0])[nonempty(a)].mean():.0f}); "
            f"median of {repeats} runs after a warm-up"
        )
        bench_paired(a, b, repeats)
        bench_all_pairs(a, b, args.k, repeats)
        bench_large(n_large, args.k, max(1, repeats // 2), workdir)
        say(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    write_results("bench_hellinger", args, TABLES, notes=NOTES)


if __name__ == "__main__":
    main()
