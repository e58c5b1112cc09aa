"""The host solvers' small linear systems against numpy, and MGDA's affine
minimiser on both of its paths (LDL^T and the KKT system)."""

import numpy as np
import pytest

from sklearn_mtl.weighting import mgda
from sklearn_mtl.weighting._small_linalg import solve_small, spd_block_solve


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_solve_small_matches_numpy_for_one_and_several_right_hand_sides(n):
    rng = np.random.default_rng(n)
    A = rng.standard_normal((n, n)) + n * np.eye(n)
    b1, b2 = rng.standard_normal(n), rng.standard_normal(n)
    x = solve_small(A.tolist(), b1.tolist(), 1.0)
    np.testing.assert_allclose(x, np.linalg.solve(A, b1), rtol=1e-12, atol=1e-12)
    x1, x2 = solve_small(A.tolist(), (b1.tolist(), b2.tolist()), 1.0)
    np.testing.assert_allclose(x1, np.linalg.solve(A, b1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(x2, np.linalg.solve(A, b2), rtol=1e-12, atol=1e-12)


def test_solve_small_gives_none_on_a_singular_system_and_leaves_its_input():
    A = [[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.0, 1.0, 1.0]]
    copy = [row[:] for row in A]
    assert solve_small(A, [1.0, 2.0, 3.0], 1.0) is None
    assert solve_small(A, ([1.0, 2.0, 3.0], [0.0, 0.0, 1.0]), 1.0) is None
    assert A == copy


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6])
def test_spd_block_solve_matches_numpy_on_every_unrolled_and_general_size(size):
    rng = np.random.default_rng(10 + size)
    k = 7
    G = rng.standard_normal((k, 20))
    S = G @ G.T
    P = sorted(rng.choice(k, size=size, replace=False).tolist())
    q = rng.standard_normal(k)
    z = spd_block_solve(S.tolist(), P, q.tolist(), 1e-12)
    np.testing.assert_allclose(z, np.linalg.solve(S[np.ix_(P, P)], -q[P]), rtol=1e-10)


@pytest.mark.parametrize("size", [2, 3, 4, 5])
def test_spd_block_solve_refuses_a_singular_block(size):
    G = np.random.default_rng(size).standard_normal((size, 8))
    G[-1] = 2.0 * G[0]  # linearly dependent rows: S_PP is singular
    S = (G @ G.T).tolist()
    assert spd_block_solve(S, list(range(size)), [1.0] * size, 1e-9 * S[0][0]) is None


def _affine_minimizer_reference(M, S):
    """min a^T M_SS a subject to sum(a) = 1, by least squares on the KKT system."""
    m = len(S)
    kkt = np.zeros((m + 1, m + 1))
    kkt[:m, :m] = M[np.ix_(S, S)]
    kkt[:m, m] = kkt[m, :m] = 1.0
    rhs = np.zeros(m + 1)
    rhs[m] = 1.0
    return np.linalg.lstsq(kkt, rhs, rcond=None)[0][:m]


def test_affine_minimizer_on_independent_points_takes_the_ldl_path(monkeypatch):
    G = np.random.default_rng(0).standard_normal((5, 30))
    M = G @ G.T
    calls = []
    monkeypatch.setattr(mgda, "solve_small", lambda *a: calls.append(1))
    a = mgda._affine_minimizer(M.tolist(), [0, 1, 2, 3, 4], M.diagonal().max())
    assert not calls  # the KKT system was not needed
    np.testing.assert_allclose(a, _affine_minimizer_reference(M, [0, 1, 2, 3, 4]), atol=1e-10)
    assert sum(a) == pytest.approx(1.0)


def test_affine_minimizer_on_linearly_dependent_points_falls_back_to_the_kkt_system():
    # g2 = 2 g0: M is singular, but the three points are affinely independent.
    G = np.random.default_rng(1).standard_normal((3, 10))
    G[2] = 2.0 * G[0]
    M = G @ G.T
    a = mgda._affine_minimizer(M.tolist(), [0, 1, 2], M.diagonal().max())
    np.testing.assert_allclose(a, _affine_minimizer_reference(M, [0, 1, 2]), atol=1e-9)
    # The minimiser's point is orthogonal to the affine hull's directions.
    x = np.asarray(a) @ G
    for d in (G[1] - G[0], G[2] - G[0]):
        assert abs(x @ d) <= 1e-9 * np.abs(M).max()


def test_min_norm_weights_agree_with_their_numpy_wrapper_and_leave_the_gram_matrix():
    G = np.random.default_rng(2).standard_normal((6, 12))
    M = G @ G.T
    rows = M.tolist()
    copy = [row[:] for row in rows]
    w = mgda.min_norm_weights(rows)
    assert rows == copy
    np.testing.assert_array_equal(w, mgda.min_norm_weights_np(M))
    assert min(w) >= 0.0 and sum(w) == pytest.approx(1.0)
