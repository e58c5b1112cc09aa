"""UPGrad: unconflicting projection of gradients (Quinton & Rey 2024)."""

import numpy as np
from scipy.optimize import nnls

from ._base import Weighting
from ._gradient_state import GradientWeightingState
from ._small_linalg import spd_block_solve
from ._utils import on_host

# Tolerances relative to the largest diagonal entry of the Gram matrix, so
# the fast path is scale-free. An LDL^T pivot below _DEFINITE_TOL means
# (nearly) linearly dependent gradients: the projection weights are then not
# unique, or sensitive to rounding, and the NNLS path decides (its square
# root has the square root of the Gram matrix's condition number).
_DEFINITE_TOL = 1e-6
_PIVOT_TOL = 1e-13
_KKT_TOL = 1e-12


def _gram_root(M):
    """``A`` with ``A^T A = M`` (symmetric PSD square root from an eigendecomposition)."""
    evals, evecs = np.linalg.eigh(M)
    return np.sqrt(np.clip(evals, 0.0, None))[:, None] * evecs.T


def dual_cone_projection_weights(A, i, u=1.0):
    """Weights ``v`` with ``sum_j v_j g_j`` the projection of ``u g_i`` onto
    the dual cone ``{x : g_j . x >= 0 for all j}``.

    By duality the projection is ``G^T v`` with
    ``v = argmin_{v >= u e_i} v^T M v`` (``M = G G^T``). Writing
    ``v = u e_i + z``, ``z >= 0``, and ``M = A^T A`` (``A`` the symmetric
    square root of :func:`_gram_root`), this is the non-negative
    least-squares problem ``min_{z >= 0} |A z + u A e_i|^2``, solved exactly
    by Lawson-Hanson (``scipy.optimize.nnls``). numpy float64 in and out.
    """
    z, _ = nnls(A, -u * A[:, i])
    v = z
    v[i] += u
    return v


def _upgrad_coefficients_nnls(M, p):
    """UPGrad's coefficients through a square root and k NNLS problems.

    Handles every Gram matrix, singular ones included (their projection
    weights are not unique; Lawson-Hanson picks a basic solution).
    """
    scale = float(np.diag(M).max())
    if scale <= 0:
        return p.copy()
    # One square root for all k projections; scale-free tolerances inside NNLS.
    A = _gram_root(M / scale)
    coef = np.zeros(len(p))
    for i in range(len(p)):
        if p[i] != 0:
            coef += dual_cone_projection_weights(A, i, p[i])
    return coef


def _is_definite(S, tol):
    """Whether every LDL^T pivot of the symmetric matrix ``S`` (list of rows)
    exceeds ``tol``; False for non-finite entries.

    A diagonal margin ``S_jj - sum_{l != j} |S_jl| > tol`` on every row bounds
    the smallest eigenvalue, hence every pivot, from below, and settles most
    Gram matrices without the factorisation.
    """
    for j, row in enumerate(S):
        if not 2.0 * row[j] - sum(map(abs, row)) > tol:
            break
    else:
        return True
    k = len(S)
    L = [row[: j + 1] for j, row in enumerate(S)]
    for c in range(k):
        d = L[c][c]
        if not d > tol:
            return False
        inv = 1.0 / d
        for r in range(c + 1, k):
            Lr = L[r]
            f = Lr[c] * inv
            if f:
                for t in range(c + 1, r + 1):
                    Lr[t] -= f * L[t][c]
    return True


def _is_stationary(S, q, P, zP, tol):
    """KKT check of ``z`` (values ``zP`` on ``P``, 0 elsewhere): whether
    ``S z + q >= -tol`` everywhere, i.e. no bound index has a descent
    direction (on ``P`` it is zero up to rounding). Unrolled for small ``P``."""
    n = len(P)
    if n == 1:
        za = zP[0]
        for x, y in zip(q, S[P[0]]):
            if x + za * y < -tol:
                return False
        return True
    if n == 2:
        za, zb = zP
        for x, y, z in zip(q, S[P[0]], S[P[1]]):
            if x + za * y + zb * z < -tol:
                return False
        return True
    if n == 3:
        za, zb, zc = zP
        for x, y, z, w in zip(q, S[P[0]], S[P[1]], S[P[2]]):
            if x + za * y + zb * z + zc * w < -tol:
                return False
        return True
    for t, x in enumerate(q):
        acc = x
        for p, zp in zip(P, zP):
            acc += zp * S[p][t]
        if acc < -tol:
            return False
    return True


def _project_active_set(S, q, scale, max_iter):
    """Active-set solution of ``min_{z >= 0} z^T S z + 2 q . z``.

    ``S`` is a symmetric positive definite list of rows (largest diagonal
    entry ``scale``, which sets the tolerances), so the minimiser is unique.
    Works on the Gram matrix directly: the gradient ``2 (S z + q)`` and the
    face problems ``S_PP z_P = -q_P`` need no square root. The first guess
    of the passive set is ``{j : q_j < 0}`` (for a dual-cone projection, the
    tasks that conflict with the projected one), which is usually the
    optimal one: a single face problem and a KKT check then settle it.
    Otherwise Lawson-Hanson iterations follow, from the guess when its face
    solution is feasible, else from ``z = 0``. Returns the passive set and
    its values ``(P, z_P)``, or None on a nearly singular face problem or
    after ``max_iter`` steps (the caller then uses NNLS).
    """
    ptol = _PIVOT_TOL * scale
    ktol = _KKT_TOL * scale
    P = [j for j, x in enumerate(q) if x < 0.0]
    if not P:
        return P, []  # z = 0 is optimal: the gradient 2 q is >= 0
    zP = spd_block_solve(S, P, q, ptol)
    if zP is not None and min(zP) > 0.0:
        if _is_stationary(S, q, P, zP, ktol):
            return P, zP
    else:
        P, zP = [], []
    k = len(S)
    it = 0
    while it < max_iter:
        # w = -(S z + q): the steepest-descent direction; at the optimum it is
        # <= 0 on every index at its bound.
        w = [-x for x in q]
        for p, zp in zip(P, zP):
            w = [a - zp * b for a, b in zip(w, S[p])]
        best, j = ktol, -1
        for t in range(k):
            if w[t] > best and t not in P:
                best, j = w[t], t
        if j < 0:
            return P, zP
        P = P + [j]
        z = zP + [0.0]
        while True:
            it += 1
            if it > max_iter:
                return None
            s = spd_block_solve(S, P, q, ptol)
            if s is None:
                return None
            if min(s) > 0.0:
                zP = s
                break
            # Step from z toward s until a coordinate reaches zero; drop it.
            alpha, drop = 1.0, -1
            for t, (zt, st) in enumerate(zip(z, s)):
                if st <= 0.0:
                    d = zt - st
                    a = zt / d if d > 0.0 else 0.0
                    if a < alpha or drop < 0:
                        alpha, drop = a, t
            z = [zt + alpha * (st - zt) for zt, st in zip(z, s)]
            keep = [t for t in range(len(P)) if t != drop and z[t] > 0.0]
            P = [P[t] for t in keep]
            z = [z[t] for t in keep]
            if not P:
                zP = []
                break
    return None


def upgrad_coefficients_list(M, pref=None):
    """:func:`upgrad_coefficients` on a list of rows of floats (a list out).

    Each projection is the convex QP ``min_{z >= 0} z^T M z + 2 u M_i . z``
    (see :func:`dual_cone_projection_weights`), solved by an active-set
    method in plain Python floats on the Gram matrix itself, with tolerances
    relative to its largest diagonal entry: at these sizes per-call
    overhead, not arithmetic, sets the cost. Gram matrices that are not
    numerically positive definite (their projection weights are then not
    unique, or ill-determined), non-finite input and the rare active-set
    failure go through the square-root/NNLS path.
    """
    k = len(M)
    if pref is None:
        p = [1.0 / k] * k
    else:
        p = np.asarray(pref, dtype=np.float64).tolist()
        if not np.isfinite(p).all():
            return _nnls_list(M, p)
    S = [list(row) for row in M]  # symmetrised below: the caller's rows stay as they are
    scale = max(map(list.__getitem__, S, range(k)))
    if not 0.0 < scale < float("inf"):
        return _nnls_list(M, p)
    # Symmetric from the lower triangle (the one eigh reads).
    for a in range(1, k):
        Sa = S[a]
        for b in range(a):
            S[b][a] = Sa[b]
    if not _is_definite(S, _DEFINITE_TOL * scale):
        return _nnls_list(M, p)
    coef = [0.0] * k
    max_iter = 3 * k + 3
    for i in range(k):
        u = p[i]
        if u == 0:
            continue
        # Positive homogeneity: solve for u = +-1 and scale.
        q = S[i] if u > 0 else [-x for x in S[i]]
        res = _project_active_set(S, q, scale, max_iter)
        if res is None:
            return _nnls_list(M, p)
        m = abs(u)
        for t, zt in zip(*res):
            coef[t] += m * zt
        coef[i] += u
    return coef


def _nnls_list(M, p):
    """The square-root/NNLS path of :func:`upgrad_coefficients_list` (lists in and out)."""
    return _upgrad_coefficients_nnls(np.array(M, dtype=np.float64), np.array(p)).tolist()


def upgrad_coefficients_np(M, pref=None):
    """:func:`upgrad_coefficients` on a float64 numpy Gram matrix (numpy out)."""
    return np.array(upgrad_coefficients_list(np.asarray(M, dtype=np.float64).tolist(), pref))


def upgrad_coefficients(gram, pref=None):
    """UPGrad's update coefficients: ``sum_i pref_i * proj(g_i)``.

    Each gradient is projected onto the dual cone of all the gradients (so
    the projection conflicts with no task) and the projections are summed
    with preference weights ``pref`` (default ``1/k``: their mean). The
    projection is positively homogeneous, so ``pref_i proj(g_i) =
    proj(pref_i g_i)``. Returns a tensor (k,) like ``gram``.
    """
    return on_host(upgrad_coefficients_np, gram, pref)


class UPGradState(GradientWeightingState):
    uses_priors = True

    def coefficients(self, gram, losses):
        return upgrad_coefficients_list(gram)


class UPGrad(Weighting):
    """Unconflicting Projection of Gradients.

    Quinton & Rey 2024, "Jacobian Descent for Multi-Objective Optimization"
    (arXiv:2406.16232). Each task gradient is projected onto the dual cone
    of the task gradients, ``{x : g_t . x >= 0 for all t}``, and the update is
    the mean of the projections. The update therefore conflicts with no
    task, and gradients that already do not conflict are averaged
    unchanged. Each projection is a small convex quadratic problem on the
    Gram matrix, solved on the host.

    ``needs_grads = "params"``. Static weights are priors (the paper's
    preference vector): each ``g_t`` is scaled by ``w_t`` before the
    projection. The step's ``weights`` and ``shared_coef`` are the update's
    coefficients.
    """

    needs_grads = "params"
    _parameter_constraints: dict = {}

    def build(self, static_weights, task_kinds=None):
        return UPGradState(static_weights)
