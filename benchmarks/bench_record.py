"""Time txray's recording pass against NumPy, PyTorch, pandas and a per-token loop.

What is measured
----------------
The recording pass of TX-Ray (docs/method.md): for every token t with
activation row a_t (N neurons) and one feature id per feature kind,
  max1: n* = argmax_n a_t[n] (lowest index on ties), v = a_t[n*];
        count[kind][n*, f_t] += 1, sum[kind][n*, f_t] += v   (int64 / float64)
  topk: the same for each of the row's k = 5 largest (TOPK; ties to the lowest index);
  all:  count[kind][n, f_t] += 1, sum[kind][n, f_t] += a_t[n] for every n.

Inputs (generated once per run, seeded, identical for every method):
  activations  T x 1500 float32, standard normal, generated in batches of
               --batch tokens (seed = [--seed, batch index, half]) on 2 threads;
  token ids    Zipf over a 33,278-word vocabulary (rank-frequency 1/r^1.1 by
               inverse CDF + searchsorted, ranks mapped to ids by a fixed
               random permutation);
  POS ids      Zipf-like (1/r) over 45 tags.
Sizes: quick = 20,000 tokens, paper = 400,000 (the paper's setting), 10x =
4,000,000. Every method gets the same batches (default 100,000 tokens). For 10x
the activations (24 GB) do not fit in memory: each batch is generated once,
then handed to every method in turn (generation is never timed). For the other
sizes the whole activation matrix is generated up front and batches are views.

How it is timed
---------------
"Streamed" methods see every batch: within one pass the methods are
interleaved batch by batch (the order rotates per batch), each method's update
time is summed over the batches, then its finishing step (flush, merge,
group-by) is timed and added. txray's Recorder.update time is its own row, and
rec.profile() is a separate row. The whole pass is repeated --repeats times and
the best total per method is reported. Accumulators are allocated (and their
pages touched) outside the timed region; txray's hash tables, which hold only
the cells that occur, grow during its timed updates (each pass makes a new
recorder). With --repeats > 1, max1 also has the row "tables grown": one
recorder kept over all passes, whose best pass records into tables that
have already grown (a context row, like "of which ... alone": not checked,
not a baseline). txray's recorder keeps each neuron's top 20 activating
contexts, as it does by default; the row "contexts=0" is the same recorder
without them, interleaved with it, and the line after the table gives the
ratio of the two (the cost of the contexts; target <= 1.1 in max1).

"Subsampled" methods are too slow or too memory-hungry for the full input
(the per-token Python loops, pandas on a T x N melt for mode all): they are
timed on the first S tokens and extrapolated linearly to T tokens; their row
label says so.

Baselines. max1: NumPy (argmax + take_along_axis, then np.bincount or
np.add.at on the flat index n*F + f; also add.at with the argmax on 2 threads,
since NumPy releases the GIL; 'numpy best' is the fastest NumPy row; the row
"of which: its argmax ... alone" times that baseline's selection step by itself,
no statistics, and is neither checked nor a baseline), PyTorch
(argmax + gather, index_put_(accumulate=True) or index_add_ into float64 / int64
(N*F) tensors, 2 threads), pandas (row table + groupby), and the original
per-token loop in three strengths (see PerTokenLoop). topk: NumPy
(argpartition + np.add.at), PyTorch (topk + index_add_). all: NumPy sort +
add.reduceat, scipy.sparse one-hot @ float64 activations, torch index_add_
into (F, N) float64, pandas melt + groupby (subsampled). All in float64 sums.

Columns: seconds; tokens/s = T / seconds; GB/s read = bytes of activations the
pass must read (T * N * 4) / seconds; ratio = method seconds / txray
Recorder.update seconds.

Floor: the machine's read bandwidth is measured in the same run, at the start
and again before every mode (_common.measure_bandwidth: np.copyto, NumPy sum
and max, torch.sum and torch .sum(1) over rows of N, and txray's own streaming
read (_native.stream_read: the argmax's loop, prefetching included, with only
a sum), all over a 1 GiB buffer on THREADS threads; best of 10 each); the
floor is T * N * 4 bytes / the best pure-read bandwidth seen so far, and its
GB/s are printed with it.

Quiet: after each table the script prints the CPU seconds other processes used
meanwhile (_common.OtherLoad); on this 2-core machine anything far from 0 means
the numbers are noisy, so rerun when it is idle.

Correctness: every method's counts and sums are compared with txray's
(prof.table(kind) scattered into dense arrays) on the same input: counts must
be equal, sums allclose(rtol=1e-9, atol=1e-9). Subsampled methods are compared
with a txray Recorder run (untimed) on the same subsample. When txray does not
import, the first baseline is the reference (agreement among baselines).
--quantize 0.5 rounds the activations so that argmax ties are frequent (checks
the lowest-index tie rule against NumPy's and torch's argmax).

Usage:  python benchmarks/bench_record.py --size quick|paper|10x --modes max1,topk,all --repeats 3
"""

from __future__ import annotations

import argparse
import csv
import gc
import inspect
import io
import os
import platform
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    OtherLoad,
    add_results_arguments,
    best_read,
    fmt_rate,
    fmt_ratio,
    fmt_seconds,
    measure_bandwidth,
    merge_bandwidth,
    now,
    prefaulted_zeros,
    render_table,
    write_results,
)

N_NEURONS = 1500
FEATURE_SIZES = {"token": 33_278, "pos": 45}
SIZES = {"quick": 20_000, "paper": 400_000, "10x": 4_000_000}
THREADS = 2
TOPK = 5  # k of mode topk
IN_MEMORY_LIMIT = 8 * 2**30  # bytes of activations held in memory at once

POOL = ThreadPoolExecutor(THREADS)


# ==========================================================================
# inputs


def row_ranges(n: int, parts: int) -> list[tuple[int, int]]:
    """`parts` contiguous (lo, hi) row ranges covering range(n) (the empty ones dropped)."""
    edges = np.linspace(0, n, parts + 1).astype(int)
    return [(lo, hi) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]


def zipf_ids(rng: np.random.Generator, n: int, vocab: int, s: float) -> np.ndarray:
    """n ids over `vocab` with rank-frequency 1/r^s (inverse CDF), ranks shuffled to ids."""
    p = np.arange(1, vocab + 1, dtype=np.float64) ** -s
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    ranks = np.searchsorted(cdf, rng.random(n), side="right")
    np.minimum(ranks, vocab - 1, out=ranks)
    return rng.permutation(vocab)[ranks].astype(np.int64)


class Corpus:
    """Seeded activations and feature ids, served in fixed batches."""

    def __init__(self, n_tokens: int, n_neurons: int, batch: int, seed: int, quantize: float = 0.0):
        self.T, self.N, self.seed, self.quantize = n_tokens, n_neurons, seed, quantize
        self.batch = batch if batch > 0 else n_tokens
        self.bounds = [(lo, min(lo + self.batch, n_tokens)) for lo in range(0, n_tokens, self.batch)]
        rng = np.random.default_rng([seed, 2**31])
        self.features = {
            "token": zipf_ids(rng, n_tokens, FEATURE_SIZES["token"], 1.1),
            "pos": zipf_ids(rng, n_tokens, FEATURE_SIZES["pos"], 1.0),
        }
        self.in_memory = n_tokens * n_neurons * 4 <= IN_MEMORY_LIMIT
        if self.in_memory:
            self._acts = np.empty((n_tokens, n_neurons), np.float32)
            for i, (lo, hi) in enumerate(self.bounds):
                self._fill(i, self._acts[lo:hi])
        else:
            self._acts = None
            self._buffer = prefaulted_zeros((self.batch, n_neurons), np.float32)

    @property
    def nbytes(self) -> int:
        return self.T * self.N * 4

    def _fill(self, index: int, out: np.ndarray) -> None:
        """Batch `index`'s activations, standard normal, generated on THREADS threads."""

        def fill(part, lo, hi):
            rng = np.random.default_rng([self.seed, index, part])
            rng.standard_normal(out=out[lo:hi], dtype=np.float32)
            if self.quantize:  # coarse values: many ties for the argmax
                q = out[lo:hi]
                np.round(q / np.float32(self.quantize), out=q)
                q *= np.float32(self.quantize)

        list(POOL.map(lambda p: fill(p[0], *p[1]), enumerate(row_ranges(len(out), THREADS))))

    def batches(self):
        """Yield (acts, {kind: ids}) per batch; a streamed batch lives until the next one."""
        for i, (lo, hi) in enumerate(self.bounds):
            if self.in_memory:
                acts = self._acts[lo:hi]
            else:
                acts = self._buffer[: hi - lo]
                self._fill(i, acts)
            yield acts, {k: v[lo:hi] for k, v in self.features.items()}

    def head(self, n: int):
        """The first n tokens, as (acts, {kind: ids}) (a copy when streamed)."""
        n = min(n, self.T)
        if self.in_memory:
            acts = self._acts[:n]
        else:
            acts = np.empty((n, self.N), np.float32)
            for i, (lo, hi) in enumerate(self.bounds):
                if lo >= n:
                    break
                tmp = np.empty((hi - lo, self.N), np.float32)
                self._fill(i, tmp)
                acts[lo : min(hi, n)] = tmp[: min(hi, n) - lo]
        return acts, {k: v[:n] for k, v in self.features.items()}


# ==========================================================================
# methods
#
# A method has start() (untimed: fresh accumulators), update(acts, feats)
# (timed, once per batch), finish() (timed: whatever must happen before the
# counts and sums exist) and dense(out) (untimed: finish()'s output as
# {kind: (counts (N, F), sums (N, F))}, views where possible).


class Method:
    """Interface of a timed method (see above)."""

    name = "?"
    subsample: int | None = None  # timed on the first `subsample` tokens, extrapolated
    aside = False  # a row for context (a step of a method, a variant): not checked, not a baseline

    def start(self):
        pass

    def update(self, acts, feats):
        raise NotImplementedError

    def finish(self):
        return None

    def dense(self, out):
        return out


def numpy_winners(acts):
    """Winning neuron (argmax, lowest index on ties) and its value as float64, per row."""
    n = acts.argmax(axis=1)
    v = np.take_along_axis(acts, n[:, None], axis=1)[:, 0].astype(np.float64)
    return n, v


def numpy_winners_threaded(acts):
    """argmax and winning value over row halves on THREADS threads (NumPy drops the GIL)."""
    out = list(POOL.map(lambda r: numpy_winners(acts[r[0] : r[1]]), row_ranges(len(acts), THREADS)))
    return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])


class FlatNumpyMax1(Method):
    """Shared state of the NumPy max1 baselines: flat (N*F) int64 counts, float64 sums."""

    winners = staticmethod(numpy_winners)

    def start(self):
        self.C = {k: prefaulted_zeros(N_NEURONS * F, np.int64) for k, F in FEATURE_SIZES.items()}
        self.S = {k: prefaulted_zeros(N_NEURONS * F, np.float64) for k, F in FEATURE_SIZES.items()}

    def dense(self, out):
        return {k: (self.C[k].reshape(N_NEURONS, F), self.S[k].reshape(N_NEURONS, F)) for k, F in FEATURE_SIZES.items()}


class NumpyAddAt(FlatNumpyMax1):
    name = "numpy add.at"

    def update(self, acts, feats):
        n, v = self.winners(acts)
        for k, f in feats.items():
            idx = n * FEATURE_SIZES[k] + f
            np.add.at(self.C[k], idx, 1)
            np.add.at(self.S[k], idx, v)


class NumpyAddAtThreaded(NumpyAddAt):
    name = f"numpy add.at, argmax on {THREADS} threads"
    winners = staticmethod(numpy_winners_threaded)


class NumpyWinnersThreaded(Method):
    """The selection step of NumpyAddAtThreaded alone (argmax and winning value
    on THREADS threads, no statistics): shows how much of that baseline is
    NumPy's argmax, which is compute bound and does not speed up with memory."""

    aside = True
    name = f"  of which: its argmax on {THREADS} threads alone (no statistics)"

    def update(self, acts, feats):
        numpy_winners_threaded(acts)


class NumpyBincount(FlatNumpyMax1):
    """np.bincount into a dense N*F array; flat indices are buffered and flushed
    every `flush` tokens (a per-batch bincount with minlength=N*F allocates and
    adds 400 MB per kind per batch, which is far slower)."""

    def __init__(self, flush: int = 1_000_000):
        self.flush = flush
        self.name = f"numpy bincount (flushed every {flush:,} tokens)"

    def start(self):
        super().start()
        self.pending, self.pending_tokens = {k: [] for k in FEATURE_SIZES}, 0

    def update(self, acts, feats):
        n, v = self.winners(acts)
        for k, f in feats.items():
            self.pending[k].append((n * FEATURE_SIZES[k] + f, v))
        self.pending_tokens += len(n)
        if self.pending_tokens >= self.flush:
            self._flush()

    def _flush(self):
        for k, chunks in self.pending.items():
            if not chunks:
                continue
            idx = np.concatenate([c[0] for c in chunks])
            v = np.concatenate([c[1] for c in chunks])
            size = N_NEURONS * FEATURE_SIZES[k]
            self.C[k] += np.bincount(idx, minlength=size)
            self.S[k] += np.bincount(idx, weights=v, minlength=size)
            chunks.clear()
        self.pending_tokens = 0

    def finish(self):
        self._flush()


class TorchMax1(Method):
    """torch.argmax + gather, then accumulate into flat float64 / int64 (N*F) tensors."""

    def __init__(self, how: str):
        self.how = how
        self.name = f"torch {how}"

    def start(self):
        self.C = {k: torch.zeros(N_NEURONS * F, dtype=torch.int64) for k, F in FEATURE_SIZES.items()}
        self.S = {k: torch.zeros(N_NEURONS * F, dtype=torch.float64) for k, F in FEATURE_SIZES.items()}

    def update(self, acts, feats):
        x = torch.from_numpy(acts)
        n = torch.argmax(x, dim=1)
        v = x.gather(1, n[:, None]).squeeze(1).double()
        ones = torch.ones(len(n), dtype=torch.int64)
        for k, f in feats.items():
            idx = n * FEATURE_SIZES[k] + torch.from_numpy(f).long()
            if self.how == "index_put_":
                self.C[k].index_put_((idx,), ones, accumulate=True)
                self.S[k].index_put_((idx,), v, accumulate=True)
            else:
                self.C[k].index_add_(0, idx, ones)
                self.S[k].index_add_(0, idx, v)

    def dense(self, out):
        return {
            k: (self.C[k].numpy().reshape(N_NEURONS, F), self.S[k].numpy().reshape(N_NEURONS, F))
            for k, F in FEATURE_SIZES.items()
        }


class TorchTopk(Method):
    """torch.topk(k) per row, then index_add_ into flat float64 / int64 (N*F) tensors."""

    def __init__(self, k: int):
        self.k = k
        self.name = f"torch topk + index_add_ (k={k})"

    def start(self):
        self.C = {k: torch.zeros(N_NEURONS * F, dtype=torch.int64) for k, F in FEATURE_SIZES.items()}
        self.S = {k: torch.zeros(N_NEURONS * F, dtype=torch.float64) for k, F in FEATURE_SIZES.items()}

    def update(self, acts, feats):
        v, n = torch.topk(torch.from_numpy(acts), self.k, dim=1)
        v = v.reshape(-1).double()
        ones = torch.ones(v.numel(), dtype=torch.int64)
        for k, f in feats.items():
            idx = (n * FEATURE_SIZES[k] + torch.from_numpy(f)[:, None]).reshape(-1)
            self.C[k].index_add_(0, idx, ones)
            self.S[k].index_add_(0, idx, v)

    dense = TorchMax1.dense


class NumpyTopk(Method):
    """np.argpartition for the k largest per row, then np.add.at on the flat index n*F + f."""

    def __init__(self, k: int):
        self.k = k
        self.name = f"numpy argpartition + add.at (k={k})"

    def start(self):
        self.C = {k: prefaulted_zeros(N_NEURONS * F, np.int64) for k, F in FEATURE_SIZES.items()}
        self.S = {k: prefaulted_zeros(N_NEURONS * F, np.float64) for k, F in FEATURE_SIZES.items()}

    def update(self, acts, feats):
        n = np.argpartition(acts, -self.k, axis=1)[:, -self.k :]
        v = np.take_along_axis(acts, n, 1).astype(np.float64).reshape(-1)
        for k, f in feats.items():
            idx = (n * FEATURE_SIZES[k] + f[:, None]).reshape(-1)
            np.add.at(self.C[k], idx, 1)
            np.add.at(self.S[k], idx, v)

    def dense(self, out):
        return {k: (self.C[k].reshape(N_NEURONS, F), self.S[k].reshape(N_NEURONS, F)) for k, F in FEATURE_SIZES.items()}


class PandasMax1(Method):
    """A row table (winner neuron, feature per kind, value) per batch, then
    groupby([neuron, feature]).agg(count, sum) per kind."""

    name = "pandas groupby (numpy argmax + row table)"

    def start(self):
        self.frames = []

    def update(self, acts, feats):
        n, v = numpy_winners(acts)
        self.frames.append(pd.DataFrame({"neuron": n, **feats, "value": v}))

    def finish(self):
        df = pd.concat(self.frames, ignore_index=True)
        return {k: df.groupby(["neuron", k], sort=False)["value"].agg(["count", "sum"]) for k in FEATURE_SIZES}

    def dense(self, out):
        return {k: groupby_to_dense(g, FEATURE_SIZES[k]) for k, g in out.items()}


def groupby_to_dense(g: pd.DataFrame, F: int):
    """A (neuron, feature)-indexed count/sum frame as dense (N, F) arrays."""
    c = np.zeros((N_NEURONS, F), np.int64)
    s = np.zeros((N_NEURONS, F))
    n = g.index.get_level_values(0).to_numpy().astype(np.int64)
    f = g.index.get_level_values(1).to_numpy().astype(np.int64)
    c[n, f] = g["count"].to_numpy()
    s[n, f] = g["sum"].to_numpy()
    return c, s


class PerTokenLoop(Method):
    """The original TX-Ray recording, re-implemented in pure Python.

    The original (copenlu/tx-ray, Objectives/collect_data.py) ran the model one
    token at a time and wrote one record per token: (input word, ..., pos tag,
    np.max(activation), np.argmax(activation)) with activation = list(hidden
    row); the analysis then grouped those records per neuron. Here the records
    are appended to a Python list while walking the activation rows, then
    aggregated with one dict per neuron and feature kind: {feature: [count, sum]}.
    Not counted: running the model, the TSV write (the original serialises all
    N activations of every token as text) and reading it back, so this is a
    lower bound on the original's cost.

    original_style=False: n = int(row.argmax()), v = float(row[n]) (NumPy per row).
    original_style=True:  activation = list(row); np.max(activation), np.argmax(activation),
                          as the original did.
    tsv=True (with original_style): also write the original's TSV row, activation
                          list included, with csv.writer into an in-memory io.StringIO.
    """

    def __init__(self, subsample: int, original_style: bool, tsv: bool = False):
        self.subsample = subsample
        self.original_style = original_style or tsv
        self.tsv = tsv
        if tsv:
            self.name = "per-token Python loop, original style + TSV row to io.StringIO"
        elif original_style:
            self.name = "per-token Python loop, original style (list(row), np.max/np.argmax)"
        else:
            self.name = "per-token Python loop (row.argmax(), dicts)"

    def start(self):
        self.records = []
        self.out = io.StringIO()
        self.writer = csv.writer(self.out, delimiter="\t")

    def update(self, acts, feats):
        tokens, tags = feats["token"].tolist(), feats["pos"].tolist()
        records = self.records
        if self.tsv:
            for t in range(len(acts)):
                activation = list(acts[t])
                mx, am = np.max(activation), np.argmax(activation)
                self.writer.writerow([tokens[t], activation, tags[t], mx, am])
                records.append((tokens[t], tags[t], float(mx), int(am)))
        elif self.original_style:
            for t in range(len(acts)):
                activation = list(acts[t])
                records.append((tokens[t], tags[t], float(np.max(activation)), int(np.argmax(activation))))
        else:
            for t in range(len(acts)):
                row = acts[t]
                n = int(row.argmax())
                records.append((tokens[t], tags[t], float(row[n]), n))

    def finish(self):
        per_neuron = {"token": {}, "pos": {}}
        tok_agg, pos_agg = per_neuron["token"], per_neuron["pos"]
        for token, tag, value, neuron in self.records:
            for agg, f in ((tok_agg, token), (pos_agg, tag)):
                d = agg.get(neuron)
                if d is None:
                    d = agg[neuron] = {}
                e = d.get(f)
                if e is None:
                    d[f] = [1, value]
                else:
                    e[0] += 1
                    e[1] += value
        return per_neuron

    def dense(self, out):
        res = {}
        for k, agg in out.items():
            c = np.zeros((N_NEURONS, FEATURE_SIZES[k]), np.int64)
            s = np.zeros((N_NEURONS, FEATURE_SIZES[k]))
            for n, d in agg.items():
                for f, (cnt, sm) in d.items():
                    c[n, f], s[n, f] = cnt, sm
            res[k] = (c, s)
        return res


# ---------------------------------------------------------------- mode all
#
# In mode all count[kind][n, f] is the corpus frequency of f for every n, so
# the baselines keep one (F,) count vector per kind, and (F, N) float64 sums
# (rows are contiguous per feature); dense() returns (N, F) views.


class AllBase(Method):
    def start(self):
        self.C = {k: prefaulted_zeros(F, np.int64) for k, F in FEATURE_SIZES.items()}
        self.S = {k: prefaulted_zeros((F, N_NEURONS), np.float64) for k, F in FEATURE_SIZES.items()}

    def count(self, feats):
        for k, f in feats.items():
            self.C[k] += np.bincount(f, minlength=FEATURE_SIZES[k])

    def dense(self, out):
        return {k: (np.broadcast_to(self.C[k], (N_NEURONS, F)), self.S[k].T) for k, F in FEATURE_SIZES.items()}


class NumpyReduceatAll(AllBase):
    """Sort tokens by feature, gather the rows, np.add.reduceat(dtype=float64) per feature run."""

    name = "numpy sort + add.reduceat"

    def update(self, acts, feats):
        self.count(feats)
        for k, f in feats.items():
            order = np.argsort(f, kind="stable")
            fs = f[order]
            starts = np.flatnonzero(np.r_[True, fs[1:] != fs[:-1]])
            self.S[k][fs[starts]] += np.add.reduceat(acts[order], starts, axis=0, dtype=np.float64)


class ScipyOneHotAll(AllBase):
    """A (distinct features x tokens) one-hot CSR matrix times the float64 activations."""

    name = "scipy.sparse one-hot @ acts (float64)"

    def update(self, acts, feats):
        self.count(feats)
        a64 = acts.astype(np.float64)
        for k, f in feats.items():
            uniq, inv = np.unique(f, return_inverse=True)
            onehot = sp.csr_matrix((np.ones(len(f)), (inv, np.arange(len(f)))), shape=(len(uniq), len(f)))
            self.S[k][uniq] += onehot @ a64


class TorchIndexAddAll(Method):
    """sums.index_add_(0, f, acts.double()) into (F, N) float64, counts by torch.bincount."""

    name = "torch index_add_ (F, N) float64"

    def start(self):
        self.C = {k: torch.zeros(F, dtype=torch.int64) for k, F in FEATURE_SIZES.items()}
        self.S = {k: torch.zeros((F, N_NEURONS), dtype=torch.float64) for k, F in FEATURE_SIZES.items()}

    def update(self, acts, feats):
        x = torch.from_numpy(acts).double()
        for k, f in feats.items():
            ft = torch.from_numpy(f).long()
            self.S[k].index_add_(0, ft, x)
            self.C[k] += torch.bincount(ft, minlength=FEATURE_SIZES[k])

    def dense(self, out):
        return {
            k: (np.broadcast_to(self.C[k].numpy(), (N_NEURONS, F)), self.S[k].numpy().T)
            for k, F in FEATURE_SIZES.items()
        }


class PandasMeltAll(Method):
    """DataFrame(acts as float64) + feature columns, melt to (token, neuron) rows,
    groupby([neuron, feature]).agg(count, sum)."""

    def __init__(self, subsample: int):
        self.subsample = subsample
        self.name = "pandas melt + groupby"

    def start(self):
        self.frames = []

    def update(self, acts, feats):
        df = pd.DataFrame(acts.astype(np.float64))  # float64 sums, as every method
        for k, f in feats.items():
            df[k] = f
        self.frames.append(df.melt(id_vars=list(feats), var_name="neuron", value_name="value"))

    def finish(self):
        long = pd.concat(self.frames, ignore_index=True)
        return {k: long.groupby(["neuron", k], sort=False)["value"].agg(["count", "sum"]) for k in FEATURE_SIZES}

    def dense(self, out):
        return {k: groupby_to_dense(g, FEATURE_SIZES[k]) for k, g in out.items()}


# ---------------------------------------------------------------- txray


class Txray(Method):
    """txray.Recorder.update per batch (as made by default: it keeps each neuron's top 20
    contexts); finish() is rec.profile() (reported on its own row)."""

    def __init__(self, txray, mode: str, dense_limit: int | None = None):
        self.txray, self.mode = txray, mode
        self.kwargs = {} if dense_limit is None else {"dense_limit_bytes": dense_limit}
        if mode == "topk":
            self.kwargs["k"] = TOPK
        self.name = "txray Recorder.update" + (f" (dense_limit_bytes={dense_limit:,})" if dense_limit else "")

    def start(self):
        self.rec = None
        gc.collect()
        self.rec = self.txray.Recorder(n_neurons=N_NEURONS, features=dict(FEATURE_SIZES), mode=self.mode, **self.kwargs)

    def update(self, acts, feats):
        self.rec.update(acts, feats)

    def finish(self):
        return self.rec.profile()

    def dense(self, prof):
        return profile_to_dense(prof)


class TxrayGrown(Txray):
    """One recorder kept over all passes: from the second pass on, its hash
    tables have grown to the corpus' cells, so the best pass shows the update
    without table growth (the statistics add up over passes: not checked)."""

    aside = True

    def __init__(self, txray, mode: str, dense_limit: int | None = None):
        super().__init__(txray, mode, dense_limit)
        self.name = "  txray Recorder.update, tables grown (one recorder over the passes)"
        self.rec = None

    def start(self):
        if self.rec is None:
            super().start()

    def finish(self):
        return None


class TxrayNoContexts(Txray):
    """The same recorder without top activating contexts (contexts=0): the row's ratio
    is what keeping the contexts costs the update (the target: on <= 1.1 x off)."""

    aside = True

    def __init__(self, txray, mode: str, dense_limit: int | None = None):
        super().__init__(txray, mode, dense_limit)
        self.kwargs["contexts"] = 0
        self.name = "  txray Recorder.update, contexts=0 (no top contexts kept)"


def profile_to_dense(prof):
    """prof.table(kind) (neuron, feature, count, sum, ...) scattered into dense (N, F) arrays."""
    res = {}
    for k, F in FEATURE_SIZES.items():
        t = prof.table(k)
        n = t.column("neuron").to_numpy().astype(np.int64)
        f = t.column("feature").to_numpy().astype(np.int64)
        c = np.zeros((N_NEURONS, F), np.int64)
        s = np.zeros((N_NEURONS, F))
        c[n, f] = t.column("count").to_numpy()
        s[n, f] = t.column("sum").to_numpy()
        res[k] = (c, s)
        del t
    return res


def import_txray():
    """(module, None) or (None, why it does not import)."""
    try:
        import txray

        txray.Recorder  # noqa: B018
        return txray, None
    except Exception as e:  # noqa: BLE001 - any failure means: benchmark without it
        return None, f"{type(e).__name__}: {e}"


def native_stream_read(txray):
    """txray's own streaming read of a 2-D float32 array on THREADS threads (the
    argmax's loop with only a sum: the fastest this code can read activations),
    or None when this txray has none."""
    native = getattr(txray, "_native", None) if txray is not None else None
    if native is None or not hasattr(native, "stream_read"):
        return None

    def read(rows):
        before = native.get_num_threads()
        native.set_num_threads(THREADS)
        try:
            return native.stream_read(rows)
        finally:
            native.set_num_threads(before)

    read.label = f"txray _native.stream_read ({native.simd()}), {THREADS} threads"
    return read


def methods_for(mode: str, txray, args):
    """(streamed methods, subsampled methods) for a mode; txray first when it imports."""
    head = [Txray(txray, mode, args.txray_dense_limit)] if txray is not None else []
    if head and mode == "max1" and args.repeats > 1:
        head.append(TxrayGrown(txray, mode, args.txray_dense_limit))
    if head and "contexts" in inspect.signature(txray.Recorder).parameters:  # txray >= 0.1 with contexts
        head.append(TxrayNoContexts(txray, mode, args.txray_dense_limit))
    if mode == "max1":
        streamed = head + [
            NumpyBincount(),
            NumpyAddAt(),
            NumpyAddAtThreaded(),
            NumpyWinnersThreaded(),
            TorchMax1("index_put_"),
            TorchMax1("index_add_"),
            PandasMax1(),
        ]
        subsampled = [
            PerTokenLoop(args.loop_tokens, original_style=False),
            PerTokenLoop(args.loop_tokens, original_style=True),
            PerTokenLoop(args.tsv_tokens, original_style=True, tsv=True),
        ]
    elif mode == "topk":
        streamed = head + [NumpyTopk(TOPK), TorchTopk(TOPK)]
        subsampled = []
    elif mode == "all":
        streamed = head + [NumpyReduceatAll(), ScipyOneHotAll(), TorchIndexAddAll()]
        subsampled = [PandasMeltAll(args.pandas_all_tokens)]
    else:
        raise SystemExit(f"unknown mode {mode!r} (this script benchmarks max1, topk and all)")
    return streamed, subsampled


def reference_method(mode: str, txray, dense_limit):
    """What a subsample's reference result is computed with (untimed)."""
    if txray is not None:
        return Txray(txray, mode, dense_limit)
    return {"max1": NumpyAddAt(), "topk": TorchTopk(TOPK)}.get(mode, TorchIndexAddAll())


# ==========================================================================
# timing


def time_streamed(methods, corpus: Corpus, repeats: int):
    """Best-of-`repeats` (update seconds, finish seconds) per method, and the
    last pass's finish() outputs. Methods are interleaved batch by batch."""
    best = {m.name: (float("inf"), 0.0) for m in methods}
    outputs = {}
    for _ in range(repeats):
        outputs.clear()
        for m in methods:
            m.start()
        spent = {m.name: 0.0 for m in methods}
        for b, (acts, feats) in enumerate(corpus.batches()):
            r = b % len(methods)
            for m in methods[r:] + methods[:r]:
                t0 = now()
                m.update(acts, feats)
                spent[m.name] += now() - t0
        for m in methods:
            t0 = now()
            outputs[m.name] = m.finish()
            fin = now() - t0
            if spent[m.name] + fin < sum(best[m.name]):
                best[m.name] = (spent[m.name], fin)
    return best, outputs


def time_subsampled(method: Method, acts, feats, repeats: int):
    """Best-of-`repeats` seconds for update+finish on (acts, feats), and the output."""
    best, out = float("inf"), None
    for _ in range(repeats):
        method.start()
        out = None
        t0 = now()
        method.update(acts, feats)
        out = method.finish()
        best = min(best, now() - t0)
    return best, out


# ==========================================================================
# correctness


def compare(res, ref) -> str:
    """'yes', or 'NO: ...' naming the first disagreeing kind and cell."""
    for k in FEATURE_SIZES:
        c, s = res[k]
        rc, rs = ref[k]
        if not np.array_equal(c, rc):
            bad = np.argwhere(np.asarray(c) != rc)
            n, f = bad[0]
            return (
                f"NO: {k} counts differ in {len(bad)} cells, first (neuron {n}, feature {f}): "
                f"{c[n, f]} vs reference {rc[n, f]}"
            )
        close = np.isclose(s, rs, rtol=1e-9, atol=1e-9)
        if not close.all():
            bad = np.argwhere(~close)
            n, f = bad[0]
            worst = np.max(np.abs(np.asarray(s) - rs))
            return (
                f"NO: {k} sums differ in {len(bad)} cells (max |diff| {worst:.3g}), first "
                f"(neuron {n}, feature {f}): {s[n, f]!r} vs reference {rs[n, f]!r}"
            )
    return "yes"


# ==========================================================================
# report


HEADERS = ["method", "seconds", "tokens/s", "GB/s read", "ratio", "agree"]


def row(name, seconds, corpus: Corpus, base, agree="", reads=True):
    return [
        name,
        fmt_seconds(seconds),
        fmt_rate(corpus.T / seconds),
        f"{corpus.nbytes / seconds / 1e9:.2f}" if reads else "-",
        fmt_ratio(seconds / base) if base else "-",
        agree,
    ]


def run_mode(mode, corpus: Corpus, args, txray, bandwidth):
    streamed, subsampled = methods_for(mode, txray, args)
    load = OtherLoad()
    print(
        f"\n[{mode}] timing {len(streamed)} streamed methods over {len(corpus.bounds)} batch(es), "
        f"best of {args.repeats} ...",
        flush=True,
    )
    best, outputs = time_streamed(streamed, corpus, args.repeats)

    ref_name = streamed[0].name
    ref = streamed[0].dense(outputs[ref_name])
    agree = {}
    for m in streamed[1:]:
        if m.aside:
            agree[m.name] = "-"
            continue
        agree[m.name] = compare(m.dense(outputs[m.name]), ref) if args.verify else "not checked"
    agree[ref_name] = "reference" if txray is not None else "reference (txray absent)"
    outputs.clear()

    sub_seconds = {}
    for m in subsampled:
        acts, feats = corpus.head(m.subsample)
        print(f"[{mode}] timing '{m.name}' on {len(acts):,} tokens ...", flush=True)
        secs, out = time_subsampled(m, acts, feats, args.repeats)
        sub_seconds[m.name] = (secs * corpus.T / len(acts), len(acts))
        if args.verify:
            r = reference_method(mode, txray, args.txray_dense_limit)
            r.start()
            r.update(acts, feats)
            agree[m.name] = compare(m.dense(out), r.dense(r.finish()))
            del r
        else:
            agree[m.name] = "not checked"
        del out
    gc.collect()

    rows, base, totals = [], None, {}
    if txray is not None:
        upd, prof = best[ref_name]
        base = upd
        rows.append(row(ref_name, upd, corpus, base, agree[ref_name]))
        rows.append(["txray profile()", fmt_seconds(prof), "-", "-", fmt_ratio(prof / base), ""])
        rows.append(row("txray update + profile()", upd + prof, corpus, base))
    for m in streamed:
        if isinstance(m, Txray) and not m.aside:
            continue
        if m.aside:
            rows.append(row(m.name, sum(best[m.name]), corpus, base, agree[m.name]))
            continue
        totals[m.name] = sum(best[m.name])
        rows.append(row(m.name, totals[m.name], corpus, base, agree[m.name]))
    numpy_rows = {k: v for k, v in totals.items() if k.startswith(("numpy", "scipy"))}
    if numpy_rows:
        winner = min(numpy_rows, key=numpy_rows.get)
        rows.append(row(f"numpy best (= {winner})", numpy_rows[winner], corpus, base, agree[winner]))
    for m in subsampled:
        secs, n = sub_seconds[m.name]
        label = f"{m.name} (timed on {n:,} tokens, extrapolated)" if n < corpus.T else m.name
        rows.append(row(label, secs, corpus, base, agree[m.name]))

    notes = []
    for r in rows:
        if r[-1].startswith("NO"):
            notes.append(f"  [{len(notes) + 1}] {r[0]}: {r[-1]}")
            r[-1] = f"NO [{len(notes)}]"
    title = (
        f"mode {mode}: {corpus.T:,} tokens x {corpus.N:,} neurons float32 "
        f"({corpus.nbytes / 1e9:.2f} GB of activations), batches of {min(corpus.batch, corpus.T):,}, "
        f"best of {args.repeats}; ratio = seconds / txray Recorder.update seconds"
    )
    print()
    print(render_table(HEADERS, rows, title))
    if notes:
        print("disagreements (inputs: this script's --size/--seed/--batch):")
        print("\n".join(notes))
    verdict = print_verdict(mode, corpus, base, totals, sub_seconds, bandwidth)
    off = next((m.name for m in streamed if isinstance(m, TxrayNoContexts)), None)
    if off is not None:
        line = (
            f"top contexts: the update keeping them (contexts=20) takes {base / sum(best[off]):.3f} x the update "
            "without (contexts=0)" + (" (target: <= 1.1)" if mode == "max1" else "")
        )
        print(line)
        verdict.append(line)
    print(load.report())
    return {"title": title, "headers": HEADERS, "rows": rows, "notes": [*notes, *verdict, load.report()]}


def print_verdict(mode, corpus, txray_s, totals, sub_seconds, bandwidth):
    bw = best_read(bandwidth)
    floor = corpus.nbytes / (bw.gbps * 1e9)
    line = (
        f"floor: {fmt_seconds(floor)} s ({corpus.nbytes / 1e9:.2f} GB of activations read once "
        f"at {bw.gbps:.1f} GB/s, the best read bandwidth measured: {bw.label})"
    )
    if txray_s is None:
        lines = [line + "; txray not available"]
        print(lines[0])
        return lines
    lines = [f"{line}, txray is {txray_s / floor:.2f} x the floor"]
    baseline = {k: v for k, v in totals.items() if k.startswith(("numpy", "scipy", "torch"))}
    name = min(baseline, key=baseline.get)
    lines.append(
        f"best NumPy/PyTorch baseline: {name}, {fmt_seconds(baseline[name])} s; "
        f"txray is {baseline[name] / txray_s:.2f} x faster"
    )
    if TorchIndexAddAll.name in baseline:  # mode all's target: >= 5 x PyTorch's index_add_
        lines.append(
            f"vs {TorchIndexAddAll.name}: {fmt_seconds(baseline[TorchIndexAddAll.name])} s; "
            f"txray is {baseline[TorchIndexAddAll.name] / txray_s:.2f} x faster (target: >= 5)"
        )
    target = {"max1": 1.15, "topk": 1.5, "all": 3.0}.get(mode)
    if target is not None:
        lines[0] += f" (target: <= {target})"
    for label, (secs, _) in sub_seconds.items():
        if label.startswith("per-token"):
            lines.append(f"vs {label}: txray is {secs / txray_s:,.0f} x faster")
    print("\n".join(lines))
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=list(SIZES), default="paper")
    p.add_argument("--modes", default="max1,topk,all", help=f"comma-separated: max1, topk (k={TOPK}), all")
    p.add_argument("--repeats", type=int, default=None, help="passes per method (default 3; 1 for 10x)")
    p.add_argument("--batch", type=int, default=100_000, help="tokens per update call (0: one batch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--loop-tokens", type=int, default=20_000, help="tokens the per-token Python loops are timed on")
    p.add_argument("--pandas-all-tokens", type=int, default=2_000, help="tokens pandas is timed on in mode all")
    p.add_argument(
        "--tsv-tokens",
        type=int,
        default=2_000,
        help="tokens the per-token loop with the original's TSV write is timed on",
    )
    p.add_argument(
        "--txray-dense-limit",
        type=int,
        default=None,
        help="pass dense_limit_bytes to txray.Recorder (default: txray's own default)",
    )
    p.add_argument(
        "--quantize",
        type=float,
        default=0.0,
        help="round activations to multiples of this (ties in the argmax; a correctness check)",
    )
    p.add_argument(
        "--no-verify", dest="verify", action="store_false", help="skip the comparison of results with txray's"
    )
    add_results_arguments(p)
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.size == "10x" else 3
    torch.set_num_threads(THREADS)

    print(f"bench_record: size {args.size}, modes {args.modes}, seed {args.seed}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus; python {platform.python_version()}, "
        f"numpy {np.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"pandas {pd.__version__}"
    )
    print(f"load average at start: {load_average()} (the timings assume an otherwise idle machine)")
    txray, why = import_txray()
    if txray is not None:
        print(
            f"txray: {txray.__file__}, version {getattr(txray, '__version__', '?')}, "
            f"{txray.get_num_threads() if hasattr(txray, 'get_num_threads') else '?'} threads"
        )
    else:
        print(f"txray: not importable ({why})")

    print("measuring memory bandwidth (again before every mode; the best of each probe is used) ...", flush=True)
    stream_read = native_stream_read(txray)
    bandwidth = measure_bandwidth(gib=1.0, repeats=10, threads=THREADS, row_len=N_NEURONS, stream_read=stream_read)
    print_bandwidth(bandwidth)

    T = SIZES[args.size]
    t0 = now()
    corpus = Corpus(T, N_NEURONS, args.batch, args.seed, args.quantize)
    how = "in memory" if corpus.in_memory else "regenerated per batch and pass, untimed"
    if args.quantize:
        how += f", rounded to multiples of {args.quantize:g}"
    print(
        f"inputs: {T:,} tokens x {N_NEURONS} neurons ({how}), token ids Zipf(1.1) over "
        f"{FEATURE_SIZES['token']:,}, POS Zipf(1.0) over {FEATURE_SIZES['pos']}; "
        f"generated in {now() - t0:.1f} s",
        flush=True,
    )

    tables = []
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        again = measure_bandwidth(gib=1.0, repeats=10, threads=THREADS, row_len=N_NEURONS, stream_read=stream_read)
        bandwidth = merge_bandwidth(bandwidth, again)
        tables.append(run_mode(mode, corpus, args, txray, bandwidth))
        gc.collect()
    print("\nmemory bandwidth, best of each probe over the run:")
    print_bandwidth(bandwidth)
    write_results("bench_record", args, tables, bandwidth=bandwidth)


def load_average() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg()) + f" (1, 5, 15 min; {os.cpu_count()} cpus)"
    except OSError:
        return "unknown"


def print_bandwidth(bandwidth):
    for b in bandwidth:
        print(f"  {b.gbps:6.1f} GB/s {b.counts:<12} {b.label}")


if __name__ == "__main__":
    main()
