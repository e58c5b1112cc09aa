"""IMTL-G: impartial multi-task learning, gradient part (Liu et al. 2021)."""

import math

import numpy as np
import torch

from ._base import Weighting
from ._gradient_state import GradientWeightingState
from ._small_linalg import solve_small

_TINY = np.finfo(np.float64).tiny
# A pivot below _PIVOT_RTOL times the largest gradient norm, or a coefficient
# beyond _ALPHA_MAX, means (nearly) dependent gradients. Elimination then
# cannot tell a negligible singular value from rounding (in a singular system
# the two can split over several pivots), so the pseudo-inverse, which drops
# such singular values, decides.
_PIVOT_RTOL = 1e-7
_ALPHA_MAX = 1e6


def imtl_g_coefficients(gram):
    """IMTL-G's closed-form coefficients ``alpha`` (summing to 1).

    The update ``d = sum_t alpha_t g_t`` has equal projections on every unit
    gradient ``u_t = g_t / |g_t|``. With task 1 as reference,
    ``D = [g_1 - g_t]_{t>1}`` and ``U = [u_1 - u_t]_{t>1}``:
    ``alpha_{2..k} = g_1 U^T (D U^T)^{-1}``, ``alpha_1 = 1 - sum alpha_{2..k}``.
    All products come from the Gram matrix ``M``: with ``n_t = |g_t|``,
    ``g_1 . (u_1 - u_j) = M_11/n_1 - M_1j/n_j`` and
    ``(g_1 - g_i) . (u_1 - u_j) = M_11/n_1 - M_1j/n_j - M_i1/n_1 + M_ij/n_j``.

    A pseudo-inverse handles linearly dependent gradients. Tasks with a zero
    gradient have no direction: they get ``alpha = 0`` and are left out
    (all zero: equal coefficients, the update is 0 anyway).
    """
    M = gram.detach().to("cpu", torch.float64).numpy()
    return torch.as_tensor(imtl_g_coefficients_np(M), dtype=gram.dtype, device=gram.device)


def _imtl_g_coefficients_pinv(M):
    """IMTL-G's coefficients through a pseudo-inverse (any Gram matrix)."""
    k = M.shape[0]
    norms = np.sqrt(np.clip(np.diag(M), 0.0, None))
    alive = norms > 1e-12 * max(float(norms.max()), np.finfo(np.float64).tiny)
    idx = np.flatnonzero(alive)
    if idx.size == 0:
        return np.full(k, 1.0 / k)
    out = np.zeros(k)
    if idx.size == 1:
        out[idx] = 1.0
        return out
    Ms = M[np.ix_(idx, idx)]
    n = norms[idx]
    Mn = Ms / n  # Mn[i, j] = g_i . u_j
    gU = Mn[0, 0] - Mn[0, 1:]
    DU = Mn[0, 0] - Mn[0, 1:][None, :] - Mn[1:, 0:1] + Mn[1:, 1:]
    # Row vector times inverse: alpha^T = gU^T DU^{-1}  <=>  DU^T alpha = gU.
    alpha_rest = np.linalg.pinv(DU.T) @ gU
    out[idx[0]] = 1.0 - alpha_rest.sum()
    out[idx[1:]] = alpha_rest
    return out


def imtl_g_coefficients_list(M):
    """:func:`imtl_g_coefficients` on a list of rows of floats (a list out).

    The (k-1, k-1) system is solved by Gaussian elimination in plain Python
    floats: at these sizes per-call overhead, not arithmetic, sets the cost.
    Nearly dependent gradients (a tiny pivot or huge coefficients) and
    non-finite input go through the pseudo-inverse.
    """
    k = len(M)
    rows = M
    diag = list(map(list.__getitem__, rows, range(k)))
    if not math.isfinite(sum(diag)):
        return _imtl_g_coefficients_pinv(np.array(M, dtype=np.float64)).tolist()
    norms = [math.sqrt(d) if d > 0.0 else 0.0 for d in diag]
    nmax = max(norms)
    thr = 1e-12 * max(nmax, _TINY)
    if k > 1 and min(norms) > thr:
        idx = None
    else:
        idx = [t for t in range(k) if norms[t] > thr]
        if not idx:
            return [1.0 / k] * k
        if len(idx) == 1:
            out = [0.0] * k
            out[idx[0]] = 1.0
            return out
        rows = [[rows[i][j] for j in idx] for i in idx]
        norms = [norms[i] for i in idx]
    # Task 0 (of the live ones) is the reference; Mn_ij = M_ij / n_j = g_i . u_j.
    R0, n0 = rows[0], norms[0]
    c = R0[0] / n0
    nr = norms[1:]
    gU = [c - x / n for x, n in zip(R0[1:], nr)]
    cols = list(zip(*rows[1:]))  # cols[j][i - 1] = M_ij, i >= 1
    a = [x / n0 for x in cols[0]]  # Mn_i0
    # Row j of DU^T: Mn_00 - Mn_0j - Mn_i0 + Mn_ij over i.
    A = [[x / n - ai + g for x, ai in zip(col, a)] for col, g, n in zip(cols[1:], gU, nr)]
    # solve_small gives up at pivots below 1e-13 times its scale argument:
    # here below _PIVOT_RTOL * nmax.
    alpha = solve_small(A, gU, _PIVOT_RTOL / 1e-13 * nmax)
    if alpha is None or not max(map(abs, alpha)) < _ALPHA_MAX:  # also catches nan
        return _imtl_g_coefficients_pinv(np.array(M, dtype=np.float64)).tolist()
    s = sum(alpha)
    if idx is None:
        return [1.0 - s] + alpha
    out = [0.0] * k
    out[idx[0]] = 1.0 - s
    for j, x in zip(idx[1:], alpha):
        out[j] = x
    return out


def imtl_g_coefficients_np(M):
    """:func:`imtl_g_coefficients` on a float64 numpy Gram matrix (numpy out)."""
    return np.array(imtl_g_coefficients_list(np.asarray(M, dtype=np.float64).tolist()))


class IMTLState(GradientWeightingState):
    def coefficients(self, gram, losses):
        return imtl_g_coefficients_list(gram)


class IMTL(Weighting):
    """IMTL-G: impartial gradient combination.

    Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang 2021, "Towards Impartial
    Multi-task Learning" (ICLR), the gradient-balancing part IMTL-G. The
    shared update ``sum_t alpha_t g_t`` (``sum alpha = 1``) has the same
    projection on every task's unit gradient, so no task dominates the
    shared parameters; closed form, see :func:`imtl_g_coefficients`.

    ``needs_grads = "params"``. Rescaling a task's gradient changes only the
    length of IMTL-G's update, not its direction, so static weights cannot
    act as priors on the shared update; they weight the heads' loss only.
    The step's ``weights`` and ``shared_coef`` are ``alpha``.
    """

    needs_grads = "params"
    _parameter_constraints: dict = {}

    def build(self, static_weights, task_kinds=None):
        return IMTLState(static_weights)
