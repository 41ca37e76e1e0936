"""Hellinger distances between neuron preference distributions (docs/method.md).

A *distribution set* holds N probability distributions over a vocabulary of
``n_features`` features, stored as three CSR arrays:

- ``indptr``  (integer, length N+1, starts at 0, non-decreasing),
- ``indices`` (integer feature ids, strictly increasing within each row),
- ``data``    (float64 probabilities > 0; every non-empty row sums to 1).

Row i is ``indices[indptr[i]:indptr[i+1]]`` with probabilities
``data[indptr[i]:indptr[i+1]]``. A row with no entries is an *empty*
distribution (an unpreferred neuron); Hellinger is undefined for it (NaN).

For two non-empty distributions p and q::

    H(p, q) = (1/sqrt 2) * ||sqrt p - sqrt q||_2 = sqrt(max(0, 1 - BC(p, q)))
    BC(p, q) = sum_f sqrt(p_f * q_f)          (Bhattacharyya coefficient)

H lies in [0, 1]: 0 for identical distributions, 1 for disjoint supports.

Precision: ``hellinger_paired`` sums (sqrt p - sqrt q)^2 directly and is
accurate to ~1e-15 everywhere, including near 0, where the most and least
changed neurons are ranked. ``hellinger_topk``, ``hellinger_matrix`` and
``match`` go through 1 - BC; a rounding error e ~ 1e-16 in BC becomes an error
of up to sqrt(e) ~ 1e-8 in H when H is near 0 (about e / (2 H) otherwise).

The kernels are numba functions parallelised over rows; the number of threads
is numba's (``numba.set_num_threads`` / ``NUMBA_NUM_THREADS``).
"""

from typing import NamedTuple

import numpy as np
from numba import njit, prange
from numpy.typing import ArrayLike
from scipy.optimize import linear_sum_assignment

#: A rows per parallel work item in ``hellinger_topk`` (each owns one length-N_B scratch vector).
DEFAULT_BLOCK_ROWS = 256
#: ``match(method="auto")`` solves exactly up to this many (A row, B row) pairs.
EXACT_MATCH_MAX_PAIRS = 25_000_000
#: Candidate neighbours per A row for ``match(method="greedy")``.
GREEDY_MATCH_K = 32
#: How far a non-empty row's sum may be from 1 and still count as a distribution.
ROW_SUM_TOLERANCE = 1e-6


class _Csr(NamedTuple):
    """A validated distribution set: contiguous int64 / int64 / float64 arrays."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1


# ----------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------


def hellinger_paired(
    a_indptr: ArrayLike,
    a_indices: ArrayLike,
    a_data: ArrayLike,
    b_indptr: ArrayLike,
    b_indices: ArrayLike,
    b_data: ArrayLike,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hellinger distance between row i of A and row i of B, for every i.

    Both sets must have the same number of rows N (the same neurons in two
    states, e.g. two training epochs).

    Returns ``(distance, union_length, shared_length)``:

    - ``distance`` float64[N]: H(A_i, B_i); NaN where either row is empty.
    - ``union_length`` int64[N]: number of features in the union of the two
      supports (the original README's "Hellinger length").
    - ``shared_length`` int64[N]: number of features in both supports.

    The lengths are defined for empty rows too (then union_length is the other
    row's length and shared_length is 0).

    Raises ValueError for malformed CSR arrays (see module docstring) or when
    A and B have different numbers of rows.
    """
    a = _as_csr("a", a_indptr, a_indices, a_data)
    b = _as_csr("b", b_indptr, b_indices, b_data)
    if a.n_rows != b.n_rows:
        raise ValueError(f"hellinger_paired needs the same number of rows, got {a.n_rows} (a) and {b.n_rows} (b)")
    distance = np.empty(a.n_rows)
    union_length = np.empty(a.n_rows, np.int64)
    shared_length = np.empty(a.n_rows, np.int64)
    _paired_kernel(*a, *b, distance, union_length, shared_length)
    return distance, union_length, shared_length


def hellinger_topk(
    a_indptr: ArrayLike,
    a_indices: ArrayLike,
    a_data: ArrayLike,
    b_indptr: ArrayLike,
    b_indices: ArrayLike,
    b_data: ArrayLike,
    n_features: int,
    k: int,
    block_rows: int = DEFAULT_BLOCK_ROWS,
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest non-empty rows of B, by Hellinger distance, for every row of A.

    A (N_A rows) and B (N_B rows) may differ in size; feature ids must lie in
    ``[0, n_features)``. Non-empty B rows whose support does not overlap the A
    row are valid neighbours at distance 1.

    Returns ``(neighbors, distances)``, int64[N_A, k] and float64[N_A, k]:
    row i lists B row ids sorted by distance ascending, ties broken by the
    lower B row id. Empty A rows are all -1 / NaN; when B has fewer than k
    non-empty rows, the remaining slots are -1 / NaN.

    Works in blocks of ``block_rows`` A rows, each with one length-N_B scratch
    vector, so memory is O(nnz(B) + N_B * threads + N_A * k), never N_A x N_B.

    Raises ValueError for malformed CSR arrays, feature ids out of range, or
    ``k`` / ``block_rows`` < 1.
    """
    n_features = _non_negative_int("n_features", n_features)
    a = _as_csr("a", a_indptr, a_indices, a_data, n_features)
    b = _as_csr("b", b_indptr, b_indices, b_data, n_features)
    return _topk(a, b, n_features, _positive_int("k", k), _positive_int("block_rows", block_rows))


def hellinger_matrix(
    a_indptr: ArrayLike,
    a_indices: ArrayLike,
    a_data: ArrayLike,
    b_indptr: ArrayLike,
    b_indices: ArrayLike,
    b_data: ArrayLike,
    n_features: int,
) -> np.ndarray:
    """All-pairs Hellinger distances as a dense float64[N_A, N_B] matrix.

    Entry (i, j) is H(A_i, B_j), NaN where A_i or B_j is empty. Uses
    N_A * N_B * 8 bytes: meant for small inputs; use ``hellinger_topk`` for
    large ones.

    Raises ValueError for malformed CSR arrays or feature ids out of range.
    """
    n_features = _non_negative_int("n_features", n_features)
    a = _as_csr("a", a_indptr, a_indices, a_data, n_features)
    b = _as_csr("b", b_indptr, b_indices, b_data, n_features)
    return _matrix(a, b, n_features)


def match(
    a_indptr: ArrayLike,
    a_indices: ArrayLike,
    a_data: ArrayLike,
    b_indptr: ArrayLike,
    b_indices: ArrayLike,
    b_data: ArrayLike,
    n_features: int,
    method: str = "auto",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matching of non-empty A rows to non-empty B rows by Hellinger distance.

    Useful for neurons of two different models, which share no index.

    Methods:

    - ``"exact"``: minimises the total distance over all matchings of
      min(n_a, n_b) pairs (n_a, n_b: non-empty rows), with
      ``scipy.optimize.linear_sum_assignment`` on the dense n_a x n_b matrix.
    - ``"greedy"``: approximate. Candidate edges are each A row's
      min(32, n_b) nearest B rows (``hellinger_topk``); edges are taken by
      distance ascending (ties: lower A row, then lower B row) whenever both
      ends are still free. An A row whose candidates all get taken stays
      unmatched, so it can return fewer than min(n_a, n_b) pairs.
    - ``"auto"``: ``"exact"`` when n_a * n_b <= 25,000,000, else ``"greedy"``.

    Returns ``(rows, cols, distances)``: int64[M] A row ids (ascending), int64[M]
    B row ids, float64[M] their distances.

    Raises ValueError for malformed CSR arrays, feature ids out of range or an
    unknown method.
    """
    if method not in ("auto", "exact", "greedy"):
        raise ValueError(f"method must be 'auto', 'exact' or 'greedy', got {method!r}")
    n_features = _non_negative_int("n_features", n_features)
    a = _as_csr("a", a_indptr, a_indices, a_data, n_features)
    b = _as_csr("b", b_indptr, b_indices, b_data, n_features)
    rows_a, rows_b = _nonempty_rows(a), _nonempty_rows(b)
    if method == "auto":
        method = "exact" if len(rows_a) * len(rows_b) <= EXACT_MATCH_MAX_PAIRS else "greedy"
    solve = _match_exact if method == "exact" else _match_greedy
    sub_rows, sub_cols, distances = solve(_take_rows(a, rows_a), _take_rows(b, rows_b), n_features)
    return rows_a[sub_rows], rows_b[sub_cols], distances


# ----------------------------------------------------------------------------
# Validation and helpers (NumPy)
# ----------------------------------------------------------------------------


def _as_csr(name: str, indptr: ArrayLike, indices: ArrayLike, data: ArrayLike, n_features: int | None = None) -> _Csr:
    """Check one distribution set and return it as a contiguous ``_Csr``.

    ``name`` ("a" or "b") prefixes the messages. Feature ids are checked
    against ``n_features`` (an int) when it is given, else only for being >= 0.
    """
    indptr, indices, data = np.asarray(indptr), np.asarray(indices), np.asarray(data)
    for label, array in (("indptr", indptr), ("indices", indices), ("data", data)):
        if array.ndim != 1:
            raise ValueError(f"{name}_{label} must be 1-D, got shape {array.shape}")
    if indptr.dtype.kind not in "iu" or indices.dtype.kind not in "iu":
        raise ValueError(f"{name}_indptr and {name}_indices must be integer arrays")
    if len(indptr) == 0 or indptr[0] != 0:
        raise ValueError(f"{name}_indptr must have length N+1 (N >= 0) and start at 0")
    if np.any(np.diff(indptr) < 0):
        raise ValueError(f"{name}_indptr must be non-decreasing")
    nnz = int(indptr[-1])
    if len(indices) != nnz or len(data) != nnz:
        raise ValueError(
            f"{name}_indptr[-1] is {nnz} but {name}_indices has {len(indices)} and {name}_data has {len(data)} entries"
        )
    csr = _Csr(
        np.ascontiguousarray(indptr, np.int64),
        np.ascontiguousarray(indices, np.int64),
        np.ascontiguousarray(data, np.float64),
    )
    _check_features(name, csr, n_features)
    _check_probabilities(name, csr)
    return csr


def _check_features(name: str, csr: _Csr, n_features: int | None) -> None:
    """Feature ids in range and strictly increasing within each row."""
    if len(csr.indices):
        low, high = csr.indices.min(), csr.indices.max()
        if low < 0 or (n_features is not None and high >= n_features):
            allowed = ">= 0" if n_features is None else f"in [0, n_features) = [0, {n_features})"
            raise ValueError(f"{name}_indices must be {allowed}, found values in [{low}, {high}]")
    # Consecutive entries must increase, except across a row boundary.
    continues_row = np.ones(len(csr.indices), bool)
    continues_row[csr.indptr[:-1][csr.indptr[:-1] < len(csr.indices)]] = False
    if np.any(np.diff(csr.indices)[continues_row[1:]] <= 0):
        raise ValueError(f"{name}_indices must be strictly increasing within each row")


def _check_probabilities(name: str, csr: _Csr) -> None:
    """Entries > 0 and every non-empty row summing to 1."""
    if not np.all(csr.data > 0):  # also rejects NaN
        raise ValueError(f"{name}_data must hold probabilities > 0")
    starts = csr.indptr[:-1][np.diff(csr.indptr) > 0]
    if len(starts):
        sums = np.add.reduceat(csr.data, starts)
        bad = np.flatnonzero(~(np.abs(sums - 1.0) <= ROW_SUM_TOLERANCE))  # ~(<=) catches inf
        if len(bad):
            row = np.searchsorted(csr.indptr, starts[bad[0]], side="right") - 1
            raise ValueError(f"{name}: every non-empty row must sum to 1, row {row} sums to {float(sums[bad[0]])}")


def _positive_int(name: str, value: int) -> int:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _non_negative_int(name: str, value: int) -> int:
    if int(value) != value or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def _nonempty_rows(csr: _Csr) -> np.ndarray:
    """Ids of the rows with at least one entry, ascending."""
    return np.flatnonzero(np.diff(csr.indptr))


def _take_rows(csr: _Csr, nonempty_rows: np.ndarray) -> _Csr:
    """The sub-set made of the given non-empty rows, in order.

    Empty rows own no entries, so dropping them leaves indices and data as
    they are: only indptr changes.
    """
    return _Csr(np.concatenate(([0], csr.indptr[nonempty_rows + 1])), csr.indices, csr.data)


def _postings(csr: _Csr, n_features: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Transpose a distribution set into feature-major posting lists of sqrt(q).

    Returns ``(feature_ptr, rows, sqrt_q)``: the rows holding feature f are
    ``rows[feature_ptr[f]:feature_ptr[f+1]]`` (ascending), with their sqrt(q_f)
    alongside. Rows are uint32: half the memory of int64, and numba skips the
    negative-index check when indexing with an unsigned integer.
    """
    feature_ptr = np.zeros(n_features + 1, np.int64)
    np.cumsum(np.bincount(csr.indices, minlength=n_features), out=feature_ptr[1:])
    rows = np.empty(len(csr.indices), np.uint32)
    sqrt_q = np.empty(len(csr.indices))
    _fill_postings(*csr, feature_ptr[:-1].copy(), rows, sqrt_q)
    return feature_ptr, rows, sqrt_q


def _topk(a: _Csr, b: _Csr, n_features: int, k: int, block_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """``hellinger_topk`` on validated input."""
    neighbors = np.full((a.n_rows, k), -1, np.int64)
    distances = np.full((a.n_rows, k), np.nan)
    _topk_kernel(*a, *_postings(b, n_features), _nonempty_rows(b), b.n_rows, block_rows, neighbors, distances)
    return neighbors, distances


def _matrix(a: _Csr, b: _Csr, n_features: int) -> np.ndarray:
    """``hellinger_matrix`` on validated input."""
    out = np.full((a.n_rows, b.n_rows), np.nan)
    _matrix_kernel(*a, *_postings(b, n_features), _nonempty_rows(b), out)
    return out


def _match_exact(a: _Csr, b: _Csr, n_features: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Optimal assignment on sets whose rows are all non-empty."""
    cost = _matrix(a, b, n_features)
    rows, cols = linear_sum_assignment(cost)
    return rows, cols, cost[rows, cols]


def _match_greedy(a: _Csr, b: _Csr, n_features: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy assignment over top-k candidate edges; all rows non-empty."""
    k = min(GREEDY_MATCH_K, b.n_rows)
    if a.n_rows == 0 or k == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)
    neighbors, distances = _topk(a, b, n_features, k, DEFAULT_BLOCK_ROWS)
    edge_a = np.repeat(np.arange(a.n_rows), k)
    edge_b, edge_d = neighbors.ravel(), distances.ravel()  # k <= n_b: no -1 padding
    taken_a, taken_b = np.zeros(a.n_rows, bool), np.zeros(b.n_rows, bool)
    taken: list[int] = []
    for e in np.lexsort((edge_b, edge_a, edge_d)):
        if not taken_a[edge_a[e]] and not taken_b[edge_b[e]]:
            taken_a[edge_a[e]] = taken_b[edge_b[e]] = True
            taken.append(e)
    chosen = np.array(taken, np.int64)
    chosen = chosen[np.argsort(edge_a[chosen])]
    return edge_a[chosen], edge_b[chosen], edge_d[chosen]


# ----------------------------------------------------------------------------
# numba kernels
# ----------------------------------------------------------------------------


@njit(parallel=True, cache=True, nogil=True)
def _paired_kernel(
    a_indptr: np.ndarray,
    a_indices: np.ndarray,
    a_data: np.ndarray,
    b_indptr: np.ndarray,
    b_indices: np.ndarray,
    b_data: np.ndarray,
    distance: np.ndarray,
    union_length: np.ndarray,
    shared_length: np.ndarray,
) -> None:
    """Merge-walk row i of A and row i of B (both sorted by feature id)."""
    for i in prange(len(distance)):
        ia, a_end = a_indptr[i], a_indptr[i + 1]
        ib, b_end = b_indptr[i], b_indptr[i + 1]
        both_nonempty = ia < a_end and ib < b_end
        # Sum (sqrt p_f - sqrt q_f)^2 over the union directly rather than
        # 1 - BC: it stays accurate when the two rows are nearly identical.
        squared = 0.0
        union = 0
        shared = 0
        while ia < a_end or ib < b_end:
            if ib == b_end or (ia < a_end and a_indices[ia] < b_indices[ib]):
                squared += a_data[ia]  # feature only in A: (sqrt p - 0)^2 = p
                ia += 1
            elif ia == a_end or b_indices[ib] < a_indices[ia]:
                squared += b_data[ib]  # feature only in B
                ib += 1
            else:
                diff = np.sqrt(a_data[ia]) - np.sqrt(b_data[ib])
                squared += diff * diff
                shared += 1
                ia += 1
                ib += 1
            union += 1
        # Rows may sum to 1 only within ROW_SUM_TOLERANCE: keep H within [0, 1].
        distance[i] = min(1.0, np.sqrt(0.5 * squared)) if both_nonempty else np.nan
        union_length[i] = union
        shared_length[i] = shared


@njit(cache=True, nogil=True)
def _fill_postings(
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    next_slot: np.ndarray,
    rows: np.ndarray,
    sqrt_q: np.ndarray,
) -> None:
    """Counting-sort the entries by feature; next_slot[f] starts at feature f's first slot."""
    for i in range(len(indptr) - 1):
        for t in range(indptr[i], indptr[i + 1]):
            slot = next_slot[indices[t]]
            rows[slot] = i
            sqrt_q[slot] = np.sqrt(data[t])
            next_slot[indices[t]] += 1


@njit(cache=True, nogil=True)
def _accumulate_bc(
    a_indices: np.ndarray,
    a_data: np.ndarray,
    start: int,
    end: int,
    feature_ptr: np.ndarray,
    post_rows: np.ndarray,
    post_sqrt: np.ndarray,
    bc: np.ndarray,
) -> None:
    """Add BC(p, q_j) to bc[j] for every B row j, where p is A's entries [start, end).

    Only the B rows sharing a feature with p are touched.
    """
    for t in range(start, end):
        f = a_indices[t]
        sqrt_p = np.sqrt(a_data[t])
        for u in range(feature_ptr[f], feature_ptr[f + 1]):
            bc[post_rows[u]] += sqrt_p * post_sqrt[u]


@njit(cache=True, nogil=True)
def _bc_to_hellinger(bc: float) -> float:
    # Rounding can push BC slightly above 1 for identical rows.
    return np.sqrt(max(0.0, 1.0 - bc))


@njit(cache=True, nogil=True)
def _insert(best_d: np.ndarray, best_j: np.ndarray, d: float, j: int) -> None:
    """Insert (d, j) into the ascending lists best_d / best_j, dropping the last entry.

    The caller has checked d < best_d[-1]. An inserted entry goes after all
    equal distances, so if candidates arrive in ascending j, ties keep the
    lower j first.
    """
    pos = len(best_d) - 1
    while pos > 0 and best_d[pos - 1] > d:
        best_d[pos] = best_d[pos - 1]
        best_j[pos] = best_j[pos - 1]
        pos -= 1
    best_d[pos] = d
    best_j[pos] = j


@njit(parallel=True, cache=True, nogil=True)
def _topk_kernel(
    a_indptr: np.ndarray,
    a_indices: np.ndarray,
    a_data: np.ndarray,
    feature_ptr: np.ndarray,
    post_rows: np.ndarray,
    post_sqrt: np.ndarray,
    b_nonempty: np.ndarray,
    n_b: int,
    block_rows: int,
    neighbors: np.ndarray,
    distances: np.ndarray,
) -> None:
    """Fill neighbors / distances (preset to -1 / NaN) for every non-empty A row."""
    n_a = len(a_indptr) - 1
    n_blocks = (n_a + block_rows - 1) // block_rows
    for block in prange(n_blocks):
        # One scratch vector per block (not per row, not N_A x N_B); it is
        # all zeros whenever a row starts.
        bc = np.zeros(n_b)
        for i in range(block * block_rows, min(n_a, (block + 1) * block_rows)):
            start, end = a_indptr[i], a_indptr[i + 1]
            if start == end:
                continue
            _accumulate_bc(a_indices, a_data, start, end, feature_ptr, post_rows, post_sqrt, bc)
            best_d, best_j = distances[i], neighbors[i]
            best_d[:] = np.inf  # any real candidate beats the sentinel
            worst = len(best_d) - 1
            for j in b_nonempty:  # ascending: an equal distance never displaces a lower j
                d = _bc_to_hellinger(bc[j])
                bc[j] = 0.0  # empty B rows are never written, so this resets all of bc
                # Test here rather than in _insert: most candidates fail it, and
                # a call per candidate costs several times the test.
                if d < best_d[worst]:
                    _insert(best_d, best_j, d, j)
            for s in range(len(b_nonempty), len(best_d)):
                best_d[s] = np.nan  # fewer than k non-empty B rows


@njit(parallel=True, cache=True, nogil=True)
def _matrix_kernel(
    a_indptr: np.ndarray,
    a_indices: np.ndarray,
    a_data: np.ndarray,
    feature_ptr: np.ndarray,
    post_rows: np.ndarray,
    post_sqrt: np.ndarray,
    b_nonempty: np.ndarray,
    out: np.ndarray,
) -> None:
    """Fill out (preset to NaN) at every (non-empty A row, non-empty B row)."""
    for i in prange(out.shape[0]):
        start, end = a_indptr[i], a_indptr[i + 1]
        if start == end:
            continue
        row = out[i]
        for j in b_nonempty:
            row[j] = 0.0
        _accumulate_bc(a_indices, a_data, start, end, feature_ptr, post_rows, post_sqrt, row)
        for j in b_nonempty:
            row[j] = _bc_to_hellinger(row[j])
