"""Tests of txray.hellinger against an obviously correct dense NumPy reference.

Tolerances:
- ``hellinger_paired`` sums (sqrt p - sqrt q)^2 like the reference: atol 1e-12.
- ``hellinger_matrix`` / ``hellinger_topk`` compute sqrt(1 - BC). A rounding
  error e ~ 1e-16 in BC becomes up to sqrt(e) ~ 1e-8 in H when H is near 0
  (BC near 1), and about e / (2 H) elsewhere, so they are compared with atol
  1e-12 where the reference H >= 1e-2 and atol 1e-6 below.
- ``hellinger_topk`` must pick exactly what a stable sort of the
  ``hellinger_matrix`` row picks: both accumulate BC in the same order, so
  their distances are bitwise equal and ties are real ties.
"""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from numpy.testing import assert_allclose, assert_array_equal
from scipy.optimize import linear_sum_assignment

from txray import hellinger
from txray.hellinger import hellinger_matrix, hellinger_paired, hellinger_topk, match

# ---------------------------------------------------------------------------
# Reference and helpers
# ---------------------------------------------------------------------------


def normalize(weights):
    """Dense non-negative weights -> rows summing to 1 (all-zero rows stay empty)."""
    weights = np.asarray(weights, float)
    sums = weights.sum(axis=1, keepdims=True)
    return np.divide(weights, sums, out=np.zeros_like(weights), where=sums > 0)


def to_csr(dense, index_dtype=np.int64):
    """Dense distributions -> (indptr, indices, data), integers of the given dtype."""
    rows, cols = np.nonzero(dense)
    indptr = np.zeros(len(dense) + 1, index_dtype)
    np.cumsum(np.bincount(rows, minlength=len(dense)), out=indptr[1:])
    return indptr, cols.astype(index_dtype), dense[rows, cols]


def reference_matrix(P, Q):
    """H[i, j] = (1/sqrt 2) ||sqrt P_i - sqrt Q_j||_2, NaN where either row is empty."""
    diff = np.sqrt(P)[:, None, :] - np.sqrt(Q)[None, :, :]
    H = np.sqrt((diff**2).sum(axis=2) / 2)
    H[~P.any(axis=1), :] = np.nan
    H[:, ~Q.any(axis=1)] = np.nan
    return H


def assert_close_to_reference(actual, reference):
    """Compare with the tolerances of the module docstring (NaN must match NaN)."""
    atol = np.where(reference < 1e-2, 1e-6, 1e-12)
    assert_array_equal(np.isnan(actual), np.isnan(reference))
    ok = np.isnan(reference) | (np.abs(actual - reference) <= atol)
    assert ok.all(), f"max error {np.nanmax(np.abs(actual - reference))}"


def expected_topk(matrix_row, k):
    """The k smallest non-NaN entries, stable (ties: lower index), padded with -1 / NaN."""
    valid = np.flatnonzero(~np.isnan(matrix_row))
    chosen = valid[np.argsort(matrix_row[valid], kind="stable")][:k]
    neighbors = np.full(k, -1, np.int64)
    distances = np.full(k, np.nan)
    neighbors[: len(chosen)] = chosen
    distances[: len(chosen)] = matrix_row[chosen]
    return neighbors, distances


def random_distributions(rng, n_rows, n_features, density=0.3, empty_share=0.2):
    """Random dense distributions with some empty rows."""
    weights = rng.random((n_rows, n_features)) * (rng.random((n_rows, n_features)) < density)
    weights[rng.random(n_rows) < empty_share] = 0
    return normalize(weights)


# Weights drawn from a few values so that duplicate rows and exact ties are common.
weight = st.sampled_from([0.0, 0.0, 0.0, 0.25, 1.0, 3.0]) | st.floats(0.01, 10.0)


@st.composite
def distribution_pairs(draw):
    """Two dense distribution sets (N_A and N_B may differ, rows may be empty)."""
    n_features = draw(st.integers(1, 8))
    P = draw(arrays(np.float64, (draw(st.integers(0, 7)), n_features), elements=weight))
    Q = draw(arrays(np.float64, (draw(st.integers(0, 7)), n_features), elements=weight))
    return normalize(P), normalize(Q)


# ---------------------------------------------------------------------------
# hellinger_paired
# ---------------------------------------------------------------------------


def check_paired(P, Q, index_dtype=np.int64):
    distance, union, shared = hellinger_paired(*to_csr(P, index_dtype), *to_csr(Q, index_dtype))
    reference = np.diagonal(reference_matrix(P, Q))
    assert_array_equal(np.isnan(distance), np.isnan(reference))
    assert_allclose(distance, reference, rtol=0, atol=1e-12)
    assert_array_equal(union, ((P > 0) | (Q > 0)).sum(axis=1))
    assert_array_equal(shared, ((P > 0) & (Q > 0)).sum(axis=1))
    assert distance.dtype == np.float64 and union.dtype == shared.dtype == np.int64


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_paired_matches_reference(data):
    P, Q = data.draw(distribution_pairs())
    n = min(len(P), len(Q))
    check_paired(P[:n], Q[:n])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_paired_fixed_seeds(seed, index_dtype):
    rng = np.random.default_rng(seed)
    check_paired(random_distributions(rng, 60, 300), random_distributions(rng, 60, 300), index_dtype)


def test_paired_special_rows():
    P = normalize([[1, 2, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    Q = normalize([[1, 2, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    distance, union, shared = hellinger_paired(*to_csr(P), *to_csr(Q))
    assert distance[0] == 0.0  # identical rows: the difference form is exact
    assert_allclose(distance[1], 1.0, rtol=0, atol=1e-12)  # disjoint supports
    assert np.isnan(distance[2:]).all()  # empty in B, in A, in both
    assert_array_equal(union, [2, 4, 2, 1, 0])
    assert_array_equal(shared, [2, 0, 0, 0, 0])


def test_paired_no_rows():
    empty = (np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0))
    distance, union, shared = hellinger_paired(*empty, *empty)
    assert distance.shape == union.shape == shared.shape == (0,)


# ---------------------------------------------------------------------------
# hellinger_matrix and hellinger_topk
# ---------------------------------------------------------------------------


def check_matrix_and_topk(P, Q, k, index_dtype=np.int64, block_rows=256):
    a, b = to_csr(P, index_dtype), to_csr(Q, index_dtype)
    n_features = P.shape[1]
    matrix = hellinger_matrix(*a, *b, n_features)
    assert matrix.shape == (len(P), len(Q))
    assert_close_to_reference(matrix, reference_matrix(P, Q))

    neighbors, distances = hellinger_topk(*a, *b, n_features, k, block_rows=block_rows)
    assert neighbors.shape == distances.shape == (len(P), k)
    for i in range(len(P)):
        expected_neighbors, expected_distances = expected_topk(matrix[i], k)
        assert_array_equal(neighbors[i], expected_neighbors)
        assert_array_equal(distances[i], expected_distances)


@settings(max_examples=40, deadline=None)
@given(distribution_pairs(), st.integers(1, 9), st.integers(1, 4))
def test_matrix_and_topk_match_reference(pair, k, block_rows):
    P, Q = pair
    check_matrix_and_topk(P, Q, k, block_rows=block_rows)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_matrix_and_topk_fixed_seeds(seed, index_dtype):
    rng = np.random.default_rng(seed)
    P = random_distributions(rng, 70, 200, density=0.05)
    Q = random_distributions(rng, 45, 200, density=0.05)
    check_matrix_and_topk(P, Q, k=10, index_dtype=index_dtype, block_rows=16)


def test_topk_empty_rows_and_padding():
    P = normalize([[0, 0, 0], [1, 1, 0], [0, 0, 0], [0, 0, 1]])
    Q = normalize([[0, 0, 0], [0, 1, 0], [0, 0, 0], [1, 1, 0]])  # two non-empty rows
    neighbors, distances = hellinger_topk(*to_csr(P), *to_csr(Q), 3, k=4)
    assert_array_equal(neighbors[[0, 2]], -1)
    assert np.isnan(distances[[0, 2]]).all()
    assert_array_equal(neighbors[1], [3, 1, -1, -1])
    assert_allclose(distances[1, :2], [0, np.sqrt(1 - np.sqrt(0.5))], atol=1e-7)
    assert np.isnan(distances[1, 2:]).all()
    # Zero overlap still makes a valid neighbour at distance exactly 1.
    assert_array_equal(neighbors[3], [1, 3, -1, -1])
    assert_array_equal(distances[3, :2], [1.0, 1.0])


def test_topk_k1_and_ties_prefer_lower_index():
    P = normalize([[1, 1, 0, 0], [0, 0, 1, 0]])
    Q = normalize([[0, 0, 0, 1], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]])
    a, b = to_csr(P), to_csr(Q)
    neighbors, distances = hellinger_topk(*a, *b, 4, k=1)
    assert_array_equal(neighbors[:, 0], [1, 0])  # row 1 is disjoint from all: lowest index wins
    assert distances[0, 0] < 1e-7 and distances[1, 0] == 1.0
    neighbors, _ = hellinger_topk(*a, *b, 4, k=5)
    assert_array_equal(neighbors[0], [1, 3, 4, 2, 0])  # duplicates 1, 3, 4 in index order


def test_topk_no_rows_on_either_side():
    empty = (np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0))
    some = to_csr(normalize([[1, 0], [1, 1]]))
    neighbors, distances = hellinger_topk(*empty, *some, 2, k=3)
    assert neighbors.shape == distances.shape == (0, 3)
    neighbors, distances = hellinger_topk(*some, *empty, 2, k=3)
    assert_array_equal(neighbors, -1)
    assert np.isnan(distances).all()
    assert hellinger_matrix(*some, *empty, 2).shape == (2, 0)


# ---------------------------------------------------------------------------
# match
# ---------------------------------------------------------------------------


def brute_force_optimum(cost):
    """Least total cost over all one-to-one matchings of min(n_a, n_b) pairs."""
    n_a, n_b = cost.shape
    if n_a <= n_b:
        return min(cost[range(n_a), list(cols)].sum() for cols in itertools.permutations(range(n_b), n_a))
    return brute_force_optimum(cost.T)


def check_valid_matching(rows, cols, distances, P, Q):
    """One-to-one, non-empty rows only, sorted by A row, distances as in the matrix."""
    assert len(set(rows)) == len(rows) and len(set(cols)) == len(cols)
    assert np.all(np.diff(rows) > 0)
    assert P[rows].any(axis=1).all() and Q[cols].any(axis=1).all()
    matrix = hellinger_matrix(*to_csr(P), *to_csr(Q), P.shape[1])
    assert_array_equal(distances, matrix[rows, cols])


@settings(max_examples=30, deadline=None)
@given(distribution_pairs())
def test_exact_match_is_optimal(pair):
    P, Q = pair
    rows, cols, distances = match(*to_csr(P), *to_csr(Q), P.shape[1], method="exact")
    check_valid_matching(rows, cols, distances, P, Q)
    cost = reference_matrix(P, Q)[P.any(axis=1)][:, Q.any(axis=1)]
    assert len(rows) == min(cost.shape)
    if cost.size:
        assert_allclose(distances.sum(), brute_force_optimum(cost), rtol=0, atol=1e-6)
        optimum_rows, optimum_cols = linear_sum_assignment(cost)
        assert_allclose(distances.sum(), cost[optimum_rows, optimum_cols].sum(), rtol=0, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(distribution_pairs())
def test_greedy_match_is_valid(pair):
    P, Q = pair
    a, b = to_csr(P), to_csr(Q)
    rows, cols, distances = match(*a, *b, P.shape[1], method="greedy")
    check_valid_matching(rows, cols, distances, P, Q)
    # With at most 32 non-empty B rows every edge is a candidate, so greedy is maximal.
    n_a, n_b = P.any(axis=1).sum(), Q.any(axis=1).sum()
    assert len(rows) == min(n_a, n_b)
    _, _, exact = match(*a, *b, P.shape[1], method="exact")
    assert distances.sum() >= exact.sum() - 1e-9


def test_greedy_match_takes_nearest_first():
    P = normalize([[1, 0, 0], [1, 1, 0]])
    Q = normalize([[1, 1, 1], [1, 0, 0]])
    rows, cols, _ = match(*to_csr(P), *to_csr(Q), 3, method="greedy")
    assert_array_equal(rows, [0, 1])
    assert_array_equal(cols, [1, 0])


def test_greedy_match_with_limited_candidates_is_valid():
    rng = np.random.default_rng(4)
    P, Q = random_distributions(rng, 50, 60, density=0.1), random_distributions(rng, 70, 60, density=0.1)
    rows, cols, distances = match(*to_csr(P), *to_csr(Q), 60, method="greedy")
    check_valid_matching(rows, cols, distances, P, Q)
    assert 0 < len(rows) <= P.any(axis=1).sum()


@pytest.mark.parametrize(("max_pairs", "expected"), [(25_000_000, "exact"), (10, "greedy")])
def test_auto_match_switches_on_size(monkeypatch, max_pairs, expected):
    monkeypatch.setattr(hellinger, "EXACT_MATCH_MAX_PAIRS", max_pairs)
    rng = np.random.default_rng(3)
    a, b = to_csr(random_distributions(rng, 30, 40)), to_csr(random_distributions(rng, 25, 40))
    auto = match(*a, *b, 40)
    explicit = match(*a, *b, 40, method=expected)
    for x, y in zip(auto, explicit):
        assert_array_equal(x, y)


# ---------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------

GOOD = (np.array([0, 2, 2, 3]), np.array([0, 2, 1]), np.array([0.25, 0.75, 1.0]))


def with_changes(indptr=None, indices=None, data=None):
    return (
        GOOD[0] if indptr is None else np.asarray(indptr),
        GOOD[1] if indices is None else np.asarray(indices),
        GOOD[2] if data is None else np.asarray(data),
    )


BAD_SETS = [  # (expected message, malformed set)
    ("must be 1-D", with_changes(indptr=GOOD[0][None, :])),
    ("must be integer arrays", with_changes(indices=GOOD[1].astype(float))),
    (r"length N\+1 \(N >= 0\) and start at 0", with_changes(indptr=np.array([], np.int64))),
    (r"length N\+1 \(N >= 0\) and start at 0", with_changes(indptr=[1, 2, 2, 3])),
    ("must be non-decreasing", with_changes(indptr=[0, 2, 1, 3])),
    (r"indptr\[-1\] is 3 but .* has 2 entries", with_changes(data=[0.25, 0.75])),
    (r"indptr\[-1\] is 2 but", with_changes(indptr=[0, 2, 2, 2])),
    (r"found values in \[-1, 2\]", with_changes(indices=[0, 2, -1])),
    ("strictly increasing within each row", with_changes(indices=[2, 0, 1])),
    ("strictly increasing within each row", with_changes(indices=[2, 2, 1])),
    ("must hold probabilities > 0", with_changes(data=[0.0, 1.0, 1.0])),
    ("must hold probabilities > 0", with_changes(data=[np.nan, 0.75, 1.0])),
    ("row 2 sums to 0.5", with_changes(data=[0.25, 0.75, 0.5])),
    ("row 0 sums to inf", with_changes(data=[0.25, np.inf, 1.0])),
]


@pytest.mark.parametrize(("message", "bad"), BAD_SETS)
@pytest.mark.parametrize("side", ["a", "b"])
def test_malformed_sets_are_rejected(message, bad, side):
    a, b = (bad, GOOD) if side == "a" else (GOOD, bad)
    with pytest.raises(ValueError, match=message):
        hellinger_topk(*a, *b, 3, k=2)
    with pytest.raises(ValueError, match=message):
        hellinger_matrix(*a, *b, 3)
    with pytest.raises(ValueError, match=message):
        match(*a, *b, 3)
    with pytest.raises(ValueError, match=message):
        hellinger_paired(*a, *b)


def test_feature_ids_beyond_n_features_are_rejected():
    bad = with_changes(indices=[0, 3, 1])
    for a, b in ((bad, GOOD), (GOOD, bad)):
        with pytest.raises(ValueError, match=r"must be in \[0, n_features\) = \[0, 3\), found values in \[0, 3\]"):
            hellinger_topk(*a, *b, 3, k=2)
        with pytest.raises(ValueError, match=r"found values in \[0, 3\]"):
            hellinger_matrix(*a, *b, 3)
        with pytest.raises(ValueError, match=r"found values in \[0, 3\]"):
            match(*a, *b, 3)


def test_bad_arguments_are_rejected():
    shorter = (np.array([0, 1]), np.array([0]), np.array([1.0]))
    with pytest.raises(ValueError, match="same number of rows"):
        hellinger_paired(*GOOD, *shorter)
    for k in (0, -1, 1.5):
        with pytest.raises(ValueError, match="k must be an integer >= 1"):
            hellinger_topk(*GOOD, *GOOD, 3, k=k)
    with pytest.raises(ValueError, match="block_rows must be an integer >= 1"):
        hellinger_topk(*GOOD, *GOOD, 3, k=1, block_rows=0)
    with pytest.raises(ValueError, match="n_features must be an integer >= 0"):
        hellinger_matrix(*GOOD, *GOOD, -1)
    with pytest.raises(ValueError, match="method must be"):
        match(*GOOD, *GOOD, 3, method="hungarian")
